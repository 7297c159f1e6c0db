"""A fast path for common Jinja2 expressions: compiled once into Python closures.

Jinja2 builds a fresh context (a ChainMap) for every call of a compiled expression, which
costs more than the interpreter step around it. Expressions made only of names, attribute
and item lookups, constants, arithmetic, comparisons and ``and``/``or``/``not`` are turned
into closures here, with the same results as Jinja for our plain-data context (missing
values are ``MISSING``; arithmetic or ordering on them raises, as Jinja's Undefined does).
Anything else (filters, calls, tests, …) returns None and stays with Jinja.
"""

from __future__ import annotations

import math
import operator
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import Undefined, nodes
from jinja2.parser import Parser
from jinja2.sandbox import SandboxedEnvironment

from .budget import (
    MAX_INT_BITS,
    MAX_SIZE,
    BudgetExceeded,
    check_percent,
    check_size,
    check_value,
    size,
)
from .missing import MISSING

Getter = Callable[[Mapping[str, Any]], Any]

#: The getters of two-part dotted names (``contact.name``): root and attribute, for callers that
#: inline the plain-dict lookup (one call fewer per placeholder on the interpreter's hot path).
_PAIRS: weakref.WeakKeyDictionary[Getter, tuple[str, str]] = weakref.WeakKeyDictionary()


def dict_pair(getter: Getter) -> tuple[str, str] | None:
    """``(root, attr)`` when ``getter`` reads ``root.attr``: where the context's ``root`` is a
    dict its value is ``ctx[root].get(attr, MISSING)``; else ``getter(ctx)`` has the answer."""
    return _PAIRS.get(getter)


#: Largest string or list that ``*`` may build in a template.
MAX_PRODUCT = MAX_SIZE


class ExpressionError(Exception):
    """An expression failed at run time (arithmetic on a missing value, …)."""


_SEQUENCES = frozenset({str, list, tuple})


# The operators that can build a large value check its size before building it (see budget).
def safe_multiply(a: Any, b: Any) -> Any:
    for seq, n in ((a, b), (b, a)):
        if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
            check_size(size(seq) * n)
            return a * b
    return check_value(a * b)


def safe_power(a: Any, b: Any) -> Any:
    if isinstance(b, (int, float)) and abs(b) > 1000:
        raise ExpressionError("exponent too large")
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0 and abs(a) > 1 \
            and b * math.log2(abs(a)) > MAX_INT_BITS:
        raise BudgetExceeded("number larger than 10**100")
    return check_value(a**b)


def safe_add(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:  # the common case: cannot grow past the limit in one step
        return a + b
    if type(a) in _SEQUENCES and type(b) in _SEQUENCES:
        check_size(size(a) + size(b))
    return check_value(a + b)


def safe_modulo(a: Any, b: Any) -> Any:
    """``%``: for a string, formatting, whose widths and arguments are checked first."""
    if isinstance(a, str):
        check_percent(a, b)
    return a % b


_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    nodes.Add: safe_add, nodes.Sub: operator.sub, nodes.Mul: safe_multiply,
    nodes.Div: operator.truediv, nodes.FloorDiv: operator.floordiv, nodes.Mod: safe_modulo,
}
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "gteq": operator.ge,
    "lt": operator.lt, "lteq": operator.le,
    "in": lambda a, b: a in b, "notin": lambda a, b: a not in b,
}


def compile_fast(env: SandboxedEnvironment, source: str) -> Getter | None:
    """A closure computing the expression, or None when it needs full Jinja."""
    try:
        parser = Parser(env, source, state="variable")
        node = parser.parse_expression()
        if not parser.stream.eos:
            return None
    except Exception:
        return None
    return _compile(env, node)


def _dotted(node: nodes.Node) -> list[str] | None:
    """``contact.name`` -> ["contact", "name"]; None for anything but a plain dotted name."""
    attrs: list[str] = []
    while isinstance(node, nodes.Getattr):
        attrs.append(node.attr)
        node = node.node
    if not isinstance(node, nodes.Name):
        return None
    attrs.append(node.name)
    return attrs[::-1]


