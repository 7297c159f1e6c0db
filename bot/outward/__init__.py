"""Outward I/O that flows trigger: webhooks (and their network guard), e-mail, hosted forms.

Channel messages are not here (``bot.channels``), nor CRM commands (``crm_bridge``).
"""
