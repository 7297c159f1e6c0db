"""The bots and conversations API over real HTTP, against a real Redis."""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import ClientSession

from tests.server.conftest import ADMIN

AUTH = {"Authorization": f"Bearer {ADMIN}"}

FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "pinned", "start": "ask",
    "steps": {
        "ask": {"type": "message", "text": "v1 question", "buttons": [{"title": "Go", "next": "done"}],
                "other_answer": "done"},
        "done": {"type": "message", "text": "v1 answer"},
    },
}


def _v2() -> dict[str, Any]:
    flow = copy.deepcopy(FLOW)
    flow["steps"]["ask"]["text"] = "v2 question"
    flow["steps"]["done"]["text"] = "v2 answer"
    return flow


async def _chat(http: ClientSession, session: str, text: str, bot: str = "pinned") -> list[str]:
    r = await http.post("/api/events", json={"type": "noop"}, headers=AUTH)  # unrelated: 404 without conversation
    assert r.status == 404
    r = await http.post("/chat/demo/messages", json={"session": session, "text": text})
    assert r.status == 202
    body = await (await http.get("/chat/demo/messages", params={"session": session})).json()
    return [m["text"] for m in body["messages"] if m["role"] == "bot"]


async def test_tokens_and_roles(http: ClientSession) -> None:
    assert (await http.get("/api/bots")).status == 401
    assert (await http.get("/api/bots", headers={"Authorization": "Bearer wrong"})).status == 401
    body = await (await http.get("/api/bots", headers={"Authorization": "Bearer wrong"})).json()
    assert body["error"]["code"] == "unauthorized"
    assert (await http.get("/api/bots", headers=AUTH)).status == 200


async def test_upload_reports_every_problem_with_pointers(http: ClientSession) -> None:
    broken = copy.deepcopy(FLOW)
    broken["steps"]["ask"]["buttons"] = [{"title": str(i), "next": "don"} for i in range(14)]
    broken["steps"]["loop"] = {"type": "goto", "step": "loop"}
    r = await http.put("/api/bots/pinned", json=broken, headers=AUTH)
    assert r.status == 422
    details = (await r.json())["error"]["details"]
    pointers = {d["pointer"] for d in details}
    assert "/steps/ask/buttons" in pointers  # 14 buttons
    assert "/steps/loop/step" in pointers  # the loop
    assert (await http.put("/api/bots/other", json=FLOW, headers=AUTH)).status == 422  # id must match the URL


async def test_versions_rollback_and_running_conversations_stay_on_their_version(http: ClientSession) -> None:
    r = await http.put("/api/bots/pinned", json=FLOW, headers=AUTH)
    assert (r.status, (await r.json())["version"]) == (201, 1)
    # The demo account greets with "demo"; start our bot in a conversation through the API.
    r = await http.post("/chat/demo/messages", json={"session": "pinned-session-1", "text": "hello"})
    cid = (await r.json())["conversation"]
    assert (await http.post(f"/api/conversations/{cid}/start", json={"bot": "pinned"}, headers=AUTH)).status == 202
    r = await http.put("/api/bots/pinned", json=_v2(), headers=AUTH)
    assert (r.status, (await r.json())["version"]) == (201, 2)
    # The running conversation answers from version 1 ...
    await http.post("/chat/demo/messages", json={"session": "pinned-session-1", "text": "Go"})
    conv = await (await http.get(f"/api/conversations/{cid}", headers=AUTH)).json()
    bot_lines = [e["text"] for e in conv["transcript"] if e["role"] == "bot"]
    assert bot_lines[-2:] == ["v1 question", "v1 answer"]
    assert conv["run"]["version"] == 1
    # ... a new one starts on version 2; a rollback makes version 1 active again.
    r = await http.post("/chat/demo/messages", json={"session": "pinned-session-2", "text": "hello"})
    cid2 = (await r.json())["conversation"]
    await http.post(f"/api/conversations/{cid2}/start", json={"bot": "pinned"}, headers=AUTH)
    conv2 = await (await http.get(f"/api/conversations/{cid2}", headers=AUTH)).json()
    assert conv2["run"]["version"] == 2 and conv2["transcript"][-1]["text"] == "v2 question"
    r = await http.post("/api/bots/pinned/activate", json={"version": 1}, headers=AUTH)
    assert (await r.json()) == {"id": "pinned", "version": 1, "active": True}
    versions = await (await http.get("/api/bots/pinned/versions", headers=AUTH)).json()
    assert [(v["version"], v["active"]) for v in versions["versions"]] == [(1, True), (2, False)]
    pinned = await (await http.get("/api/bots/pinned/versions/2", headers=AUTH)).json()
    assert pinned["flow"]["steps"]["ask"]["text"] == "v2 question"
    # Uploading the same document as the newest version adds no version.
    r = await http.put("/api/bots/pinned", json=_v2(), headers=AUTH)
    assert (r.status, (await r.json())["version"]) == (200, 2)


