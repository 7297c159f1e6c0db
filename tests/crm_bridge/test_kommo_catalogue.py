"""The Kommo backend's catalogue and echo, beyond ``test_kommo.py``: stage names of status ids
added in Kommo after the catalogue was loaded, and which webhooks count as the echo of our own
change (``crm_bridge/kommo/echo.py``), on the fake Kommo API and the test Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from crm_bridge.kommo import KommoCrm
from crm_bridge.kommo.echo import KommoEcho, echoed_key
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


class _NoSink:
    """``emit`` is not what these tests call: a sink that must stay unused."""

    def commands(self, changes: Any) -> list[tuple[Any, ...]]:
        raise AssertionError("unused")

    def written(self, changes: Any) -> None:
        raise AssertionError("unused")


async def test_an_echo_is_only_the_webhook_of_our_own_change(redis: Redis) -> None:
    echo = KommoEcho(redis, _NoSink())
    await echo.expect("5", "stage", 200, 100)
    assert not await echo.is_echo("5", "stage", 200, 150, "k0")  # moved there from elsewhere: not ours
    assert await echo.is_echo("5", "stage", 200, 100, "k1")
    assert await echo.is_echo("5", "stage", 200, 100, "k1")  # Kommo redelivers it
    assert not await echo.is_echo("5", "stage", 200, 100, "k2")  # a later real move into that stage
    await echo.expect("5", "responsible", 8, None)
    assert await echo.is_echo("5", "responsible", 8, 7, "k3")  # the old user unknown when writing
    await echo.expect("6", "stage", 1, 2)
    await echo.forget("6", "stage", 1)  # the write failed
    assert not await echo.is_echo("6", "stage", 1, 2, "k4")
    assert 0 < await redis.ttl(echoed_key("5", "k1")) <= 7 * 86400
