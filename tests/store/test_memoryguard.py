"""Near Redis's maxmemory new conversations are refused with 503 (existing ones go on); a
write Redis refuses for memory (OOM) is a 503 too, not a 500. A Redis of the test's own:
its maxmemory is changed with CONFIG SET."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.logs import OutageFilter
from bot.store.embedded import EmbeddedRedis
from bot.store.memoryguard import MemoryGuard
from tests.live_app import running_app


@pytest.fixture
async def own_redis() -> AsyncIterator[str]:
    server = EmbeddedRedis(None, persist=False)
    try:
        yield await server.astart()
    finally:
        await server.astop()


async def _post(app: object, session: str, text: str = "hi") -> tuple[int, dict[str, str], dict[str, object]]:
    r = await app.http.post("/chat/demo/messages",  # type: ignore[attr-defined]
                            json={"session": session, "text": text, "client_msg_id": uuid.uuid4().hex})
    return r.status, dict(r.headers), await r.json()


async def test_near_maxmemory_new_conversations_get_503_and_existing_ones_go_on(own_redis: str) -> None:
    client = Redis.from_url(own_redis)
    try:
        # A high-water mark of one half: the guard is high with Redis 60 % full, and the
        # conversation under way has 40 % of room left for its writes. (At the default 0.9, a
        # maxmemory 5 % above what this small Redis held, about 50 KB, was reached once in a
        # loaded full run before the existing conversation's write: Redis's own OOM refused it.)
        async with running_app(own_redis, memory_high_water=0.5) as app:
            guard = app.services.memory
            assert guard is not None
            await app.say("existingconv01", "hi")
            assert not await guard.check()  # no maxmemory: never high
            used = int((await client.info("memory"))["used_memory"])
            await client.config_set("maxmemory", str(int(used / 0.6)))
            assert await guard.check()

            status, headers, body = await _post(app, "brandnewconv01")
            assert status == 503, body
            assert body["error"]["code"] == "store_full"  # type: ignore[index]
            assert int(headers["Retry-After"]) > 0
            assert not await client.exists("sb:c:{livechat:demo:brandnewconv01}:meta")

            _, texts = await app.say("existingconv01", "and again")  # the one under way goes on
            assert texts

            await client.config_set("maxmemory", "0")
            assert not await guard.check()
            status, _, body = await _post(app, "brandnewconv01")
            assert status == 202, body
    finally:
        await client.config_set("maxmemory", "0")
        await client.aclose()


async def test_a_write_refused_for_memory_is_503_not_500(own_redis: str) -> None:
    client = Redis.from_url(own_redis)
    try:
        async with running_app(own_redis) as app:
            await app.say("existingconv02", "hi")
            await client.config_set("maxmemory", "1")  # every write now fails with OOM
            status, headers, body = await _post(app, "existingconv02", "more")
            assert status == 503, body
            assert body["error"]["code"] == "store_full"  # type: ignore[index]
            assert "Retry-After" in headers
    finally:
        await client.config_set("maxmemory", "0")
        await client.aclose()


class _CancelBecomesTimeout(Redis):
    """A real client whose ``INFO`` is cancelled the way redis-py sometimes reports it under
    load: the cancel comes out as its ``TimeoutError`` (the race behind ``open_services``
    hanging on exit). The read waits until cancelled, so the race is not left to chance; only
    the first cancel is turned into an error (a later one ends the task as usual)."""

    reading: asyncio.Event
    swallowed = 0

    async def info(self, section: Any = None, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.reading.set()
        try:
            await asyncio.Event().wait()  # an answer that has not come yet
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed += 1
            raise RedisTimeoutError("Timeout reading from socket") from None


async def test_stop_ends_the_guard_even_when_the_cancel_comes_out_as_a_redis_error(redis_url: str) -> None:
    client = _CancelBecomesTimeout.from_url(redis_url)
    client.reading = asyncio.Event()
    guard = MemoryGuard(client, interval=0.01, stop_grace=0.2)
    try:
        guard.start()
        await asyncio.wait_for(client.reading.wait(), 10)
        stopping = asyncio.ensure_future(guard.stop())
        done, _ = await asyncio.wait({stopping}, timeout=10)
        assert stopping in done, "stop() did not return: the guard's loop outlived its cancel"
        assert client.swallowed == 1  # the cancel did come out as a RedisError
    finally:
        await client.aclose()


async def test_the_guard_does_nothing_without_maxmemory(redis: Redis) -> None:
    guard = MemoryGuard(redis, high_water=0.01)
    assert not await guard.check()
    await guard.admit("livechat:demo:anything00")  # no StoreFull while not high


def _record(msg: str, exc: BaseException | None = None, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("salesbot.worker", logging.ERROR, __file__, 1, msg, (),
                               (type(exc), exc, None) if exc else None)
    record.__dict__.update(extra)
    return record


def test_outage_logs_one_line_per_kind_per_window() -> None:
    now = [0.0]
    outage = OutageFilter(window=5.0, clock=lambda: now[0])
    down = RedisConnectionError("Error 111 connecting to 127.0.0.1:6379")
    passed = []
    for i in range(100):  # 10 s of a loop failing every 0.1 s
        now[0] = i * 0.1
        record = _record("worker.timers_failed", down)
        if outage.filter(record):
            passed.append(record)
    assert len(passed) == 2
    assert passed[0].exc_info is None and "Error 111" in passed[0].error  # type: ignore[attr-defined]
    assert passed[1].suppressed == 49  # type: ignore[attr-defined]
    # Another kind still gets its line; a record that is no outage always passes.
    assert outage.filter(_record("worker.outbox_failed", down))
    assert outage.filter(_record("store.store_unavailable", _outage=True))
    assert all(outage.filter(_record("worker.timers_failed", ValueError("bug"))) for _ in range(3))
