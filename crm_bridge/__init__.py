"""CRM bridge: one interface (``CrmBackend``) and its backends.

Backends: ``MemoryCrm`` (in-process; ``salesbot test`` and ``salesbot chat``), ``RedisCrm``
(the embedded CRM of the server, stored in the same Redis), ``KommoCrm`` (Kommo's API v4) and
``WebhookCrm`` (any CRM behind a signed HTTP endpoint). ``CrmOutbox`` queues commands that met a
temporary failure; ``crm_bridge.contract`` is the test suite every backend passes.

``KommoCrm`` loads its package on first use (PEP 562, ``bot.lazy``): a server on the embedded
CRM never imports Kommo's modules (issue 14: startup); ``is_kommo`` asks without importing them.
"""

from typing import TYPE_CHECKING

from bot.lazy import exports

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
from .kinds import is_kommo
from .memory import MemoryCrm
from .outbox import CrmOutbox
from .redis_crm import RedisCrm
from .webhook_backend import WebhookCrm

if TYPE_CHECKING:
    from .kommo import KommoCrm

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
    "is_kommo",
]

__getattr__ = exports(__name__, {"KommoCrm": "kommo"})
