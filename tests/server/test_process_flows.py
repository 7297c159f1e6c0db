"""Processes end to end (docs/processes.md): a flow started for a contact through the API, a rule
or a flow's action, in the contact's process conversation, on a real server with real Redis and
a local SMTP server: waits, e-mail, score, lists, the unsubscribe link, notify, end_process, a
person stopping it, lead events reaching it, batches as resumable jobs, and hostile input."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.runtime.processes import process_cid
from bot.store import dedupe
from tests.live_app import App, running_app
from tests.outward.smtp import Inbox, smtp  # noqa: F401  (the local mail server fixture)
from tests.waiting import wait_for

#: The issue's abandoned cart, short: wait, e-mail (+5 score, a list), wait, tell sales, end.
CART: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "cart", "name": "Abandoned cart", "start": "wait_1h",
    "steps": {
        "wait_1h": {"type": "pause", "until": [{"on": "timer", "after": "1s", "next": "mail"}]},
        "mail": {"type": "action", "actions": [
            {"do": "send_email", "template": {"subject": "Your cart", "body": "Hi {{ contact.name }}, it waits."}},
            {"do": "score", "add": 5},
            {"do": "lists", "subscribe": ["cart_reminders"]}], "next": "wait_1d", "failed": "no_mail"},
        "no_mail": {"type": "action", "actions": [{"do": "set_variable", "name": "mailed", "value": "no"}],
                    "next": "wait_1d"},
        "wait_1d": {"type": "pause", "until": [{"on": "timer", "after": "1s", "next": "tell"}]},
        "tell": {"type": "action", "actions": [
            {"do": "notify", "to": ["sales@shop.example"], "subject": "Cart of {{ contact.name }}",
             "text": "{{ contact.name }} left a cart (score {{ contact.score }})."},
            {"do": "end_process"},
            {"do": "add_note", "text": "never reached"}]},
    },
}
#: Waits a long time: for stopping and listing.
SLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "slow", "start": "wait",
    "steps": {"wait": {"type": "pause", "until": [{"on": "timer", "after": "30d", "next": "bye"}]},
              "bye": {"type": "stop"}},
}
#: A chat flow that starts a process for its own contact.
STARTER: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "demo", "start": "go",
    "steps": {"go": {"type": "action", "actions": [{"do": "start_process", "process": "slow"}], "next": "ok",
                     "failed": "ko"},
              "ok": {"type": "message", "text": "started {{ vars.mailed | default('') }}", "next": "end"},
              "ko": {"type": "message", "text": "failed"},
              "end": {"type": "stop"}},
}


def _config(port: int) -> dict[str, Any]:
    return {"smtp": {"host": "127.0.0.1", "port": port, "from": "bot@shop.example", "starttls": False,
                     "timeout": 10}}


async def _put(app: App, flow: dict[str, Any]) -> None:
    await app.api("PUT", f"/api/bots/{flow['id']}", 201, json=flow)


async def _contact(app: App, name: str = "Ann", email: str = "ann@example.com") -> str:
    body = await app.api("POST", "/api/crm/contacts", 201, json={"name": name, "email": email})
    return str(body["id"])


async def _status(app: App, process: str, contact: str) -> str:
    return (await app.services.store.meta(process_cid(process, contact))).get("run_status", "")


async def _until(app: App, check: Any, what: str) -> Any:
    """Wait (the server's own worker fires the timers) until ``check`` holds."""
    return await wait_for(check, timeout=20, what=what)


# ---------------------------------------------------------------------------- the worked example

async def test_the_abandoned_cart_runs_for_a_contact_started_through_the_api(
        redis: Redis, redis_url: str, smtp: tuple[int, Inbox]) -> None:  # noqa: F811
    port, inbox = smtp
    async with running_app(redis_url, **_config(port)) as app:
        await _put(app, CART)
        contact = await _contact(app)
        body = await app.api("POST", "/api/processes/cart/contacts", 202, json={"contact": {"id": contact}})
        cid = process_cid("cart", contact)
        assert body["conversation"] == cid and body["status"] == "started" and body["contact"] == contact
        assert (await app.services.store.meta(cid))["channel"] == "process"
        # nothing before the first wait is over
        assert inbox.messages == [] and await _status(app, "cart", contact) == "waiting"

        await _until(app, lambda: inbox.messages, "the cart e-mail")
        (mail,) = inbox.messages
        assert mail["To"] == "ann@example.com" and mail["Subject"] == "Your cart"
        assert "Hi Ann, it waits." in mail.get_content()

        async def scored() -> bool:
            return bool((await app.api("GET", f"/api/crm/contacts/{contact}")).get("score") == 5)
        await wait_for(scored, what="score +5")
        await _until(app, lambda: len(inbox.messages) == 2, "the notification to sales")
        note = inbox.messages[1]
        assert note["To"] == "sales@shop.example" and note["Subject"] == "Cart of Ann"
        assert "Ann left a cart (score 5)." in note.get_content()
        async def ended() -> bool:
            return await _status(app, "cart", contact) == "finished"
        await wait_for(ended, what="the run to end")  # at end_process: the note after it was never added
        lead = body["lead"]
        assert not [n for n in (await app.api("GET", f"/api/crm/leads/{lead}"))["notes"]
                    if "never reached" in str(n)]
        listing = await app.api("GET", f"/api/contacts/{contact}/processes")
        assert [(p["process"], p["status"], p["active"]) for p in listing["processes"]] == [("cart", "finished",
                                                                                            False)]
        lists = await app.services.redis.hgetall(f"sb:lists:{{contact:{contact}}}")
        assert set(lists) == {b"cart_reminders"} and lists[b"cart_reminders"].startswith(b"subscribed:")


async def test_the_unsubscribe_link_feeds_the_email_list_and_processes_send_no_more_email(
        redis: Redis, redis_url: str, smtp: tuple[int, Inbox]) -> None:  # noqa: F811
    port, inbox = smtp
    async with running_app(redis_url, **_config(port)) as app:
        await _put(app, CART)
        contact = await _contact(app)
        await app.api("POST", "/api/processes/cart/contacts", 202, json={"contact": {"id": contact}})
        await _until(app, lambda: inbox.messages, "the first e-mail")
        link = re.search(r"<(http[^>]+/unsubscribe/[^>]+)>", str(inbox.messages[0]["List-Unsubscribe"]))
        assert link is not None
        async with app.http.post(link.group(1).removeprefix(app.url)) as r:
            assert r.status == 200
        lists = await app.services.redis.hgetall(f"sb:lists:{{contact:{contact}}}")
        assert lists[b"email"].startswith(b"unsubscribed:")
        async def ended() -> bool:
            return await _status(app, "cart", contact) == "finished"
        await _until(app, ended, "the first run to end")
        await wait_for(lambda: len(inbox.messages) == 2, what="the first run's notification")

        # again: the e-mail step fails (its failed branch), the notification to the team still goes
        await app.api("POST", "/api/processes/cart/contacts", 202, json={"contact": {"id": contact}})
        await _until(app, lambda: len(inbox.messages) == 3, "the second run's notification")
        assert inbox.messages[2]["To"] == "sales@shop.example"
        assert [m["To"] for m in inbox.messages].count("ann@example.com") == 1


# ---------------------------------------------------------------------------- who starts processes

async def test_a_rule_starts_a_process_and_a_flow_action_starts_one(
        redis: Redis, redis_url: str, smtp: tuple[int, Inbox]) -> None:  # noqa: F811
    port, _ = smtp
    doc = {"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales",
           "rules": [{"id": "cart", "stage": "Incoming", "on": ["created"], "do": {"start_process": "slow"}}]}
    async with running_app(redis_url, **_config(port)) as app:
        await _put(app, SLOW)
        await app.api("PUT", "/api/automations/sales", 201, json=doc)
        contact = await _contact(app)
        lead = await app.api("POST", "/api/crm/leads", 201, json={"name": "Deal", "contact_id": contact})
        await wait_for(lambda: _status(app, "slow", contact), what="the rule's process")
        assert await _status(app, "slow", contact) == "waiting"
        await app.services.leads.idle()
        history = (await app.api("GET", f"/api/leads/{lead['id']}/events"))["events"]
        assert [e["outcome"] for e in history if e.get("rule") == "cart"] == ["fired", "acted", "process_started"]

        # the chat flow's own action: its contact is already in "slow", so it is not started twice
        await app.put_flow(STARTER["steps"], "go")
        cid, texts = await app.say("session-1", "hi")
        assert texts == ["started "]
        chat_contact = (await app.services.store.meta(cid))["contact_id"]
        assert await _status(app, "slow", chat_contact) == "waiting"
        listing = await app.api("GET", f"/api/contacts/{chat_contact}/processes")
        assert [p["process"] for p in listing["processes"]] == ["slow"]


async def test_a_process_runs_once_per_contact_and_a_person_stops_it(
        redis: Redis, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="salesbot")  # as salesbot serve logs (a bad extra key was a 500)
    async with running_app(redis_url) as app:
        await _put(app, SLOW)
        await _put(app, {**SLOW, "id": "other"})
        contact = await _contact(app)
        first = await app.api("POST", "/api/processes/slow/contacts", 202, json={"contact": {"id": contact}})
        again = await app.api("POST", "/api/processes/slow/contacts", 202, json={"contact": {"id": contact}})
        assert (first["status"], again["status"]) == ("started", "already_running")
        await app.api("POST", "/api/processes/other/contacts", 202, json={"contact": {"email": "ann@example.com"}})
        listing = (await app.api("GET", f"/api/contacts/{contact}/processes"))["processes"]
        assert sorted((p["process"], p["status"]) for p in listing) == [("other", "waiting"), ("slow", "waiting")]

        stopped = await app.api("POST", f"/api/contacts/{contact}/processes/slow/stop")
        assert stopped == {"process": "slow", "contact": contact, "stopped": True}
        assert await _status(app, "slow", contact) == "stopped"
        assert await _status(app, "other", contact) == "waiting"
        # the wait's timer is gone with the run; a second stop is a 409
        meta = await app.services.store.meta(process_cid("slow", contact))
        assert meta["run_status"] == "stopped"
        await app.api("POST", f"/api/contacts/{contact}/processes/slow/stop", 409)
    assert [r.getMessage() for r in caplog.records if r.name == "salesbot.processes"] == [
        "process.started", "process.started", "process.stopped"]


async def test_lead_events_reach_the_contacts_active_processes_once(redis: Redis, redis_url: str) -> None:
    async with running_app(redis_url) as app:
        await _put(app, SLOW)
        contact = await _contact(app)
        lead = await app.api("POST", "/api/crm/leads", 201, json={"name": "Deal", "contact_id": contact})
        await app.api("POST", "/api/processes/slow/contacts", 202, json={"contact": {"id": contact}})
        event = {"id": "evt-paid-1", "type": "order.paid", "lead": {"id": str(lead["id"])},
                 "data": {"order": "A-1"}}
        for _ in range(2):  # the second is the same event: not handled twice
            await app.api("POST", "/api/events", 202, json=event)
        await app.services.leads.idle()
        seen = process_cid("slow", contact)
        assert await dedupe.seen_at(app.services.redis, seen, f"lead-event:{lead['id']}:evt-paid-1") is not None
        # a stopped process hears nothing more
        await app.api("POST", f"/api/contacts/{contact}/processes/slow/stop")
        await app.api("POST", "/api/events", 202, json={**event, "id": "evt-paid-2"})
        await app.services.leads.idle()
        assert await dedupe.seen_at(app.services.redis, seen, f"lead-event:{lead['id']}:evt-paid-2") is None


#: A split test that ends at once: an order paid later still counts for the path taken.
OFFER: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "offer", "start": "split",
    "goals": {"purchased": {"on": "order.paid", "next": "thanks"}},
    "steps": {"split": {"type": "split", "goal": "purchased",
                        "paths": [{"id": "a", "weight": 50, "next": "done"},
                                  {"id": "b", "weight": 50, "next": "done"}]},
              "done": {"type": "stop"},
              "thanks": {"type": "stop"}},
}
#: Waits for a tag on its lead: an event of the CRM's own, which processes do not hear unless a
#: flow listens to its type.
TAGGED: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "tagged", "start": "wait",
    "steps": {"wait": {"type": "pause", "until": [{"on": "event", "event": "lead.tag_added", "next": "seen"},
                                                  {"on": "timer", "after": "30d", "next": "seen"}]},
              "seen": {"type": "action", "actions": [{"do": "set_variable", "name": "tag", "value": "yes"}]}},
}


