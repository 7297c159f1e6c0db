"""The Kommo backend's catalogue and echo, beyond ``test_kommo.py``: stage names of status ids
added in Kommo after the catalogue was loaded, and which webhooks count as the echo of our own
change (``crm_bridge/kommo/echo.py``), on the fake Kommo API and the test Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from crm_bridge.changes import Change
from crm_bridge.kommo import KommoCrm
from crm_bridge.kommo.echo import KommoEcho, echoed_key, expect_key
from tests.crm_bridge.fakes.kommo import TOKEN, FakeKommo


@pytest.fixture
async def fake() -> AsyncIterator[FakeKommo]:
    async with FakeKommo(rate_limit=None) as fake:
        yield fake


@pytest.fixture
async def crm(fake: FakeKommo) -> AsyncIterator[KommoCrm]:
    crm = KommoCrm(fake.url, TOKEN, rate=1000)
    try:
        yield crm
    finally:
        await crm.aclose()


def _gets(fake: FakeKommo, path: str) -> int:
    return sum(1 for r in fake.requests if r.method == "GET" and r.path == path)


async def test_a_status_added_in_kommo_is_named_at_once_and_misses_share_one_reload(
        fake: FakeKommo, crm: KommoCrm) -> None:
    assert await crm.account.stage_names(1001, fake.status_id("Sales", "New")) == ("Sales", "New")
    added = fake.add_status("Sales", "Negotiation", sort=45)  # a moment after the catalogue was loaded
    names = await asyncio.gather(*[crm.account.stage_names(1001, added) for _ in range(3)])
    assert names == [("Sales", "Negotiation")] * 3
    assert _gets(fake, "/api/v4/leads/pipelines") == 2  # loaded, then reloaded once for the three misses
    assert await crm.account.stage_names(1001, 999) == ("Sales", None)  # unknown to Kommo too
    assert await crm.account.stage_names(5, 999) == (None, None)


class _ListSink:
    """Lead events as the test's Redis list ``test:events`` (a ``ChangeSink``); ``fail`` makes the
    next emit fail as a lost Redis connection would, before anything is stored."""

    def __init__(self) -> None:
        self.written_types: list[str] = []
        self.fail = 0

    def commands(self, changes: Sequence[Change]) -> list[tuple[Any, ...]]:
        if self.fail:
            self.fail -= 1
            raise RedisConnectionError("the connection was lost while emitting")
        return [("RPUSH", "test:events", c.type) for c in changes]

    def written(self, changes: Sequence[Change]) -> None:
        self.written_types += [c.type for c in changes]


def _moved(lead: str = "5") -> list[Change]:
    return [Change("lead.stage_changed", lead, {"status_id": 200})]


async def test_an_echo_is_only_the_webhook_of_our_own_change(redis: Redis) -> None:
    echo = KommoEcho(redis, _ListSink())
    await echo.expect("5", "stage", 200, 100)
    await echo.emit(_moved(), noted=("5", "stage", 200))
    assert not await echo.is_echo("5", "stage", 200, 150, "k0")  # moved there from elsewhere: not ours
    assert await echo.is_echo("5", "stage", 200, 100, "k1")
    assert await echo.is_echo("5", "stage", 200, 100, "k1")  # Kommo redelivers it
    assert not await echo.is_echo("5", "stage", 200, 100, "k2")  # a later real move into that stage
    await echo.expect("5", "responsible", 8, None)
    await echo.emit([Change("lead.responsible_changed", "5")], noted=("5", "responsible", 8))
    assert await echo.is_echo("5", "responsible", 8, 7, "k3")  # the old user unknown when writing
    await echo.expect("6", "stage", 1, 2)
    await echo.forget("6", "stage", 1)  # the write failed
    assert not await echo.is_echo("6", "stage", 1, 2, "k4")
    assert 0 < await redis.ttl(echoed_key("5", "k1")) <= 7 * 86400
    assert await redis.lrange("test:events", 0, -1) == [b"lead.stage_changed", b"lead.responsible_changed"]


async def test_a_move_is_one_event_when_the_emit_fails_or_kommos_webhook_comes_first(redis: Redis) -> None:
    sink = _ListSink()
    echo = KommoEcho(redis, sink)
    # Kommo's write succeeded, then Redis failed while emitting: Kommo's webhook is the event
    await echo.expect("5", "stage", 200, 100)
    sink.fail = 1
    with pytest.raises(RedisConnectionError):
        await echo.emit(_moved(), noted=("5", "stage", 200))
    assert not await echo.is_echo("5", "stage", 200, 100, "k1")
    # Kommo's webhook comes before our emit: it is the event, and the emit stores nothing
    await echo.expect("6", "stage", 200, 100)
    assert not await echo.is_echo("6", "stage", 200, 100, "k2")
    await echo.emit(_moved("6"), noted=("6", "stage", 200))
    assert await redis.lrange("test:events", 0, -1) == [] and sink.written_types == []
    # the usual order: our event, then its echo
    await echo.expect("7", "stage", 200, 100)
    await echo.emit(_moved("7"), noted=("7", "stage", 200))
    assert await echo.is_echo("7", "stage", 200, 100, "k3")
    assert await redis.lrange("test:events", 0, -1) == [b"lead.stage_changed"]
    # a note written by the previous version (the old value alone) counts as emitted
    await redis.set(expect_key("8", "stage", 200), "100", ex=60)
    assert await echo.is_echo("8", "stage", 200, 100, "k4")
