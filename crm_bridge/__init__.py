"""CRM bridge: one interface (``CrmBackend``) and its backends.

Backends: ``MemoryCrm`` (in-process; ``salesbot test`` and ``salesbot chat``) and ``RedisCrm``
(the embedded CRM of the server, stored in the same Redis).
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
from .redis_crm import RedisCrm

__all__ = [
    "CRM_COMMANDS", "OUTWARD_ACTIONS", "ChannelIdentity", "CommandResult", "CrmBackend",
    "CrmRef", "MemoryCrm", "RedisCrm",
]
