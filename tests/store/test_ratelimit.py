"""The shared GCRA limiter against a real Redis: the script's answers, counted, not timed."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from bot.store.ratelimit import Limit, LimiterUnavailable, LimitWait, RedisLimiter


class Sleeps:
    """The waits the limiter asked for (the test does not sleep them)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def _outcomes(limiter: RedisLimiter, limit: Limit, n: int, max_wait: float) -> list[float | None]:
    """n acquires at once: each one's retry_after when refused, None when it was let through."""
    async def one() -> float | None:
        try:
            await limiter.acquire(limit, max_wait=max_wait)
        except LimitWait as exc:
            return exc.retry_after
        return None
    return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_a_burst_gets_exactly_the_limits_burst_and_the_others_the_right_wait(redis: Redis) -> None:
    sleeps = Sleeps()
    limiter = RedisLimiter(redis, sleep=sleeps)
    limit = Limit("telegram:shop", rate=0.5, burst=3)  # interval 1.15 / 0.5 = 2.3 s: none comes back meanwhile
    started = time.monotonic()
    outcomes = await _outcomes(limiter, limit, 20, max_wait=0.0)
    elapsed = time.monotonic() - started
    assert outcomes.count(None) == 3 and sleeps.waits == []  # the burst, at once, nothing reserved beyond
    refused = [w for w in outcomes if w is not None]
    # the next request may go one interval after the burst's first, less the time since then
    assert all(2.3 - elapsed - 1e-6 <= w <= 2.3 + 1e-6 for w in refused), refused


async def test_reserved_requests_are_told_to_wait_one_interval_each(redis: Redis) -> None:
    sleeps = Sleeps()
    limiter = RedisLimiter(redis, sleep=sleeps)
    limit = Limit("kommo:acme", rate=1)  # burst 1: one request every 1.15 s
    interval = 1.15
    started = time.monotonic()
    for _ in range(8):
        await limiter.acquire(limit, max_wait=10.0)
    elapsed = time.monotonic() - started
    assert len(sleeps.waits) == 7  # the first went at once
    for k, wait in enumerate(sleeps.waits, 1):  # k intervals after the first, as measured by Redis
        assert k * interval - elapsed - 1e-6 <= wait <= k * interval + 1e-6, (k, wait)
    with pytest.raises(LimitWait) as refused:  # 8 intervals away: beyond a 5 s bound, nothing reserved
        await limiter.acquire(limit, max_wait=5.0)
    assert 8 * interval - (time.monotonic() - started) - 1e-6 <= refused.value.retry_after <= 8 * interval + 1e-6
    assert await redis.pttl(limit.key()) > 0  # the key expires once its time has passed


async def test_an_accounts_and_a_chats_limit_are_taken_together_in_one_slot(redis: Redis) -> None:
    sleeps = Sleeps()
    limiter = RedisLimiter(redis, sleep=sleeps)
    bot, chat = Limit("telegram:shop", rate=0.5, burst=5), Limit("telegram:shop:chat:42", rate=0.5, burst=2)
    assert key_slot(bot.key().encode()) == key_slot(chat.key().encode())
    for _ in range(2):
        await limiter.acquire(bot, chat, max_wait=0.0)
    with pytest.raises(LimitWait):  # the chat's burst is spent
        await limiter.acquire(bot, chat, max_wait=0.0)
    for _ in range(3):  # the bot still has the rest of its burst for other chats, and no more
        await limiter.acquire(bot, max_wait=0.0)
    with pytest.raises(LimitWait):
        await limiter.acquire(bot, max_wait=0.0)
    with pytest.raises(ValueError):  # two accounts' keys in one call would span slots
        await limiter.acquire(bot, Limit("telegram:other", rate=1), max_wait=0.0)


async def test_a_platforms_retry_after_holds_every_caller(redis: Redis) -> None:
    limit = Limit("twilio:ac", rate=10, burst=10)
    first, second = RedisLimiter(redis, sleep=Sleeps()), RedisLimiter(redis, sleep=Sleeps())  # two processes
    await first.acquire(limit, max_wait=0.0)
    started = time.monotonic()
    await first.hold(limit, 3.0)  # 429, Retry-After: 3
    with pytest.raises(LimitWait) as refused:
        await second.acquire(limit, max_wait=1.0)
    assert 3.0 - (time.monotonic() - started) <= refused.value.retry_after <= 3.0 + 1e-6


async def test_without_redis_nothing_is_let_through() -> None:
    client = Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=1)  # nothing listens there
    try:
        with pytest.raises(LimiterUnavailable):
            await RedisLimiter(client).acquire(Limit("whatsapp:x", rate=80), max_wait=1.0)
    finally:
        await client.aclose()
