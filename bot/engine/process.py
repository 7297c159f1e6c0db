"""What processes mean, shared by the server and the simulator (pure: no I/O).

The server's side is ``bot.runtime.processes`` / ``process_actions``; the simulator answers the
same actions the same way from these definitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..builder.process_names import EMAIL_LIST

__all__ = ["EMAIL_LIST", "PROCESS_ANSWERED", "PROCESS_CHANNEL", "score_command"]

#: The channel of process conversations: no chat, messages go out through actions.
PROCESS_CHANNEL = "process"
#: The process actions the shell answers itself (``score`` becomes a CRM command, ``end_process``
#: never leaves the interpreter).
PROCESS_ANSWERED = frozenset({"start_process", "lists", "notify", "send_sms", "send_message"})


def score_command(command: Mapping[str, Any], snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """``score`` as the CRM command that does it: ``contact.score`` plus ``add`` or minus
    ``subtract``, never below 0 (the snapshot's score: the turn's own view of the contact)."""
    contact = snapshot.get("contact") or {}
    try:
        score = max(0, int(float(contact.get("score") or 0)))
    except (TypeError, ValueError, OverflowError):
        score = 0
    delta = int(command.get("add") or 0) - int(command.get("subtract") or 0)
    out = {"do": "set_field", "entity": "contact", "field": "score", "value": max(0, score + delta)}
    if "depth" in command:
        out["depth"] = command["depth"]
    return out
