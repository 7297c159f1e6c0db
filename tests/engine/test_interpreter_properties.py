"""Property test: random valid flows driven by random events never raise, keep their timer
bookkeeping straight, never change the state they are given, and leave states that round-trip
through msgpack.

Flows are generated valid: steps that run at once (``now`` edges) only point forward, so the
only cycles go through steps that wait (button and list replies, pause events, no_answer,
widget callbacks, start_bot). Every generated document must pass validation.
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

from .helpers import NOW, library, make_doc, make_flow

TITLES = ["Catalog", "Katalóg", "Person", "Yes", "No", "1", "Menu"]
TEXTS = [
    "Hi {{ contact.name }}",
    "{{ vars.x }}",
    "{{ vars.x + 1 }}",
    "n={{ vars.n | default(0) }}",
    "{{ now }}",
    "{{ json.n }}",
    "{{ lead.tags }}",
    "{{ last_validation_result }}",
    "plain",
    "{{ message.text }}",
]
VALUES: list[Any] = [
    "{{ vars.x + 1 }}",
    "{{ now }}",
    "{{ vars }}",
    "{{ message.text }}",
    "{{ lead.tags }}",
    5,
    "{{ 2 ** 70 }}",
    "{{ (1, 2) }}",
    "{{ [vars.missing] }}",
    "{{ json }}",
    "text",
    None,
    [1, "a"],
]
FIELDS = [
    "message.text",
    "vars.x",
    "vars.n",
    "lead.tags",
    "lead.price",
    "contact.name",
    "json.n",
    "last_validation_result",
    "chat.status",
]
OPS = [
    "eq",
    "ne",
    "contains",
    "not_contains",
    "starts_with",
    "matches",
    "in",
    "not_in",
    "gt",
    "gte",
    "lt",
    "lte",
    "between",
    "empty",
    "not_empty",
    "has",
]
PATTERNS = [r"\d+", "^ye", "{{ vars.x }}", "(a|aa)+$", "cat(alog)?"]
OPERANDS: list[Any] = [1, "10", "a", "{{ vars.x }}", True, "yes"]
EXPRS = [
    "vars.x > 1",
    "lead.price > 1000",
    "'vip' in lead.tags",
    "message.text|length > 3",
    "vars.n + 1 > 2",
]
USER_TEXTS = TITLES + [
    "2",
    "3",
    "",
    "catalog ",
    "KATALOG",
    "my number is 0555 111 22 33",
    "a@example.com",
    "99999999999999999999999",
    "፩",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
    "what's the price",
]
DURATIONS: list[Any] = ["1m", "1h", 30, "1d"]


# ---------------------------------------------------------------- flow documents
@st.composite
def predicates(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(["leaf", "leaf", "expr"] + (["all", "any", "not"] if depth < 2 else []))
    )
    if kind == "expr":
        return {"expr": draw(st.sampled_from(EXPRS))}
    if kind in ("all", "any"):
        return {kind: draw(st.lists(predicates(depth + 1), min_size=1, max_size=3))}
    if kind == "not":
        return {"not": draw(predicates(depth + 1))}
    op = draw(st.sampled_from(OPS))
    leaf: dict[str, Any] = {"field": draw(st.sampled_from(FIELDS)), "op": op}
    if op == "between":
        leaf["value"] = draw(st.lists(st.sampled_from(OPERANDS), min_size=2, max_size=2))
    elif op in ("in", "not_in"):
        leaf["value"] = draw(
            st.one_of(
                st.lists(st.sampled_from(OPERANDS), min_size=1, max_size=3), st.just("a, yes")
            )
        )
    elif op == "matches":
        leaf["value"] = draw(st.sampled_from(PATTERNS))
    elif op not in ("empty", "not_empty"):
        leaf["value"] = draw(st.sampled_from(OPERANDS))
    return leaf


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    check = draw(
        st.sampled_from(["equals", "not_equals", "contains", "not_contains", "length", "regex"])
    )
    r: dict[str, Any] = {"check": check}
    if check in ("contains", "not_contains"):
        kind = draw(st.sampled_from(["number", "letters", "phone", "email", "range", "text"]))
        r["kind"] = kind
        if kind == "range":
            r["min"], r["max"] = 1, draw(st.sampled_from([5, 100]))
        elif kind == "text":
            r["value"] = draw(st.sampled_from(["yes", "{{ vars.x }}", "{{ vars.n + 1 }}"]))
    elif check == "length":
        r["min"] = draw(st.integers(0, 5))
    elif check == "regex":
        r["pattern"] = draw(st.sampled_from([r"\d+", "(a+)+$", "(a|aa)+$", "^[a-z]+$"]))
    else:
        r["value"] = draw(st.sampled_from(["yes", 10, "{{ vars.x }}", "{{ vars.n + 1 }}"]))
    return r


@st.composite
def actions(draw: st.DrawFn) -> dict[str, Any]:
    do = draw(
        st.sampled_from(
            [
                "add_note",
                "add_task",
                "complete_tasks",
                "set_chat_status",
                "change_stage",
                "change_responsible",
                "create_lead",
                "subscribers",
                "tags",
                "send_email",
                "send_webhook",
                "set_field",
                "set_variable",
                "create_form",
                "meta_conversion",
            ]
        )
    )
    text = draw(st.sampled_from(TEXTS))
    return {
        "add_note": {"do": do, "text": text},
        "add_task": {
            "do": do,
            "text": text,
            "due": draw(
                st.sampled_from(
                    ["now", "end_of_day", "in_1_day", "in_3_days", "end_of_week", "2h", 90]
                )
            ),
        },
        "complete_tasks": {
            "do": do,
            "due": draw(st.sampled_from(["all", "overdue", "today", "tomorrow"])),
        },
        "set_chat_status": {"do": do, "status": draw(st.sampled_from(["closed", "answered"]))},
        "change_stage": {"do": do, "stage": draw(st.sampled_from(["Won", "{{ vars.x }}"]))},
        "change_responsible": {"do": do, "user": 7},
        "create_lead": {"do": do, "copy": ["price"]},
        "subscribers": {"do": do, "add": [1]},
        "tags": {"do": do, "add": [text]},
        "send_email": {"do": do, "template": "welcome"},
        "send_webhook": {
            "do": do,
            "url": "https://hook.test/{{ lead.id }}",
            "save_as": draw(st.sampled_from(["json", "hook"])),
        },
        "set_field": draw(
            st.sampled_from(
                [
                    {"do": do, "field": "f", "value": text},
                    {"do": do, "field": "f", "from": "message"},
                    {"do": do, "field": "f", "from": "manual"},
                ]
            )
        ),
        "set_variable": {
            "do": do,
            "name": draw(st.sampled_from(["x", "n", "sub"])),
            "value": draw(st.sampled_from(VALUES)),
        },
        "create_form": {"do": do, "fields": ["email"]},
        "meta_conversion": {"do": do, "event": "Lead", "value": text},
    }[do]


@st.composite
def flow_docs(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(3, 10))
    ids = [f"s{i}" for i in range(n)]

    def any_step() -> str:
        return draw(st.sampled_from(ids))

    def forward(i: int, optional: bool = True) -> str | None:
        later = ids[i + 1 :]
        if not later:
            return None
        return draw(st.sampled_from(later + ([None] if optional else [])))

    def maybe_any() -> str | None:
        return draw(st.sampled_from(ids + [None]))

    def put(d: dict[str, Any], key: str, value: Any) -> None:
        if value is not None:
            d[key] = value

    steps: dict[str, Any] = {}
    for i, sid in enumerate(ids):
        kinds = [
            "message",
            "buttons",
            "buttons",
            "list",
            "validation",
            "validation",
            "pause",
            "pause",
            "action",
            "action",
            "action",
            "internal_message",
            "subscribe",
            "comment",
            "start_bot",
            "start_bot",
            "widget",
            "custom",
            "stop",
        ]
        if i < n - 1:
            kinds += ["goto", "round_robin", "condition", "condition"]  # they need a step after them
        kind = draw(st.sampled_from(kinds))
        s: dict[str, Any]
        if kind == "message":
            s = {"type": "message", "text": draw(st.sampled_from(TEXTS))}
            if draw(st.booleans()):
                s["buttons"] = [{"title": "Site", "url": "https://x.test/{{ lead.id }}"}]
            put(s, "next", forward(i))
            put(s, "failed", maybe_any())
        elif kind == "buttons":
            titles = draw(st.lists(st.sampled_from(TITLES), min_size=1, max_size=3, unique=True))
            s = {
                "type": "message",
                "text": draw(st.sampled_from(TEXTS)),
                "buttons": [
                    {
                        "title": t,
                        "synonyms": draw(
                            st.lists(st.sampled_from(["human", "2", "k"]), max_size=1)
                        ),
                        "next": any_step(),
                    }
                    for t in titles
                ],
            }
            if draw(st.booleans()):
                s["buttons"].append({"title": "Site", "url": "https://x.test"})
            put(s, "other_answer", maybe_any())
            if draw(st.booleans()):
                s["no_answer"] = {"after": draw(st.sampled_from(DURATIONS)), "next": any_step()}
            put(s, "failed", maybe_any())
        elif kind == "list":
            rows = [
                {"title": t, "next": any_step()}
                for t in draw(
                    st.lists(st.sampled_from(TITLES), min_size=1, max_size=4, unique=True)
                )
            ]
            if draw(st.booleans()):
                rows[0]["id"] = "row-a"
            s = {
                "type": "list",
                "text": "Pick",
                "button": "Open",
                "sections": [{"title": "All", "rows": rows}],
            }
            put(s, "other_answer", maybe_any())
            if draw(st.booleans()):
                s["no_answer"] = {"after": draw(st.sampled_from(DURATIONS)), "next": any_step()}
        elif kind == "condition":
            branches = [
                {"if": draw(predicates()), "next": forward(i, optional=False)}
                for _ in range(draw(st.integers(1, 3)))
            ]
            s = {"type": "condition", "branches": branches}
            put(s, "else", forward(i))
        elif kind == "validation":
            s = {
                "type": "validation",
                "rules": draw(st.lists(rules(), min_size=1, max_size=3)),
                "logic": draw(st.sampled_from(["all", "any"])),
            }
            put(s, "save_as", draw(st.sampled_from(["x", "found", None])))
            put(s, "pass", forward(i))
            put(s, "fail", forward(i))
        elif kind == "pause":
            ons = draw(
                st.lists(
                    st.sampled_from(
                        ["message", "timer", "working_hours", "video_opened", "video_closed"]
                    ),
                    min_size=1,
                    max_size=4,
                    unique=True,
                )
            )
            until = []
            for on in ons:
                e: dict[str, Any] = {"on": on}
                if on == "timer":
                    e["after"] = draw(st.sampled_from(DURATIONS))
                put(e, "next", forward(i) if on == "working_hours" else maybe_any())
                until.append(e)
            s = {"type": "pause", "until": until}
        elif kind == "action":
            s = {"type": "action", "actions": draw(st.lists(actions(), min_size=1, max_size=3))}
            put(s, "next", forward(i))
            put(s, "failed", forward(i))
        elif kind == "internal_message":
            s = {"type": "internal_message", "text": draw(st.sampled_from(TEXTS)), "to": ["user:7"]}
            put(s, "next", forward(i))
        elif kind == "subscribe":
            s = {"type": "subscribe", "tag": "weekly", "title": "Weekly"}
            put(s, "next", forward(i))
        elif kind == "comment":
            s = {"type": "comment", "text": "Thanks"}
            put(s, "next", forward(i))
        elif kind == "goto":
            s = {"type": "goto", "step": forward(i, optional=False)}
        elif kind == "round_robin":
            s = {
                "type": "round_robin",
                "options": [forward(i, optional=False) for _ in range(draw(st.integers(2, 3)))],
            }
        elif kind == "start_bot":
            s = {"type": "start_bot", "bot": draw(st.sampled_from(["sub", "bot", "ghost"]))}
            put(s, "next", maybe_any())
        elif kind == "widget":
            s = {"type": "widget", "widget": "http_request", "params": {"lead": "{{ lead.id }}"}}
            if draw(st.booleans()):
                s["wait"] = {"timeout": draw(st.sampled_from(DURATIONS))}
                put(s["wait"], "on_timeout", maybe_any())
                put(s, "next", maybe_any())
            else:
                put(s, "next", forward(i))
            put(s, "failed", forward(i))
        elif kind == "custom":
            s = {"type": "custom", "handler": "acme.score", "params": {"x": "{{ vars.x }}"}}
            put(s, "next", forward(i))
            put(s, "failed", forward(i))
        else:
            s = {"type": "stop", "close_chat": draw(st.booleans())}
        steps[sid] = s
    settings_: dict[str, Any] = {
        "timezone": draw(st.sampled_from(["UTC", "Europe/Istanbul"])),
        "step_budget": draw(st.sampled_from([3, 20, 100])),
        "leave_unanswered": draw(st.booleans()),
    }
    if draw(st.booleans()):
        settings_["working_hours"] = {"mon-fri": "09:00-18:00"}
    return make_doc(steps, **settings_)


SUB = make_flow(
    {
        "ask": {
            "type": "pause",
            "until": [{"on": "message", "next": "save"}, {"on": "timer", "after": "1h"}],
        },
        "save": {
            "type": "action",
            "actions": [{"do": "set_variable", "name": "answer", "value": "{{ message.text }}"}],
            "next": "end",
        },
        "end": {"type": "stop"},
    },
    id="sub",
    variables={"from_sub": True},
)


# ---------------------------------------------------------------- events
EVENT_KINDS = [
    "say",
    "say",
    "say",
    "click",
    "click",
    "timer",
    "timer",
    "stale_timer",
    "video",
    "takeover",
    "release",
    "stop",
    "start",
    "delivery",
    "widget",
    "stale_result",
    "crm",
    "human",
]


@st.composite
def event_specs(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    specs: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(3, 20))):
        kind = draw(st.sampled_from(EVENT_KINDS))
        if kind == "say":
            specs.append((kind, draw(st.one_of(st.sampled_from(USER_TEXTS), st.text(max_size=12)))))
        elif kind == "video":
            specs.append((kind, draw(st.sampled_from(["video_opened", "video_closed"]))))
        elif kind == "release":
            specs.append((kind, draw(st.sampled_from([None, "s0", "s1", "s4", "nope"]))))
        elif kind == "start":
            specs.append(
                (
                    kind,
                    draw(st.sampled_from(["bot", "sub", "ghost"])),
                    draw(st.sampled_from([None, "s1", "ask"])),
                )
            )
        elif kind == "widget":
            specs.append((kind, draw(st.booleans())))
        else:
            specs.append((kind, draw(st.integers(0, 10))))
    return specs


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
