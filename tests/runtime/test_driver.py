"""The shell loop: ``Driver.turn`` answers requests and feeds the results back in the same turn."""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bot.engine import effects as fx
from bot.engine import events as ev
from bot.engine.state import ConversationState
from bot.runtime.driver import MAX_REQUESTS_PER_TURN, Driver

from ..engine.helpers import NOW, library, make_flow, of_type, texts


class Recorder:
    """A ``RequestHandler`` that answers from a function and records what it was asked."""

    def __init__(self, value: Any = None, snapshot: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple[fx.Request, ConversationState, Mapping[str, Any]]] = []
        self.value = value
        self.snapshot = snapshot

    async def __call__(
        self, request: fx.Request, state: ConversationState, snapshot: Mapping[str, Any]
    ) -> ev.RequestResult:
        self.calls.append((request, state, snapshot))
        return ev.RequestResult(request.id, value=self.value, snapshot=self.snapshot)


FLOW = make_flow(
    {
        "act": {
            "type": "action",
            "actions": [{"do": "add_note", "text": "one"}, {"do": "change_stage", "stage": "Won"}],
            "next": "hook",
        },
        "hook": {
            "type": "action",
            "actions": [{"do": "send_webhook", "url": "https://hook.test"}],
            "next": "say",
        },
        "say": {"type": "message", "text": "{{ json.n }} {{ lead.stage }}"},
    }
)


async def test_a_turn_answers_every_request_and_leaves_them_out_of_the_effects() -> None:
    handler = Recorder(value={"n": 5}, snapshot={"lead": {"stage": "Won"}})
    result = await Driver(library(FLOW), handler).turn(
        ConversationState("c1"),
        ev.InboundMessage("x", greeting="bot"),
        NOW,
        {"lead": {"stage": "Incoming"}},
    )
    assert [r.payload["do"] for r, _, _ in handler.calls] == [
        "add_note",
        "change_stage",
        "send_webhook",
    ]
    assert of_type(result.effects, fx.Request) == []
    assert texts(result.effects) == ["5 Won"]
    assert result.state.run is not None and result.state.run.status == "finished"
    assert result.snapshot == {"lead": {"stage": "Won"}}
    # The handler sees the state suspended on its request, and the snapshot of the turn so far.
    request, state, snapshot = handler.calls[0]
    assert (
        state.run is not None
        and state.run.wait is not None
        and state.run.wait.request == request.id
    )
    assert snapshot == {"lead": {"stage": "Incoming"}}
    assert handler.calls[1][2] == {"lead": {"stage": "Won"}}


async def test_a_turn_without_requests_is_one_advance() -> None:
    handler = Recorder()
    flow = make_flow({"hi": {"type": "message", "text": "hi"}})
    result = await Driver(library(flow), handler).turn(
        ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW, {}
    )
    assert handler.calls == [] and texts(result.effects) == ["hi"]
    assert result.snapshot == {}


async def test_a_turn_is_cut_after_too_many_requests() -> None:
    flow = make_flow(
        {
            "act": {
                "type": "action",
                "actions": [
                    {"do": "add_note", "text": str(i)} for i in range(MAX_REQUESTS_PER_TURN + 2)
                ],
            }
        }
    )
    handler = Recorder()
    result = await Driver(library(flow), handler).turn(
        ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW, {}
    )
    assert len(handler.calls) == MAX_REQUESTS_PER_TURN
    error = f"more than {MAX_REQUESTS_PER_TURN} requests in one event"
    assert result.effects[-1] == fx.Trace("turn.too_many_requests", "error", {"error": error})
    assert not any(isinstance(e, fx.Request) for e in result.effects)
    run = result.state.run
    assert run is not None and (run.status, run.wait, run.error) == ("failed", None, error)


SLOW = make_flow({
    "ask": {"type": "validation", "rules": [{"check": "regex", "pattern": "^(a|aa)+$"}],
            "pass": "yes", "fail": "no"},
    "yes": {"type": "message", "text": "yes"},
    "no": {"type": "message", "text": "no"},
}, id="slow")