async def test_a_finished_process_still_counts_its_goal_for_the_path_it_took(redis: Redis, redis_url: str) -> None:
    async with running_app(redis_url) as app:
        await _put(app, OFFER)
        contact = await _contact(app)
        lead = await app.api("POST", "/api/crm/leads", 201, json={"name": "Deal", "contact_id": contact})
        await app.api("POST", "/api/processes/offer/contacts", 202, json={"contact": {"id": contact}})
        await _until(app, lambda: _finished(app, "offer", contact), "the process finished")
        await app.api("POST", "/api/events", 202, json={"id": "evt-paid", "type": "order.paid",
                                                        "lead": {"id": str(lead["id"])}, "data": {}})
        await app.services.leads.idle()

        async def goals() -> int:
            (split,) = (await app.api("GET", "/api/bots/offer/splits"))["splits"]
            return sum(int(p["goals"]) for p in split["paths"])

        assert await _until(app, goals, "the goal counted") == 1
        assert await _status(app, "offer", contact) == "finished"  # counted, not moved


async def _finished(app: App, process: str, contact: str) -> bool:
    return await _status(app, process, contact) == "finished"


async def test_a_process_waiting_for_a_crm_event_hears_it(redis: Redis, redis_url: str) -> None:
    async with running_app(redis_url) as app:
        await _put(app, TAGGED)
        contact = await _contact(app)
        lead = await app.api("POST", "/api/crm/leads", 201, json={"name": "Deal", "contact_id": contact})
        await app.api("POST", "/api/processes/tagged/contacts", 202, json={"contact": {"id": contact}})
        await _until(app, lambda: _waiting(app, "tagged", contact), "the process waits")
        await app.api("PATCH", f"/api/crm/leads/{lead['id']}", 200, json={"tags": ["vip"]})
        await app.services.leads.idle()
        assert await _until(app, lambda: _finished(app, "tagged", contact), "the tag heard")


