"""Split tests end to end over real HTTP and Redis: a live-chat conversation enters a split when a
lead event (``POST /api/events``) ends its pause, the entry and the goal are counted by the save,
a goal after a restart of the server counts once, and ``/api/bots/{id}/splits`` shows it, picks a
winner by hand and resets — with the hostile treatment for the new routes."""

from __future__ import annotations

import io
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from redis.asyncio import Redis

from bot.store import dedupe
from bot.store.splits import split_key
from tests.live_app import AUTH, App, running_app
from tests.waiting import wait_for

OPERATOR = {"Authorization": "Bearer operator-olga"}
SUPPORT = {"Authorization": "Bearer support-ayse"}
TOKENS = [{"token": "operator-olga", "role": "operator", "name": "Olga"},
          {"token": "support-ayse", "role": "support", "name": "Ayşe"}]
FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "demo", "start": "hello",
    "goals": {"purchased": {"on": "order.paid", "next": "thanks"}},
    "steps": {
        "hello": {"type": "message", "text": "hello", "next": "wait"},
        "wait": {"type": "pause", "until": [{"on": "event", "event": "custom.cart", "next": "offer"}]},
        "offer": {"type": "split", "goal": "purchased", "winner": {"after_entries": 1000},
                  "paths": [{"id": "a", "weight": 50, "next": "say_a"}, {"id": "b", "weight": 50, "next": "say_b"}]},
        "say_a": {"type": "message", "text": "offer A", "next": "hold"},
        "say_b": {"type": "message", "text": "offer B", "next": "hold"},
        "hold": {"type": "pause", "until": [{"on": "timer", "after": "30d"}]},
        "thanks": {"type": "message", "text": "thanks"},
    },
}


async def _put(app: App, flow: dict[str, Any] = FLOW) -> None:
    r = await app.http.put(f"/api/bots/{flow['id']}", json=flow, headers=AUTH)
    assert r.status in (200, 201), await r.text()


async def _splits(app: App, bot: str = "demo") -> dict[str, Any]:
    body: dict[str, Any] = await app.api("GET", f"/api/bots/{bot}/splits")
    return body


async def _offer(app: App) -> dict[str, Any]:
    (offer,) = (await _splits(app))["splits"]
    return dict(offer)


async def _event(app: App, lead: str, kind: str) -> str:
    event_id = f"evt-{uuid.uuid4().hex[:12]}"
    body = await app.api("POST", "/api/events", 202, json={"id": event_id, "type": kind, "lead": {"id": lead}})
    assert body["duplicate"] is False
    return event_id


async def _seen(redis: Redis, cid: str, lead: str, event_id: str) -> bool:
    """Whether the conversation has taken the lead event in (its dedupe mark is written with the save)."""
    return await dedupe.seen_at(redis, cid, f"lead-event:{lead}:{event_id}") is not None


async def _entered(app: App, session: str) -> tuple[str, str, str]:
    """A customer writes, then the cart event ends the pause: (conversation, lead, path taken)."""
    cid, texts = await app.say(session, "hi")
    assert texts == ["hello"]
    lead = str((await app.conversation(cid))["lead_id"])
    await _event(app, lead, "custom.cart")

    async def path() -> str | None:
        texts = [m.get("text") for m in (await app.conversation(cid))["transcript"]]
        return "a" if "offer A" in texts else "b" if "offer B" in texts else None

    taken = await wait_for(path, what="the split's offer")
    return cid, lead, taken


async def test_an_entry_and_a_goal_are_counted_once_also_after_a_restart(redis: Redis, redis_url: str,
                                                                          tmp_path: Path) -> None:
    (tmp_path / "demo.json").write_text(json.dumps(FLOW))  # what each server loads at start
    async with running_app(redis_url, tokens=TOKENS, flows_dir=tmp_path) as app:
        cid, lead, path = await _entered(app, "split-visitor-0001")
        offer = await wait_for(lambda: _counted(app, "entries", path, 1), what="the entry counted")
        assert offer["entries"] == 1 and offer["winner"] is None and offer["goal"] == "purchased"
    # Another server (a restart): the run's state says which split it passed.
    async with running_app(redis_url, tokens=TOKENS, flows_dir=tmp_path) as app:
        first = await _event(app, lead, "order.paid")
        offer = await wait_for(lambda: _counted(app, "goals", path, 1), what="the goal counted")
        texts = [m.get("text") for m in (await app.conversation(cid))["transcript"] if m["role"] == "bot"]
        assert texts[-1] == "thanks"
        second = await _event(app, lead, "order.paid")
        for event_id in (first, second):
            await wait_for(lambda e=event_id: _seen(redis, cid, lead, e), what="the order events taken in")
        offer = await _offer(app)
        by_path = {p["id"]: p for p in offer["paths"]}
        assert by_path[path]["goals"] == 1 and by_path[path]["entries"] == 1 and by_path[path]["rate"] == 1.0
        other = "b" if path == "a" else "a"
        assert by_path[other]["entries"] == 0 and by_path[other]["goals"] == 0


async def _counted(app: App, what: str, path: str, n: int) -> dict[str, Any] | None:
    offer = await _offer(app)
    return offer if {p["id"]: p[what] for p in offer["paths"]}[path] >= n else None


