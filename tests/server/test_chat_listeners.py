"""A customer's messages reach whatever listens to chat events, not only rules on them
(spec: chat events are events like any other): a trigger and a scoring entry on one, an ``idle``
rule (the lead is not idle while the customer writes), and a process waiting for the contact's
reply. Over real HTTP and Redis, through the live chat."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from bot.runtime.processes import process_cid
from tests.live_app import App, running_app
from tests.waiting import wait_for

BASE: dict[str, Any] = {"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales"}
#: A process that waits for the contact's next message (by name), then ends.
HEARD: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "heard", "start": "wait",
    "steps": {"wait": {"type": "pause", "until": [{"on": "event", "event": "chat.message", "next": "seen"},
                                                  {"on": "timer", "after": "30d", "next": "seen"}]},
              "seen": {"type": "action", "actions": [{"do": "set_variable", "name": "said", "value": "yes"}]}},
}


async def _refs(app: App, cid: str) -> tuple[str, str]:
    """The conversation's (lead, contact), once its CRM records exist."""
    async def found() -> tuple[str, str] | None:
        meta = await app.services.store.meta(cid)
        lead, contact = meta.get("lead_id"), meta.get("contact_id")
        return (lead, contact) if lead and contact else None

    refs: tuple[str, str] = await wait_for(found, what="the conversation's lead and contact")
    return refs


async def _two_messages(app: App, doc: dict[str, Any], session: str) -> str:
    """``doc`` stored, then two customer messages in a new live chat session; its lead."""
    await app.api("PUT", "/api/automations/sales", 201, json=doc)
    cid, _ = await app.say(session, "hello")
    lead, _ = await _refs(app, cid)
    await app.say(session, "still here")
    return lead


async def _chat_events(app: App, lead: str) -> list[str]:
    body = await app.api("GET", f"/api/leads/{lead}/events")
    return [e["type"] for e in body["events"]
            if e.get("role") == "event" and str(e.get("type", "")).startswith("chat.")]


async def test_a_trigger_and_scoring_on_chat_events_act_with_no_rule_on_them(redis: Redis, redis_url: str) -> None:
    doc = {**BASE, "triggers": [{"id": "talked", "stage": "Contacted", "on": "chat.first_message"}],
           "scoring": [{"on": "chat.message", "add": 3}]}
    async with running_app(redis_url) as app:
        await app.api("PUT", "/api/automations/sales", 201, json=doc)
        cid, _ = await app.say("triggersession1", "hello")
        lead, contact = await _refs(app, cid)

        async def stage() -> str:
            return str((await app.api("GET", f"/api/crm/leads/{lead}"))["stage"])

        async def score() -> float:
            return float((await app.api("GET", f"/api/crm/contacts/{contact}")).get("score") or 0)

        assert await wait_for(lambda: _is(stage, "Contacted"), what="the trigger's move")
        assert await wait_for(lambda: _is(score, 3), what="the first message scored")
        await app.say("triggersession1", "and again")
        assert await wait_for(lambda: _is(score, 6), what="the second message scored")


async def test_an_idle_rule_hears_the_customers_messages(redis: Redis, redis_url: str) -> None:
    doc = {**BASE, "rules": [{"id": "stale", "stage": "Incoming", "on": ["idle"], "after": "3d",
                              "do": {"actions": [{"do": "tags", "add": ["stale"]}]}}]}
    async with running_app(redis_url) as app:
        lead = await _two_messages(app, doc, "idlesession001")

        async def events() -> list[str] | None:
            found = await _chat_events(app, lead)
            return found if len(found) == 3 else None

        assert sorted(await wait_for(events, what="the messages as lead events")) == [
            "chat.first_message", "chat.message", "chat.message"]


async def test_nothing_listening_queues_nothing(redis: Redis, redis_url: str) -> None:
    doc = {**BASE, "scoring": [{"on": "email.opened", "add": 2}],
           "rules": [{"id": "vip", "stage": "Incoming", "on": ["moved_in"],
                      "do": {"actions": [{"do": "tags", "add": ["vip"]}]}}]}
    async with running_app(redis_url) as app:
        lead = await _two_messages(app, doc, "quietsession02")
        await app.services.leads.idle()
        assert await _chat_events(app, lead) == []


async def test_a_process_waiting_for_the_contacts_message_hears_it(redis: Redis, redis_url: str) -> None:
    async with running_app(redis_url) as app:
        await app.api("PUT", "/api/bots/heard", 201, json=HEARD)
        cid, _ = await app.say("processsession", "hello")
        _, contact = await _refs(app, cid)
        await app.api("POST", "/api/processes/heard/contacts", 202, json={"contact": {"id": contact}})

        async def status() -> str:
            return (await app.services.store.meta(process_cid("heard", contact))).get("run_status", "")

        assert await wait_for(lambda: _is(status, "waiting"), what="the process waits")
        await app.say("processsession", "here is my answer")
        assert await wait_for(lambda: _is(status, "finished"), what="the process heard the message")
        state = await app.api("GET", f"/api/conversations/{process_cid('heard', contact)}")
        assert (state.get("run") or {}).get("variables", {}).get("said") == "yes", state


async def _is(read: Any, want: object) -> bool:
    return bool(await read() == want)
