"""Whole conversations on the simulator: the driver, the embedded CRM and a virtual clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bot.simulation.simulator import Simulator

from ..engine.helpers import NOW, make_flow

WELCOME = make_flow(
    {
        "hello": {
            "type": "message",
            "text": "Hi {{ contact.first_name }}! What do you need?",
            "buttons": [
                {"title": "Catalog", "synonyms": ["1"], "next": "catalog"},
                {"title": "Site", "url": "https://example.com"},
                {"title": "Person", "next": "handoff"},
            ],
            "other_answer": "hello",
            "no_answer": {"after": "2h", "next": "nudge"},
        },
        "catalog": {
            "type": "action",
            "actions": [
                {"do": "tags", "add": ["catalog"]},
                {"do": "add_task", "text": "Follow up {{ contact.name }}", "due": "in_1_day"},
                {"do": "change_stage", "stage": "Contacted"},
                {"do": "set_field", "entity": "contact", "field": "interest", "value": "catalog"},
            ],
            "next": "sent",
        },
        "sent": {
            "type": "message",
            "text": "Sent! Stage {{ lead.stage }}, tags {{ lead.tags | join(',') }}",
        },
        "handoff": {
            "type": "internal_message",
            "text": "{{ contact.name }} wants a person",
            "to": ["team:sales"],
            "next": "bye",
        },
        "bye": {"type": "stop", "close_chat": True},
        "nudge": {"type": "message", "text": "Still there?"},
    }
)


def sim(flow: Any = WELCOME, **kw: Any) -> Simulator:
    kw.setdefault("contact", {"name": "Ann Lee"})
    return Simulator(flow, now=NOW, **kw)


def shown(lines: list[Any]) -> list[str]:
    return [line.show() for line in lines]


async def test_a_conversation_with_crm_actions() -> None:
    s = sim()
    assert shown(await s.say("hello")) == [
        "bot: Hi Ann! What do you need? [Catalog | Site | Person]"
    ]
    assert shown(await s.click("Catalog")) == ["bot: Sent! Stage Contacted, tags catalog"]
    ctx = s.context()
    assert ctx["lead"]["tags"] == ["catalog"] and ctx["lead"]["stage"] == "Contacted"
    assert ctx["contact"]["fields"] == {"interest": "catalog"}
    assert [(t["text"], t["due"]) for t in ctx["tasks"]] == [
        ("Follow up Ann Lee", "2024-05-02T12:00:00+00:00")
    ]
    assert ctx["run"]["status"] == "finished" and ctx["chat"]["status"] == "answered"
    assert [line.role for line in s.transcript] == ["user", "bot", "user", "bot"]


async def test_the_clock_fires_timers_in_order() -> None:
    s = sim()
    await s.say("hello")
    assert await s.wait(3600) == []
    assert s.now == NOW + timedelta(hours=1)
    lines = await s.wait(7200)
    assert shown(lines) == ["bot: Still there?"]
    assert lines[0].at == NOW + timedelta(hours=2)
    assert s.now == NOW + timedelta(hours=3) and s.timers == {}


async def test_a_reply_cancels_the_timer_and_an_internal_message_reaches_the_team() -> None:
    s = sim()
    await s.say("hello")
    await s.say("person")
    assert s.timers == {}
    assert s.internal == [{"text": "Ann Lee wants a person", "to": ["team:sales"]}]
    assert s.context()["chat"]["status"] == "closed"
    assert await s.wait(86400) == []


async def test_buttons_that_cannot_be_clicked() -> None:
    s = sim()
    await s.say("hello")
    with pytest.raises(LookupError, match="link button"):
        s.find_button("site")
    with pytest.raises(LookupError, match="no button"):
        s.find_button("Pizza")


async def test_round_robin_across_conversations() -> None:
    flow = make_flow(
        {
            "rr": {"type": "round_robin", "options": ["a", "b", "c"]},
            "a": {"type": "message", "text": "A"},
            "b": {"type": "message", "text": "B"},
            "c": {"type": "message", "text": "C"},
        }
    )
    s = sim(flow)
    answers = [line.text for _ in range(4) for line in await s.say("hi")]
    assert answers == ["A", "B", "C", "A"]


async def test_takeover_and_release_with_events() -> None:
    s = sim()
    await s.say("hello")
    await s.event("takeover", {"user": "user:7"})
    assert await s.say("catalog") == []
    assert await s.wait(3 * 3600) == []  # the no_answer timer is suppressed
    assert s.context()["chat"]["owner"] == "human"
    assert shown(await s.event("release", {"step": "nudge"})) == ["bot: Still there?"]
    await s.event("stop", {})
    assert s.context()["run"]["status"] == "finished"


async def test_start_bot_event_and_stop() -> None:
    other = make_flow(
        {"o": {"type": "pause", "next": "o2"}, "o2": {"type": "message", "text": "other"}},
        id="other",
    )
    s = sim(bots=[other])
    await s.say("hello")
    assert await s.event("start_bot", {"bot": "other"}) == []
    assert s.context()["run"]["bot"] == "other" and s.timers == {}
    await s.event("stop", {})
    assert s.context()["run"]["status"] == "stopped"


def widget_flow(wait: bool) -> Any:
    step: dict[str, Any] = {
        "type": "widget",
        "widget": "http_request",
        "params": {"lead": "{{ lead.id }}"},
        "next": "ok",
        "failed": "bad",
    }
    if wait:
        step["wait"] = {"timeout": "10m", "on_timeout": "late"}
    return make_flow(
        {
            "w": step,
            "ok": {"type": "message", "text": "score {{ json.score }}"},
            "bad": {"type": "message", "text": "bad"},
            "late": {"type": "message", "text": "late"},
        }
    )


async def test_widget_fixtures() -> None:
    assert shown(
        await sim(widget_flow(False), widgets={"http_request": {"score": 3}}).say("x")
    ) == ["bot: score 3"]
    assert shown(
        await sim(widget_flow(False), widgets={"http_request": {"fail": "down"}}).say("x")
    ) == ["bot: bad"]
    s = sim(widget_flow(True), widgets={"http_request": {}})
    assert await s.say("x") == []
    assert s.context()["run"]["waiting_for"] == "widget"
    assert shown(await s.event("widget_callback", {"body": {"score": 8}})) == ["bot: score 8"]
    s = sim(widget_flow(True))
    await s.say("x")
    assert shown(await s.wait(600)) == ["bot: late"]


async def test_custom_handlers() -> None:
    flow = make_flow(
        {
            "c": {
                "type": "custom",
                "handler": "acme.discount",
                "params": {"rate": 5},
                "next": "ok",
                "failed": "bad",
            },
            "ok": {"type": "message", "text": "{{ json.discount }}%"},
            "bad": {"type": "message", "text": "bad"},
        }
    )

    def discount(params: dict[str, Any], snapshot: Any) -> dict[str, Any]:
        return {"discount": params["rate"] * 2}

    def broken(params: dict[str, Any], snapshot: Any) -> Any:
        raise ValueError("no")

    assert shown(await sim(flow, custom_handlers={"acme.discount": discount}).say("x")) == [
        "bot: 10%"
    ]
    s = sim(flow, custom_handlers={"acme.discount": broken})
    assert shown(await s.say("x")) == ["bot: bad"]
    assert shown(await sim(flow).say("x")) == ["bot: bad"]  # no handler registered


async def test_a_crm_rejection_goes_to_failed() -> None:
    flow = make_flow(
        {
            "a": {
                "type": "action",
                "actions": [{"do": "change_stage", "stage": "Nope"}],
                "next": "ok",
                "failed": "bad",
            },
            "ok": {"type": "message", "text": "ok"},
            "bad": {"type": "message", "text": "bad"},
        }
    )
    s = sim(flow, pipelines={"Sales": ["New", "Won"]})
    assert shown(await s.say("x")) == ["bot: bad"]
    assert s.context()["lead"]["stage"] == "New"


async def test_outward_actions_go_to_the_outbox_and_webhooks_answer_from_fixtures() -> None:
    flow = make_flow(
        {
            "a": {
                "type": "action",
                "actions": [
                    {
                        "do": "send_webhook",
                        "url": "https://hook.test/score/{{ lead.id }}",
                        "body": {"x": 1},
                    },
                    {"do": "send_email", "template": "welcome"},
                    {"do": "create_form", "fields": ["email"]},
                ],
                "next": "m",
            },
            "m": {"type": "message", "text": "{{ json.score }} {{ vars.form_url }}"},
        }
    )
    s = sim(flow, webhooks={"https://hook.test/score/*": {"score": 99}})
    assert shown(await s.say("x")) == ["bot: 99 https://forms.invalid/f/3"]
    ctx = s.context()
    assert [x["do"] for x in ctx["outbox"]] == ["send_webhook", "send_email", "create_form"]
    assert ctx["webhooks"][0]["body"] == {"x": 1} and ctx["emails"][0]["template"] == "welcome"


async def test_order_link_gives_a_url_that_names_no_real_link() -> None:
    flow = make_flow({
        "a": {"type": "action", "actions": [{"do": "order_link", "expires": "2d"}], "next": "m"},
        "m": {"type": "message", "text": "Order: {{ vars.order_url }}"},
    })
    s = sim(flow)
    assert shown(await s.say("x")) == ["bot: Order: https://orders.invalid/order/1"]
    assert s.context()["outbox"] == [{"do": "order_link", "expires": 172800, "timezone": s.context()["outbox"][0]
                                      ["timezone"]}]


async def test_messages_for_other_channels_are_not_shown_and_delivery_failures_branch() -> None:
    flow = make_flow(
        {
            "wa": {
                "type": "message",
                "text": "whatsapp only",
                "channels": ["whatsapp"],
                "next": "all",
            },
            "all": {"type": "message", "text": "everyone", "failed": "sorry", "next": "p"},
            "p": {"type": "pause", "next": "end"},
            "end": {"type": "stop"},
            "sorry": {"type": "internal_message", "text": "undelivered"},
        }
    )
    s = sim(flow)
    assert shown(await s.say("x")) == ["bot: everyone"]
    assert shown(await s.event("delivery_failed", {"reason": "blocked"})) == [
        "internal: undelivered"
    ]
    assert s.context()["run"]["status"] == "finished"


async def test_a_stage_change_event_is_seen_by_the_next_step() -> None:
    flow = make_flow(
        {
            "p": {"type": "pause", "next": "c"},
            "c": {
                "type": "condition",
                "branches": [
                    {"if": {"field": "lead.stage", "op": "eq", "value": "won"}, "next": "won"}
                ],
                "else": "other",
            },
            "won": {"type": "message", "text": "won"},
            "other": {"type": "message", "text": "other"},
        }
    )
    s = sim(flow)
    await s.say("x")
    assert await s.event("lead.stage_changed", {"stage": "Won"}) == []
    assert shown(await s.say("y")) == ["bot: won"]


async def test_video_events_and_errors_in_the_transcript() -> None:
    flow = make_flow(
        {
            "p": {"type": "pause", "until": [{"on": "video_opened", "next": "v"}]},
            "v": {"type": "start_bot", "bot": "ghost", "next": "p"},
        }
    )
    s = sim(flow)
    await s.say("x")
    lines = await s.event("video_opened", {})
    assert shown(lines) == ["system: run.failed: start_bot: unknown bot 'ghost'"]
