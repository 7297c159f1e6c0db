"""Action steps and typed template values, on the pure core.

Every action that needs the outside world is a ``Request`` with its rendered payload; the test
answers it (``Chat``) and checks what the run does with the answer.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pytest

from bot.engine import effects as fx
from bot.engine import events as ev
from bot.engine.interpreter import advance
from bot.engine.state import ConversationState, Wait
from bot.engine.steps.actions import task_due, task_due_window

from .helpers import NOW, SNAPSHOT, Chat, library, make_flow, of_type, texts, trace_events

IST = "Europe/Istanbul"


def action_flow(
    actions: list[dict[str, Any]],
    *,
    failed: bool = False,
    then: str = "done {{ json.n }}",
    variables: dict[str, Any] | None = None,
) -> Any:
    step: dict[str, Any] = {"type": "action", "actions": actions, "next": "done"}
    if failed:
        step["failed"] = "oops"
    return make_flow(
        {
            "act": step,
            "done": {"type": "message", "text": then},
            "oops": {"type": "message", "text": "oops"},
        },
        timezone=IST,
        variables=variables,
    )


def run_actions(actions: list[dict[str, Any]], answer: Any = None, **kw: Any) -> Chat:
    chat = Chat(
        action_flow(actions, **kw), snapshot=SNAPSHOT, **({"answer": answer} if answer else {})
    )
    chat.start("hello there")
    return chat


# ---------------------------------------------------------------- every action's request
@pytest.mark.parametrize(
    ("action", "payload"),
    [
        (
            {"do": "add_note", "text": "Note for {{ contact.name }}"},
            {"do": "add_note", "text": "Note for Ann Lee", "entity": "lead"},
        ),
        (
            {"do": "add_note", "text": "c", "entity": "contact"},
            {"do": "add_note", "text": "c", "entity": "contact"},
        ),
        (
            {
                "do": "add_task",
                "text": "Call {{ contact.first_name }}",
                "due": "in_1_day",
                "responsible": 7,
                "task_type": "meeting",
            },
            {
                "do": "add_task",
                "text": "Call Ann",
                "due": "in_1_day",
                "responsible": 7,
                "task_type": "meeting",
                "due_at": "2024-05-02T15:00:00+03:00",
            },
        ),
        (
            {
                "do": "complete_tasks",
                "task_type": "follow_up",
                "due": "overdue",
                "comment": "closed by {{ bot.id }}",
            },
            {
                "do": "complete_tasks",
                "task_type": "follow_up",
                "due": "overdue",
                "comment": "closed by bot",
                "due_from": None,
                "due_to": "2024-05-01T15:00:00+03:00",
            },
        ),
        (
            {"do": "change_stage", "pipeline": "Sales", "stage": "{{ vars.stage }}"},
            {"do": "change_stage", "pipeline": "Sales", "stage": "Won"},
        ),
        (
            {
                "do": "change_responsible",
                "user": "{{ lead.responsible }}",
                "entities": ["lead", "main_contact"],
            },
            {"do": "change_responsible", "user": 9, "entities": ["lead", "main_contact"]},
        ),
        (
            {
                "do": "create_lead",
                "copy": ["price", "tags"],
                "name": "Copy of {{ lead.name }}",
                "stage": "Incoming",
            },
            {
                "do": "create_lead",
                "copy": ["price", "tags"],
                "name": "Copy of Deal",
                "responsible": None,
                "pipeline": None,
                "stage": "Incoming",
            },
        ),
        (
            {"do": "subscribers", "add": [1, "2"], "remove": [3]},
            {"do": "subscribers", "add": [1, "2"], "remove": [3]},
        ),
        (
            {
                "do": "tags",
                "entity": "contact",
                "add": ["lead-{{ lead.id }}", "x"],
                "remove": ["{{ vars.stage }}"],
            },
            {"do": "tags", "entity": "contact", "add": ["lead-5", "x"], "remove": ["Won"]},
        ),
        (
            {
                "do": "send_email",
                "template": {
                    "subject": "Hi {{ contact.first_name }}",
                    "body": "Offer {{ lead.price }}",
                },
                "to": "all_contacts",
                "sender": "shared",
            },
            {
                "do": "send_email",
                "template": {"subject": "Hi Ann", "body": "Offer 100"},
                "to": "all_contacts",
                "sender": "shared",
                "unsubscribe_link": True,
            },
        ),
        (
            {
                "do": "send_webhook",
                "url": "https://hook.test/{{ lead.id }}",
                "method": "PUT",
                "headers": {"X-Lead": "{{ lead.id }}"},
                "body": {"price": "{{ lead.price }}", "tags": "{{ lead.tags }}"},
                "timeout": "1m",
            },
            {
                "do": "send_webhook",
                "url": "https://hook.test/5",
                "method": "PUT",
                "headers": {"X-Lead": 5},
                "body": {"price": 100, "tags": ["vip", "new"]},
                "save_as": "json",
                "timeout": 60,
            },
        ),
        (
            {
                "do": "set_field",
                "entity": "lead",
                "field": "budget",
                "value": "{{ lead.price * 2 }}",
            },
            {"do": "set_field", "entity": "lead", "field": "budget", "value": 200, "from": None},
        ),
        (
            {"do": "set_field", "entity": "contact", "field": "email", "from": "message"},
            {
                "do": "set_field",
                "entity": "contact",
                "field": "email",
                "value": "hello there",
                "from": "message",
            },
        ),
        (
            {
                "do": "create_form",
                "form": "referral",
                "fields": ["email", "phone"],
                "tags": ["form"],
                "stage": "Contacted",
            },
            {
                "do": "create_form",
                "form": "referral",
                "fields": ["email", "phone"],
                "tags": ["form"],
                "stage": "Contacted",
            },
        ),
        (
            {
                "do": "meta_conversion",
                "event": "Purchase",
                "value": "{{ lead.price }}",
                "currency": "EUR",
            },
            {"do": "meta_conversion", "event": "Purchase", "value": 100, "currency": "EUR"},
        ),
    ],
)
def test_each_action_is_a_request_with_its_rendered_payload(
    action: dict[str, Any], payload: dict[str, Any]
) -> None:
    chat = run_actions([action], variables={"stage": "Won"})
    assert chat.requests == [fx.Request("q2", "action", {**payload, "timezone": IST})]
    assert texts(chat.last) == ["done "]
    assert chat.status == "finished"


def test_an_action_parameter_whose_template_fails_becomes_empty() -> None:
    # Regression: one failing template turned all the parameters into "" and advance() raised.
    chat = run_actions(
        [
            {"do": "add_note", "text": "{{ vars.x + 1 }}"},
            {
                "do": "send_webhook",
                "url": "https://hook.test",
                "body": {"a": "{{ vars.x + 1 }}", "b": ["{{ lead.id }}"]},
            },
        ]
    )
    assert [r.payload for r in chat.requests] == [
        {"do": "add_note", "text": "", "entity": "lead", "timezone": IST},
        {
            "do": "send_webhook",
            "url": "https://hook.test",
            "method": "POST",
            "headers": {},
            "body": {"a": "", "b": [5]},
            "save_as": "json",
            "timeout": 10,
            "timezone": IST,
        },
    ]
    assert trace_events(chat.last).count("template.error") == 2
    assert chat.status == "finished"


def test_set_variable_and_set_chat_status_are_local() -> None:
    chat = run_actions(
        [
            {"do": "set_variable", "name": "attempts", "value": "{{ vars.attempts + 1 }}"},
            {"do": "set_chat_status", "status": "closed"},
        ],
        variables={"attempts": 0},
    )
    assert chat.requests == []
    assert chat.vars == {"attempts": 1}
    assert of_type(chat.last, fx.ChatStatus) == [fx.ChatStatus("closed")]
    # The message after it: the chat was closed, so the bot's reply does not reopen it as answered.
    assert chat.state.chat_status == "closed"


def test_set_field_from_manual_asks_the_responsible_user() -> None:
    chat = run_actions([{"do": "set_field", "entity": "lead", "field": "budget", "from": "manual"}])
    assert chat.requests == []
    assert of_type(chat.last, fx.InternalMessage) == [
        fx.InternalMessage(
            'Please fill in the lead field "budget" for Deal.', ("user:responsible",)
        )
    ]


def test_set_field_from_message_uses_the_last_message_text() -> None:
    flow = make_flow(
        {
            "ask": {"type": "pause", "next": "save"},
            "save": {
                "type": "action",
                "actions": [
                    {"do": "set_field", "entity": "contact", "field": "email", "from": "message"}
                ],
            },
        }
    )
    chat = Chat(flow)
    chat.start("start")
    chat.say("ann@example.com")
    assert chat.requests[0].payload["value"] == "ann@example.com"


# ---------------------------------------------------------------- task due dates
@pytest.mark.parametrize(
    ("due", "expected"),
    [
        ("now", "2024-05-01T15:00:00+03:00"),
        ("end_of_day", "2024-05-01T23:59:00+03:00"),
        ("in_1_day", "2024-05-02T15:00:00+03:00"),
        ("in_3_days", "2024-05-04T15:00:00+03:00"),
        ("end_of_week", "2024-05-05T23:59:00+03:00"),
        ("2h", "2024-05-01T17:00:00+03:00"),
        (90, "2024-05-01T15:01:30+03:00"),
    ],
)
def test_add_task_due_is_computed_in_the_flow_timezone(due: Any, expected: str) -> None:
    chat = run_actions([{"do": "add_task", "text": "t", "due": due}])
    assert chat.requests[0].payload["due_at"] == expected


def test_end_of_week_on_a_sunday_is_that_evening() -> None:
    flow = action_flow([{"do": "add_task", "text": "t"}])
    sunday = datetime(2024, 5, 5, 10, 0, tzinfo=ZoneInfo(IST))
    assert task_due("end_of_week", sunday, flow).isoformat() == "2024-05-05T23:59:00+03:00"


@pytest.mark.parametrize(
    ("due", "window"),
    [
        ("all", (None, None)),
        ("overdue", (None, "2024-05-01T15:00:00+03:00")),
        ("today", ("2024-05-01T00:00:00+03:00", "2024-05-02T00:00:00+03:00")),
        ("tomorrow", ("2024-05-02T00:00:00+03:00", "2024-05-03T00:00:00+03:00")),
    ],
)
def test_complete_tasks_due_window(due: str, window: tuple[str | None, str | None]) -> None:
    chat = run_actions([{"do": "complete_tasks", "due": due}])
    payload = chat.requests[0].payload
    assert (payload["due_from"], payload["due_to"]) == window
    lo, hi = task_due_window(due, NOW, action_flow([{"do": "complete_tasks"}]))
    assert (lo and lo.isoformat(), hi and hi.isoformat()) == window


# ---------------------------------------------------------------- results and failures
THREE = [
    {"do": "tags", "add": ["one"]},
    {"do": "add_note", "text": "two"},
    {"do": "set_variable", "name": "three", "value": 3},
]


def failing(do: str, *, ok: bool = False, permanent: bool = True) -> Any:
    def answer(request: fx.Request) -> ev.RequestResult:
        if request.payload["do"] == do:
            return ev.RequestResult(request.id, ok=ok, error="CRM said no", permanent=permanent)
        return ev.RequestResult(request.id, value={"n": 1})

    return answer


def test_a_permanent_failure_goes_to_failed_skipping_the_remaining_actions() -> None:
    chat = run_actions(THREE, failing("tags"), failed=True)
    assert [r.payload["do"] for r in chat.requests] == ["tags"]
    assert texts(chat.last) == ["oops"]
    assert "three" not in chat.vars
    assert [t for t in of_type(chat.last, fx.Trace) if t.event == "action.failed"] == [
        fx.Trace(
            "action.failed",
            "warning",
            {"action": "tags", "error": "CRM said no", "bot": "bot", "step": "act"},
        )
    ]


def test_a_permanent_failure_without_failed_continues_with_the_remaining_actions_and_next() -> None:
    chat = run_actions(THREE, failing("tags"))
    assert [r.payload["do"] for r in chat.requests] == ["tags", "add_note"]
    assert chat.vars["three"] == 3
    assert texts(chat.last) == ["done "]
    assert "action.failed" in trace_events(chat.last)


@pytest.mark.parametrize("ok", [True, False])
def test_a_temporary_failure_continues(ok: bool) -> None:
    chat = run_actions(THREE, failing("tags", ok=ok, permanent=False), failed=True)
    assert [r.payload["do"] for r in chat.requests] == ["tags", "add_note"]
    assert texts(chat.last) == ["done "] and chat.vars["three"] == 3


def test_the_snapshot_of_a_result_is_what_the_following_steps_see() -> None:
    def answer(request: fx.Request) -> ev.RequestResult:
        return ev.RequestResult(request.id, snapshot={"lead": {"stage": "Won"}})

    chat = run_actions(
        [{"do": "change_stage", "stage": "Won"}], answer, then="stage {{ lead.stage }}"
    )
    assert texts(chat.last) == ["stage Won"]


def test_send_webhook_response_is_saved_to_json() -> None:
    def answer(request: fx.Request) -> ev.RequestResult:
        return ev.RequestResult(request.id, value={"n": 42, "list": [1, 2]})

    chat = run_actions([{"do": "send_webhook", "url": "https://hook.test"}], answer)
    assert chat.run.json == {"n": 42, "list": [1, 2]}
    assert texts(chat.last) == ["done 42"]


def test_send_webhook_response_is_saved_to_a_variable_with_save_as() -> None:
    def answer(request: fx.Request) -> ev.RequestResult:
        return ev.RequestResult(request.id, value={"n": 7})

    chat = run_actions(
        [{"do": "send_webhook", "url": "https://hook.test", "save_as": "hook"}],
        answer,
        then="{{ vars.hook.n }}|{{ json.n }}",
    )
    assert chat.vars["hook"] == {"n": 7} and chat.run.json is None
    assert texts(chat.last) == ["7|"]


def test_create_form_stores_the_form_url() -> None:
    def answer(request: fx.Request) -> ev.RequestResult:
        return ev.RequestResult(request.id, value={"url": "https://forms.test/f/1"})

    chat = run_actions(
        [{"do": "create_form", "fields": ["email"]}], answer, then="{{ vars.form_url }}"
    )
    assert texts(chat.last) == ["https://forms.test/f/1"]


def test_order_link_stores_the_order_url_and_sends_its_expiry_in_seconds() -> None:
    def answer(request: fx.Request) -> ev.RequestResult:
        assert request.payload["expires"] == 7 * 86400
        return ev.RequestResult(request.id, value={"id": "l1", "url": "https://shop.test/order/t1",
                                                   "expires_at": 1})

    chat = run_actions([{"do": "order_link", "expires": "7d"}], answer, then="Order here: {{ vars.order_url }}")
    assert texts(chat.last) == ["Order here: https://shop.test/order/t1"]


def test_a_failed_order_link_leaves_order_url_unset() -> None:
    def answer(request: fx.Request) -> ev.RequestResult:
        return ev.RequestResult(request.id, ok=False, error="order_link: no contact", permanent=True)

    chat = run_actions([{"do": "order_link"}], answer, then="[{{ vars.order_url }}]")
    assert "order_url" not in chat.vars


# ---------------------------------------------------------------- typed template values
@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("{{ vars.attempts + 1 }}", 1),
        ("{{ lead.tags }}", ["vip", "new"]),
        ("{{ lead.price > 50 }}", True),
        ("n={{ vars.attempts }}", "n=0"),
        ("{{ vars.nothing }}", ""),
        ("{{ contact.fields.missing }}", ""),
        (12.5, 12.5),
        ([1, "{{ lead.id }}"], [1, 5]),
        ({"a": "{{ lead.id }}"}, {"a": 5}),
        (
            "{{ (1, 2) }}",
            [1, 2],
        ),  # kept as plain data (a tuple would come back from msgpack as a list)
        ("{{ 2 ** 70 }}", "1180591620717411303424"),  # msgpack packs 64-bit integers only
        ("{{ now }}", "2024-05-01T15:00:00+03:00"),
        ("{{ now.date() }}", "2024-05-01"),
    ],
)
def test_set_variable_stores_typed_values_as_plain_data(value: Any, stored: Any) -> None:
    chat = run_actions(
        [{"do": "set_variable", "name": "x", "value": value}], variables={"attempts": 0}
    )
    assert chat.vars["x"] == stored
    assert type(chat.vars["x"]) is type(stored)
    assert msgpack.unpackb(msgpack.packb(chat.state.to_dict())) == chat.state.to_dict()


def test_set_variable_of_all_vars_stores_a_copy() -> None:
    # Regression: ``{{ vars }}`` stored the live dict inside itself, which msgpack cannot pack.
    chat = run_actions(
        [{"do": "set_variable", "name": "copy", "value": "{{ vars }}"}], variables={"a": 1}
    )
    assert chat.vars == {"a": 1, "copy": {"a": 1}}
    msgpack.packb(chat.state.to_dict())


def test_a_request_is_always_the_last_effect_and_the_run_waits_for_it() -> None:
    flow = action_flow([{"do": "add_note", "text": "x"}])
    out = advance(
        library(flow), ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW
    )
    assert (
        out.request
        == out.effects[-1]
        == fx.Request(
            "q2", "action", {"do": "add_note", "text": "x", "entity": "lead", "timezone": IST}
        )
    )
    assert out.state.run is not None and out.state.run.wait == Wait("request", "act", request="q2")
    assert out.state.run.status == "waiting"
    done = advance(
        library(flow), out.state, ev.RequestResult("q2", value={"n": 3}), NOW + timedelta(seconds=1)
    )
    assert done.request is None and texts(done.effects) == ["done "]  # only webhooks set json
