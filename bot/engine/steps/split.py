"""The split step (an A/B test of paths) and the flow's goals, which measure it.

The path is chosen here from a hash of the contact (``bot.engine.splits``); the shell answers the
``split`` request with the path to take (the winner's, once there is one) and the test's
generation. Entries and goals are counted by ``SplitCount`` effects the shell saves with the state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...builder import compiled as c
from ...builder.templates import TemplateFailed
from .. import effects as fx
from .. import events as ev
from ..predicates import Test, compile_predicate
from ..splits import draw, pick
from ..turn import Target, TurnContext


def contact_key(t: TurnContext) -> str:
    """Who the split is fixed for: the CRM contact, else the conversation."""
    crm = t.state.crm
    if crm and crm.get("contact_id"):
        return f"contact:{crm['contact_id']}"
    contact = t.snapshot.get("contact")
    if isinstance(contact, Mapping) and contact.get("id") not in (None, ""):
        return f"contact:{contact['id']}"
    return f"conversation:{t.state.id}"


def split(t: TurnContext, s: c.CSplit) -> Target:
    run = t.run
    for bot, step, path, _generation, _goal in run.splits:
        if bot == run.bot and step == s.id:  # passed before (a loop): the same path, not counted again
            for p in s.paths:
                if p.id == path:
                    return p.next
    weights = [p.weight for p in s.paths]
    index = pick(weights, draw(contact_key(t), run.bot, s.id))
    return t.request(s, "split", {
        "bot": run.bot, "step": s.id, "paths": [p.id for p in s.paths], "weights": weights, "pick": index,
        "after_entries": s.after_entries, "or_after": s.or_after,
    })


def split_result(t: TurnContext, s: c.CSplit, e: ev.RequestResult) -> Target:
    run = t.run
    value = e.value if e.ok and isinstance(e.value, Mapping) else {}
    index = value.get("path")
    generation = value.get("generation")
    if not isinstance(generation, int) or not isinstance(index, int) or not 0 <= index < len(s.paths):
        # No answer from the shell: the contact's own path, uncounted.
        t.trace("split.uncounted", "warning", error=e.error or "no path in the answer")
        index = pick([p.weight for p in s.paths], draw(contact_key(t), run.bot, s.id))
        generation = -1
    path = s.paths[index]
    run.splits = (*run.splits, (run.bot, s.id, path.id, generation, s.goal or ""))
    if generation >= 0:
        t.effects.append(fx.SplitCount(run.bot, s.id, generation, path.id, "entry"))
    t.trace("split.path", path=path.id, winner=bool(value.get("winner")))
    return path.next


def event_context(t: TurnContext, e: ev.CrmEvent) -> dict[str, Any]:
    """The template context with the event (``event.type``, ``event.data``), for matches and
    pause conditions."""
    ctx = dict(t.cached_context or t.context())
    ctx["event"] = {"type": e.type, "data": e.data}
    return ctx


def holds(t: TurnContext, flow: c.CompiledFlow, key: str, predicate: c.CPredicate | None,
          ctx: dict[str, Any]) -> bool:
    """Whether ``predicate`` (None: always) holds; its closure is kept with the flow version."""
    if predicate is None:
        return True
    test: Test | None = flow.memo.get(key)
    if test is None:
        test = flow.memo[key] = compile_predicate(predicate)
    try:
        return bool(test(ctx))
    except TemplateFailed as exc:
        t.trace("condition.error", "warning", error=str(exc))
        return False


def reach_goals(t: TurnContext, flow: c.CompiledFlow, e: ev.CrmEvent, ctx: dict[str, Any]) -> str | None:
    """Record the goals ``e`` reaches (once each per run), count them for the splits the run
    passed, and return where the first one sends the run (None: nowhere)."""
    run = t.run
    target: str | None = None
    for goal in flow.goals.get(e.type, ()):
        if goal.name in run.goals or not holds(t, flow, f"goal:{goal.name}", goal.test, ctx):
            continue
        run.goals = (*run.goals, goal.name)
        for bot, step, path, generation, split_goal in run.splits:
            if split_goal == goal.name and generation >= 0:
                t.effects.append(fx.SplitCount(bot, step, generation, path, "goal"))
        t.trace("goal.reached", goal=goal.name, type=e.type)
        if target is None:
            target = goal.next
    return target
