"""CRM bridge: one interface (``CrmBackend``) and its backends.

Backends: ``MemoryCrm`` (in-process; ``salesbot test`` and ``salesbot chat``), ``RedisCrm``
(the embedded CRM of the server, stored in the same Redis), ``KommoCrm`` (Kommo's API v4) and
``WebhookCrm`` (any CRM behind a signed HTTP endpoint). ``CrmOutbox`` queues commands that met a
temporary failure; ``crm_bridge.contract`` is the test suite every backend passes.
"""

from .interface import (
    CRM_COMMANDS,
    OUTWARD_ACTIONS,
    ChannelIdentity,
    CommandResult,
    CrmBackend,
    CrmRef,
    PrefetchIdentity,
    PrefetchSnapshot,
)
from .kommo import KommoCrm
from .memory import MemoryCrm
from .outbox import CrmOutbox
from .redis_crm import RedisCrm
from .webhook_backend import WebhookCrm

__all__ = [
    "CRM_COMMANDS",
    "OUTWARD_ACTIONS",
    "ChannelIdentity",
    "CommandResult",
    "CrmBackend",
    "CrmOutbox",
    "CrmRef",
    "KommoCrm",
    "MemoryCrm",
    "PrefetchIdentity",
    "PrefetchSnapshot",
    "RedisCrm",
    "WebhookCrm",
]
