"""Steps that hold, hand over or end the run: pause, start_bot (a sub-bot call or replacement), stop."""

from __future__ import annotations

from ...builder import compiled as c
from ..state import Frame
from ..turn import WAIT, Target, TurnContext
from .split import holds

MAX_CALL_DEPTH = 10


def _holds(t: TurnContext, flow: c.CompiledFlow, key: str, predicate: c.CPredicate | None) -> bool:
    return holds(t, flow, key, predicate, t.cached_context or t.context())


def pause(t: TurnContext, s: c.CPause) -> Target:
    flow = t.flow
    assert flow is not None
    for i, e in enumerate(s.until):
        if e.on == "working_hours" and flow.hours.is_open(t.now):
            return e.next
        if e.on == "condition" and _holds(t, flow, f"{s.id}:until:{i}", e.test):
            return e.next  # already true: no need to wait for an event
    timers: dict[str, str] = {}
    for i, e in enumerate(s.until):
        if e.on == "timer":
            t.set_timer(timers, e.after or 0, f"pause:{i}")
        elif e.on == "working_hours":
            opening = flow.hours.next_opening(t.now)
            t.set_timer(timers, max(0.0, opening.timestamp() - t.epoch), f"pause:{i}")
    until = min(t.timer_times(timers), default=None)
    return t.wait("pause", s, timers=timers, on=tuple(e.on for e in s.until), until=until)


def start_bot(t: TurnContext, s: c.CStartBot) -> Target:
    target = t.flows.get(s.bot)
    if target is None:
        t.fail_run(f"start_bot: unknown bot {s.bot!r}")
        return WAIT  # the run has ended: the loop stops as it does for a wait
    run = t.run
    if s.next is not None:
        if len(run.callers) >= MAX_CALL_DEPTH:
            t.fail_run(f"start_bot: more than {MAX_CALL_DEPTH} nested bot calls")
            return WAIT
        run.callers.append(Frame(run.bot, run.version, s.next, run.vars, run.json,
                                 run.last_validation_result))
    t.trace("run.calls" if s.next else "run.replaced", callee=target.id)
    t.steps.append(("call" if s.next else "jump", target.id, target.version))
    run.bot, run.version = target.id, target.version
    run.vars = dict(target.variables)
    run.json = run.last_validation_result = None
    t.flow = target
    t.invalidate()
    return target.start


def stop(t: TurnContext, s: c.CStop) -> Target:
    if s.close_chat:
        t.set_chat_status("closed")
    return None
