"""The pure interpreter: conversation state, events in, effects out. No I/O lives here.

Nothing in this package imports redis, aiohttp, aiosmtplib, telegram or twilio, opens a socket
or reads a clock: the shell (``bot.runtime``) hands it the time, the flows and the CRM snapshot.

The names below load their module on first use (PEP 562): ``from bot.engine import events``
does not bring the interpreter, the compiled flows and their templates (jinja2, regex), which a
server loads with its first flow or conversation turn (issue 14: startup).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports

if TYPE_CHECKING:
    from .flows import FlowLibrary, FlowSource
    from .interpreter import Outcome, advance
    from .state import ConversationState, Run, Wait

__all__ = ["ConversationState", "FlowLibrary", "FlowSource", "Outcome", "Run", "Wait", "advance"]
_HOME = {
    "FlowLibrary": "flows", "FlowSource": "flows", "Outcome": "interpreter", "advance": "interpreter",
    "ConversationState": "state", "Run": "state", "Wait": "state",
}

__getattr__ = exports(__name__, _HOME)
