"""The runtime: the pure interpreter, conversation state, the driver loop and the simulator."""

from .driver import Driver, RequestHandler, TurnResult
from .flows import FlowLibrary, FlowSource
from .interpreter import Outcome, advance
from .state import ConversationState, Run, Wait

__all__ = [
    "ConversationState", "Driver", "FlowLibrary", "FlowSource", "Outcome", "RequestHandler",
    "Run", "TurnResult", "Wait", "advance",
]
