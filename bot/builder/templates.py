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


class TemplateFailed(Exception):
    """A template raised while rendering (sandbox violation, bad arithmetic, …)."""


def _finalize(value: Any) -> Any:
    return "" if value is None else value


def make_environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
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
_PATH = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*$")
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)
_MISSING = object()


def _lookup(context: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    obj: Any = context.get(path[0], _MISSING)
    for name in path[1:]:
        if obj is _MISSING or obj is None:
            return _MISSING
        if isinstance(obj, dict):
            obj = obj.get(name, _MISSING)
        else:
            obj = _ENV.getattr(obj, name)
            if isinstance(obj, Undefined):
                return _MISSING
    return obj


def _text(value: Any) -> str:
    if value is _MISSING or value is None:
        return ""
    return value if isinstance(value, str) else str(value)


class Template:
    """A compiled template. ``render`` gives text; ``value`` gives the typed value."""

    __slots__ = ("source", "_const", "_parts", "_jinja", "_expr", "_path")

    def __init__(self, source: str) -> None:
        self.source = source
        self._const: str | None = None
        self._parts: tuple[str | tuple[str, ...], ...] | None = None
        self._jinja: Any = None
        self._expr: Callable[..., Any] | None = None
        self._path: tuple[str, ...] | None = None
        if not any(m in source for m in _MARKERS):
            self._const = source
            return
        single = _SINGLE.match(source)
        if single:
            expr = single.group("expr")
            path = _PATH.match(expr)
            if path:
                self._path = tuple(path.group(1).split("."))
            else:
                self._expr = _ENV.compile_expression(expr, undefined_to_none=False)
        if "{%" not in source and "{#" not in source:
            parts: list[str | tuple[str, ...]] = []
            pos = 0
            simple = True
            for m in _PLACEHOLDER.finditer(source):
                path = _PATH.match(m.group(1))
                if not path:
                    simple = False
                    break
                parts.append(source[pos : m.start()])
                parts.append(tuple(path.group(1).split(".")))
                pos = m.end()
            if simple and "{{" not in source[pos:]:
                parts.append(source[pos:])
                self._parts = tuple(p for p in parts if p != "")
                return
        self._jinja = _ENV.from_string(source)

    @property
    def is_constant(self) -> bool:
        return self._const is not None

    def render(self, context: Mapping[str, Any]) -> str:
        if self._const is not None:
            return self._const
        try:
            if self._parts is not None:
                return "".join(p if isinstance(p, str) else _text(_lookup(context, p)) for p in self._parts)
            return str(self._jinja.render(context))
        except TemplateError as exc:
            raise TemplateFailed(f"{self.source!r}: {exc}") from exc
        except Exception as exc:  # arithmetic on bad data and the like: the operator's bug
            raise TemplateFailed(f"{self.source!r}: {type(exc).__name__}: {exc}") from exc

    def value(self, context: Mapping[str, Any]) -> Any:
        """The typed value of a single-expression template; the text of any other."""
        if self._path is not None:
            v = _lookup(context, self._path)
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

    __slots__ = ("source", "_fn")

    def __init__(self, source: str) -> None:
        self.source = source
        self._fn = _ENV.compile_expression(source, undefined_to_none=False)

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        try:
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
