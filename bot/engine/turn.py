"""One turn's context and the helpers step handlers share; apart, so loop and handlers both import it.

The state being changed, the effects so far, templates, traces, timers, waits and requests. The
turn loop (``interpreter``) subclasses ``TurnContext`` and holds the dispatch tables; the step
handlers (``steps``) see only this module, so neither side imports the other.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, TypeAlias

from ..builder import compiled as c
from ..builder.templates import Template, TemplateFailed, evaluate_value
from . import effects as fx
from .analytics import Switch
from .flows import FlowSource
from .state import ConversationState, Run, Wait

_ALL_NAMES = frozenset({"chat", "bot"})


class Waiting(enum.Enum):
    """A step handler's answer when the run now waits (or the step ended the run itself)."""

    WAIT = "wait"


WAIT: Literal[Waiting.WAIT] = Waiting.WAIT
#: Where the run goes after a step: a step id, ``None`` (the bot ends) or ``WAIT``.
Target: TypeAlias = str | Literal[Waiting.WAIT] | None


class TurnContext:
    """The work of one ``advance`` call that step handlers see; the loop subclasses it."""

    __slots__ = ("cached_context", "effects", "flow", "flows", "new_turn", "now", "snapshot", "state", "steps")

    def __init__(self, flows: FlowSource, state: ConversationState, now: datetime,
                 snapshot: Mapping[str, Any]) -> None:
        # ``interpreter.advance`` sets the same fields inline: a change here goes there too.
        self.flows = flows
        self.state = state
        self.now = now
        self.snapshot = snapshot
        self.effects: list[fx.Effect] = []
        #: The steps entered, in order, and where the run changed bots (``Switch``): for analytics.
        self.steps: list[str | Switch] = []
        self.new_turn = False
        self.flow: c.CompiledFlow | None = None
        # The template context, built on first use; hot paths read ``cached_context or context()``.
        self.cached_context: dict[str, Any] | None = None
        run = state.run
        if run is not None and (run.status == "running" or run.status == "waiting"):  # run.active, inline
            self.flow = flows.get(run.bot, run.version)

    # ------------------------------------------------------------------ context
    @property
    def epoch(self) -> float:
        """The turn's time in epoch seconds: for timers only, so not computed for every event."""
        return self.now.timestamp()

    @property
    def run(self) -> Run:
        assert self.state.run is not None
        return self.state.run

    def context(self) -> dict[str, Any]:
        if self.cached_context is None:
            st = self.state
            run = st.run
            flow = self.flow
            snap = self.snapshot
            names = flow.names if flow is not None and flow.names is not None else _ALL_NAMES
            if run is not None:
                vars_, json_, lvr = run.vars, run.json, run.last_validation_result
            else:
                vars_, json_, lvr = {}, None, None
            ctx = {
                "contact": snap.get("contact") or {},
                "lead": snap.get("lead") or {},
                "company": snap.get("company") or {},
                "message": st.last_message or {},
                "vars": vars_, "json": json_, "last_validation_result": lvr,
                # Converting the clock costs more than most steps: only for flows that read it.
                "now": self.now.astimezone(flow.tz) if flow and flow.reads_clock else self.now,
            }
            # Small dicts built only for flows that read them (the rest of a turn never sees them).
            if "chat" in names:
                ctx["chat"] = {"channel": st.channel, "account": st.account, "id": st.id,
                               "origin": st.origin, "status": st.chat_status}
            if "bot" in names:
                ctx["bot"] = {"id": run.bot, "version": run.version} if run else {}
            self.cached_context = ctx
        return self.cached_context

    def invalidate(self) -> None:
        self.cached_context = None

    def render(self, template: Template | None) -> str:
        if template is None:
            return ""
        constant = template.constant
        if constant is not None:
            return constant
        try:
            return template.render(self.cached_context or self.context())
        except TemplateFailed as exc:
            self.trace("template.error", "warning", error=str(exc))
            return ""

    def value(self, compiled_value: Any) -> Any:
        """A compiled value (a template, or JSON holding templates) evaluated to plain data."""
        try:
            if type(compiled_value) is Template:
                return compiled_value.value(self.cached_context or self.context())
            return evaluate_value(compiled_value, self.cached_context or self.context())
        except TemplateFailed as exc:
            # In an object or list of templates only the template that failed becomes "" (an
            # action's parameters stay an object the rest of the payload can be built from).
            if isinstance(compiled_value, list):
                return [self.value(v) for v in compiled_value]
            if isinstance(compiled_value, dict):
                return {k: self.value(v) for k, v in compiled_value.items()}
            self.trace("template.error", "warning", error=str(exc))
            return ""

    def trace(self, event: str, level: str = "info", **data: Any) -> None:
        run = self.state.run
        if run is not None:
            data.setdefault("bot", run.bot)
            data.setdefault("step", run.step)
        self.effects.append(fx.Trace(event, level, data))

    # ------------------------------------------------------------------ waits and timers
    def end_wait(self) -> None:
        run = self.state.run
        if run is None or run.wait is None:
            return
        for timer_id in run.wait.timers:
            self.effects.append(fx.CancelTimer(timer_id))
        run.wait = None

    def own_wait(self) -> Wait:
        """The run's wait, copied into this turn's state to be changed in place.

        ``ConversationState.clone`` shares the wait with the state ``advance`` was given (most
        events end a wait rather than change it): whoever changes one takes a copy first.
        """
        run = self.run
        assert run.wait is not None
        run.wait = wait = run.wait.clone()
        return wait

    def fail_run(self, reason: str) -> None:
        run = self.run
        self.end_wait()
        run.status = "failed"
        run.error = reason
        run.callers.clear()
        self.trace("run.failed", "error", error=reason)

    def wait(self, kind: str, step: c.CStep, *, timers: dict[str, str] | None = None, on: tuple[str, ...] = (),
             token: str | None = None, request: str | None = None,
             until: float | None = None) -> Literal[Waiting.WAIT]:
        run = self.state.run
        assert run is not None
        run.wait = Wait(kind, step.id, {} if timers is None else timers, on, token, request, until)
        return WAIT

    def set_timer(self, wait_timers: dict[str, str], seconds: float, purpose: str) -> float:
        timer_id = f"{self.state.id}:{self.state.next_id('t')}"
        at = self.epoch + seconds
        wait_timers[timer_id] = purpose
        self.effects.append(fx.SetTimer(timer_id, at, purpose.split(":")[0]))
        return at

    def timer_times(self, timers: dict[str, str]) -> list[float]:
        """When the timers of ``timers`` (set this turn) fall due."""
        ids = set(timers)
        return [x.at for x in self.effects if isinstance(x, fx.SetTimer) and x.timer_id in ids]

    def request(self, step: c.CStep, kind: str, payload: dict[str, Any]) -> Literal[Waiting.WAIT]:
        request_id = self.state.next_id("q")
        self.effects.append(fx.Request(request_id, kind, payload))
        return self.wait("request", step, request=request_id)

    # ------------------------------------------------------------------ chat
    def set_chat_status(self, status: str) -> None:
        if self.state.chat_status != status:
            self.state.chat_status = status
            self.effects.append(fx.ChatStatus(status))
            chat = self.cached_context.get("chat") if self.cached_context is not None else None
            if chat is not None:
                chat["status"] = status  # this turn's own dict

    def send(self, msg: fx.SendMessage) -> None:
        # messages.message does the same inline
        self.effects.append(msg)
        if msg.marks_answered and self.state.chat_status == "unanswered":
            self.set_chat_status("answered")

    def message_ref(self, step: c.CStep) -> str:
        # messages.message does the same inline
        state = self.state
        run = state.run
        assert run is not None
        state.seq += 1
        return f"{run.id}:{step.id}:m{state.seq}"