async def _waiting(app: App, process: str, contact: str) -> bool:
    return await _status(app, process, contact) == "waiting"


# ---------------------------------------------------------------------------- batches

async def test_a_batch_is_a_job_with_progress_and_each_contact_starts_once(
        redis: Redis, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="salesbot")
    async with running_app(redis_url) as app:
        await _put(app, SLOW)
        contacts = [await _contact(app, f"C{i}", f"c{i}@example.com") for i in range(5)]
        jobs = app.services.process_jobs
        assert jobs is not None
        jobs.page = 2  # three pages
        who = [{"id": c} for c in contacts] + [{"email": "nobody@example.com"}, {"id": contacts[0]}]
        body = await app.api("POST", "/api/processes/slow/contacts", 202, json={"contacts": who})
        assert body["total"] == 7
        await jobs.idle()
        job = await app.api("GET", f"/api/processes/slow/jobs/{body['job']}")
        assert (job["state"], job["total"], job["done"]) == ("finished", 7, 7)
        assert (job["started"], job["skipped"], job["failed"]) == (5, 1, 1)
        assert job["errors"] == ["5: no contact with e-mail 'nobody@example.com'"]
        assert [j["id"] for j in (await app.api("GET", "/api/processes/slow/jobs"))["jobs"]] == [body["job"]]
        for c in contacts:
            assert await _status(app, "slow", c) == "waiting"


