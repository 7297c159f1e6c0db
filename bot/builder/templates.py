"""Jinja2 templates, compiled once per flow in a sandbox.

Three shapes, picked at compile time so that rendering does no parsing:

* a constant (no ``{{``/``{%``): returned as is;
* text whose placeholders are all plain dotted paths (``Hi {{ contact.name }}!``): rendered by
  direct lookups, same output as Jinja for our plain-data context;
* anything else: a compiled sandboxed Jinja2 template.

A template that is a single ``{{ expression }}`` also has a *typed* value (``value()``):
``{{ vars.attempts + 1 }}`` yields the number, ``{{ lead.tags }}`` the list. Missing values
render as an empty string; ``None`` renders as an empty string too.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from jinja2 import TemplateError, TemplateSyntaxError, Undefined

from .budget import CURRENT, BudgetExceeded, RenderBudget, check_value
from .expressions import ExpressionError, Getter, compile_fast, dict_pair
from .missing import MISSING
from .sandbox import make_environment


class TemplateFailed(Exception):
    """A template raised while rendering (sandbox violation, bad arithmetic, over budget, …)."""


_ENV = make_environment()  # immutable and stateless after creation; shared by all flows
_MARKERS = ("{{", "{%", "{#")
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.DOTALL)
_LOOPS = re.compile(r"\{%[-+]?\s*(?:for|macro|call)\b")  # what can repeat work in a render
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_MISSING = MISSING


def _text(value: Any) -> str:
    if type(value) is str:
        return value
    if value is _MISSING or value is None:
        return ""
    return str(value)


def _failed(source: str, exc: Exception) -> TemplateFailed:
    """The ``TemplateFailed`` for an exception raised while rendering ``source``."""
    if isinstance(exc, (ExpressionError, BudgetExceeded, TemplateError)):
        return TemplateFailed(f"{source!r}: {exc}")
    return TemplateFailed(f"{source!r}: {type(exc).__name__}: {exc}")  # bad arithmetic and the like


def _constant_renderer(text: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda context: text


def _parts_renderer(source: str, parts: tuple[str | Getter, ...]) -> Callable[[Mapping[str, Any]], str]:
    """A closure for text whose placeholders are all fast getters, specialised for the common shapes."""
    getters = tuple((i, p) for i, p in enumerate(parts) if callable(p))
    pairs = [dict_pair(get) for _, get in getters]
    texts = ["".join(p for p in parts[lo + 1 : hi] if not callable(p))  # the text around each getter
             for lo, hi in zip((-1, *(i for i, _ in getters)), (*(i for i, _ in getters), len(parts)), strict=True)]
    if len(getters) == 1 and pairs[0] is not None:
        ((_, get),), (root, attr), (before, after) = getters, pairs[0], texts

        def one_pair(context: Mapping[str, Any]) -> str:
            try:
                obj = context.get(root, _MISSING)  # get(context), inline
                v = obj.get(attr, _MISSING) if type(obj) is dict else get(context)
                if type(v) is not str:
                    v = _text(v)
            except Exception as exc:
                raise _failed(source, exc) from exc
            return before + v + after

        return one_pair
    if len(getters) == 2 and pairs[0] is not None and pairs[1] is not None:
        ((_, get_a), (_, get_b)), (root_a, attr_a), (root_b, attr_b) = getters, pairs[0], pairs[1]
        text0, text1, text2 = texts

        def two_pairs(context: Mapping[str, Any]) -> str:
            try:
                obj = context.get(root_a, _MISSING)  # get_a(context), inline
                a = obj.get(attr_a, _MISSING) if type(obj) is dict else get_a(context)
                if type(a) is not str:
                    a = "" if a is _MISSING or a is None else str(a)
                obj = context.get(root_b, _MISSING)
                b = obj.get(attr_b, _MISSING) if type(obj) is dict else get_b(context)
                if type(b) is not str:
                    b = "" if b is _MISSING or b is None else str(b)
            except Exception as exc:
                raise _failed(source, exc) from exc
            return text0 + a + text1 + b + text2

        return two_pairs
    if len(getters) == 1:
        ((at, get),) = getters
        before = "".join(p for p in parts[:at] if not callable(p))
        after = "".join(p for p in parts[at + 1 :] if not callable(p))

        def one(context: Mapping[str, Any]) -> str:
            try:
                v = get(context)
                if type(v) is not str:
                    v = _text(v)
            except Exception as exc:
                raise _failed(source, exc) from exc
            return before + v + after

        return one

    blank = [p if not callable(p) else "" for p in parts]

    def many(context: Mapping[str, Any]) -> str:
        out = blank.copy()
        try:
            for i, get in getters:
                v = get(context)
                out[i] = v if type(v) is str else "" if v is _MISSING or v is None else str(v)
        except Exception as exc:
            raise _failed(source, exc) from exc
        return "".join(out)

    return many


def _fast_value(source: str, fast: Getter) -> Callable[[Mapping[str, Any]], Any]:
    """The typed value of a single expression the fast path computes."""

    def value(context: Mapping[str, Any]) -> Any:
        try:
            v = fast(context)
        except Exception as exc:
            raise fast_failed(source, exc) from exc
        return "" if v is _MISSING else v

    return value


def fast_failed(source: str, exc: Exception) -> TemplateFailed:
    """What ``value()`` raises when the fast getter (``Template.fast``) of ``source`` raised ``exc``."""
    if isinstance(exc, (ExpressionError, BudgetExceeded)):
        return TemplateFailed(f"{source!r}: {exc}")
    return TemplateFailed(f"{source!r}: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def _compiling() -> Iterator[None]:
    """A template too deeply nested for Jinja's parser or Python's compiler (68 nested
    parentheses, 100 nested ``if`` blocks, 20 nested ``for`` loops: ``RecursionError``,
    ``IndentationError``, ``SyntaxError``) is a ``TemplateSyntaxError`` like any other."""
    try:
        yield
    except (RecursionError, SyntaxError, MemoryError) as exc:
        raise TemplateSyntaxError(f"nested too deeply to compile ({type(exc).__name__})", 1) from None


class Template:
    """A compiled template. ``render`` gives text; ``value`` gives the typed value."""

    __slots__ = ("_expr", "_fast", "_jinja", "_parts", "constant", "loops", "render", "source", "value")

    def __init__(self, source: str) -> None:
        self.source = source
        self.constant: str | None = None
        self._parts: tuple[str | Getter, ...] | None = None
        self._jinja: Any = None
        self._expr: Callable[..., Any] | None = None
        self._fast: Getter | None = None
        #: ``render(context) -> str``: a closure picked for the template's shape, compiled once
        #: (an attribute, not a method: one call per render on the interpreter's hot path).
        self.render: Callable[[Mapping[str, Any]], str] = self._render_jinja
        #: ``value(context)``: the typed value of a single-expression template; the text of any other.
        self.value: Callable[[Mapping[str, Any]], Any] = self._value
        self.loops = "{%" in source and _LOOPS.search(source) is not None
        if not any(m in source for m in _MARKERS):
            self.constant = source
            self.render = self.value = _constant_renderer(source)
            return
        with _compiling():
            self._compile(source)

    def _compile(self, source: str) -> None:
        self._jinja = _ENV.from_string(source)  # also the syntax check, for every shape
        single = _SINGLE.match(source)
        if single:
            expr = single.group("expr")
            self._fast = compile_fast(_ENV, expr)
            if self._fast is not None:
                self.value = _fast_value(source, self._fast)
            else:
                self._expr = _ENV.compile_expression(expr, undefined_to_none=False)
        if "{%" not in source and "{#" not in source:
            parts: list[str | Getter] = []
            pos = 0
            for m in _PLACEHOLDER.finditer(source):
                getter = compile_fast(_ENV, m.group(1))
                if getter is None:
                    return
                parts.append(source[pos : m.start()])
                parts.append(getter)
                pos = m.end()
            if "{{" not in source[pos:] and "}}" not in source[pos:]:
                parts.append(source[pos:])
                self._parts = tuple(p for p in parts if p != "")
                self.render = _parts_renderer(source, self._parts)

    @property
    def fast(self) -> Getter | None:
        """The closure computing a single-expression template's value, if it has one: its value is
        ``""`` where that gives ``MISSING``; what it raises, ``fast_failed`` makes ``TemplateFailed``."""
        return self._fast

    @property
    def is_constant(self) -> bool:
        return self.constant is not None

    def _render_jinja(self, context: Mapping[str, Any]) -> str:
        token = None
        try:
            token = CURRENT.set(RenderBudget())  # inside: a turn over its budget raises here
            return str(self._jinja.render(context))
        except Exception as exc:
            raise _failed(self.source, exc) from exc
        finally:
            if token is not None:
                CURRENT.reset(token)

    def _value(self, context: Mapping[str, Any]) -> Any:
        if self._expr is not None:
            return _evaluate(self.source, self._expr, context, "")
        return self.render(context)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


class Expression:
    """A bare Jinja2 expression (``lead.price > 1000``), for ``expr`` predicates."""

    __slots__ = ("_fast", "_fn", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        with _compiling():
            self._fn = _ENV.compile_expression(source, undefined_to_none=False)
            self._fast = compile_fast(_ENV, source)

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        if self._fast is None:
            return _evaluate(self.source, self._fn, context, None)
        try:
            v = self._fast(context)
        except (ExpressionError, BudgetExceeded) as exc:
            raise TemplateFailed(f"{self.source!r}: {exc}") from exc
        except Exception as exc:
            raise TemplateFailed(f"{self.source!r}: {type(exc).__name__}: {exc}") from exc
        return None if v is _MISSING else v


def _evaluate(source: str, fn: Callable[..., Any], context: Mapping[str, Any], missing: Any) -> Any:
    """A compiled Jinja expression's value, within a render budget."""
    token = None
    try:
        token = CURRENT.set(RenderBudget())
        v = check_value(fn(**context))
    except (ExpressionError, BudgetExceeded) as exc:
        raise TemplateFailed(f"{source!r}: {exc}") from exc
    except Exception as exc:
        raise TemplateFailed(f"{source!r}: {type(exc).__name__}: {exc}") from exc
    finally:
        if token is not None:
            CURRENT.reset(token)
    return missing if isinstance(v, Undefined) else v


def compile_value(value: Any) -> Any:
    """Compile every string inside a JSON value (object of templates, list of templates)."""
    if isinstance(value, str):
        return Template(value)
    if isinstance(value, list):
        return [compile_value(v) for v in value]
    if isinstance(value, dict):
        return {k: compile_value(v) for k, v in value.items()}
    return value


def evaluate_value(value: Any, context: Mapping[str, Any]) -> Any:
    """The value of a compiled JSON value: templates evaluated with their types."""
    if isinstance(value, Template):
        return value.value(context)
    if isinstance(value, list):
        return [evaluate_value(v, context) for v in value]
    if isinstance(value, dict):
        return {k: evaluate_value(v, context) for k, v in value.items()}
    return value