class ThreadRecorder(ThreadPoolExecutor):
    """An executor that remembers that it ran something (the turns of slow flows come here)."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.used = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.used += 1
        return super().submit(fn, *args, **kwargs)


def test_flows_with_regex_phone_or_email_checks_or_template_loops_are_slow() -> None:
    plain = make_flow({"hi": {"type": "message", "text": "hi"}}, id="plain")
    phone = make_flow({"ask": {"type": "validation", "rules": [{"check": "contains", "kind": "phone"}]}},
                      id="phone")
    matches = make_flow({"c": {"type": "condition", "branches": [{"if": {"not": {"any": [
        {"field": "message.text", "op": "matches", "value": "x+"}]}}, "next": "c2"}], "else": "c2"},
        "c2": {"type": "message", "text": "ok"}}, id="matches")
    loops = make_flow({"hi": {"type": "message", "text": "{%- for i in vars.x %}{{ i }}{% endfor %}"}},
                      id="loops")
    jinja = make_flow({"hi": {"type": "message", "text": "{% if vars.x %}{{ vars.x|upper }}{% endif %}"}},
                      id="jinja")
    assert (SLOW.slow_work, phone.slow_work, matches.slow_work, loops.slow_work) == (True,) * 4
    assert (plain.slow_work, jinja.slow_work) == (False, False)


async def test_a_turn_of_a_slow_flow_runs_in_the_executor_and_others_on_the_loop() -> None:
    caller = make_flow({"go": {"type": "start_bot", "bot": "slow"}}, id="caller")
    plain = make_flow({"hi": {"type": "message", "text": "hi"}}, id="plain")
    executor = ThreadRecorder()
    driver = Driver(library(SLOW, caller, plain), Recorder(), executor=executor)
    try:
        result = await driver.turn(ConversationState("c1"), ev.InboundMessage("a" * 10, greeting="slow"),
                                   NOW, {})
        assert texts(result.effects) == ["yes"] and executor.used == 1
        result = await driver.turn(ConversationState("c2"), ev.InboundMessage("x", greeting="caller"),
                                   NOW, {})
        assert texts(result.effects) == ["no"] and executor.used == 2  # the flow it starts is slow
        result = await driver.turn(ConversationState("c3"), ev.InboundMessage("x", greeting="plain"),
                                   NOW, {})
        assert texts(result.effects) == ["hi"] and executor.used == 2
    finally:
        executor.shutdown()


async def test_the_templates_of_one_turn_share_a_cpu_budget() -> None:
    # Each render stops at 0.2 s of CPU; twenty of them in one turn would take 4 s without the
    # turn's budget (1 s), after which every template fails at once.
    heavy = ("{% set s = 'ab ' * 33000 %}{% for i in range(1000) %}{{ (s|wordwrap(5))|length }}"
             "{% endfor %}")
    steps = {f"s{i}": {"type": "message", "text": heavy, "next": f"s{i + 1}"} for i in range(20)}
    steps["s20"] = {"type": "message", "text": "done"}
    flow = make_flow(steps, id="heavy", start="s0")
    started = time.process_time()
    result = await Driver(library(flow), Recorder()).turn(
        ConversationState("c1"), ev.InboundMessage("x", greeting="heavy"), NOW, {})
    assert time.process_time() - started < 2.0
    assert texts(result.effects) == ["done"]  # the failed ones render empty: not sent (message.empty)
    errors = [t.data["error"] for t in of_type(result.effects, fx.Trace) if t.event == "template.error"]
    assert len(errors) == 20 and "this turn's templates took more than 1.0 s" in errors[-1]


async def test_a_turn_without_jinja_renders_reads_no_cpu_clock(monkeypatch: Any) -> None:
    # The turn's budget starts with its first render: a turn of constants and plain placeholders
    # (most turns) makes no system call for the thread's CPU clock (issue 14 aim 5).
    flow = make_flow({"s0": {"type": "message", "text": "Hi {{ message.text }}"}}, id="plain", start="s0")
    reads: list[float] = []
    clock = time.thread_time
    monkeypatch.setattr(time, "thread_time", lambda: reads.append(1.0) or clock())
    result = await Driver(library(flow), Recorder()).turn(
        ConversationState("c1"), ev.InboundMessage("x", greeting="plain"), NOW, {})
    assert texts(result.effects) == ["Hi x"] and reads == []
