"""The action step (its actions in order; local ones at once, the rest as requests) and CRM task due dates."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from ...builder import compiled as c
from ...builder.missing import MISSING
from ...builder.templates import Template, TemplateFailed, fast_failed
from .. import effects as fx
from .. import events as ev
from ..state import plain
from ..turn import Target, TurnContext


def _stored(value: Any) -> Any:
    """A variable's value as the state keeps it: ``plain(value)``, its commonest cases (a str, a
    64-bit int: ``state._INT64`` as literals) returned as they are without the call."""
    kind = type(value)
    if kind is str or (kind is int and -9223372036854775808 <= value <= 18446744073709551615):
        return value
    return plain(value)


def _variable(t: TurnContext, value: Any) -> Any:
    """A ``set_variable``'s value: a template rendered (the usual case, without the generic walk;
    a failure traced and ""), anything else with its templates rendered; as stored (``_stored``)."""
    if type(value) is Template:
        try:
            return _stored(value.value(t.cached_context or t.context()))
        except TemplateFailed as exc:
            t.trace("template.error", "warning", error=str(exc))
            return ""
    return _stored(t.value(value))


def action(t: TurnContext, s: c.CActionStep) -> Target:
    run = t.state.run
    assert run is not None
    actions = s.actions
    count = len(actions)
    index = run.action_index  # kept in a local; written back before anything can read it
    while index < count:
        act = actions[index]
        if act.do == "set_variable":
            params = act.params
            run.vars[params["name"]] = _variable(t, params["value"])
            index += 1
            continue
        if act.do == "set_chat_status":
            t.set_chat_status(str(act.params["status"]))
            index += 1
            continue
        if act.do == "end_process":  # the whole run ends here, its callers too (docs/processes.md)
            run.action_index = index
            run.callers.clear()
            t.trace("run.ended", reason="end_process")
            return None
        run.action_index = index
        payload = action_payload(t, act)
        if payload is None:
            index += 1
            continue
        return t.request(s, "action", payload)
    run.action_index = index
    return s.next


def plan_action(flow: c.CompiledFlow, s: c.CActionStep) -> Callable[[TurnContext, c.CActionStep], Target] | None:
    """``action`` for a step that only sets variables (the common case), without the generic walk
    of its actions; None for any other step."""
    if not s.actions or any(a.do != "set_variable" for a in s.actions):
        return None
    sets = tuple((str(a.params["name"]), a.params["value"]) for a in s.actions)
    count, next_ = len(sets), s.next
    if count == 1 and type(sets[0][1]) is Template:
        ((name, template),) = sets
        if template.constant is not None:  # its value is its text: a str, plain already
            constant = template.constant

            def set_constant(t: TurnContext, s: c.CActionStep) -> Target:
                run = t.state.run
                assert run is not None
                run.vars[name] = constant
                run.action_index = 1
                return next_

            return set_constant
        fast, source = template.fast, template.source
        if fast is not None:  # template.value(ctx), inline: its closure called without the wrapper

            def set_fast(t: TurnContext, s: c.CActionStep) -> Target:
                run = t.state.run
                assert run is not None
                ctx = t.cached_context or t.context()
                try:
                    value = fast(ctx)
                except Exception as exc:
                    t.trace("template.error", "warning", error=str(fast_failed(source, exc)))
                    value = ""
                else:
                    if value is MISSING:
                        value = ""
                run.vars[name] = _stored(value)
                run.action_index = 1
                return next_

            return set_fast

    def set_variables(t: TurnContext, s: c.CActionStep) -> Target:
        run = t.state.run
        assert run is not None
        for name, value in sets:
            run.vars[name] = _variable(t, value)
        run.action_index = count
        return next_

    return set_variables


def action_payload(t: TurnContext, act: c.CAction) -> dict[str, Any] | None:
    """The plain command for one action (templates rendered), or None if done locally."""
    flow = t.flow
    assert flow is not None
    params = t.value(dict(act.params))
    payload: dict[str, Any] = {"do": act.do, **params}
    if act.do == "add_task":
        payload["due_at"] = task_due(params["due"], t.now, flow).isoformat()
    elif act.do == "complete_tasks":
        lo, hi = task_due_window(params["due"], t.now, flow)
        payload["due_from"] = lo.isoformat() if lo else None
        payload["due_to"] = hi.isoformat() if hi else None
    elif act.do == "set_field" and params.get("from") == "message":
        payload["value"] = (t.state.last_message or {}).get("text", "")
    elif act.do == "set_field" and params.get("from") == "manual":
        lead = t.snapshot.get("lead") or {}
        t.effects.append(fx.InternalMessage(
            f"Please fill in the {params['entity']} field \"{params['field']}\""
            f" for {lead.get('name') or 'this lead'}.", ("user:responsible",)))
        return None
    payload["timezone"] = str(flow.tz.key)
    return payload


def action_result(t: TurnContext, s: c.CActionStep, e: ev.RequestResult) -> Target:
    run = t.run
    act = s.actions[run.action_index]
    if not e.ok and e.permanent:
        t.trace("action.failed", "warning", action=act.do, error=e.error)
        if s.failed is not None:
            return s.failed
    elif act.do == "send_webhook":
        save_as = str(act.params.get("save_as") or "json")
        if save_as == "json":
            run.json = e.value
        else:
            run.vars[save_as] = e.value
        t.invalidate()
    elif act.do == "create_form" and isinstance(e.value, Mapping):
        run.vars["form_url"] = e.value.get("url")
    elif act.do == "order_link" and isinstance(e.value, Mapping):
        run.vars["order_url"] = e.value.get("url")
    run.action_index += 1
    return action(t, s)


# ---------------------------------------------------------------------- task due dates
class Zoned(Protocol):
    """What has a timezone: a compiled flow, or an automation document (``bot.automations``)."""

    @property
    def tz(self) -> ZoneInfo: ...


def task_due(due: Any, now: datetime, flow: Zoned) -> datetime:
    """When a task created now falls due, in the flow's timezone (Kommo's presets)."""
    local = now.astimezone(flow.tz)
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


def task_due_window(due: Any, now: datetime, flow: Zoned) -> tuple[datetime | None, datetime | None]:
    """The due-date window of ``complete_tasks``: ``[from, to)``; None is open."""
    local = now.astimezone(flow.tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if due == "overdue":
        return None, local
    if due == "today":
        return midnight, midnight + timedelta(days=1)
    if due == "tomorrow":
        return midnight + timedelta(days=1), midnight + timedelta(days=2)
    return None, None
