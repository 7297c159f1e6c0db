"""A stored version that relied on values the validator now refuses ("yes" for true) still runs.

It was valid when stored: a conversation on it keeps going after the upgrade, with each value
read as it was then, and the log says what a new upload must fix (``bot.version_lenient``).
Real services on a real Redis, as in ``test_prefetch.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.engine import events as ev
from bot.errors import FlowInvalid
from bot.server.services import Services
from bot.store import codec
from bot.store.versions import digest_of
from tests.runtime.conftest import runtime_services

#: As an operator wrote it before: "yes" and "on" were read as true, "100" as 100.
OLD: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "old", "start": "ask",
    "settings": {"leave_unanswered": "yes", "step_budget": "100"},
    "steps": {"ask": {"type": "message", "text": "Hello", "buttons": [{"title": "Bye", "next": "end"}],
                      "no_answer": {"after": "1h", "next": "end"}},
              "end": {"type": "stop", "close_chat": "on"}},
}


@pytest.fixture
async def svc(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    async with runtime_services(redis_url, tmp_path) as services:
        yield services


async def _bot_texts(svc: Services, cid: str) -> list[str]:
    return [e["text"] for _, raw in await svc.store.read_log(cid, 0, 10_000)
            if (e := codec.unpack(raw))["role"] == "bot"]


async def test_a_stored_version_with_yes_for_true_still_runs(svc: Services, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(FlowInvalid) as refused:  # a new upload is refused, every value named
        await svc.bots.put(OLD)
    assert {str(p) for p in refused.value.problems} >= {
        "/settings/leave_unanswered: must be true or false", "/settings/step_budget: must be a whole number",
        "/steps/end/close_chat: must be true or false"}
    # stored by an older release, which took it
    await svc.bots.documents.put("old", OLD, digest=digest_of(OLD), name="old")

    with caplog.at_level("WARNING", logger="salesbot.bots"):
        result = await svc.conversations.deliver(
            "c1", ev.InboundMessage(text="hi", message_id="m1", greeting="old"), dedupe_id="m1")
    assert result.processed_here
    assert await _bot_texts(svc, "c1") == ["Hello"]
    flow = svc.bots.get("old")
    assert flow is not None and flow.leave_unanswered is True and flow.step_budget == 100
    assert [r.getMessage() for r in caplog.records if r.name == "salesbot.bots"] == ["bot.version_lenient"]
    lenient = next(r for r in caplog.records if r.getMessage() == "bot.version_lenient")
    assert "/settings/leave_unanswered: must be true or false" in lenient.problems