async def test_a_job_left_by_a_dead_process_is_resumed_from_its_cursor(redis: Redis, redis_url: str) -> None:
    async with running_app(redis_url) as app:
        await _put(app, SLOW)
        contacts = [await _contact(app, f"C{i}", f"c{i}@example.com") for i in range(4)]
        jobs = app.services.process_jobs
        assert jobs is not None
        jobs.local = False  # stored only, as a web-only process does
        jobs.page = 2
        body = await app.api("POST", "/api/processes/slow/contacts", 202, json={"contacts": [{"id": c}
                                                                                             for c in contacts]})
        key = f"sb:processes:{{slow}}:job:{body['job']}"
        # a runner that died after its first page: that page's contacts started, its cursor saved
        for n, c in enumerate(contacts[:2]):
            contact = await app.services.processes.contact(contact_id=c)  # type: ignore[union-attr]
            await app.services.processes.start("slow", contact, key=f"job:{body['job']}:{n}")  # type: ignore[union-attr]
        await app.services.redis.hset(key, mapping={"cursor": 1, "started": 1})  # saved after contact 0 only
        assert await jobs.resume() == 1
        await jobs.idle()
        job = await app.api("GET", f"/api/processes/slow/jobs/{body['job']}")
        # contact 1 was started by the dead runner under the same key: a duplicate, not a second start
        assert (job["state"], job["done"], job["started"], job["skipped"]) == ("finished", 4, 3, 1)
        assert await jobs.resume() == 0


# ---------------------------------------------------------------------------- hostile input

