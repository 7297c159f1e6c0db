"""The interpreter: a pure function ``(flows, state, event, clock, crm snapshot) -> (state, effects)``.

It does no I/O. Work that needs the outside world (a CRM command, a webhook, the round-robin
counter, a widget or custom handler) is a ``Request`` effect that suspends the run; the shell
answers it with a ``RequestResult`` event in the same turn (see ``bot.runtime.driver``).

A waiting run records what it waits for (``Wait``) with the ids of its timers, so a timer
that fires for a step that is no longer current is recognised and does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from ..builder import compiled as c
from . import effects as fx
from . import events as ev
from .analytics import Switch
from .flows import FlowSource
from .state import ConversationState, Run, held_message
from .steps import actions, control, decisions, messages, requests, split
from .turn import WAIT, Target, TurnContext

S = TypeVar("S", bound=c.CStep)
E = TypeVar("E", bound=ev.Event)


class Outcome(NamedTuple):
    """The new state, the effects and the steps entered (``TurnContext.steps``) of one ``advance``."""

    state: ConversationState
    effects: list[fx.Effect]
    steps: list[str | Switch]

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
    handler = _EVENT_HANDLERS.get(event.__class__)
    if handler is None:  # pragma: no cover - the Event union is closed
        raise TypeError(f"unknown event {event!r}")
    # _Turn(flows, state.clone(), now, snapshot or {}), without type()'s call of __init__
    turn = _new(_Turn)
    turn.flows = flows
    turn.state = state.clone()
    turn.now = now
    turn.snapshot = snapshot or {}
    turn.effects = []
    turn.steps = []
    turn.cached_context = None
    run = state.run
    # run.active, inline; a run that has ended has no flow (as in TurnContext.__init__)
    turn.flow = flows.get(run.bot, run.version) if run is not None and (
        run.status == "running" or run.status == "waiting") else None
    # The step budget counts per outside event. The count restarts when the event runs its
    # first step, so an event that runs nothing (a stale timer) leaves the state as it was.
    turn.new_turn = event.__class__ is not ev.RequestResult
    handler(turn, event)
    # what Outcome(…) does, without its Python __new__
    return tuple.__new__(Outcome, (turn.state, turn.effects, turn.steps))


_new = object.__new__


class _Turn(TurnContext):
    """One ``advance`` call: the event handlers and the loop that runs steps until the run waits."""

    __slots__ = ()

    # ------------------------------------------------------------------ events
    def on_message(self, e: ev.InboundMessage) -> None:
        st = self.state
        st.last_message = {
            "text": e.text, "payload": e.payload, "kind": e.kind, "id": e.message_id,
            "attachments": [{"kind": a.kind, "url": a.url, "name": a.name} for a in e.attachments]
            if e.attachments else [],
            "start_param": e.start_param,
        }
        if st.origin is None:
            st.origin = e.kind if e.kind in ("comment", "referral") else "message"
        if st.chat_status != "unanswered":  # self.set_chat_status, inline (the context is not built yet)
            st.chat_status = "unanswered"
            status = _new(fx.ChatStatus)  # fx.ChatStatus("unanswered"), without type()'s call of __init__
            status.status = "unanswered"
            self.effects.append(status)
        self.cached_context = None
        if st.owner != "bot":
            # A person has the conversation: the bot neither starts nor answers. The message is
            # marked held: at hand-back the person chooses whether the bot answers it.
            st.last_message["held"] = True
            return
        run = st.run
        if run is None or not (run.status == "running" or run.status == "waiting"):  # run.active, inline
            if e.greeting:
                self.start_run(e.greeting, None, {})
            return
        wait = run.wait
        if wait is None:
            return
        flow = self.flow
        if flow is None:
            step = None
        else:  # flow.steps.get(wait.step), from the plan when the step ran in this process
            entry = flow.plan.get(wait.step)
            step = flow.steps.get(wait.step) if entry is None else entry[1]
        if wait.kind == "reply" and isinstance(step, (c.CMessage, c.CList)):
            target = messages.match_reply(self, step, e)
            if target is None:
                target = step.other_answer
                if target is None:
                    self.trace("reply.unmatched", text=e.text[:200])
                    return
            # self.resume(target), inline: the turn most conversations take
            effects = self.effects
            for timer_id in wait.timers:
                effects.append(fx.CancelTimer(timer_id))
            run.wait = None
            run.status = "running"
            self.after_step(target)
        elif wait.kind == "pause" and "message" in wait.on and isinstance(step, c.CPause):
            ev_ = next(x for x in step.until if x.on == "message")
            self.resume(ev_.next)

    def on_timer(self, e: ev.TimerFired) -> None:
        run = self.state.run
        wait = run.wait if run is not None and run.active else None
        if wait is None or e.timer_id not in wait.timers:
            self.trace("timer.stale", "debug", timer=e.timer_id)
            return
        wait = self.own_wait()  # its timers change below
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
            run.vars["delivery_error"] = e.reason  # what went wrong, for the failed branch
            self.invalidate()
            self.resume(failed)
        elif not finished:
            self.fail_run(f"message of step {step_id!r} could not be delivered: {e.reason}")

    def on_widget(self, e: ev.WidgetCallback) -> None:
        run = self.state.run
        wait = run.wait if run is not None and run.active else None
        if run is None or wait is None or wait.kind != "widget" or wait.token != e.token:
            self.trace("widget.stale", "debug")
            return
        step = self.flow.steps.get(wait.step) if self.flow else None
        if self.state.owner != "bot":
            # Keep the answer; the run goes on with it when the conversation is handed back.
            wait = self.own_wait()
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
        run = self.state.run
        if run is None:
            return
        active = run.status == "running" or run.status == "waiting"
        # An ended run still counts a goal for the splits it passed; only a live one moves.
        flow = self.flow if active else self.flows.get(run.bot, run.version)
        if flow is None:
            return
        wait = run.wait if active else None
        pausing = wait is not None and wait.kind == "pause" and ("event" in wait.on or "condition" in wait.on)
        if not flow.goals and not pausing:
            return
        ctx = split.event_context(self, e)
        target = split.reach_goals(self, flow, e, ctx) if flow.goals else None
        if not active or self.state.owner != "bot":
            return  # a person has the conversation: the goal counts, the bot stays where it is
        if target is not None:
            self.trace("goal.jump", to_step=target)
            self.resume(target)
            return
        step = flow.steps.get(wait.step) if pausing and wait is not None else None
        if isinstance(step, c.CPause):
            for i, x in enumerate(step.until):
                if ((x.on == "event" and x.event == e.type) or x.on == "condition") and split.holds(
                        self, flow, f"{step.id}:until:{i}", x.test, ctx):
                    self.resume(x.next)
                    return

    def on_human(self, e: ev.HumanMessage) -> None:
        """A person answered: the chat counts as answered, and a message held from the bot is
        theirs (hand-back no longer offers the bot to answer it again); the run is not touched."""
        self.set_chat_status("answered")
        self._unhold()

    def _unhold(self) -> dict[str, Any] | None:
        """The held customer message, no longer held (None: none was)."""
        st = self.state
        held = held_message(st)
        if held is not None:
            st.last_message = {k: v for k, v in held.items() if k != "held"}
            self.cached_context = None
        return held

    def on_relayed(self, e: ev.Relayed) -> None:
        """Another conversation's message, sent here by the shell: nothing for this run to do."""

    def on_takeover(self, e: ev.Takeover) -> None:
        self.state.owner = "human"
        self.state.owner_user = e.user
        self.trace("conversation.takeover", user=e.user)

    def on_release(self, e: ev.Release) -> None:
        st = self.state
        st.owner, st.owner_user = "bot", None
        held = self._unhold()  # answered now, or left to the person who had it
        self.trace("conversation.release", to_step=e.step, answer=e.answer and held is not None)
        if e.step is None:
            self.continue_held()
            if held is not None and e.answer:
                self.on_message(ev.inbound_of(st.last_message or {}))
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
        if run is None or wait is None or self.flow is None:
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
        wait = self.own_wait()
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
        if e.if_idle and run is not None and run.active:
            self.trace("run.start_skipped", reason="already_running", bot=e.bot)
            return
        if run is not None and run.active:
            self.end_wait()
            run.status = "stopped"
            self.trace("run.stopped", reason="replaced")
        self.start_run(e.bot, e.step, dict(e.variables))

    def on_result(self, e: ev.RequestResult) -> None:
        run = self.state.run
        wait = run.wait if run is not None and run.active else None
        if run is None or wait is None or wait.kind != "request" or wait.request != e.request_id:
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
        self.after_step(_RESULT_HANDLERS[type(step)](self, step, e))

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
        self.steps.append(("start", flow.id, flow.version))
        self.trace("run.started", version=flow.version)
        start = step if step is not None and step in flow.steps else flow.start
        self.after_step(start)

    def resume(self, target: str | None) -> None:
        """Leave the current wait and go on at ``target`` (None ends the run)."""
        self.end_wait()
        run = self.state.run
        assert run is not None
        run.status = "running"
        self.after_step(target)

    def after_step(self, target: Target) -> None:
        """Run steps from ``target`` until the run waits or ends."""
        state = self.state
        run = state.run  # the same object throughout: steps change it, none replaces it
        assert run is not None
        entered = self.steps  # analytics: the steps this turn entered
        # The step count in a local, written back on the way out (nothing in a step reads it). It
        # restarts at a new outside event's first step; ``start``: the count if no step runs.
        start = count = 0 if self.new_turn else state.turn_steps
        while target is not WAIT:
            if target is None:
                target = self.finish_run()
                if target is None:
                    break
                continue
            flow = self.flow
            assert flow is not None
            entry = flow.plan.get(target)
            if entry is None:  # the first entry into this step of this flow version
                step = flow.steps.get(target)
                if step is None:
                    self.fail_run(f"step {target!r} does not exist in {flow.id} v{flow.version}")
                    break
                entry = _plan(flow, target, step)
            if count >= flow.step_budget:
                state.turn_steps, self.new_turn = count, False
                self.fail_run(f"step budget of {flow.step_budget} exhausted at step {target!r}")
                return
            count += 1
            run.step = target
            run.action_index = 0
            entered.append(target)
            handler, step = entry
            target = handler(self, step)
        else:
            if run.status != "failed":
                run.status = "waiting"
        if count != start:
            state.turn_steps, self.new_turn = count, False

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
            self.steps.append(("return", frame.bot, frame.version))
            self.trace("run.returned", callee=callee)
            if self.flow is None:
                self.fail_run(f"bot {frame.bot} v{frame.version} is no longer loaded")
                return None
            return frame.next
        run.status = status
        self.trace("run.finished")
        return None


