"""Property test: random valid flows driven by random events never raise, keep their timer
bookkeeping straight, never change the state they are given, and leave states that round-trip
through msgpack.

Flows are generated valid (``flow_strategies.py``): steps that run at once (``now`` edges) only
point forward, so the only cycles go through steps that wait (button and list replies, pause
events, no_answer, widget callbacks, start_bot). Every generated document must pass validation.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.builder.compiled import CList, CMessage
from bot.builder.validate import compile_document
from bot.engine import effects as fx
from bot.engine import events as ev
from bot.engine.interpreter import advance
from bot.engine.state import ConversationState
from bot.simulation.simulator import Simulator

from .flow_strategies import SUB, event_specs, flow_docs
from .helpers import NOW, library


# ---------------------------------------------------------------- the harness
class Harness:
    def __init__(self, flow: Any, rnd: random.Random) -> None:
        self.lib = library(SUB, flow)
        self.rnd = rnd
        self.state = ConversationState("c1")
        self.now = NOW
        self.snapshot: dict[str, Any] = {
            "contact": {"id": 1, "name": "Ann"},
            "lead": {"id": 2, "price": 1500, "tags": ["vip"]},
        }
        self.timers: dict[str, float] = {}
        self.refs: list[str] = []
        self.payloads = sorted(
            {
                b.payload
                for s in flow.steps.values()
                if isinstance(s, CMessage)
                for b in s.buttons
                if b.next is not None
            }
            | {r.id for s in flow.steps.values() if isinstance(s, CList) for r in s.rows}
        )
        self.rotation = 0
        self.widgets = 0

    def answer(self, request: fx.Request) -> ev.RequestResult:
        fate = self.rnd.random()
        if request.kind == "round_robin":
            self.rotation += 1
            return ev.RequestResult(
                request.id, value=(self.rotation - 1) % request.payload["options"]
            )
        if fate < 0.15:
            return ev.RequestResult(request.id, ok=False, error="rejected", permanent=True)
        if fate < 0.2:
            return ev.RequestResult(request.id, ok=False, error="later", permanent=False)
        if request.kind == "widget":
            self.widgets += 1
            return ev.RequestResult(
                request.id, value={"token": f"tok{self.widgets}", "json": {"n": self.widgets}}
            )
        snapshot = {"lead": {"id": 2, "stage": "Won", "tags": []}} if fate > 0.9 else None
        return ev.RequestResult(
            request.id,
            value=self.rnd.choice([{"n": 1}, {"url": "https://f.test"}, None, [1, 2]]),
            snapshot=snapshot,
        )

    def step(self, event: ev.Event) -> list[fx.Effect]:
        given = self.state
        packed = msgpack.packb(given.to_dict())
        outcome = advance(self.lib, given, event, self.now, self.snapshot)
        assert msgpack.packb(given.to_dict()) == packed, "advance changed the state it was given"
        self.state = outcome.state
        check_round_trip(self.state)
        return outcome.effects

    def feed(self, event: ev.Event) -> None:
        effects = self.step(event)
        for _ in range(1000):
            pending = effects[-1] if effects and isinstance(effects[-1], fx.Request) else None
            assert all(not isinstance(e, fx.Request) for e in effects[:-1]), (
                "a Request that is not last"
            )
            if pending is None:
                break
            self.account(effects[:-1])
            result = self.answer(pending)
            if result.snapshot is not None:
                self.snapshot = result.snapshot
            effects = self.step(result)
        self.account(effects)
        self.check_at_rest()

    def account(self, effects: list[fx.Effect]) -> None:
        for e in effects:
            assert isinstance(
                e,
                (
                    fx.SendMessage,
                    fx.SetTimer,
                    fx.CancelTimer,
                    fx.InternalMessage,
                    fx.ChatStatus,
                    fx.Trace,
                ),
            ), e
            if isinstance(e, fx.SetTimer):
                assert e.timer_id not in self.timers
                assert e.at >= self.now.timestamp()
                self.timers[e.timer_id] = e.at
            elif isinstance(e, fx.CancelTimer):
                assert e.timer_id in self.timers, f"cancelled a timer that is not set: {e.timer_id}"
                del self.timers[e.timer_id]
            elif isinstance(e, fx.SendMessage):
                self.refs.append(e.ref)

    def check_at_rest(self) -> None:
        run = self.state.run
        if run is None:
            assert self.timers == {}
            return
        assert run.status in ("waiting", "finished", "stopped", "failed"), run.status
        assert (run.status == "waiting") == (run.wait is not None)
        if run.wait is not None:
            # widget_done: a widget answered while a person had the conversation (held, no timers)
            assert run.wait.kind in ("reply", "pause", "widget", "widget_done")
            assert set(run.wait.timers) == set(self.timers)
            if run.wait.kind == "widget_done":
                assert self.state.owner != "bot" and not run.wait.timers
        else:
            assert self.timers == {}
        if run.status == "failed":
            assert run.error

    def play(self, spec: tuple[Any, ...]) -> None:
        kind, arg = spec[0], spec[1]
        self.now += timedelta(minutes=self.rnd.choice([0, 1, 30, 90, 60 * 24, 60 * 24 * 3]))
        run = self.state.run
        wait = run.wait if run is not None else None
        if kind == "say":
            self.feed(ev.InboundMessage(arg, greeting="bot"))
        elif kind == "click":
            payload = self.payloads[arg % len(self.payloads)] if self.payloads else "none"
            self.feed(ev.InboundMessage("", payload=payload, kind="button", greeting="bot"))
        elif kind == "timer":
            if self.timers:
                timer_id = sorted(self.timers)[arg % len(self.timers)]
                self.now = max(self.now, self._at(self.timers[timer_id]))
                del self.timers[timer_id]
                self.feed(ev.TimerFired(timer_id))
            else:
                self.feed(ev.TimerFired(f"c1:t{arg}"))
        elif kind == "stale_timer":
            self.feed(ev.TimerFired(f"c1:t{arg}" if f"c1:t{arg}" not in self.timers else "gone"))
        elif kind == "video":
            self.feed(ev.VideoEvent(arg))
        elif kind == "takeover":
            self.feed(ev.Takeover(f"user:{arg}"))
        elif kind == "release":
            self.feed(ev.Release(arg))
        elif kind == "stop":
            self.feed(ev.StopBot())
        elif kind == "start":
            self.feed(ev.StartBot(arg, spec[2], {"from_api": 1}))
        elif kind == "delivery":
            ref = self.refs[arg % len(self.refs)] if self.refs else "r1:s0:m2"
            self.feed(ev.DeliveryFailed(ref, "blocked"))
        elif kind == "widget":
            token = wait.token if arg and wait is not None and wait.token else "wrong"
            self.feed(ev.WidgetCallback(str(token), {"n": 9}))
        elif kind == "stale_result":
            self.feed(ev.RequestResult(f"q{arg}"))
        elif kind == "crm":
            self.feed(ev.CrmEvent("lead.stage_changed", {"stage": "Won"}))
        elif kind == "human" and hasattr(ev, "HumanMessage"):
            self.feed(ev.HumanMessage("a person writes"))  # type: ignore[attr-defined]

    def _at(self, epoch: float) -> Any:
        return NOW + timedelta(seconds=epoch - NOW.timestamp())


def check_round_trip(state: ConversationState) -> None:
    data = msgpack.packb(state.to_dict())
    back = ConversationState.from_dict(msgpack.unpackb(data))
    assert back == state
    assert back.to_dict() == state.to_dict()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=flow_docs(), specs=event_specs(), rnd=st.randoms(use_true_random=False))
def test_random_flows_and_events_never_raise_and_states_round_trip(
    doc: dict[str, Any], specs: list[tuple[Any, ...]], rnd: random.Random
) -> None:
    flow = compile_document(doc, version=1)  # the generator only makes valid flows
    harness = Harness(flow, rnd)
    harness.feed(ev.InboundMessage("hello", greeting="bot"))
    for spec in specs:
        harness.play(spec)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=flow_docs(), specs=event_specs(), strict=st.booleans())
def test_random_conversations_on_the_simulator_never_raise(
    doc: dict[str, Any], specs: list[tuple[Any, ...]], strict: bool
) -> None:
    """The same flows through the real ``Driver`` and the embedded CRM (strict pipelines reject)."""
    flow = compile_document(doc, version=1)

    async def conversation() -> None:
        sim = Simulator(
            flow,
            bots=[SUB],
            now=NOW,
            contact={"name": "Ann"},
            pipelines={"Sales": ["New", "Won"]} if strict else None,
            widgets={"http_request": {"n": 1}},
            custom_handlers={"acme.score": lambda p, s: {"n": 2}},
        )
        await sim.say("hello")
        for spec in specs:
            kind, arg = spec[0], spec[1]
            if kind == "say":
                await sim.say(arg)
            elif kind == "click":
                try:
                    title = next(
                        t
                        for line in reversed(sim.transcript)
                        if line.role == "bot"
                        for t, p in zip(line.buttons, line.payloads, strict=True)
                        if p is not None
                    )
                except StopIteration:
                    continue
                await sim.click(title)
            elif kind in ("timer", "stale_timer"):
                await sim.wait(arg * 3600)
            elif kind in (
                "video",
                "release",
                "start",
                "takeover",
                "stop",
                "delivery",
                "widget",
                "crm",
            ):
                name, data = {
                    "video": (arg, {}),
                    "release": ("release", {"step": arg}),
                    "start": ("start_bot", {"bot": arg, "step": spec[-1]}),
                    "takeover": ("takeover", {"user": "u"}),
                    "stop": ("stop", {}),
                    "delivery": ("delivery_failed", {}),
                    "widget": ("widget_callback", {"body": {"n": 3}}),
                    "crm": ("lead.stage_changed", {"stage": "Won"}),
                }[kind]
                await sim.event(name, data)
            check_round_trip(sim.state)
            sim.context()

    asyncio.run(conversation())
