"""Which backend a ``CrmBackend`` is, asked without importing the backends a process does not use."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TypeGuard

if TYPE_CHECKING:
    from .kommo import KommoCrm


def is_kommo(crm: object) -> TypeGuard[KommoCrm]:
    """``isinstance(crm, KommoCrm)``, without loading Kommo's modules: a ``KommoCrm`` exists only
    once its module is loaded, so a process on another backend never imports them for the question."""
    backend = sys.modules.get("crm_bridge.kommo.backend")
    return backend is not None and isinstance(crm, backend.KommoCrm)
