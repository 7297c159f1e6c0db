"""Fixtures of the runtime tests: ``trips`` counts Redis round trips (``roundtrips.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

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
