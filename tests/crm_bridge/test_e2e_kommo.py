"""End to end: a qualification flow on the live chat drives a (fake) Kommo account.

The server runs with ``[crm] backend = "kommo"`` pointed at the fake Kommo API on loopback;
the demo live chat account greets with ``flows/kommo_qualify.json``. The customer's answers set
a custom field, tags, a task and a stage in Kommo. Then Kommo goes away — first answering 503,
then refusing connections — while the customer keeps writing: the bot answers every message
at once, the notes wait in the CRM outbox, and when Kommo is back every note arrives, in order,
exactly once. Finally Kommo's own webhook (a stage change) reaches the conversation.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.config import load_config
from bot.server.app import create_app
from bot.server.keys import SERVICES
from tests.crm_bridge.fakes.kommo import TOKEN, FakeKommo, wait_until
from tests.server.conftest import NO_AUTOMATIONS

FLOWS = Path(__file__).parent / "flows"
SESSION = "e2e-kommo-session"
WEBHOOK_SECRET = "kommo-hook-secret"


@pytest.fixture
async def fake() -> AsyncIterator[FakeKommo]:
    async with FakeKommo(rate_limit=7) as fake:
        yield fake


@pytest.fixture
async def server(redis: Redis, redis_url: str, fake: FakeKommo) -> AsyncIterator[TestServer]:
    config = load_config(env={}, overrides={
        "redis_url": redis_url, "flows_dir": str(FLOWS), "automations_dir": str(NO_AUTOMATIONS), "admin_token": "admin",
        "timer_poll_interval": 0.05,
        "accounts": {"demo": {"channel": "livechat", "greeting_bot": "kommo_qualify"}},
        "crm": {"backend": "kommo", "base_url": fake.url, "token": TOKEN, "account": "acme",
                "webhook_secret": WEBHOOK_SECRET, "timeout": 2.0, "retry_base": 0.2, "retry_max": 1.0},
    })
    srv = TestServer(create_app(config))
    await srv.start_server()
    try:
        yield srv
    finally:
        await srv.close()


@pytest.fixture
async def http(server: TestServer) -> AsyncIterator[ClientSession]:
    async with ClientSession(base_url=str(server.make_url(""))) as session:
        yield session


class Chat:
    def __init__(self, http: ClientSession) -> None:
        self.http = http
        self.n = 0
        self.seen: list[str] = []
        self.after = 0

    async def bot_lines(self) -> list[str]:
        r = await self.http.get("/chat/demo/messages", params={"session": SESSION, "after": str(self.after)})
        assert r.status == 200
        body = await r.json()
        self.after = body["last"]
        self.seen += [m["text"] for m in body["messages"] if m["role"] == "bot"]
        return self.seen

    async def say(self, text: str, expect: str, *, within: float = 5.0) -> float:
        """Send a message and wait (bounded) for the bot's reply containing ``expect``; seconds taken."""
        self.n += 1
        start = time.monotonic()
        r = await self.http.post("/chat/demo/messages", json={"session": SESSION, "text": text,
                                                              "client_msg_id": f"m{self.n}"})
        assert r.status == 202, await r.text()

        async def replied() -> bool:
            return any(expect in line for line in await self.bot_lines())
        await wait_until(replied, within, f"the bot to answer {text!r} with {expect!r}")
        return time.monotonic() - start


def _notes_written(fake: FakeKommo) -> list[str]:
    return [item["params"]["text"] for method, path, body in fake.writes if path.endswith("/notes")
            for item in body]