@pytest.mark.parametrize(("body", "field"), [
    ({}, "contact"),
    ([], ""),
    ({"contact": {"id": "a\x00b"}}, "contact.id"),
    ({"contact": {"id": "x" * 201}}, "contact.id"),
    ({"contact": {"name": "Ann"}}, "contact"),
    ({"contact": {"id": "1"}, "contacts": [{"id": "1"}]}, "contact"),
    ({"contacts": []}, "contacts"),
    ({"contacts": [{"id": "1"}] * 10_001}, "contacts"),
    ({"contacts": [{"id": "1"}, {"phone": 5.5}]}, "contacts[1].phone"),
    ({"contacts": [{"id": "1"}], "lead": "2"}, "lead"),
    ({"contact": {"id": "1"}, "variables": "x"}, "variables"),
    ({"contact": {"id": "1"}, "variables": {"big": "x" * 20_000}}, "variables"),
    ({"contact": {"id": "1"}, "surprise": 1}, "surprise"),
])
async def test_bad_bodies_are_400s_naming_the_field(redis: Redis, redis_url: str, body: Any, field: str) -> None:
    async with running_app(redis_url) as app:
        await _put(app, SLOW)
        r = await app.http.post("/api/processes/slow/contacts", json=body,
                                headers={"Authorization": "Bearer test-admin-token"})
        answer = await r.json()
        assert r.status == 400, answer
        assert answer["error"]["code"] == "bad_request"
        assert answer["error"].get("details", [{"field": ""}])[0]["field"] == field


async def test_hostile_requests_get_4xx_never_5xx(redis: Redis, redis_url: str) -> None:
    admin = {"Authorization": "Bearer test-admin-token"}
    support = {"Authorization": "Bearer support-token-1"}
    async with running_app(redis_url, tokens=[{"token": "support-token-1", "role": "support", "name": "sam"}]) as app:
        await _put(app, SLOW)
        contact = await _contact(app)
        cases: list[tuple[str, str, dict[str, str], Any, int]] = [
            ("POST", "/api/processes/slow/contacts", {}, {"contact": {"id": contact}}, 401),
            ("POST", "/api/processes/slow/contacts", support, {"contact": {"id": "1"}}, 403),
            ("POST", "/api/processes/Bad%20Id/contacts", admin, {"contact": {"id": contact}}, 400),
            ("POST", "/api/processes/nope/contacts", admin, {"contact": {"id": contact}}, 404),
            ("POST", "/api/processes/slow/contacts", admin, {"contact": {"id": "404404"}}, 404),
            ("POST", "/api/processes/slow/contacts", admin, {"contact": {"id": contact}, "lead": "999999"}, 404),
            ("GET", "/api/processes/slow/jobs/not-a-job", admin, None, 404),
            ("GET", "/api/processes/slow/jobs/0123456789abcdef", admin, None, 404),
            ("GET", "/api/contacts/%01/processes", admin, None, 400),
            ("GET", f"/api/contacts/{contact}/processes", {}, None, 401),
            ("POST", f"/api/contacts/{contact}/processes/slow/stop", admin, None, 409),
            ("POST", f"/api/contacts/{contact}/processes/BAD/stop", admin, None, 400),
        ]
        for method, path, headers, body, status in cases:
            r = await app.http.request(method, path, json=body, headers=headers)
            assert r.status == status, (method, path, await r.text())
            assert "error" in await r.json()
        for raw in (b"{", b'{"contact": {"id": NaN}}', b"[" * 5000 + b"]" * 5000, b'{"contact": {"id": 1e999}}'):
            r = await app.http.post("/api/processes/slow/contacts", data=raw,
                                    headers={**admin, "Content-Type": "application/json"})
            assert r.status == 400, raw[:20]
        # a support person may list and stop
        r = await app.http.get(f"/api/contacts/{contact}/processes", headers=support)
        assert r.status == 200 and (await r.json())["processes"] == []


async def test_a_flood_of_token_guesses_on_the_process_routes_is_429(redis: Redis, redis_url: str) -> None:
    limits = {"auth_failures_per_ip": {"per_minute": 0.001, "burst": 5}}  # no refill within the test
    async with running_app(redis_url, limits=limits) as app:
        statuses = []
        for n in range(8):
            r = await app.http.post("/api/processes/slow/contacts", json={"contact": {"id": "1"}},
                                    headers={"Authorization": f"Bearer guess-{n:04d}-xxxxxxxx"})
            statuses.append(r.status)
            assert "error" in await r.json()
        assert statuses == [401] * 5 + [429] * 3
        r = await app.http.get("/api/contacts/1/processes", headers={"Authorization": "Bearer test-admin-token"})
        assert r.status == 429  # held off on every token route for a while, the right token too
