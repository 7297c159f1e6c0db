"""The start's layout moves run one process at a time (``layout.moving``): a process that starts
while another moves waits for it, then moves (finding nothing left); a lease is released only by
its holder. The wait is observed through the lease's poll, never timed."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from bot.store import layout


async def test_a_second_process_waits_for_the_first_ones_moves(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    await redis.set(layout.MOVING_KEY, "the-other-process", px=layout.MOVING_MS)
    polls: list[float] = []

    async def poll(delay: float) -> None:  # the other process finishes its moves meanwhile
        polls.append(delay)
        assert await redis.get(layout.MOVING_KEY) == b"the-other-process"
        if len(polls) == 2:
            await redis.delete(layout.MOVING_KEY)

    monkeypatch.setattr(layout.asyncio, "sleep", poll)
    async with layout.moving(redis):
        held = await redis.get(layout.MOVING_KEY)
        assert held is not None and held != b"the-other-process"  # ours, once the other released
    assert len(polls) == 2
    assert await redis.exists(layout.MOVING_KEY) == 0  # released at the end


async def test_a_lease_is_released_only_by_its_holder(redis: Redis) -> None:
    async def taken_over() -> Any:  # ours expired (a very slow move) and another process took it
        await redis.set(layout.MOVING_KEY, "another")

    async with layout.moving(redis):
        await taken_over()
    assert await redis.get(layout.MOVING_KEY) == b"another"
