"""The interpreter: a pure function ``(flows, state, event, clock, crm snapshot) -> (state, effects)``.

It does no I/O. Work that needs the outside world (a CRM command, a webhook, the round-robin
counter, a widget or custom handler) is a ``Request`` effect that suspends the run; the shell
answers it with a ``RequestResult`` event in the same turn (see ``bot.runtime.driver``).

A waiting run records what it waits for (``Wait``) with the ids of its timers, so a timer
that fires for a step that is no longer current is recognised and does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from ..builder import compiled as c
from ..builder.normalize import normalize
from ..builder.templates import Template, TemplateFailed, evaluate_value
from . import effects as fx
from . import events as ev
from .checks import check, region_for_timezone
from .flows import FlowSource
from .predicates import holds
from .state import ConversationState, Frame, Run, Wait, plain

_WAIT = object()  # a step handler's answer: the run now waits
_ALL_NAMES = frozenset({"chat", "bot"})
MAX_CALL_DEPTH = 10


class Outcome(NamedTuple):
    """The new state and the effects of one ``advance``."""

    state: ConversationState
    effects: list[fx.Effect]

    @property
    def request(self) -> fx.Request | None:
        """The pending request the shell must answer, if the run is suspended on one."""
        last = self.effects[-1] if self.effects else None
        return last if isinstance(last, fx.Request) else None


def advance(
    flows: FlowSource,
    state: ConversationState,
    event: ev.Event,
    now: datetime,
    snapshot: Mapping[str, Any] | None = None,
) -> Outcome:
    """Apply one event to a conversation. ``state`` is not modified; a new one is returned."""
    turn = _Turn(flows, state.clone(), now, snapshot or {})
    turn.handle(event)
    return Outcome(turn.state, turn.effects)  # a NamedTuple: cheap to build on the hot path


class _Turn:
    """The work of one ``advance`` call."""

    __slots__ = ("_ctx", "effects", "epoch", "flow", "flows", "new_turn", "now", "snapshot", "state")

    def __init__(self, flows: FlowSource, state: ConversationState, now: datetime,
                 snapshot: Mapping[str, Any]) -> None:
        self.flows = flows
        self.state = state
        self.now = now
        self.epoch = now.timestamp()
        self.snapshot = snapshot
        self.effects: list[fx.Effect] = []
        self.new_turn = False
        self.flow: c.CompiledFlow | None = None
        self._ctx: dict[str, Any] | None = None
        run = state.run
        if run is not None and run.active:
            self.flow = flows.get(run.bot, run.version)

    # ------------------------------------------------------------------ context
    @property
    def run(self) -> Run:
        assert self.state.run is not None
        return self.state.run

    def context(self) -> dict[str, Any]:
        if self._ctx is None:
            st = self.state
            run = st.run
            flow = self.flow
            snap = self.snapshot
            names = flow.names if flow is not None and flow.names is not None else _ALL_NAMES
            ctx = {
                "contact": snap.get("contact") or {},
                "lead": snap.get("lead") or {},
                "company": snap.get("company") or {},
                "message": st.last_message or {},
                "vars": run.vars if run else {},
                "json": run.json if run else None,
                "last_validation_result": run.last_validation_result if run else None,
                # Converting the clock costs more than most steps: only for flows that read it.
                "now": self.now.astimezone(flow.tz) if flow and flow.reads_clock else self.now,
            }
            # Small dicts built only for flows that read them (the rest of a turn never sees them).
            if "chat" in names:
                ctx["chat"] = {"channel": st.channel, "account": st.account, "id": st.id,
                               "origin": st.origin, "status": st.chat_status}
            if "bot" in names:
                ctx["bot"] = {"id": run.bot, "version": run.version} if run else {}
            self._ctx = ctx
        return self._ctx

    def invalidate(self) -> None:
        self._ctx = None

    def render(self, template: Template | None) -> str:
        if template is None:
            return ""
        constant = template.constant
        if constant is not None:
            return constant
        try:
            return template.render(self._ctx or self.context())
        except TemplateFailed as exc:
            self.trace("template.error", "warning", error=str(exc))
            return ""

    def value(self, compiled_value: Any) -> Any:
        try:
            if type(compiled_value) is Template:
                return compiled_value.value(self._ctx or self.context())
            return evaluate_value(compiled_value, self._ctx or self.context())
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

    # ------------------------------------------------------------------ events
    def handle(self, event: ev.Event) -> None:
        handler = _EVENT_HANDLERS.get(type(event))
        if handler is None:  # pragma: no cover - the Event union is closed
            raise TypeError(f"unknown event {event!r}")
        # The step budget counts per outside event. The count restarts when the event runs its
        # first step, so an event that runs nothing (a stale timer) leaves the state as it was.
        self.new_turn = not isinstance(event, ev.RequestResult)
        handler(self, event)

    def on_message(self, e: ev.InboundMessage) -> None:
        st = self.state
        st.last_message = {
            "text": e.text, "payload": e.payload, "kind": e.kind, "id": e.message_id,
            "attachments": [{"kind": a.kind, "url": a.url, "name": a.name} for a in e.attachments],
            "start_param": e.start_param,
        }
        if st.origin is None:
            st.origin = e.kind if e.kind in ("comment", "referral") else "message"
        if st.chat_status != "unanswered":
            self.set_chat_status("unanswered")
        self.invalidate()
        if st.owner != "bot":
            return  # a person has the conversation: the bot neither starts nor answers
        run = st.run
        if run is None or not run.active:
            if e.greeting:
                self.start_run(e.greeting, None, {})
            return
        wait = run.wait
        if wait is None:
            return
        step = self.flow.steps.get(wait.step) if self.flow else None
        if wait.kind == "reply" and isinstance(step, (c.CMessage, c.CList)):
            target = self.match_reply(step, e)
            if target is None:
                target = step.other_answer
                if target is None:
                    self.trace("reply.unmatched", text=e.text[:200])
                    return
            self.resume(target)
        elif wait.kind == "pause" and "message" in wait.on and isinstance(step, c.CPause):
            ev_ = next(x for x in step.until if x.on == "message")
            self.resume(ev_.next)

    def on_timer(self, e: ev.TimerFired) -> None:
        run = self.state.run
        wait = run.wait if run is not None and run.active else None
        if wait is None or e.timer_id not in wait.timers:
            self.trace("timer.stale", "debug", timer=e.timer_id)
            return
        if self.state.owner != "bot":
            # The person who took over decides; the bot stays where it was, silent. The timer is
            # held: handing back without a step lets it fall due again.
            purpose = wait.timers.pop(e.timer_id, None)
            if purpose is not None:
                wait.held = (*wait.held, purpose)
            self.trace("timer.held", timer=e.timer_id)
            return
        purpose = wait.timers[e.timer_id]
        step = self.flow.steps.get(wait.step) if self.flow else None
        wait.timers.pop(e.timer_id)
        if purpose == "no_answer" and isinstance(step, (c.CMessage, c.CList)) and step.no_answer:
            self.resume(step.no_answer[1])
        elif purpose.startswith("pause:") and isinstance(step, c.CPause):
            self.resume(step.until[int(purpose.split(":")[1])].next)
        elif purpose == "widget_timeout" and isinstance(step, c.CWidget):
            self.resume(step.on_timeout)

    def on_delivery_failed(self, e: ev.DeliveryFailed) -> None:
        run = self.state.run
        finished = run is not None and run.status == "finished"
        if run is None or not (run.active or finished) or not e.ref.startswith(run.id + ":"):
            self.trace("delivery.failed_stale", "debug", ref=e.ref, reason=e.reason)
            return
        if finished:
            # The run ended right after sending (a message then stop): the report comes later.
            self.flow = self.flows.get(run.bot, run.version)
        step_id = e.ref.split(":")[1]
        step = self.flow.steps.get(step_id) if self.flow else None
        failed = getattr(step, "failed", None)
        self.trace("delivery.failed", "warning", ref=e.ref, reason=e.reason)
        if self.state.owner != "bot":
            return  # a person has the conversation and sees the failure; the bot does nothing
        if failed:
            if finished:
                run.status, run.error = "running", None
            self.resume(failed)
        elif not finished:
            self.fail_run(f"message of step {step_id!r} could not be delivered: {e.reason}")

    def on_widget(self, e: ev.WidgetCallback) -> None:
        run = self.state.run
        wait = run.wait if run is not None and run.active else None
        if wait is None or wait.kind != "widget" or wait.token != e.token:
            self.trace("widget.stale", "debug")
            return
        step = self.flow.steps.get(wait.step) if self.flow else None
        if self.state.owner != "bot":
            # Keep the answer; the run goes on with it when the conversation is handed back.
            for timer_id in wait.timers:
                self.effects.append(fx.CancelTimer(timer_id))
            wait.timers, wait.token, wait.widget_json, wait.kind = {}, None, e.body, "widget_done"
            self.trace("widget.held")
            return
        run.json = e.body
        self.invalidate()
        if isinstance(step, c.CWidget):
            self.resume(step.next)

    def on_video(self, e: ev.VideoEvent) -> None:
        run = self.state.run
        wait = run.wait if run is not None and run.active else None
        if wait is None or wait.kind != "pause" or e.kind not in wait.on or self.state.owner != "bot":
            return
        step = self.flow.steps.get(wait.step) if self.flow else None
        if isinstance(step, c.CPause):
            self.resume(next(x for x in step.until if x.on == e.kind).next)

    def on_crm_event(self, e: ev.CrmEvent) -> None:
        self.trace("crm.event", type=e.type)

    def on_human(self, e: ev.HumanMessage) -> None:
        """A person answered: the chat counts as answered; the bot's run is not touched."""
        self.set_chat_status("answered")

    def on_takeover(self, e: ev.Takeover) -> None:
        self.state.owner = "human"
        self.state.owner_user = e.user
        self.trace("conversation.takeover", user=e.user)

    def on_release(self, e: ev.Release) -> None:
        st = self.state
        st.owner, st.owner_user = "bot", None
        self.trace("conversation.release", to_step=e.step)
        if e.step is None:
            self.continue_held()
            return
        run = st.run
        if run is not None and self.flow is None:
            # A run that has ended: releasing at a step takes it up again, in its bot and version.
            self.flow = self.flows.get(run.bot, run.version)
        if run is None or self.flow is None:
            self.trace("release.no_run", "warning", to_step=e.step)
            return
        if e.step not in self.flow.steps:
            self.trace("release.unknown_step", "warning", to_step=e.step)
            return
        if not run.active:
            run.status, run.error = "running", None
        self.resume(e.step)

    def continue_held(self) -> None:
        """After a hand-back: what fell due during the takeover happens now."""
        run = self.state.run
        wait = run.wait if run is not None and run.active else None
        if wait is None or self.flow is None:
            return
        step = self.flow.steps.get(wait.step)
        if wait.kind == "widget_done" and isinstance(step, c.CWidget):
            run.json = wait.widget_json
            self.invalidate()
            self.resume(step.next)
            return
        if not wait.held:
            return
        # A timer that fell due while a person talked starts again from now: the customer has
        # just been answered, so "no answer for 2h" counts from the hand-back.
        flow = self.flow
        wait.until = None
        for purpose in wait.held:
            seconds: float | None = None
            if purpose == "no_answer" and isinstance(step, (c.CMessage, c.CList)) and step.no_answer:
                seconds = step.no_answer[0]
            elif purpose.startswith("pause:") and isinstance(step, c.CPause):
                event = step.until[int(purpose.split(":")[1])]
                if event.on == "working_hours":
                    seconds = max(0.0, flow.hours.next_opening(self.now).timestamp() - self.epoch)
                else:
                    seconds = event.after or 0
            elif purpose == "widget_timeout" and isinstance(step, c.CWidget) and step.wait_timeout:
                seconds = step.wait_timeout
            if seconds is not None:
                at = self.set_timer(wait.timers, seconds, purpose)
                wait.until = at if wait.until is None else min(wait.until, at)
        wait.held = ()

    def on_stop(self, e: ev.StopBot) -> None:
        run = self.state.run
        if run is None or not run.active:
            return
        self.end_wait()
        run.status = "stopped"
        run.callers.clear()
        self.trace("run.stopped", reason=e.reason)

    def on_start(self, e: ev.StartBot) -> None:
        run = self.state.run
        if run is not None and run.active:
            self.end_wait()
            run.status = "stopped"
            self.trace("run.stopped", reason="replaced")
        self.start_run(e.bot, e.step, dict(e.variables))

    def on_result(self, e: ev.RequestResult) -> None:
        run = self.state.run
        wait = run.wait if run is not None and run.active else None
        if wait is None or wait.kind != "request" or wait.request != e.request_id:
            self.trace("request.stale", "warning", request=e.request_id)
            return
        if e.snapshot is not None:
            self.snapshot = e.snapshot
            self.invalidate()
        if self.flow is None:
            self.fail_run(f"bot {run.bot} v{run.version} is no longer loaded")
            return
        run.wait = None
        run.status = "running"
        step = self.flow.steps[wait.step]
        target = _RESULT_HANDLERS[type(step)](self, step, e)  # type: ignore[arg-type]
        self.after_step(target)

    # ------------------------------------------------------------------ runs
    def start_run(self, bot: str, step: str | None, variables: dict[str, Any]) -> None:
        flow = self.flows.get(bot)
        if flow is None:
            self.trace("run.unknown_bot", "error", bot=bot)
            return
        st = self.state
        st.run = Run(st.next_id("r"), flow.id, flow.version, None, "running",
                     {**flow.variables, **variables})
        self.flow = flow
        self.invalidate()
        self.trace("run.started", version=flow.version)
        start = step if step is not None and step in flow.steps else flow.start
        self.after_step(start)

    def resume(self, target: str | None) -> None:
        """Leave the current wait and go on at ``target`` (None ends the run)."""
        self.end_wait()
        self.run.status = "running"
        self.after_step(target)

    def end_wait(self) -> None:
        run = self.state.run
        if run is None or run.wait is None:
            return
        for timer_id in run.wait.timers:
            self.effects.append(fx.CancelTimer(timer_id))
        run.wait = None

    def after_step(self, target: Any) -> None:
        """Run steps from ``target`` until the run waits or ends."""
        state = self.state
        handlers = _STEP_HANDLERS
        while True:
            if target is _WAIT:
                run = state.run
                if run is not None and run.status != "failed":
                    run.status = "waiting"
                return
            if target is None:
                target = self.finish_run()
                if target is None:
                    return
                continue
            flow = self.flow
            assert flow is not None
            step = flow.steps.get(target)
            run = state.run
            assert run is not None
            if step is None:
                self.fail_run(f"step {target!r} does not exist in {flow.id} v{flow.version}")
                return
            if self.new_turn:
                state.turn_steps, self.new_turn = 0, False
            if state.turn_steps >= flow.step_budget:
                self.fail_run(f"step budget of {flow.step_budget} exhausted at step {target!r}")
                return
            state.turn_steps += 1
            run.step = target
            run.action_index = 0
            target = handlers[step.__class__](self, step)

    def finish_run(self, status: str = "finished") -> str | None:
        """End the current bot; return to a caller if there is one (its next step)."""
        run = self.run
        self.end_wait()
        if run.callers:
            frame = run.callers.pop()
            callee_vars = run.vars
            callee = run.bot
            run.bot, run.version, run.vars = frame.bot, frame.version, frame.vars
            run.vars[callee] = callee_vars
            run.json, run.last_validation_result = frame.json, frame.last_validation_result
            self.flow = self.flows.get(frame.bot, frame.version)
            self.invalidate()
            self.trace("run.returned", callee=callee)
            if self.flow is None:
                self.fail_run(f"bot {frame.bot} v{frame.version} is no longer loaded")
                return None
            return frame.next
        run.status = status
        self.trace("run.finished")
        return None

    def fail_run(self, reason: str) -> None:
        run = self.run
        self.end_wait()
        run.status = "failed"
        run.error = reason
        run.callers.clear()
        self.trace("run.failed", "error", error=reason)

    def wait(self, kind: str, step: c.CStep, **kwargs: Any) -> object:
        self.run.wait = Wait(kind, step.id, **kwargs)
        return _WAIT

    def set_timer(self, wait_timers: dict[str, str], seconds: float, purpose: str) -> float:
        timer_id = f"{self.state.id}:{self.state.next_id('t')}"
        at = self.epoch + seconds
        wait_timers[timer_id] = purpose
        self.effects.append(fx.SetTimer(timer_id, at, purpose.split(":")[0]))
        return at

    def request(self, step: c.CStep, kind: str, payload: dict[str, Any]) -> object:
        request_id = self.state.next_id("q")
        self.effects.append(fx.Request(request_id, kind, payload))
        return self.wait("request", step, request=request_id)

    def set_chat_status(self, status: str) -> None:
        if self.state.chat_status != status:
            self.state.chat_status = status
            self.effects.append(fx.ChatStatus(status))
            chat = self._ctx.get("chat") if self._ctx is not None else None
            if chat is not None:
                chat["status"] = status  # this turn's own dict

    def send(self, msg: fx.SendMessage) -> None:
        self.effects.append(msg)
        if msg.marks_answered and self.state.chat_status == "unanswered":
            self.set_chat_status("answered")

    def message_ref(self, step: c.CStep) -> str:
        state = self.state
        state.seq += 1
        return f"{state.run.id}:{step.id}:m{state.seq}"  # type: ignore[union-attr]

    # ------------------------------------------------------------------ replies
    def match_reply(self, step: c.CMessage | c.CList, e: ev.InboundMessage) -> str | None:
        payload = e.payload
        text = normalize(e.text) if e.text else ""
        if isinstance(step, c.CList):
            for row in step.rows:
                if payload is not None and payload == row.id:
                    return row.next
            for row in step.rows:
                if text and (text == normalize(row.title) or text == str(row.number)):
                    return row.next
            return None
        replies = [b for b in step.buttons if b.next is not None]
        if payload is not None:
            for b in replies:
                if payload == b.payload:
                    return b.next
        if not text:
            return None
        for b in replies:
            if text in b.keys or (not b.title.is_constant and text == normalize(self.render(b.title))):
                return b.next
        # isdecimal, not isdigit: "፩" is a digit that int() refuses.
        if text.isdecimal() and 1 <= int(text) <= len(replies):
            return replies[int(text) - 1].next
        return None

    # ------------------------------------------------------------------ steps
    def step_message(self, s: c.CMessage) -> Any:
        buttons = s.static_buttons
        if buttons is None:
            number = 0
            rendered = []
            for b in s.buttons:
                if b.next is not None:
                    number += 1
                    rendered.append(fx.OutButton(self.render(b.title), b.payload, None, number))
                else:
                    rendered.append(fx.OutButton(self.render(b.title), None, self.render(b.url)))
            buttons = tuple(rendered)
        flow = self.flow
        assert flow is not None
        self.send(fx.SendMessage(
            self.message_ref(s), s.id, "message", self.render(s.text), buttons, None,
            tuple(fx.OutAttachment(a.kind, self.render(a.url), self.render(a.name) or None)
                  for a in s.attachments) if s.attachments else (),
            s.template, self.value(s.params) if s.params is not None else None,
            s.recipients, s.channel_mode, s.channels, None, not flow.leave_unanswered,
        ))
        if not s.waits:
            return s.next
        return self.wait_reply(s)

    def wait_reply(self, s: c.CMessage | c.CList) -> Any:
        timers: dict[str, str] = {}
        until = None
        if s.no_answer is not None:
            until = self.set_timer(timers, s.no_answer[0], "no_answer")
        return self.wait("reply", s, timers=timers, until=until)

    def step_list(self, s: c.CList) -> Any:
        flow = self.flow
        assert flow is not None
        out = fx.OutList(
            s.button, self.render(s.header) or None, self.render(s.footer) or None,
            tuple((title, tuple(fx.OutRow(r.id, r.title, r.description, r.number) for r in rows))
                  for title, rows in s.sections),
        )
        self.send(fx.SendMessage(
            self.message_ref(s), s.id, "list", self.render(s.text), (), out, (), None, None,
            s.recipients, s.channel_mode, s.channels, marks_answered=not flow.leave_unanswered,
        ))
        return self.wait_reply(s)

    def step_condition(self, s: c.CCondition) -> Any:
        ctx = self._ctx or self.context()
        for predicate, target in s.branches:
            try:
                if holds(predicate, ctx):
                    return target
            except TemplateFailed as exc:
                self.trace("condition.error", "warning", error=str(exc))
        return s.else_

    def step_validation(self, s: c.CValidation) -> Any:
        ctx = self.context()
        text = self.render(s.value)
        flow = self.flow
        assert flow is not None
        region = region_for_timezone(str(flow.tz.key))
        results = [self.check_rule(rule, text, ctx, region) for rule in s.rules]
        passed = all(ok for ok, _ in results) if s.logic == "all" else any(ok for ok, _ in results)
        run = self.run
        if passed:
            matched = plain(next((m for ok, m in results if ok and m is not None), text))
            run.last_validation_result = matched
            if s.save_as:
                run.vars[s.save_as] = matched
        else:
            run.last_validation_result = None
        self.invalidate()
        return s.pass_ if passed else s.fail

    def check_rule(self, rule: c.CRule, text: str, ctx: dict[str, Any],
                   region: str | None) -> tuple[bool, Any]:
        """One rule; a rule whose value template fails counts as failed (and is logged)."""
        try:
            return check(rule, text, ctx, region)
        except TemplateFailed as exc:
            self.trace("template.error", "warning", error=str(exc))
            return False, None

    def step_pause(self, s: c.CPause) -> Any:
        flow = self.flow
        assert flow is not None
        for e in s.until:
            if e.on == "working_hours" and flow.hours.is_open(self.now):
                return e.next
        timers: dict[str, str] = {}
        for i, e in enumerate(s.until):
            if e.on == "timer":
                self.set_timer(timers, e.after or 0, f"pause:{i}")
            elif e.on == "working_hours":
                opening = flow.hours.next_opening(self.now)
                self.set_timer(timers, max(0.0, opening.timestamp() - self.epoch), f"pause:{i}")
        until = min((t for t in self._timer_times(timers)), default=None)
        return self.wait("pause", s, timers=timers, on=tuple(e.on for e in s.until), until=until)

    def _timer_times(self, timers: dict[str, str]) -> list[float]:
        ids = set(timers)
        return [x.at for x in self.effects if isinstance(x, fx.SetTimer) and x.timer_id in ids]

    def step_action(self, s: c.CActionStep) -> Any:
        run = self.state.run
        assert run is not None
        actions = s.actions
        while run.action_index < len(actions):
            action = actions[run.action_index]
            if action.do == "set_variable":
                params = action.params
                value = params["value"]
                if type(value) is Template:  # the usual case, without the generic walk
                    ctx = self._ctx or self.context()
                    try:
                        value = value.value(ctx)
                    except TemplateFailed as exc:
                        self.trace("template.error", "warning", error=str(exc))
                        value = ""
                else:
                    value = self.value(value)
                run.vars[params["name"]] = plain(value)
                run.action_index += 1
                continue
            if action.do == "set_chat_status":
                self.set_chat_status(str(action.params["status"]))
                run.action_index += 1
                continue
            payload = self.action_payload(action)
            if payload is None:
                run.action_index += 1
                continue
            return self.request(s, "action", payload)
        return s.next

    def action_payload(self, action: c.CAction) -> dict[str, Any] | None:
        """The plain command for one action (templates rendered), or None if done locally."""
        flow = self.flow
        assert flow is not None
        params = self.value(dict(action.params))
        payload: dict[str, Any] = {"do": action.do, **params}
        if action.do == "add_task":
            payload["due_at"] = task_due(params["due"], self.now, flow).isoformat()
        elif action.do == "complete_tasks":
            lo, hi = task_due_window(params["due"], self.now, flow)
            payload["due_from"] = lo.isoformat() if lo else None
            payload["due_to"] = hi.isoformat() if hi else None
        elif action.do == "set_field" and params.get("from") == "message":
            payload["value"] = (self.state.last_message or {}).get("text", "")
        elif action.do == "set_field" and params.get("from") == "manual":
            lead = self.snapshot.get("lead") or {}
            self.effects.append(fx.InternalMessage(
                f"Please fill in the {params['entity']} field \"{params['field']}\""
                f" for {lead.get('name') or 'this lead'}.", ("user:responsible",)))
            return None
        payload["timezone"] = str(flow.tz.key)
        return payload

    def result_action(self, s: c.CActionStep, e: ev.RequestResult) -> Any:
        run = self.run
        action = s.actions[run.action_index]
        if not e.ok and e.permanent:
            self.trace("action.failed", "warning", action=action.do, error=e.error)
            if s.failed is not None:
                return s.failed
        elif action.do == "send_webhook":
            save_as = str(action.params.get("save_as") or "json")
            if save_as == "json":
                run.json = e.value
            else:
                run.vars[save_as] = e.value
            self.invalidate()
        elif action.do == "create_form" and isinstance(e.value, Mapping):
            run.vars["form_url"] = e.value.get("url")
        run.action_index += 1
        return self.step_action(s)

    def step_internal(self, s: c.CInternalMessage) -> Any:
        self.effects.append(fx.InternalMessage(self.render(s.text), s.to))
        return s.next

    def step_subscribe(self, s: c.CSubscribe) -> Any:
        self.send(fx.SendMessage(self.message_ref(s), s.id, "subscribe", self.render(s.title), tag=s.tag))
        return s.next

    def step_comment(self, s: c.CComment) -> Any:
        self.send(fx.SendMessage(self.message_ref(s), s.id, "comment", self.render(s.text)))
        return s.next

    def step_goto(self, s: c.CGoto) -> Any:
        return s.step

    def step_start_bot(self, s: c.CStartBot) -> Any:
        target = self.flows.get(s.bot)
        if target is None:
            self.fail_run(f"start_bot: unknown bot {s.bot!r}")
            return _WAIT_DONE
        run = self.run
        if s.next is not None:
            if len(run.callers) >= MAX_CALL_DEPTH:
                self.fail_run(f"start_bot: more than {MAX_CALL_DEPTH} nested bot calls")
                return _WAIT_DONE
            run.callers.append(Frame(run.bot, run.version, s.next, run.vars, run.json,
                                     run.last_validation_result))
        self.trace("run.calls" if s.next else "run.replaced", callee=target.id)
        run.bot, run.version = target.id, target.version
        run.vars = dict(target.variables)
        run.json = run.last_validation_result = None
        self.flow = target
        self.invalidate()
        return target.start

    def step_round_robin(self, s: c.CRoundRobin) -> Any:
        return self.request(s, "round_robin", {"bot": self.run.bot, "rotation": s.rotation,
                                               "options": len(s.options)})

    def result_round_robin(self, s: c.CRoundRobin, e: ev.RequestResult) -> Any:
        index = e.value if isinstance(e.value, int) and e.ok else 0
        return s.options[index % len(s.options)]

    def step_widget(self, s: c.CWidget) -> Any:
        return self.request(s, "widget", {"widget": s.widget, "params": self.value(s.params),
                                          "wait": s.wait_timeout is not None})

    def result_widget(self, s: c.CWidget, e: ev.RequestResult) -> Any:
        if not e.ok:
            self.trace("widget.failed", "warning", error=e.error)
            return s.failed
        value = e.value if isinstance(e.value, Mapping) else {}
        if s.wait_timeout is None:
            self.run.json = value.get("json")
            self.invalidate()
            return s.next
        timers: dict[str, str] = {}
        until = self.set_timer(timers, s.wait_timeout, "widget_timeout")
        return self.wait("widget", s, timers=timers, token=value.get("token"), until=until)

    def step_custom(self, s: c.CCustom) -> Any:
        return self.request(s, "custom", {"handler": s.handler, "params": self.value(s.params)})

    def result_custom(self, s: c.CCustom, e: ev.RequestResult) -> Any:
        if not e.ok:
            self.trace("custom.failed", "warning", handler=s.handler, error=e.error)
            return s.failed
        self.run.json = e.value
        self.invalidate()
        return s.next

    def step_stop(self, s: c.CStop) -> Any:
        if s.close_chat:
            self.set_chat_status("closed")
        return None


