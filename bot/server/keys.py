"""Typed aiohttp application keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .ratelimit import Limits
    from .services import Services

SERVICES: web.AppKey[Services] = web.AppKey("services")
LIMITS: web.AppKey[Limits] = web.AppKey("limits")
