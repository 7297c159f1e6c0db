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

import re
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import ChainableUndefined, TemplateError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .expressions import MISSING, ExpressionError, Getter, compile_fast, safe_multiply, safe_power


class TemplateFailed(Exception):
    """A template raised while rendering (sandbox violation, bad arithmetic, …)."""


def _finalize(value: Any) -> Any:
    return "" if value is None else value


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with ``*`` and ``**`` guarded against building huge values."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        try:
            return safe_multiply(left, right) if operator == "*" else safe_power(left, right)
        except ExpressionError as exc:
            raise TemplateFailed(str(exc)) from exc


def make_environment() -> ImmutableSandboxedEnvironment:
    env = _Environment(
        undefined=ChainableUndefined, autoescape=False, finalize=_finalize, keep_trailing_newline=True
    )
    env.filters["default"] = env.filters["d"] = _default
    return env


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """Like Jinja's ``default``, but a value that is ``None`` (an empty CRM field) counts as missing."""
    if isinstance(value, Undefined) or value is None or (boolean and not value):
        return default_value
    return value


_ENV = make_environment()  # immutable and stateless after creation; shared by all flows
_MARKERS = ("{{", "{%", "{#")
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.S)
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)
_MISSING = MISSING


def _text(value: Any) -> str:
    if type(value) is str:
        return value
    if value is _MISSING or value is None:
        return ""
    return str(value)


class Template:
    """A compiled template. ``render`` gives text; ``value`` gives the typed value."""

    __slots__ = ("source", "constant", "_parts", "_jinja", "_expr", "_fast")

    def __init__(self, source: str) -> None:
        self.source = source
        self.constant: str | None = None
        self._parts: tuple[str | Getter, ...] | None = None
        self._jinja: Any = None
        self._expr: Callable[..., Any] | None = None
        self._fast: Getter | None = None
        if not any(m in source for m in _MARKERS):
            self.constant = source
            return
        self._jinja = _ENV.from_string(source)  # also the syntax check, for every shape
        single = _SINGLE.match(source)
        if single:
            expr = single.group("expr")
            self._fast = compile_fast(_ENV, expr)
            if self._fast is None:
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

    @property
    def is_constant(self) -> bool:
        return self.constant is not None

    def render(self, context: Mapping[str, Any]) -> str:
        if self.constant is not None:
            return self.constant
        try:
            if self._parts is not None:
                return "".join([p if type(p) is str else _text(p(context)) for p in self._parts])
            return str(self._jinja.render(context))
        except ExpressionError as exc:
            raise TemplateFailed(f"{self.source!r}: {exc}") from exc
        except TemplateError as exc:
            raise TemplateFailed(f"{self.source!r}: {exc}") from exc
        except Exception as exc:  # arithmetic on bad data and the like: the operator's bug
            raise TemplateFailed(f"{self.source!r}: {type(exc).__name__}: {exc}") from exc

    def value(self, context: Mapping[str, Any]) -> Any:
        """The typed value of a single-expression template; the text of any other."""
        if self._fast is not None:
            try:
                v = self._fast(context)
            except ExpressionError as exc:
                raise TemplateFailed(f"{self.source!r}: {exc}") from exc
            except Exception as exc:
                raise TemplateFailed(f"{self.source!r}: {type(exc).__name__}: {exc}") from exc
            return "" if v is _MISSING else v
        if self._expr is not None:
            try:
                v = self._expr(**context)
            except Exception as exc:
                raise TemplateFailed(f"{self.source!r}: {type(exc).__name__}: {exc}") from exc
            return "" if isinstance(v, Undefined) else v
        return self.render(context)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


class Expression:
    """A bare Jinja2 expression (``lead.price > 1000``), for ``expr`` predicates."""

    __slots__ = ("source", "_fn", "_fast")

    def __init__(self, source: str) -> None:
        self.source = source
        self._fn = _ENV.compile_expression(source, undefined_to_none=False)
        self._fast = compile_fast(_ENV, source)

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        try:
            if self._fast is not None:
                v = self._fast(context)
                return None if v is _MISSING else v
            v = self._fn(**context)
        except Exception as exc:
            raise TemplateFailed(f"{self.source!r}: {type(exc).__name__}: {exc}") from exc
        return None if isinstance(v, Undefined) else v


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
