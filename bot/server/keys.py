"""Typed aiohttp application keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .ratelimit import Limits
    from .services import Services

SERVICES: web.AppKey[Services] = web.AppKey("services")
LIMITS: web.AppKey[Limits] = web.AppKey("limits")
#: Starts the worker's loops of an app built with ``defer_worker``: ``salesbot serve`` calls it once
#: the server listens, so that their imports and first rounds do not hold up the first answers.
START_WORKER: web.AppKey[Callable[[], None]] = web.AppKey("start_worker")