def _path_getter(env: SandboxedEnvironment, path: list[str]) -> Getter:
    """A lookup of a dotted name, specialised for the plain dicts of our context."""
    root, attrs = path[0], tuple(path[1:])

    def slow(obj: Any, rest: tuple[str, ...]) -> Any:
        for attr in rest:
            if obj is MISSING or obj is None:
                return MISSING
            if type(obj) is dict:
                obj = obj.get(attr, MISSING)
            else:
                obj = env.getattr(obj, attr)
                if isinstance(obj, Undefined):
                    return MISSING
        return obj

    if len(attrs) == 1:
        (attr,) = attrs

        def get1(ctx: Mapping[str, Any]) -> Any:
            obj = ctx.get(root, MISSING)
            if type(obj) is dict:
                return obj.get(attr, MISSING)
            return slow(obj, attrs)

        _PAIRS[get1] = (root, attr)
        return get1

    def get(ctx: Mapping[str, Any]) -> Any:
        return slow(ctx.get(root, MISSING), attrs)

    return get


def _compile(env: SandboxedEnvironment, node: nodes.Node) -> Getter | None:
    # Each branch binds its own names: a closure sees a narrowed (not-None) getter only if the
    # name is not assigned again further down the function.
    if isinstance(node, nodes.Const):
        value = node.value
        return lambda ctx: value
    if isinstance(node, nodes.Name):
        name = node.name
        return lambda ctx: ctx.get(name, MISSING)
    if isinstance(node, nodes.Getattr):
        path = _dotted(node)
        if path is not None:
            return _path_getter(env, path)
        owner = _compile(env, node.node)
        if owner is None:
            return None
        attr = node.attr

        def getattr_(ctx: Mapping[str, Any]) -> Any:
            obj = owner(ctx)
            if obj is MISSING or obj is None:
                return MISSING
            if isinstance(obj, dict):
                return obj.get(attr, MISSING)
            value = env.getattr(obj, attr)
            return MISSING if isinstance(value, Undefined) else value

        return getattr_
    if isinstance(node, nodes.Getitem):
        container = _compile(env, node.node)
        key = _compile(env, node.arg)
        if container is None or key is None:
            return None

        def getitem(ctx: Mapping[str, Any]) -> Any:
            obj, k = container(ctx), key(ctx)
            if isinstance(obj, dict):
                return obj.get(k, MISSING)
            if isinstance(obj, (list, tuple, str)) and isinstance(k, int) and -len(obj) <= k < len(obj):
                return obj[k]
            return MISSING

        return getitem
    if isinstance(node, (nodes.List, nodes.Tuple)):
        items = _compile_all(env, node.items)
        if items is None:
            return None
        if isinstance(node, nodes.Tuple):  # "%s-%s" % (a, b) needs a tuple, as in Jinja
            return lambda ctx: check_value(tuple([i(ctx) for i in items]))
        return lambda ctx: check_value([i(ctx) for i in items])
    arith_fn = _ARITH.get(type(node))
    if arith_fn is not None and isinstance(node, nodes.BinExpr):
        left, right = _compile(env, node.left), _compile(env, node.right)
        if left is None or right is None:
            return None

        if isinstance(node.right, nodes.Const) and node.right.value is not MISSING:
            # ``vars.n + 1``: the constant bound once, and integer addition without a call.
            constant = node.right.value
            pair = dict_pair(left)
            if arith_fn is safe_add and type(constant) is int and pair is not None:
                root, attr = pair

                def add_int_to(ctx: Mapping[str, Any]) -> Any:
                    obj = ctx.get(root, MISSING)  # left(ctx), inline
                    a = obj.get(attr, MISSING) if type(obj) is dict else left(ctx)
                    if type(a) is int:
                        return a + constant
                    if a is MISSING:
                        raise ExpressionError("arithmetic on a missing value")
                    return safe_add(a, constant)

                return add_int_to

            if arith_fn is safe_add and type(constant) is int:

                def add_int(ctx: Mapping[str, Any]) -> Any:
                    a = left(ctx)
                    if type(a) is int:
                        return a + constant
                    if a is MISSING:
                        raise ExpressionError("arithmetic on a missing value")
                    return safe_add(a, constant)

                return add_int

            def arith_constant(ctx: Mapping[str, Any]) -> Any:
                a = left(ctx)
                if a is MISSING:
                    raise ExpressionError("arithmetic on a missing value")
                return arith_fn(a, constant)

            return arith_constant

        def arith(ctx: Mapping[str, Any]) -> Any:
            a, b = left(ctx), right(ctx)
            if a is MISSING or b is MISSING:
                raise ExpressionError("arithmetic on a missing value")
            return arith_fn(a, b)

        return arith
    if isinstance(node, nodes.Neg):
        operand = _compile(env, node.node)
        if operand is None:
            return None

        def neg(ctx: Mapping[str, Any]) -> Any:
            v = operand(ctx)
            if v is MISSING:
                raise ExpressionError("arithmetic on a missing value")
            return -v

        return neg
    if isinstance(node, nodes.Not):
        negated = _compile(env, node.node)
        return None if negated is None else (lambda ctx: not negated(ctx))
    if isinstance(node, (nodes.And, nodes.Or)):
        first_of, second_of = _compile(env, node.left), _compile(env, node.right)
        if first_of is None or second_of is None:
            return None
        if isinstance(node, nodes.And):
            return lambda ctx: first_of(ctx) and second_of(ctx)
        return lambda ctx: first_of(ctx) or second_of(ctx)
    if isinstance(node, nodes.Filter) and node.name in ("default", "d") and node.node is not None \
            and node.dyn_args is None and node.dyn_kwargs is None:
        return _default_filter(env, node)
    if isinstance(node, nodes.Compare):
        return _compare(env, node)
    return None