async def test_a_qualification_flow_drives_kommo_and_survives_an_outage(
        server: TestServer, http: ClientSession, fake: FakeKommo) -> None:
    services = server.app[SERVICES]
    crm_outbox = services.crm_outbox
    assert crm_outbox is not None  # the Kommo backend queues what it cannot write yet
    chat = Chat(http)

    # -- qualification: one field, two tags, a task and a stage land in Kommo
    await chat.say("hello", "What budget")
    assert len(fake.leads) == 1 and len(fake.contacts) == 1
    lead_id = next(iter(fake.leads))
    assert fake.stage_of(lead_id) == ("Sales", "New")
    await chat.say("5000 USD", "Thanks!")
    assert fake.field_value("leads", lead_id, "Budget") == "5000 USD"
    assert sorted(fake.tag_names("leads", lead_id)) == ["chatbot", "qualified"]
    [task] = fake.lead_tasks(lead_id)
    assert task["text"] == "Call about the 5000 USD budget" and task["task_type_id"] == 1
    assert task["responsible_user_id"] == fake.leads[lead_id]["responsible_user_id"]
    assert abs(task["complete_till"] - (time.time() + 86400)) < 120
    assert fake.stage_of(lead_id) == ("Sales", "Qualified")
    tag_patches = [w for w in fake.writes if w[:2] == ("PATCH", "/api/v4/leads")]
    assert len(tag_patches) == 1 and tag_patches[0][2][0]["tags_to_add"] == [{"name": "qualified"}, {"name": "chatbot"}]
    assert fake.rate_limited == 0

    # -- Kommo answers 503, then refuses connections: the bot keeps answering at once
    fake.down(503)
    latencies = [await chat.say("note 1", "Noted: note 1"), await chat.say("note 2", "Noted: note 2")]
    fake.up()
    await fake.stop_listening()
    latencies += [await chat.say("note 3", "Noted: note 3"), await chat.say("note 4", "Noted: note 4")]
    assert max(latencies) < 1.5, latencies  # never waited for Kommo (whose timeout here is 2 s)
    assert _notes_written(fake) == [] and fake.lead_notes(lead_id) == []
    assert any(r.status == 503 and r.path.endswith("/notes") for r in fake.requests)  # tried, and failed
    waiting = [item["command"]["text"] for item in await crm_outbox.pending(str(lead_id))]
    assert waiting == ["note 1", "note 2", "note 3", "note 4"]
    assert "Sorry, our CRM refused that." not in chat.seen

    # -- Kommo is back: every note arrives, in order, once; a new note queues behind them
    await fake.start_listening()
    await chat.say("note 5", "Noted: note 5")

    async def drained() -> bool:
        return not await crm_outbox.pending(str(lead_id)) and await crm_outbox.depth() == 0
    await wait_until(drained, 15.0, "the CRM outbox to drain")
    assert fake.lead_notes(lead_id) == ["note 1", "note 2", "note 3", "note 4", "note 5"]
    assert _notes_written(fake) == ["note 1", "note 2", "note 3", "note 4", "note 5"]
    assert fake.rate_limited == 0
    # the commands of the qualification were not repeated by the recovery
    assert len([w for w in fake.writes if w[1] == "/api/v4/tasks"]) == 1
    assert len([w for w in fake.writes if w[1] == f"/api/v4/leads/{lead_id}"]) == 2  # Budget, stage

    # -- Kommo's webhook (the lead won in Kommo) reaches the conversation, once
    body = (f"leads[status][0][id]={lead_id}&leads[status][0][status_id]=142&leads[status][0][pipeline_id]=1001"
            f"&leads[status][0][old_status_id]={fake.leads[lead_id]['status_id']}"
            f"&leads[status][0][last_modified]=1700000000&account[subdomain]=acme")
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    before = services.metrics.duplicates._value.get()
    r = await http.post(f"/webhooks/kommo/acme?secret={WEBHOOK_SECRET}", data=body, headers=headers)
    assert r.status == 200 and await r.json() == {"ok": True, "events": 1, "delivered": 1}
    r = await http.post(f"/webhooks/kommo/acme?secret={WEBHOOK_SECRET}", data=body, headers=headers)
    assert r.status == 200
    assert services.metrics.duplicates._value.get() == before + 1  # Kommo's redelivery is handled once
    r = await http.post("/webhooks/kommo/acme?secret=wrong", data=body, headers=headers)
    assert r.status == 401
