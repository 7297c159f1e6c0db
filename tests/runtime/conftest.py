"""Fixtures of the runtime tests: ``trips`` counts Redis round trips (``roundtrips.py``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

from bot.config import load_config
from bot.server.services import Services, open_services
from bot.store.resp import _Protocol
from tests.runtime.roundtrips import RoundTrips


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundTrips]:
    seen = RoundTrips()
    send = _Protocol.send
    packed = AbstractConnection.send_packed_command

    def counting_send(self: _Protocol, loop: Any, commands: Sequence[Sequence[Any]]) -> Any:
        seen.fast.append([tuple(c) for c in commands])
        seen.fast_tasks.append(asyncio.current_task())
        return send(self, loop, commands)

    async def counting_packed(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        seen.redis_py.append(command)
        seen.redis_py_tasks.append(asyncio.current_task())
        await packed(self, command, check_health)

    monkeypatch.setattr(_Protocol, "send", counting_send)
    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting_packed)
    yield seen


@contextlib.asynccontextmanager
async def runtime_services(redis_url: str, flows_dir: Path) -> AsyncIterator[Services]:
    """The process's services on a test Redis: flows from ``flows_dir``, no automations, a short
    conversation lock (2 s), no live hub."""
    cfg = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(flows_dir),
                                         "automations_dir": str(flows_dir / "automations"),
                                         "admin_token": "t", "lock_ttl": 2.0})
    async with open_services(cfg, start_hub=False) as services:
        yield services
