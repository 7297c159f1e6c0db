"""Automations: the pipeline acting by itself (stage rules, triggers, scoring) — pure code.

Document models, the validator and the rule engine live here; like ``bot.engine`` nothing in
this package does I/O. Event intake, the per-lead queue and carrying out actions are the
shell's (``bot.runtime``, ``bot.server``).
"""