async def test_a_winner_picked_by_hand_takes_every_later_entry_and_a_reset_starts_again(
        redis: Redis, redis_url: str) -> None:
    async with running_app(redis_url, tokens=TOKENS) as app:
        await _put(app)
        r = await app.http.post("/api/bots/demo/splits/offer/winner", json={"path": "b"}, headers=OPERATOR)
        assert r.status == 200, await r.text()
        picked = await r.json()
        assert picked["winner"]["path"] == "b" and picked["winner"]["by"] == "manual"
        paths = {(await _entered(app, f"split-winner-{i:04d}"))[2] for i in range(4)}
        assert paths == {"b"}
        await wait_for(lambda: _counted(app, "entries", "b", 4), what="four entries")
        r = await app.http.post("/api/bots/demo/splits/offer/winner", json={"path": None}, headers=OPERATOR)
        assert r.status == 200 and (await r.json())["winner"] is None
        r = await app.http.post("/api/bots/demo/splits/offer/reset", headers=OPERATOR)
        reset = await r.json()
        assert r.status == 200 and reset["generation"] == 1 and reset["entries"] == 0
        assert {p["id"]: p["entries"] for p in reset["paths"]} == {"a": 0, "b": 0}
        schema = (await app.api("GET", "/api/openapi.json"))
        split_view = schema["paths"]["/api/bots/{id}/splits"]["get"]["responses"]["200"]["content"]
        jsonschema.validate(await _splits(app), split_view["application/json"]["schema"])
        assert await redis.hget(split_key("demo", "offer"), "gen") == b"1"


async def test_a_bot_without_splits_has_an_empty_list_and_support_may_read_it(redis: Redis, redis_url: str) -> None:
    async with running_app(redis_url, tokens=TOKENS) as app:
        r = await app.http.get("/api/bots/demo/splits", headers=SUPPORT)  # the example demo bot
        assert r.status == 200 and (await r.json())["splits"] == []


HOSTILE_IDS = ["Demo", "de%00mo", "a" * 65, "x\u202ey", "-dash", "nope"]


@pytest.mark.parametrize("bot", HOSTILE_IDS)
async def test_bad_bot_ids_are_404s(redis: Redis, redis_url: str, bot: str,
                                   caplog: pytest.LogCaptureFixture) -> None:
    async with running_app(redis_url, tokens=TOKENS) as app:
        for method, path in (("GET", f"/api/bots/{bot}/splits"), ("POST", f"/api/bots/{bot}/splits/offer/reset"),
                             ("POST", f"/api/bots/{bot}/splits/offer/winner")):
            r = await app.http.request(method, path, headers=OPERATOR, json={"path": "a"})
            assert r.status == 404, (path, r.status)
            assert (await r.json())["error"]["code"] == "not_found"


async def test_hostile_requests_get_clear_4xx_answers(redis: Redis, redis_url: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with running_app(redis_url, tokens=TOKENS) as app:
        await _put(app)
        winner = "/api/bots/demo/splits/offer/winner"
        h = app.http
        # No token, a wrong one, a role that may not.
        assert (await h.get("/api/bots/demo/splits")).status == 401
        assert (await h.get("/api/bots/demo/splits", headers={"Authorization": "Bearer nope"})).status == 401
        assert (await h.post(winner, json={"path": "a"}, headers=SUPPORT)).status == 403
        assert (await h.post("/api/bots/demo/splits/offer/reset", headers=SUPPORT)).status == 403
        # Not a split step, not a step, control characters.
        for step in ("hello", "nowhere", "of%0Afer", "x" * 100):
            r = await h.post(f"/api/bots/demo/splits/{step}/winner", json={"path": "a"}, headers=OPERATOR)
            assert r.status == 404, step
        # Bodies: not JSON, NaN, deep, huge, not a path of the split, extra keys, wrong types.
        bodies: list[bytes] = [b"{", b'{"path": NaN}', b"[" * 10_000 + b"]" * 10_000,
                               json.dumps({"path": "a" * 3_000_000}).encode(), b'{"path": "c"}',
                               b'{"path": "a", "also": 1}', b'{"path": 1}', b"[]", b'"a"', b'{"path": "a\\u0000"}']
        for raw in bodies:
            r = await h.post(winner, data=io.BytesIO(raw), headers={**OPERATOR, "Content-Type": "application/json"})
            assert 400 <= r.status < 500, (raw[:40], r.status)
            if r.status != 413:
                assert "error" in await r.json()
        r = await h.get("/api/bots/demo/splits", params={"version": "NaN"}, headers=OPERATOR)
        assert r.status == 400
        r = await h.get("/api/bots/demo/splits", params={"version": "99"}, headers=OPERATOR)
        assert r.status == 404
        assert (await h.get("/api/bots/demo/splits", params={"version": "1"}, headers=OPERATOR)).status == 200
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert "splits.bad_winner" in {rec.getMessage() for rec in caplog.records}


async def test_a_flood_of_token_guesses_is_held_off(redis: Redis, redis_url: str) -> None:
    limits = {"auth_failures_per_ip": {"per_minute": 6, "burst": 3}}
    async with running_app(redis_url, tokens=TOKENS, limits=limits) as app:
        guesses = [(await app.http.post("/api/bots/demo/splits/offer/reset",
                                        headers={"Authorization": f"Bearer guess-{i}"})).status for i in range(10)]
        assert guesses[:3] == [401, 401, 401] and set(guesses[3:]) == {429}
        assert (await app.http.get("/api/bots/demo/splits", headers=SUPPORT)).status == 429  # the address waits
