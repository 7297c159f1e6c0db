"""Redis round trips of a Telegram update (issue 14, aim 8): the push, the save (which claims
the outbox entry and reads the reply back) and, once the reply is sent, one round trip that
pops it, records its platform id and releases the entry; with the account's rate limits on, one
more: the shared limiter's turn before the Bot API call. Counted with the ``trips`` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.channels.fakes.telegram import FakeTelegram
from tests.channels.replies_harness import TOKEN, expected, say, telegram
from tests.runtime.roundtrips import RoundTrips


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(enforce_limits=False) as f:
        f.add_bot(TOKEN)
        yield f


@pytest.mark.parametrize(("settings", "most"), [
    (None, 3),  # limits lifted (``rate = 0``, no per-chat interval)
    ({"rate": 30, "burst": 30, "chat_interval": 0}, 4),  # + the shared limiter's one script call
])
async def test_a_telegram_update_costs_three_round_trips_four_with_rate_limits(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram, trips: RoundTrips,
        settings: dict[str, float] | None, most: int) -> None:
    """A follow-up update: the push, the save (which claims the outbox entry and reads the
    reply back) and, once sent, one round trip that pops it, records its platform id and
    releases the entry. No poll runs (role ``web``)."""
    chat = 9601
    async with telegram(redis_url, tmp_path, fake, role="web", settings=settings) as svc:
        await say(fake, chat, "hi")
        await fake.wait_for(lambda f: len(f.sent_to(chat)) >= 1)
        await svc.outbox.idle()
        await svc.leads.idle()  # the new lead's own queue (its events) is handled in the background
        for n, text in enumerate(["Ana", "Braga", "more"], 2):
            trips.clear()
            await say(fake, chat, text)
            await fake.wait_for(lambda f, n=n: len(f.sent_to(chat)) >= n)
            await svc.outbox.idle()
            await svc.leads.idle()
            sends = [str(call[0][0]) for call in trips.fast] + [bytes(c if isinstance(c, bytes) else b"".join(c))
                                                                 for c in trips.redis_py]
            sends = [s for s in sends if "INFO" not in str(s)]  # the memory guard's background read
            assert len(sends) <= most, sends
            assert sum("sb:rl:" in str(s) for s in sends) == most - 3, sends
        assert [s.text for s in fake.sent_to(chat)] == expected(4, ["hi", "Ana", "Braga", "more"])
