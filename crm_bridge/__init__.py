"""CRM bridge: one interface (``CrmBackend``) and its backends.

Backends: ``MemoryCrm`` (embedded, in-process; used by ``salesbot test`` and ``salesbot chat``).
"""

from .interface import (
    CRM_COMMANDS,
    OUTWARD_ACTIONS,
    ChannelIdentity,
    CommandResult,
    CrmBackend,
    CrmRef,
)
from .memory import MemoryCrm

__all__ = [
    "CRM_COMMANDS", "OUTWARD_ACTIONS", "ChannelIdentity", "CommandResult", "CrmBackend",
    "CrmRef", "MemoryCrm",
]