def _compile_all(env: SandboxedEnvironment, items: list[nodes.Expr]) -> list[Getter] | None:
    """Getters for every item, or None if one of them needs full Jinja."""
    getters = []
    for item in items:
        getter = _compile(env, item)
        if getter is None:
            return None
        getters.append(getter)
    return getters


def _compare(env: SandboxedEnvironment, node: nodes.Compare) -> Getter | None:
    """``a < b == c``: chained, as in Jinja; ``==``/``in`` with a missing value do not raise."""
    first = _compile(env, node.expr)
    ops: list[tuple[Callable[[Any, Any], Any], Getter, str]] = []
    for o in node.ops:
        fn, getter = _COMPARE.get(o.op), _compile(env, o.expr)
        if fn is None or getter is None:
            return None
        ops.append((fn, getter, o.op))
    if first is None:
        return None

    def compare(ctx: Mapping[str, Any]) -> Any:
        a = first(ctx)
        for fn, getter, name in ops:
            b = getter(ctx)
            if a is MISSING or b is MISSING:
                if name in ("eq", "ne"):
                    result = (a is b) if name == "eq" else (a is not b)
                elif name in ("in", "notin"):
                    result = name == "notin"  # nothing is in a missing value; a missing value is in nothing
                else:
                    raise ExpressionError(f"comparison '{name}' with a missing value")
            else:
                result = fn(a, b)
            if not result:
                return False
            a = b
        return True

    return compare


def _default_filter(env: SandboxedEnvironment, node: nodes.Filter) -> Getter | None:
    """``x | default(v[, boolean])``: our ``default`` (None counts as missing), without Jinja."""
    assert node.node is not None
    names = ("default_value", "boolean")
    args = list(node.args)
    kwargs = {kw.key: kw.value for kw in node.kwargs}
    if len(args) > 2 or any(k not in names for k in kwargs) or any(names[i] in kwargs for i in range(len(args))):
        return None
    parts = dict(zip(names, args, strict=False)) | kwargs  # fewer args than names: the rest are keywords
    value = _compile(env, node.node)
    fallback = _compile(env, parts["default_value"]) if "default_value" in parts else (lambda ctx: "")
    boolean = _compile(env, parts["boolean"]) if "boolean" in parts else (lambda ctx: False)
    if value is None or fallback is None or boolean is None:
        return None

    def default(ctx: Mapping[str, Any]) -> Any:
        v, fb, b = value(ctx), fallback(ctx), boolean(ctx)  # all evaluated, as Jinja does
        return fb if v is MISSING or v is None or (b and not v) else v

    return default
