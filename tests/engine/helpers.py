"""Shared helpers of the runtime tests: build flows from step dicts and drive the pure core.

``make_flow(steps, **settings)`` builds a valid ``salesbot.flow/1`` document and compiles it
(so every test flow also passes validation). ``Chat`` feeds events through ``advance`` and
answers the interpreter's requests synchronously, like ``Driver.turn`` does, so tests can
assert on every effect of a turn without an event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from bot.builder.compiled import CompiledFlow
from bot.builder.validate import compile_document
from bot.engine import effects as fx
from bot.engine import events as ev
from bot.engine.flows import FlowLibrary
from bot.engine.interpreter import Outcome, advance
from bot.engine.state import ConversationState

#: Wednesday 1 May 2024, noon UTC.
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

#: What the CRM knows of the customer: a contact and its lead (for templates and action payloads).
SNAPSHOT = {
    "contact": {"id": 3, "name": "Ann Lee", "first_name": "Ann", "tags": ["a"]},
    "lead": {"id": 5, "name": "Deal", "price": 100, "responsible": 9, "tags": ["vip", "new"]},
}


def say(text: str) -> dict[str, str]:
    """A message step that only says ``text``."""
    return {"type": "message", "text": text}


def make_doc(
    steps: Mapping[str, Any],
    *,
    id: str = "bot",
    start: str | None = None,
    variables: Mapping[str, Any] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """A flow document; ``start`` defaults to the first step."""
    doc: dict[str, Any] = {
        "format": "salesbot.flow/1",
        "id": id,
        "start": start or next(iter(steps)),
        "steps": dict(steps),
    }
    if settings:
        doc["settings"] = settings
    if variables:
        doc["variables"] = dict(variables)
    return doc


def make_flow(
    steps: Mapping[str, Any],
    *,
    id: str = "bot",
    start: str | None = None,
    version: int = 1,
    variables: Mapping[str, Any] | None = None,
    **settings: Any,
) -> CompiledFlow:
    return compile_document(
        make_doc(steps, id=id, start=start, variables=variables, **settings), version=version
    )


def library(*flows: CompiledFlow) -> FlowLibrary:
    lib = FlowLibrary()
    for f in flows:
        lib.add(f)
    return lib


def without_traces(effects: Iterable[fx.Effect]) -> list[fx.Effect]:
    return [e for e in effects if not isinstance(e, fx.Trace)]


def of_type(effects: Iterable[fx.Effect], kind: type) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


def texts(effects: Iterable[fx.Effect]) -> list[str]:
    """The texts of the messages sent to the customer."""
    return [e.text for e in effects if isinstance(e, fx.SendMessage)]


def trace_events(effects: Iterable[fx.Effect]) -> list[str]:
    return [e.event for e in effects if isinstance(e, fx.Trace)]


Answer = Callable[[fx.Request], ev.RequestResult]


def ok_answer(request: fx.Request) -> ev.RequestResult:
    return ev.RequestResult(request.id, value={"ok": True})


class Chat:
    """One conversation on the pure core with a virtual clock and a synchronous request loop.

    ``feed`` returns every effect of the turn, the answered ``Request`` effects included (in
    order), and keeps the new state. ``timers`` mirrors what a timer wheel would hold.
    """

    def __init__(
        self,
        *flows: CompiledFlow,
        now: datetime = NOW,
        greeting: str | None = None,
        snapshot: Mapping[str, Any] | None = None,
        answer: Answer = ok_answer,
        conversation: str = "c1",
    ) -> None:
        self.lib = library(*flows)
        self.greeting = greeting or (flows[-1].id if flows else None)
        self.state = ConversationState(conversation)
        self.now = now
        self.snapshot: Mapping[str, Any] = dict(snapshot or {})
        self.answer = answer
        self.requests: list[fx.Request] = []
        self.timers: dict[str, float] = {}
        self.last: list[fx.Effect] = []

    def feed(self, event: ev.Event) -> list[fx.Effect]:
        outcome = self.advance(event)
        effects = list(outcome.effects)
        for _ in range(1000):
            request = outcome.request
            if request is None:
                break
            self.requests.append(request)
            result = self.answer(request)
            if result.snapshot is not None:
                self.snapshot = result.snapshot
            outcome = self.advance(result)
            effects.extend(outcome.effects)
        else:  # pragma: no cover - a test bug
            raise AssertionError("more than 1000 requests in one turn")
        for e in effects:
            if isinstance(e, fx.SetTimer):
                self.timers[e.timer_id] = e.at
            elif isinstance(e, fx.CancelTimer):
                self.timers.pop(e.timer_id, None)
        self.last = effects
        return effects

    def advance(self, event: ev.Event) -> Outcome:
        outcome = advance(self.lib, self.state, event, self.now, self.snapshot)
        self.state = outcome.state
        return outcome

    def start(self, text: str = "hello", **kw: Any) -> list[fx.Effect]:
        return self.feed(ev.InboundMessage(text, greeting=self.greeting, **kw))

    def say(self, text: str = "", *, payload: str | None = None, **kw: Any) -> list[fx.Effect]:
        return self.feed(ev.InboundMessage(text, payload=payload, greeting=self.greeting, **kw))

    def fire(self, timer_id: str) -> list[fx.Effect]:
        self.timers.pop(timer_id, None)
        return self.feed(ev.TimerFired(timer_id))

    def fire_only_timer(self) -> list[fx.Effect]:
        assert len(self.timers) == 1, self.timers
        return self.fire(next(iter(self.timers)))

    @property
    def run(self) -> Any:
        assert self.state.run is not None
        return self.state.run

    @property
    def step(self) -> str | None:
        return self.run.step

    @property
    def status(self) -> str:
        return str(self.run.status)

    @property
    def vars(self) -> dict[str, Any]:
        return dict(self.run.vars)

    def sent(self) -> list[fx.SendMessage]:
        return of_type(self.last, fx.SendMessage)

    def buttons(self) -> dict[str, str | None]:
        """Title -> payload of the buttons of the last message sent in the last turn."""
        msg = self.sent()[-1]
        if msg.list is not None:
            return {r.title: r.id for _, rows in msg.list.sections for r in rows}
        return {b.title: b.payload for b in msg.buttons}
