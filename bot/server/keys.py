"""Typed aiohttp application keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .services import Services

SERVICES: web.AppKey["Services"] = web.AppKey("services")
