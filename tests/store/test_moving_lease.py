"""The start's layout moves run one process at a time (``layout.moving``): a process that starts
while another moves waits for it, then moves (finding nothing left); the holder renews its lease
while it moves; a lease is released only by its holder. The waits are observed through the
lease's sleeps (replaced here), never timed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis

from bot.store import layout

RENEW_EVERY = layout.MOVING_MS / 3000


def _sleeps(monkeypatch: pytest.MonkeyPatch, *, poll: Callable[[], Awaitable[None]],
            renew: Callable[[], Awaitable[None]]) -> None:
    async def sleep(delay: float) -> None:
        await (poll() if delay == layout._MOVING_POLL else renew())

    monkeypatch.setattr(layout.asyncio, "sleep", sleep)


async def test_a_second_process_waits_for_the_first_ones_moves(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    await redis.set(layout.MOVING_KEY, "the-other-process", px=layout.MOVING_MS)
    polls: list[bytes | None] = []

    async def poll() -> None:  # the other process finishes its moves meanwhile
        polls.append(await redis.get(layout.MOVING_KEY))
        if len(polls) == 2:
            await redis.delete(layout.MOVING_KEY)

    _sleeps(monkeypatch, poll=poll, renew=asyncio.Event().wait)
    async with layout.moving(redis):
        held = await redis.get(layout.MOVING_KEY)
        assert held is not None and held != b"the-other-process"  # ours, once the other released
    assert polls == [b"the-other-process", b"the-other-process"]
    assert await redis.exists(layout.MOVING_KEY) == 0  # released at the end


async def test_the_holder_renews_its_lease_while_it_moves(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    go, renewed = asyncio.Event(), asyncio.Event()
    rounds = 0

    async def renew() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 2:  # the first renewal done
            renewed.set()
            await asyncio.Event().wait()
        await go.wait()

    _sleeps(monkeypatch, poll=asyncio.Event().wait, renew=renew)
    async with layout.moving(redis):
        await redis.pexpire(layout.MOVING_KEY, 1000)  # as if most of its life had gone by
        go.set()
        await renewed.wait()
        assert await redis.pttl(layout.MOVING_KEY) > 1000
    assert await redis.exists(layout.MOVING_KEY) == 0


async def test_a_lease_is_released_only_by_its_holder(redis: Redis) -> None:
    async with layout.moving(redis):
        await redis.set(layout.MOVING_KEY, "another")  # ours expired (a process stalled) and was taken
    assert await redis.get(layout.MOVING_KEY) == b"another"
