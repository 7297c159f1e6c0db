"""The pure interpreter: conversation state, events in, effects out. No I/O lives here.

Nothing in this package imports redis, aiohttp, aiosmtplib, telegram or twilio, opens a socket
or reads a clock: the shell (``bot.runtime``) hands it the time, the flows and the CRM snapshot.
"""

from .flows import FlowLibrary, FlowSource
from .interpreter import Outcome, advance
from .state import ConversationState, Run, Wait

__all__ = ["ConversationState", "FlowLibrary", "FlowSource", "Outcome", "Run", "Wait", "advance"]
