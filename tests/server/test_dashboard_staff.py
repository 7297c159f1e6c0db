"""Bugs support staff hit in the dashboard, over real HTTP against a real Redis: paging a list whose
conversations share one activity, a reply with control characters, a hand-back with no bot
running, and two hand-backs of one takeover at once."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import ClientSession
from redis.asyncio import Redis

from bot.server.api import _DROP_CLAIM
from bot.store import indexes as convindex
from tests.server.test_dashboard_api import AYSE, _bot_texts, _until, chat, listing, server

__all__ = ["server"]  # the fixture: the dashboard's tokens


async def test_pages_of_conversations_sharing_one_activity_list_each_once_at_most_limit_a_page(
        http: ClientSession, redis: Redis) -> None:
    """600 conversations with one activity (an import, a broadcast): the cursor is the last row
    (``next_before`` and ``next_before_id``), so pages of 50 list each once; a page used to take
    on 500 more rows at its last activity and the next one skipped the rest."""
    pipe = redis.pipeline(transaction=False)
    made = [f"livechat:demo:tie{i:04d}" for i in range(600)]
    for cid in made:
        convindex.seed(pipe, cid, {"channel": "livechat", "bot": "demo", "status": "human",
                                   "chat_status": "answered", "activity": "1700000000.125", "name": "Deniz"})
    await pipe.execute()
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 50}
    for _ in range(30):
        body = await listing(http, **params)
        assert len(body["conversations"]) <= 50
        seen += [c["id"] for c in body["conversations"]]
        if body["next_before"] is None:
            break
        params = {"limit": 50, "before": body["next_before"], "before_id": body.get("next_before_id") or ""}
    assert seen == sorted(made, reverse=True)
    r = await http.get("/api/conversations", params={"before_id": made[0]}, headers=AYSE)
    assert r.status == 400 and (await r.json())["error"]["details"] == [{"parameter": "before_id"}]


async def test_a_persons_reply_loses_its_control_characters_and_one_of_nothing_else_is_refused(
        http: ClientSession) -> None:
    """A reply pasted from a document (NUL, form feed, a line separator) is cleaned as a visitor's
    text is: the channels get no control characters; line breaks and tabs stay, and emoji and
    right-to-left text are kept as they are."""
    cid = await chat(http, "control-chars-01", "hi", name="Deniz")
    assert (await http.post(f"/api/conversations/{cid}/takeover", headers=AYSE)).status == 202
    for text in ("\x00\x07", "\x0c \x1b"):
        r = await http.post(f"/api/conversations/{cid}/messages", json={"text": text}, headers=AYSE)
        assert r.status == 400, text
    sent = "Dear\x00 Deniz,\x0c\nyour order\u2028 ships\ttoday 👋🏽 مرحبا"
    assert (await http.post(f"/api/conversations/{cid}/messages", json={"text": sent}, headers=AYSE)).status == 202
    conv = await _until(http, cid, lambda c: any(e["role"] == "human" for e in c["transcript"]))
    assert [e["text"] for e in conv["transcript"] if e["role"] == "human"] == [
        "Dear Deniz,\nyour order ships\ttoday 👋🏽 مرحبا"]


async def test_handing_back_a_conversation_whose_bot_has_stopped_says_no_bot_is_running(
        http: ClientSession) -> None:
    """The run has ended (stopped here; finished alike) and the person hands back "where it was":
    no bot answers the customer, so the line says so; it used to say "the bot is back"."""
    cid = await chat(http, "release-norun-01", "hi", name="Deniz")
    assert (await http.post(f"/api/conversations/{cid}/stop", headers=AYSE)).status == 202
    assert (await http.post(f"/api/conversations/{cid}/takeover", headers=AYSE)).status == 202
    assert (await http.post(f"/api/conversations/{cid}/release", json={}, headers=AYSE)).status == 202
    conv = await _until(http, cid, lambda c: any(e.get("event") == "release" for e in c["transcript"]))
    assert [e["text"] for e in conv["transcript"] if e.get("event") == "release"] == [
        "no bot is running, handed back by Ayşe Kaya"]


async def test_two_hand_backs_of_one_takeover_at_once_resume_the_bot_once(http: ClientSession) -> None:
    """A double click on "Hand back at hours" (or two tabs): both requests read the same claim; the
    second is deduplicated by its id. It used to resume the bot twice, its message sent twice."""
    cid = await chat(http, "double-release-01", "hi", name="Deniz")
    assert (await http.post(f"/api/conversations/{cid}/takeover", headers=AYSE)).status == 202
    results = await asyncio.gather(*(http.post(f"/api/conversations/{cid}/release", json={"step": "hours"},
                                               headers=AYSE) for _ in range(2)))
    assert [r.status for r in results] == [202, 202]
    await chat(http, "double-release-01", "thanks")  # in order after both: once it is in, they were handled
    conv = await _until(http, cid, lambda c: any(e.get("text") == "thanks" for e in c["transcript"]))
    assert len([e for e in conv["transcript"] if e.get("event") == "release"]) == 1
    assert len([t for t in _bot_texts(conv) if "showroom" in t]) == 1


async def test_a_hand_back_after_the_first_one_is_refused_and_a_newer_claim_survives_a_stale_one(
        http: ClientSession, redis: Redis) -> None:
    """A second tab's hand-back sent after the first one had finished found no claim: nothing
    deduplicated it and the bot ran the step again (its message sent twice). And a stale
    hand-back's delete removed whatever claim the key held, a newer takeover's too."""
    cid = await chat(http, "late-release-01", "hi", name="Deniz")
    assert (await http.post(f"/api/conversations/{cid}/takeover", headers=AYSE)).status == 202
    assert (await http.post(f"/api/conversations/{cid}/release", json={"step": "hours"}, headers=AYSE)).status == 202
    await _until(http, cid, lambda c: any(e.get("event") == "release" for e in c["transcript"]))
    late = await http.post(f"/api/conversations/{cid}/release", json={"step": "hours"}, headers=AYSE)
    assert late.status == 409 and (await late.json())["error"]["code"] == "not_taken"
    await chat(http, "late-release-01", "thanks")
    conv = await _until(http, cid, lambda c: any(e.get("text") == "thanks" for e in c["transcript"]))
    assert len([t for t in _bot_texts(conv) if "showroom" in t]) == 1
    # a newer takeover's claim is not removed by a hand-back that read an older one
    assert (await http.post(f"/api/conversations/{cid}/takeover", headers=AYSE)).status == 202
    key = convindex.claim_key(cid)
    newer = await redis.get(key)
    assert newer is not None
    assert await redis.eval(_DROP_CLAIM, 1, key, "Ayse\x1fan-older-claim") == 0
    assert await redis.get(key) == newer