_WAIT_DONE = _WAIT  # a step that ended the run itself (a failure) stops the loop like a wait

_STEP_HANDLERS: dict[type, Callable[[_Turn, Any], Any]] = {
    c.CMessage: _Turn.step_message,
    c.CList: _Turn.step_list,
    c.CCondition: _Turn.step_condition,
    c.CValidation: _Turn.step_validation,
    c.CPause: _Turn.step_pause,
    c.CActionStep: _Turn.step_action,
    c.CInternalMessage: _Turn.step_internal,
    c.CSubscribe: _Turn.step_subscribe,
    c.CComment: _Turn.step_comment,
    c.CGoto: _Turn.step_goto,
    c.CStartBot: _Turn.step_start_bot,
    c.CRoundRobin: _Turn.step_round_robin,
    c.CWidget: _Turn.step_widget,
    c.CCustom: _Turn.step_custom,
    c.CStop: _Turn.step_stop,
}

_RESULT_HANDLERS: dict[type, Callable[[_Turn, Any, ev.RequestResult], Any]] = {
    c.CActionStep: _Turn.result_action,
    c.CRoundRobin: _Turn.result_round_robin,
    c.CWidget: _Turn.result_widget,
    c.CCustom: _Turn.result_custom,
}

_EVENT_HANDLERS: dict[type, Callable[[_Turn, Any], None]] = {
    ev.InboundMessage: _Turn.on_message,
    ev.TimerFired: _Turn.on_timer,
    ev.DeliveryFailed: _Turn.on_delivery_failed,
    ev.WidgetCallback: _Turn.on_widget,
    ev.VideoEvent: _Turn.on_video,
    ev.CrmEvent: _Turn.on_crm_event,
    ev.Takeover: _Turn.on_takeover,
    ev.Release: _Turn.on_release,
    ev.StopBot: _Turn.on_stop,
    ev.StartBot: _Turn.on_start,
    ev.RequestResult: _Turn.on_result,
    ev.HumanMessage: _Turn.on_human,
}


