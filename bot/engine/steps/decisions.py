"""Steps that choose where the run goes without waiting: condition, validation, goto."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...builder import compiled as c
from ...builder.templates import TemplateFailed
from ..checks import check, region_for_timezone
from ..predicates import compile_predicate
from ..state import plain
from ..turn import Target, TurnContext

Decide = Callable[[TurnContext, c.CCondition], Target]


def condition(t: TurnContext, s: c.CCondition) -> Target:
    flow = t.flow
    assert flow is not None
    # The generic handler (the plan's ``plan_condition`` runs these steps): a key no other memo
    # entry has (a step id may be ``listened``, ``bot.runtime.interest``'s key).
    key = f"condition:{s.id}"
    decide: Decide | None = flow.memo.get(key)
    if decide is None:  # the first turn through this step of this version
        decide = flow.memo[key] = plan_condition(flow, s)
    return decide(t, s)


def plan_condition(flow: c.CompiledFlow, s: c.CCondition) -> Decide:
    """``condition`` for one step, its predicates compiled into closures once (kept in ``flow.plan``)."""
    branches = tuple((compile_predicate(p), target) for p, target in s.branches)
    else_ = s.else_

    def decide(t: TurnContext, s: c.CCondition) -> Target:
        ctx = t.cached_context or t.context()
        for test, target in branches:
            try:
                if test(ctx):
                    return target
            except TemplateFailed as exc:
                t.trace("condition.error", "warning", error=str(exc))
        return else_

    return decide


def validation(t: TurnContext, s: c.CValidation) -> Target:
    ctx = t.context()
    text = t.render(s.value)
    flow = t.flow
    assert flow is not None
    region = region_for_timezone(str(flow.tz.key))
    results = [_check_rule(t, rule, text, ctx, region) for rule in s.rules]
    passed = all(ok for ok, _ in results) if s.logic == "all" else any(ok for ok, _ in results)
    run = t.run
    if passed:
        matched = plain(next((m for ok, m in results if ok and m is not None), text))
        run.last_validation_result = matched
        if s.save_as:
            run.vars[s.save_as] = matched
    else:
        run.last_validation_result = None
    t.invalidate()
    return s.pass_ if passed else s.fail


def _check_rule(t: TurnContext, rule: c.CRule, text: str, ctx: dict[str, Any],
                region: str | None) -> tuple[bool, Any]:
    """One rule; a rule whose value template fails counts as failed (and is logged)."""
    try:
        return check(rule, text, ctx, region)
    except TemplateFailed as exc:
        t.trace("template.error", "warning", error=str(exc))
        return False, None


def goto(t: TurnContext, s: c.CGoto) -> Target:
    return s.step