async def test_conversation_listing_and_filters(http: ClientSession) -> None:
    for i in range(3):
        await http.post("/chat/demo/messages", json={"session": f"listing-session-{i}", "text": f"hello {i}"})
    body = await (await http.get("/api/conversations", headers=AUTH)).json()
    assert [c["last_message"] for c in body["conversations"]] == ["hello 2", "hello 1", "hello 0"]
    assert all(c["channel"] == "livechat" and c["status"] == "bot" for c in body["conversations"])
    page = await (await http.get("/api/conversations", params={"limit": "2"}, headers=AUTH)).json()
    assert len(page["conversations"]) == 2
    rest = await (await http.get("/api/conversations", params={"before": str(page["next_before"])},
                                 headers=AUTH)).json()
    assert [c["last_message"] for c in rest["conversations"]] == ["hello 0"]
    none = await (await http.get("/api/conversations", params={"status": "human"}, headers=AUTH)).json()
    assert none["conversations"] == []
    cid = body["conversations"][0]["id"]
    await http.post(f"/api/conversations/{cid}/takeover", headers=AUTH)
    human = await (await http.get("/api/conversations", params={"status": "human"}, headers=AUTH)).json()
    assert [c["id"] for c in human["conversations"]] == [cid]


async def test_malformed_live_chat_messages_are_refused(http: ClientSession) -> None:
    assert (await http.post("/chat/demo/messages", data=b"{not json")).status == 400
    assert (await http.post("/chat/demo/messages", json={"session": "short", "text": "x"})).status == 400
    assert (await http.post("/chat/demo/messages", json={"session": "okay-session-1"})).status == 400
    assert (await http.post("/chat/demo/messages",
                            json={"session": "okay-session-1", "text": "x" * 5000})).status == 400
    assert (await http.post("/chat/nope/messages", json={"session": "okay-session-1", "text": "x"})).status == 404
    body = await (await http.get("/api/conversations", headers=AUTH)).json()
    assert body["conversations"] == []  # nothing reached a conversation


async def test_duplicate_client_message_id_gets_one_reply(http: ClientSession) -> None:
    msg = {"session": "dupe-session-01", "text": "hi", "client_msg_id": "same"}
    first = await (await http.post("/chat/demo/messages", json=msg)).json()
    second = await (await http.post("/chat/demo/messages", json=msg)).json()
    assert (first["duplicate"], second["duplicate"]) == (False, True)
    body = await (await http.get("/chat/demo/messages", params={"session": "dupe-session-01"})).json()
    assert [m["role"] for m in body["messages"]] == ["user", "bot"]


async def test_metrics_and_health(http: ClientSession) -> None:
    await http.post("/chat/demo/messages", json={"session": "metrics-session", "text": "hi"})
    text = await (await http.get("/metrics")).text()
    assert 'salesbot_messages_in_total{channel="livechat"} 1.0' in text
    assert 'salesbot_messages_out_total{channel="livechat"}' in text
    assert "salesbot_timer_lateness_seconds_bucket" in text
    assert 'salesbot_queue_depth{queue="timers"} 1.0' in text  # the demo flow's no-answer timer
    assert (await (await http.get("/healthz")).json()) == {"status": "ok"}


async def test_flows_push_from_the_command_line(http: ClientSession, tmp_path: Any) -> None:
    import asyncio
    import io
    import json as _json

    from bot.cli import main

    good = tmp_path / "pinned.json"
    good.write_text(_json.dumps(FLOW))
    bad = tmp_path / "bad.json"
    bad.write_text(_json.dumps({**FLOW, "id": "bad", "start": "nowhere"}))
    base = str(http._base_url).rstrip("/")
    out = io.StringIO()
    code = await asyncio.to_thread(main, ["flows", "push", str(good), str(bad), "--server", base, "--token", ADMIN],
                                   out=out)
    assert code == 1
    lines = out.getvalue().splitlines()
    assert lines[0] == f"{good}: pinned version 1"
    assert lines[1] == f'{bad}: /start: unknown step "nowhere"'


async def test_a_burst_of_reads_beyond_the_redis_pool_waits_instead_of_failing(http: ClientSession) -> None:
    """The pool holds ``redis_max_connections`` (64): 300 concurrent transcript reads used to get
    500 ("Too many connections") from redis-py's failing pool; now they wait their turn."""
    import asyncio

    from aiohttp import TCPConnector

    r = await http.post("/chat/demo/messages", json={"session": "burst-session", "text": "hi"})
    cid = (await r.json())["conversation"]
    async with ClientSession(base_url=str(http._base_url), connector=TCPConnector(limit=0)) as wide:  # no client cap
        async def read() -> int:
            async with wide.get(f"/api/conversations/{cid}", headers=AUTH) as resp:
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(read() for _ in range(300)))
    assert statuses.count(200) == 300, sorted(set(statuses))
