"""Condition predicates over the template context (``condition`` steps)."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

import regex

from ..builder.compiled import CAll, CAny, CExpr, CLeaf, CNot, CPredicate
from ..builder.templates import evaluate_value

#: How long one regular expression may run on customer text.
REGEX_TIMEOUT = 0.2
_NUMBER = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)$")
_MISSING = object()


#: A compiled predicate: whether it holds in a template context.
Test = Callable[[Mapping[str, Any]], bool]


def lookup(context: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """A dotted path into the context; ``None`` when any part is missing."""
    obj: Any = context
    for part in path:
        if type(obj) is dict or isinstance(obj, Mapping):  # the plain dict first: no ABC check
            obj = obj.get(part, _MISSING)
        elif isinstance(obj, (list, tuple)) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return None
        if obj is _MISSING:
            return None
    return obj


def as_number(value: Any) -> float | None:
    """The number a value reads as (``"1,5"`` -> 1.5), or None. Booleans are not numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if _NUMBER.match(text):
            return float(text.replace(",", "."))
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    return str(value).strip().casefold()


def _equal(a: Any, b: Any) -> bool:
    na, nb = as_number(a), as_number(b)
    if na is not None and nb is not None:
        return na == nb
    if isinstance(a, bool) or isinstance(b, bool):
        return _text(a) == _text(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return _text(a) == _text(b)


def _compare(a: Any, b: Any) -> int | None:
    ta_, tb_ = type(a), type(b)
    if (ta_ is int or ta_ is float) and (tb_ is int or tb_ is float):  # the common case, fast
        order: int = (a > b) - (a < b)  # numbers: a bool difference is an int
        return order
    na, nb = as_number(a), as_number(b)
    if na is not None and nb is not None:
        return (na > nb) - (na < nb)
    if a is None or b is None:
        return None
    ta, tb = _text(a), _text(b)
    return (ta > tb) - (ta < tb)


def _holds(container: Any, item: Any) -> bool:
    if isinstance(container, (list, tuple, set, frozenset)):
        return any(_equal(x, item) for x in container)
    if isinstance(container, Mapping):
        return any(_equal(k, item) for k in container)
    return _equal(container, item) if container is not None else False


def _options(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        return [v.strip() for v in value.split(",")]
    return [value]


def is_empty(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, (list, tuple, dict)) and not value) or (
        isinstance(value, str) and not value.strip()
    )


def search(pattern: regex.Pattern[str], text: str) -> regex.Match[str] | None:
    """A regex search with a time limit; a pattern that runs too long counts as no match.

    ``concurrent=True`` releases the GIL while the pattern runs, so a search in a worker
    thread (see ``bot.runtime.driver``) does not stall the event loop.
    """
    try:
        return pattern.search(text, timeout=REGEX_TIMEOUT, concurrent=True)
    except TimeoutError:
        return None


def holds(p: CPredicate, context: Mapping[str, Any]) -> bool:
    """Whether predicate ``p`` holds. Raises ``TemplateFailed`` only from ``expr``/templates."""
    if isinstance(p, CLeaf):
        return _leaf(p, context)
    if isinstance(p, CAll):
        return all(holds(x, context) for x in p.items)
    if isinstance(p, CAny):
        return any(holds(x, context) for x in p.items)
    if isinstance(p, CNot):
        return not holds(p.item, context)
    if isinstance(p, CExpr):
        return bool(p.expr.evaluate(context))
    raise TypeError(f"not a predicate: {p!r}")


def _leaf(p: CLeaf, context: Mapping[str, Any]) -> bool:
    actual = lookup(context, p.path)
    op = p.op
    if op == "empty":
        return is_empty(actual)
    if op == "not_empty":
        return not is_empty(actual)
    expected = p.value if p.constant else evaluate_value(p.value, context)
    if op == "eq":
        return _equal(actual, expected)
    if op == "ne":
        return not _equal(actual, expected)
    if op in ("contains", "not_contains"):
        found = _holds(actual, expected) if isinstance(actual, (list, tuple)) else _text(expected) in _text(actual)
        return found if op == "contains" else not found
    if op == "starts_with":
        return _text(actual).startswith(_text(expected))
    if op == "matches":
        pattern = p.pattern
        if pattern is None:
            try:
                pattern = regex.compile(str(expected), regex.IGNORECASE)
            except regex.error:
                return False
        return search(pattern, "" if actual is None else str(actual)) is not None
    if op in ("in", "not_in"):
        options = _options(expected)
        if isinstance(actual, (list, tuple)):
            found = any(_holds(options, a) for a in actual)
        else:
            found = _holds(options, actual)
        return found if op == "in" else not found
    if op == "has":
        return _holds(actual if isinstance(actual, (list, tuple)) else _options(actual), expected)
    if op == "between":
        lo, hi = expected if isinstance(expected, (list, tuple)) else (None, None)
        c1, c2 = _compare(actual, lo), _compare(actual, hi)
        return c1 is not None and c2 is not None and c1 >= 0 and c2 <= 0
    order = _compare(actual, expected)
    if order is None:
        return False
    return {"gt": order > 0, "gte": order >= 0, "lt": order < 0, "lte": order <= 0}[op]


_ORDER: dict[str, Callable[[int], bool]] = {
    "gt": lambda order: order > 0, "gte": lambda order: order >= 0,
    "lt": lambda order: order < 0, "lte": lambda order: order <= 0,
}


def compile_predicate(p: CPredicate) -> Test:
    """``holds`` as a closure, specialised once per predicate (same results, same errors).

    The condition step's handler keeps these with its flow version (``CompiledFlow.plan``), so a
    turn neither walks the predicate's shape nor picks its operator again.
    """
    if isinstance(p, CLeaf):
        return _compile_leaf(p)
    if isinstance(p, CAll):
        items = tuple(compile_predicate(x) for x in p.items)
        return lambda context: all(test(context) for test in items)
    if isinstance(p, CAny):
        items = tuple(compile_predicate(x) for x in p.items)
        return lambda context: any(test(context) for test in items)
    if isinstance(p, CNot):
        item = compile_predicate(p.item)
        return lambda context: not item(context)
    if isinstance(p, CExpr):
        evaluate = p.expr.evaluate
        return lambda context: bool(evaluate(context))
    raise TypeError(f"not a predicate: {p!r}")


def _compile_leaf(p: CLeaf) -> Test:
    """A leaf's closure: the ordering and (in)equality operators on a constant value inline."""
    path, op, expected = p.path, p.op, p.value
    if not p.constant or (op not in _ORDER and op not in ("eq", "ne")):
        return lambda context: _leaf(p, context)

    if op in ("eq", "ne"):
        negate = op == "ne"
        return lambda context: _equal(lookup(context, path), expected) is not negate
    decide = _ORDER[op]
    if not (type(expected) is int or type(expected) is float):

        def ordered(context: Mapping[str, Any]) -> bool:
            order = _compare(lookup(context, path), expected)
            return order is not None and decide(order)

        return ordered
    # A number: when the value is a number too, one comparison decides, as ``(a > b) - (a < b)``
    # would (NaN included: it orders as equal, so ``gte``/``lte`` hold); the rest as ``_compare``.
    fast = _NUMBER_ORDER[op]

    first, second = path if len(path) == 2 else ("", "")

    def numeric(context: Mapping[str, Any]) -> bool:
        # lookup(context, path), with ``vars.n`` in plain dicts inline
        obj = context.get(first, _MISSING) if second and type(context) is dict else None
        actual = obj.get(second) if type(obj) is dict else lookup(context, path)
        if type(actual) is int or type(actual) is float:
            return fast(actual, expected)
        order = _compare(actual, expected)
        return order is not None and decide(order)

    return numeric


_NUMBER_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt, "lt": operator.lt,
    "gte": lambda a, b: not a < b, "lte": lambda a, b: not a > b,
}
