"""The bots and conversations API under hostile input, with a valid admin token: flows mutated
from the shipped ones (and, when one is accepted, a live chat conversation with it), odd query
parameters on the conversation list, business events, conversation actions. Never a 5xx; the
server stays healthy (checked after each test by the ``live`` fixture)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from tests.server.conftest import FLOWS

from .live import AUTH, LiveServer, quoted
from .strategies import RAW_JSON, content_types, dump, fuzz_settings, garbage_bodies, hostile, mutated, short_text, text

TOKEN: list[tuple[str | bytes, str | bytes]] = [("Authorization", AUTH),
                                               ("Content-Type", "application/json")]
BOT = "fzbot"


def _flow(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FLOWS / f"{name}.json").read_text())
    doc["id"] = BOT
    return doc


BASE_FLOWS = [_flow(name) for name in ("demo", "welcome", "qualify", "appointment", "ab_offer")]
flows = st.sampled_from(BASE_FLOWS).flatmap(lambda doc: mutated(doc, most=4))
bot_ids = st.one_of(st.just(BOT), st.just(BOT), st.just(BOT), short_text)


@fuzz_settings(50)
@given(bot=bot_ids, body=st.one_of(st.builds(dump, flows), st.builds(dump, flows), garbage_bodies),
       words=st.one_of(st.just("hello"), text))
@example(bot=BOT, body=dump({**BASE_FLOWS[0], "x-n": RAW_JSON[3]}), words="hello")
@example(bot=BOT, body=dump({**BASE_FLOWS[0], "name": "\ud800"}), words="hello")
@example(bot=BOT, body=dump({**BASE_FLOWS[0], "start": RAW_JSON[8]}), words="hello")
def test_uploading_mutated_flows(live: LiveServer, bot: str, body: bytes, words: str) -> None:
    path = f"/api/bots/{quoted(bot)}"
    what = f"PUT {path}\nbody: {body[:600]!r} ({len(body)} bytes)"
    r = live.no_5xx(what, lambda: live.raw("PUT", path, body=body, headers=TOKEN))
    if r.status not in (200, 201):
        return
    # Accepted: it reads back, draws, and greets a live chat visitor without a 5xx.
    for read in (path, f"{path}/versions", f"{path}/graph"):
        live.no_5xx(f"{what}\nthen GET {read}", lambda read=read: live.raw("GET", read, headers=TOKEN))
    session = "fz-" + uuid.uuid4().hex[:12]
    message = dump({"session": session, "text": words})
    live.no_5xx(f"{what}\nthen POST /chat/fz/messages {message[:200]!r}",
                lambda: live.raw("POST", "/chat/fz/messages", body=message, headers=TOKEN))
    live.no_5xx(f"{what}\nthen the widget's read",
                lambda: live.raw("GET", f"/chat/fz/messages?session={session}&after=0"))


query_keys = st.sampled_from(["limit", "before", "status", "channel", "bot", "waiting", "q", "x"])
query_values = st.one_of(
    st.sampled_from(["0", "-1", "501", "nan", "inf", "-inf", "1e400", "9" * 400, "1_0", "１", "",
                     "open", "true", "*", "\\", "[", "(?i)", ".*" * 50]),
    short_text, st.sampled_from([str(v) for v in RAW_JSON[:8]]))


@fuzz_settings(50)
@given(params=st.lists(st.tuples(query_keys, query_values), max_size=5))
@example(params=[("before", "nan")])
@example(params=[("before", "inf")])
@example(params=[("limit", "1e400")])
@example(params=[("q", "\ud800")])
def test_listing_conversations(live: LiveServer, params: list[tuple[str, str]]) -> None:
    query = "&".join(f"{quoted(k)}={quoted(v)}" for k, v in params)
    live.no_5xx(f"GET /api/conversations?{query[:600]}",
                lambda: live.raw("GET", f"/api/conversations?{query}", headers=TOKEN))


crm_keys = st.sampled_from(["limit", "offset", "q", "stage", "pipeline", "tag", "x"])


@fuzz_settings(40)
@given(kind=st.sampled_from(["contacts", "leads"]),
       params=st.lists(st.tuples(crm_keys, query_values), max_size=4))
@example(kind="contacts", params=[("offset", "9223372036854775808")])
@example(kind="leads", params=[("limit", "1e400"), ("offset", "-1")])
def test_listing_crm_records(live: LiveServer, kind: str, params: list[tuple[str, str]]) -> None:
    query = "&".join(f"{quoted(k)}={quoted(v)}" for k, v in params)
    live.no_5xx(f"GET /api/crm/{kind}?{query[:600]}",
                lambda: live.raw("GET", f"/api/crm/{kind}?{query}", headers=TOKEN))


known = "livechat:demo:fuzz-events-1"
event_types = st.one_of(st.sampled_from(["order.paid", "lead.stage_changed", "custom.x", "custom.", "order.nope"]),
                        text, hostile)
whom = st.one_of(st.fixed_dictionaries({}, optional={"id": st.one_of(st.just("1"), st.just(1), short_text, hostile)}),
                 st.fixed_dictionaries({}, optional={"phone": st.one_of(st.just("+905551112233"), text, hostile),
                                                     "email": st.one_of(st.just("a@example.com"), text, hostile),
                                                     "external": st.one_of(st.just({"channel": "demo", "id": "f"}),
                                                                           hostile)}),
                 hostile)
event_docs = st.one_of(
    st.fixed_dictionaries({"type": event_types},
                          optional={"id": st.one_of(st.just("evt-1"), text, hostile), "lead": whom, "contact": whom,
                                    "at": st.one_of(st.just("2026-12-05T10:00:00Z"), text, hostile),
                                    "data": hostile}),
    hostile)


@fuzz_settings(40)
@given(body=st.one_of(st.builds(dump, event_docs), st.builds(dump, event_docs), garbage_bodies),
       content_type=content_types)
@example(body=b'{"type": "order.paid", "lead": {"id": "1"}, "data": {"v": NaN}}',
         content_type=b"application/json")
@example(body=b'{"type": "order.paid", "lead": {"id": "\\ud800"}}', content_type=b"application/json")
@example(body=b'{"type": "order.paid", "lead": {"id": 1e400}}', content_type=b"application/json")
@example(body=b'{"type": "order.paid", "at": 1e300, "lead": {"id": 1}}', content_type=b"application/json")
@example(body=b'{"type": "order.paid", "at": "9999-12-31T23:59:59-23:59", "lead": {"id": 1}}',
         content_type=b"application/json")
@example(body=b'{"type": "order.paid", "lead": {"id": 99999999999999999999}}', content_type=b"application/json")
def test_business_events(live: LiveServer, body: bytes, content_type: bytes) -> None:
    headers: list[tuple[str | bytes, str | bytes]] = [("Authorization", AUTH),
                                                      ("Content-Type", content_type)]
    live.no_5xx(f"POST /api/events Content-Type: {content_type!r}\nbody: {body[:600]!r}",
                lambda: live.raw("POST", "/api/events", body=body, headers=headers))


actions = st.sampled_from(["messages", "takeover", "release", "stop", "start"])
cids = st.one_of(st.just(known), st.just(known), short_text)
action_docs = st.one_of(
    st.fixed_dictionaries({}, optional={"text": st.one_of(st.just("hi"), text, hostile),
                                        "bot": st.one_of(st.just("demo"), text, hostile),
                                        "step": st.one_of(st.just("hello"), text, hostile)}),
    hostile)


@fuzz_settings(40)
@given(cid=cids, action=actions, body=st.one_of(st.builds(dump, action_docs), garbage_bodies))
@example(cid=known, action="messages", body=b'{"text": "\xed\xa0\x80"}')  # a surrogate's CESU-8 bytes
def test_conversation_actions(live: LiveServer, cid: str, action: str, body: bytes) -> None:
    if cid == known:  # a conversation to act on
        live.raw("POST", "/chat/demo/messages", body=dump({"session": "fuzz-events-1", "text": "hi"}),
                 headers=TOKEN)
    path = f"/api/conversations/{quoted(cid)}/{action}"
    live.no_5xx(f"POST {path}\nbody: {body[:600]!r}",
                lambda: live.raw("POST", path, body=body, headers=TOKEN))
    if action == "takeover":  # hand it back so later examples find the bot running
        live.raw("POST", f"/api/conversations/{quoted(cid)}/release", headers=TOKEN)


AUTOMATIONS = json.loads((FLOWS.parent / "automations" / "sales.json").read_text())
automation_docs = st.builds(dump, mutated(AUTOMATIONS, most=4))
doc_ids = st.one_of(st.just("sales"), st.just("sales"), st.just("sales"), short_text)


@fuzz_settings(40)
@given(doc_id=doc_ids, body=st.one_of(automation_docs, automation_docs, garbage_bodies))
@example(doc_id="sales", body=dump({**AUTOMATIONS, "rules": [{**AUTOMATIONS["rules"][0], "delay": RAW_JSON[0]}]}))
@example(doc_id="sales", body=dump({**AUTOMATIONS, "settings": {"timezone": "\x00"}}))
@example(doc_id="sales", body=dump({**AUTOMATIONS, "rules": AUTOMATIONS["rules"] * 2}))
def test_uploading_mutated_automation_documents(live: LiveServer, doc_id: str, body: bytes) -> None:
    """A mutated example document: refused with a 4xx, or accepted — then its reads, counts and
    jobs answer and an event on a lead runs its rules without a 5xx; the example is put back."""
    path = f"/api/automations/{quoted(doc_id)}"
    what = f"PUT {path}\nbody: {body[:600]!r} ({len(body)} bytes)"
    r = live.no_5xx(what, lambda: live.raw("PUT", path, body=body, headers=TOKEN))
    if r.status not in (200, 201):
        return
    try:
        for read in (path, f"{path}/versions", f"{path}/counts", f"{path}/jobs"):
            live.no_5xx(f"{what}\nthen GET {read}", lambda read=read: live.raw("GET", read, headers=TOKEN))
        for event_type in ("order.paid", "lead.tag_added", "custom.fuzz"):
            event = dump({"type": event_type, "contact": {"phone": "+905551110000"}, "data": {"tag": "vip"}})
            reply = live.no_5xx(f"{what}\nthen POST /api/events {event!r}",
                                lambda event=event: live.raw("POST", "/api/events", body=event, headers=TOKEN))
            lead = reply.json().get("lead") if reply.status == 202 else None
            if lead:
                live.no_5xx(f"{what}\nthen the lead's history",
                            lambda lead=lead: live.raw("GET", f"/api/leads/{quoted(lead)}/events", headers=TOKEN))
    finally:  # the example document again, so the other tests see the server as it started
        if doc_id == "sales":
            live.raw("PUT", "/api/automations/sales", body=dump(AUTOMATIONS), headers=TOKEN)
