"""The conversation loop: queue → driver → interpreter → effects, plus the worker's timers,
recovery and delivery. It joins ``bot.engine``, ``bot.store``, ``bot.outward`` and the CRM;
HTTP routes live in ``bot.server`` and channel adapters in ``bot.channels``.
"""
