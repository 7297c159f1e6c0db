"""The pure interpreter: conversation state, events in, effects out. No I/O lives here.

Nothing in this package imports redis, aiohttp, aiosmtplib, telegram or twilio, opens a socket
or reads a clock: the shell (``bot.runtime``) hands it the time, the flows and the CRM snapshot.

The names below load their module on first use (PEP 562): ``from bot.engine import events``
does not bring the interpreter, the compiled flows and their templates (jinja2, regex), which a
server loads with its first flow or conversation turn (issue 14: startup).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .flows import FlowLibrary, FlowSource
    from .interpreter import Outcome, advance
    from .state import ConversationState, Run, Wait

__all__ = ["ConversationState", "FlowLibrary", "FlowSource", "Outcome", "Run", "Wait", "advance"]
_HOME = {
    "FlowLibrary": "flows", "FlowSource": "flows", "Outcome": "interpreter", "advance": "interpreter",
    "ConversationState": "state", "Run": "state", "Wait": "state",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)
