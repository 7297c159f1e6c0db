"""The conversation loop (``ConversationService``) against a real Redis: a message meant for
other channels is not sent, and an event whose turn crashes does not take the rest of its batch
with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bot.config import Config, load_config
from bot.engine import events as ev
from bot.server.services import Services, open_services
from bot.store import codec
from bot.store import keys as k
from tests.server.conftest import NO_AUTOMATIONS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FLOW = {
    "format": "salesbot.flow/1", "id": "per_channel", "start": "wa",
    "steps": {
        "wa": {"type": "message", "text": "whatsapp only", "channels": ["whatsapp"], "next": "here"},
        "here": {"type": "message", "text": "test and whatsapp", "channels": ["test", "whatsapp"],
                 "next": "all"},
        "all": {"type": "message", "text": "everyone"},
    },
}


def _config(redis_url: str, flows: Path) -> Config:
    return load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(flows),
                                          "automations_dir": str(NO_AUTOMATIONS),
                                          "admin_token": "t", "lock_ttl": 2.0})


async def _transcript(svc: Services, cid: str) -> list[dict[str, Any]]:
    return [codec.unpack(b) for _, b in await svc.store.read_log(cid, 0, 10_000)]


async def test_a_message_for_other_channels_is_not_sent(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "per_channel.json").write_text(json.dumps(FLOW))
    async with open_services(_config(redis_url, tmp_path), start_hub=False) as svc:
        cid = "test:acct:channels"
        await svc.conversations.deliver(cid, ev.InboundMessage("hi", greeting="per_channel"),
                                        meta={"channel": "test", "account": "acct"})
        bots = [e["text"] for e in await _transcript(svc, cid) if e["role"] == "bot"]
        assert bots == ["test and whatsapp", "everyone"]


async def test_a_crashing_turn_skips_only_its_own_event(redis: Redis, redis_url: str) -> None:
    fixtures = FIXTURES
    async with open_services(_config(redis_url, fixtures), start_hub=False) as svc:
        cid = "test:acct:crash-one"
        driver = svc.conversations.driver
        original = driver.turn

        async def turn(state: Any, event: ev.Event, now: Any, snapshot: Any) -> Any:
            if getattr(event, "text", None) == "boom":
                raise RuntimeError("a bug in a turn")
            return await original(state, event, now, snapshot)
        driver.turn = turn  # type: ignore[method-assign]
        msg = [ev.InboundMessage(t, greeting="recorder") for t in ("one", "boom", "three")]
        first = await svc.store.push(cid, codec.encode_event(msg[0]))  # this caller processes…
        assert first.batch is not None and len(first.batch.events) == 1
        for m in msg[1:]:  # …and these two wait behind it: the next batch holds both
            assert (await svc.store.push(cid, codec.encode_event(m))).batch is None
        await svc.conversations.process(first.batch)
        raw = await svc.store.state(cid)
        run = codec.decode_state(raw).run if raw is not None else None
        assert run is not None and run.vars["seen"] == ["one", "three"]
        entries = await _transcript(svc, cid)
        assert [e["text"] for e in entries if e["role"] == "user"] == ["one", "boom", "three"]
        assert any("internal error" in str(e.get("text")) for e in entries)
        assert await redis.llen(f"sb:c:{{{cid}}}:inbox") == 0


async def test_an_answered_questions_timer_is_removed_from_the_timer_wheel(redis: Redis, redis_url: str) -> None:
    """The recorder asks again after each answer: each answer cancels the previous no_answer
    timer, so exactly one timer (the newest question's) stays scheduled, and the conversation's
    one entry in the timer wheel is due no later than it (left early: bot/store/timers.py)."""
    fixtures = FIXTURES
    async with open_services(_config(redis_url, fixtures), start_hub=False) as svc:
        cid = "test:acct:timers"
        wheel = k.timer_keys(cid, svc.store.shards)[0]

        async def timers() -> dict[str, float]:
            raw = await svc.store.state(cid)
            assert raw is not None
            return codec.decode_state(raw).timers

        await svc.conversations.deliver(cid, ev.InboundMessage("one", greeting="recorder"))
        [(member, due)] = await redis.zrange(wheel, 0, -1, withscores=True)
        [(first, first_due)] = (await timers()).items()
        assert member.decode() == "{" + cid + "}" and first.startswith(cid + ":") and due == first_due
        await svc.conversations.deliver(cid, ev.InboundMessage("two", greeting="recorder"))
        [(second, second_due)] = (await timers()).items()
        assert second != first and second_due >= first_due
        assert await redis.zrange(wheel, 0, -1, withscores=True) == [(member, first_due)]  # one entry, early
