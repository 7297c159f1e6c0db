"""Steps the shell answers in the same turn (round robin, widget, custom): a ``Request``, then a result handler."""

from __future__ import annotations

from collections.abc import Mapping

from ...builder import compiled as c
from .. import events as ev
from ..turn import Target, TurnContext


def round_robin(t: TurnContext, s: c.CRoundRobin) -> Target:
    return t.request(s, "round_robin", {"bot": t.run.bot, "rotation": s.rotation, "options": len(s.options)})


def round_robin_result(t: TurnContext, s: c.CRoundRobin, e: ev.RequestResult) -> Target:
    index = e.value if isinstance(e.value, int) and e.ok else 0
    return s.options[index % len(s.options)]


def widget(t: TurnContext, s: c.CWidget) -> Target:
    return t.request(s, "widget", {"widget": s.widget, "params": t.value(s.params),
                                   "wait": s.wait_timeout is not None})


def widget_result(t: TurnContext, s: c.CWidget, e: ev.RequestResult) -> Target:
    if not e.ok:
        t.trace("widget.failed", "warning", error=e.error)
        return s.failed
    value = e.value if isinstance(e.value, Mapping) else {}
    if s.wait_timeout is None:
        t.run.json = value.get("json")
        t.invalidate()
        return s.next
    timers: dict[str, str] = {}
    until = t.set_timer(timers, s.wait_timeout, "widget_timeout")
    return t.wait("widget", s, timers=timers, token=value.get("token"), until=until)


def custom(t: TurnContext, s: c.CCustom) -> Target:
    return t.request(s, "custom", {"handler": s.handler, "params": t.value(s.params)})


def custom_result(t: TurnContext, s: c.CCustom, e: ev.RequestResult) -> Target:
    if not e.ok:
        t.trace("custom.failed", "warning", handler=s.handler, error=e.error)
        return s.failed
    t.run.json = e.value
    t.invalidate()
    return s.next