# ---------------------------------------------------------------------- task due dates
def _local(now: datetime, flow: c.CompiledFlow) -> datetime:
    return now.astimezone(flow.tz)


def task_due(due: Any, now: datetime, flow: c.CompiledFlow) -> datetime:
    """When a task created now falls due, in the flow's timezone (Kommo's presets)."""
    local = _local(now, flow)
    end_of_day = local.replace(hour=23, minute=59, second=0, microsecond=0)
    if due == "now":
        return local
    if due == "end_of_day":
        return end_of_day
    if due == "in_1_day":
        return local + timedelta(days=1)
    if due == "in_3_days":
        return local + timedelta(days=3)
    if due == "end_of_week":
        return end_of_day + timedelta(days=6 - local.weekday())
    return local + timedelta(seconds=int(due) if isinstance(due, (int, float)) else 0)


def task_due_window(due: Any, now: datetime, flow: c.CompiledFlow) -> tuple[datetime | None, datetime | None]:
    """The due-date window of ``complete_tasks``: ``[from, to)``; None is open."""
    local = _local(now, flow)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if due == "overdue":
        return None, local
    if due == "today":
        return midnight, midnight + timedelta(days=1)
    if due == "tomorrow":
        return midnight + timedelta(days=1), midnight + timedelta(days=2)
    return None, None
