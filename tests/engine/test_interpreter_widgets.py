"""Widget and custom steps, on the pure core: a request to a widget (answered at once or later by
a callback with its token, or a timeout) or to a custom handler; its result becomes ``json``."""

from __future__ import annotations

from typing import Any

from bot.engine import effects as fx
from bot.engine import events as ev
from bot.engine.state import Wait

from .helpers import NOW, SNAPSHOT, Chat, make_flow, of_type, texts, trace_events, without_traces


# ---------------------------------------------------------------- widget
def widget_flow(wait: dict[str, Any] | None = None, failed: bool = True) -> Any:
    step: dict[str, Any] = {
        "type": "widget",
        "widget": "http_request",
        "params": {"url": "https://score.test", "data": {"lead": "{{ lead.id }}"}},
        "next": "scored",
    }
    if wait is not None:
        step["wait"] = wait
    if failed:
        step["failed"] = "error"
    return make_flow(
        {
            "w": step,
            "scored": {"type": "message", "text": "score {{ json.score }}"},
            "late": {"type": "message", "text": "no score"},
            "error": {"type": "message", "text": "error"},
        }
    )


def test_widget_without_wait_sets_json_at_once() -> None:
    chat = Chat(
        widget_flow(),
        snapshot=SNAPSHOT,
        answer=lambda r: ev.RequestResult(r.id, value={"json": {"score": 9}}),
    )
    chat.start()
    assert chat.requests == [
        fx.Request(
            "q2",
            "widget",
            {
                "widget": "http_request",
                "params": {"url": "https://score.test", "data": {"lead": 5}},
                "wait": False,
            },
        )
    ]
    assert texts(chat.last) == ["score 9"]


def test_widget_with_wait_waits_for_the_callback_with_its_token() -> None:
    chat = Chat(
        widget_flow({"timeout": "10m", "on_timeout": "late"}),
        answer=lambda r: ev.RequestResult(r.id, value={"token": "tok-1"}),
    )
    chat.start()
    assert chat.requests[0].payload["wait"] is True
    assert chat.run.wait == Wait(
        "widget", "w", {"c1:t3": "widget_timeout"}, token="tok-1", until=NOW.timestamp() + 600
    )
    assert of_type(chat.last, fx.SetTimer) == [
        fx.SetTimer("c1:t3", NOW.timestamp() + 600, "widget_timeout")
    ]
    before = chat.state
    out = chat.feed(ev.WidgetCallback("tok-2", {"score": 1}))
    assert (
        without_traces(out) == [] and trace_events(out) == ["widget.stale"] and chat.state == before
    )
    out = chat.feed(ev.WidgetCallback("tok-1", {"score": 7}))
    assert without_traces(out)[:2] == [
        fx.CancelTimer("c1:t3"),
        fx.SendMessage("r1:scored:m4", "scored", "message", "score 7"),
    ]
    assert chat.run.json == {"score": 7}
    again = chat.feed(ev.WidgetCallback("tok-1", {"score": 8}))  # a second callback is stale
    assert without_traces(again) == [] and chat.run.json == {"score": 7}


def test_widget_timeout_goes_to_on_timeout() -> None:
    chat = Chat(
        widget_flow({"timeout": "10m", "on_timeout": "late"}),
        answer=lambda r: ev.RequestResult(r.id, value={"token": "tok-1"}),
    )
    chat.start()
    assert texts(chat.fire_only_timer()) == ["no score"]
    assert chat.feed(ev.WidgetCallback("tok-1", {})) == [
        fx.Trace("widget.stale", "debug", {"bot": "bot", "step": "late"})
    ]


def test_widget_failure_goes_to_failed() -> None:
    chat = Chat(
        widget_flow({"timeout": "10m"}),
        answer=lambda r: ev.RequestResult(r.id, ok=False, error="boom"),
    )
    chat.start()
    assert texts(chat.last) == ["error"] and "widget.failed" in trace_events(chat.last)
    assert chat.timers == {}


def test_widget_failure_without_failed_ends_the_run() -> None:
    chat = Chat(
        widget_flow(failed=False), answer=lambda r: ev.RequestResult(r.id, ok=False, error="boom")
    )
    chat.start()
    assert texts(chat.last) == [] and chat.status == "finished"


# ---------------------------------------------------------------- custom
def custom_flow() -> Any:
    return make_flow(
        {
            "c": {
                "type": "custom",
                "handler": "acme.discount",
                "params": {"rate": 5, "lead": "{{ lead.id }}"},
                "next": "ok",
                "failed": "bad",
            },
            "ok": {"type": "message", "text": "discount {{ json.discount }}"},
            "bad": {"type": "message", "text": "bad"},
        }
    )


def test_custom_handler_result_becomes_json() -> None:
    chat = Chat(
        custom_flow(),
        snapshot=SNAPSHOT,
        answer=lambda r: ev.RequestResult(r.id, value={"discount": 15}),
    )
    chat.start()
    assert chat.requests == [
        fx.Request("q2", "custom", {"handler": "acme.discount", "params": {"rate": 5, "lead": 5}})
    ]
    assert texts(chat.last) == ["discount 15"] and chat.run.json == {"discount": 15}


def test_custom_handler_failure_goes_to_failed() -> None:
    chat = Chat(
        custom_flow(), answer=lambda r: ev.RequestResult(r.id, ok=False, error="ValueError: x")
    )
    chat.start()
    assert texts(chat.last) == ["bad"] and "custom.failed" in trace_events(chat.last)