# The dispatch tables live here, with the loop: the step modules import only ``turn``. The tables
# hold ``Any`` for the step or event (one value type for every key); registering through ``_step``,
# ``_result`` and ``_on`` checks that each handler takes the class it is filed under.
_STEP_HANDLERS: dict[type[c.CStep], Callable[[TurnContext, Any], Target]] = {}
_RESULT_HANDLERS: dict[type[c.CStep], Callable[[TurnContext, Any, ev.RequestResult], Target]] = {}


#: Handlers made for one step (its constants bound once), where the step's kind has them; a maker
#: answers None for a step it has no shortcut for (the generic handler runs it).
_SPECIALISED: dict[type[c.CStep], Callable[[c.CompiledFlow, Any], Callable[[TurnContext, Any], Target] | None]] = {}


def _step(kind: type[S], handler: Callable[[TurnContext, S], Target]) -> None:
    _STEP_HANDLERS[kind] = handler


def _specialised(kind: type[S],
                 maker: Callable[[c.CompiledFlow, S], Callable[[TurnContext, S], Target] | None]) -> None:
    _SPECIALISED[kind] = maker


def _plan(flow: c.CompiledFlow, step_id: str, step: c.CStep) -> tuple[Callable[[TurnContext, Any], Target], c.CStep]:
    """The handler and step ``after_step`` runs for ``step_id``, kept in ``flow.plan``."""
    maker = _SPECIALISED.get(step.__class__)
    handler = maker(flow, step) if maker is not None else None
    entry = (handler or _STEP_HANDLERS[step.__class__], step)
    flow.plan[step_id] = entry
    return entry


def _result(kind: type[S], handler: Callable[[TurnContext, S, ev.RequestResult], Target]) -> None:
    _RESULT_HANDLERS[kind] = handler


_step(c.CMessage, messages.message)
_step(c.CList, messages.list_)
_step(c.CInternalMessage, messages.internal)
_step(c.CSubscribe, messages.subscribe)
_step(c.CComment, messages.comment)
_step(c.CCondition, decisions.condition)
_step(c.CValidation, decisions.validation)
_step(c.CGoto, decisions.goto)
_step(c.CActionStep, actions.action)
_step(c.CPause, control.pause)
_step(c.CStartBot, control.start_bot)
_step(c.CStop, control.stop)
_step(c.CRoundRobin, requests.round_robin)
_step(c.CSplit, split.split)
_step(c.CWidget, requests.widget)
_step(c.CCustom, requests.custom)
_specialised(c.CMessage, messages.plan_message)
_specialised(c.CActionStep, actions.plan_action)
_specialised(c.CCondition, decisions.plan_condition)
_result(c.CActionStep, actions.action_result)
_result(c.CRoundRobin, requests.round_robin_result)
_result(c.CSplit, split.split_result)
_result(c.CWidget, requests.widget_result)
_result(c.CCustom, requests.custom_result)

_EVENT_HANDLERS: dict[type[object], Callable[[_Turn, Any], None]] = {}


def _on(kind: type[E], handler: Callable[[_Turn, E], None]) -> None:
    _EVENT_HANDLERS[kind] = handler


_on(ev.InboundMessage, _Turn.on_message)
_on(ev.TimerFired, _Turn.on_timer)
_on(ev.DeliveryFailed, _Turn.on_delivery_failed)
_on(ev.WidgetCallback, _Turn.on_widget)
_on(ev.VideoEvent, _Turn.on_video)
_on(ev.CrmEvent, _Turn.on_crm_event)
_on(ev.Takeover, _Turn.on_takeover)
_on(ev.Release, _Turn.on_release)
_on(ev.StopBot, _Turn.on_stop)
_on(ev.StartBot, _Turn.on_start)
_on(ev.RequestResult, _Turn.on_result)
_on(ev.HumanMessage, _Turn.on_human)
_on(ev.Relayed, _Turn.on_relayed)
