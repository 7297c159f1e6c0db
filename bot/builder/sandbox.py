"""The Jinja2 sandbox templates run in, with the rendering budget of ``budget`` wired in.

``ImmutableSandboxedEnvironment`` keeps templates away from Python internals; this subclass
keeps them from freezing or exhausting the process:

* ``*``, ``**``, ``+`` and ``%`` are intercepted operators (see ``expressions.safe_*``);
* the code generator routes ``~`` and list, tuple and dict literals through size checks;
* ``call`` counts each call as a step, checks ``str`` methods with widths or multiplying
  effects before they run, and every result after;
* ``str.format`` uses a formatter that checks each field; filters are wrapped the same way;
* every ``for`` loop iterates through a counting wrapper, inserted when the source is parsed
  (where a literal ``range(n)`` over the limit is also refused); ``range`` and ``lipsum`` are
  bounded; ``finalize`` and ``concat`` count the text a render produces.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jinja2 import ChainableUndefined, Environment, TemplateSyntaxError, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import FilterArgumentError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import generate_lorem_ipsum

from .budget import (
    CURRENT,
    MAX_OUTPUT,
    BudgetExceeded,
    bounded_range,
    check_format_size,
    check_format_spec,
    check_size,
    check_value,
    check_width,
    joined_size,
    replaced_size,
    size,
)
from .expressions import safe_add, safe_modulo, safe_multiply, safe_power


def _finalize(value: Any) -> Any:
    n = len(value) if type(value) is str else size(value)
    check_size(n)
    budget = CURRENT.get()
    if budget is not None:  # None while Jinja folds constants at compile time
        budget.emit(n)
    return "" if value is None else value


def _checked_join(parts: Iterable[Any]) -> str:
    """``~``: the operands' total length checked before the string is built."""
    texts = [p if type(p) is str else str(p) for p in parts]
    check_size(sum(map(len, texts)))
    return "".join(texts)


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with ``~`` going through ``_checked_join`` and the size of
    list, tuple and dict literals checked (``[s, s]`` doubles a value as surely as ``s ~ s``)."""

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self.write("environment.checked_value(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self.write("environment.checked_value(")
        super().visit_Dict(node, frame)
        self.write(")")

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":
            super().visit_Tuple(node, frame)
            return
        self.write("environment.checked_value(")
        super().visit_Tuple(node, frame)
        self.write(")")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Formatter(SandboxedFormatter):
    """``str.format`` in the sandbox, with each field's width and the total length checked."""

    def __init__(self, env: Environment) -> None:
        super().__init__(env)
        self.length = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_format_spec(format_spec)
        text = super().format_field(value, format_spec)
        self.length += len(text)
        check_size(self.length)
        return text


def _str_join(separator: str, items: Iterable[Any]) -> list[Any]:
    listed = list(items)
    check_size(joined_size(separator, listed))
    return listed


def _str_replace(text: str, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(old, str) and isinstance(new, str) and isinstance(count, int):
        check_size(replaced_size(text, old, new, count))


def _str_translate(text: str, table: Any) -> None:
    if isinstance(table, Mapping):
        longest = max((size(v) for v in table.values()), default=1)
        check_size(len(text) * longest)


def _str_tabs(text: str, tabsize: Any = 8) -> None:
    if isinstance(tabsize, int):
        check_size(len(text) + text.count("\t") * tabsize)


def _width(text: str, width: Any = 0, *rest: Any) -> None:
    check_width(width)


# Checks made before a ``str`` method runs: (text, *args) -> None, or the args to use instead.
_STR_METHODS: dict[str, Callable[..., Any]] = {
    "center": _width, "ljust": _width, "rjust": _width, "zfill": _width,
    "replace": _str_replace, "translate": _str_translate, "expandtabs": _str_tabs,
}


def _filter_width(position: int, name: str) -> Callable[[tuple[Any, ...], dict[str, Any]], None]:
    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        check_width(args[position] if len(args) > position else kwargs.get(name))
    return check


def _filter_indent(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    text = str(args[0]) if args else ""
    width = args[1] if len(args) > 1 else kwargs.get("width", 4)
    per_line = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    check_size(len(text) + (text.count("\n") + 1) * per_line)


def _filter_replace(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    text, old, new, *rest = (*args, None, None, None)[:4]
    if isinstance(text, str):
        count = rest[0] if rest and rest[0] is not None else kwargs.get("count", -1)
        _str_replace(text, kwargs.get("old", old), kwargs.get("new", new), count)


def _filter_join(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    value = args[0] if args else ()
    separator = args[1] if len(args) > 1 else kwargs.get("d", "")
    if isinstance(value, (list, tuple, dict, str)) and isinstance(separator, str):
        check_size(joined_size(separator, list(value)))


# Checks made before a filter runs, on its arguments (the value first).
_FILTER_CHECKS: dict[str, Callable[[tuple[Any, ...], dict[str, Any]], None]] = {
    "center": _filter_width(1, "width"), "batch": _filter_width(1, "linecount"),
    "slice": _filter_width(1, "slices"), "truncate": _filter_width(1, "length"),
    "wordwrap": _filter_width(1, "width"), "indent": _filter_indent,
    "replace": _filter_replace, "join": _filter_join,
}


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    """The ``format`` filter (``"%s"|format(x)``), its widths and arguments checked."""
    if args and kwargs:
        raise FilterArgumentError("can't handle positional and keyword arguments at the same time")
    return str(safe_modulo(str(value), kwargs or args))


def _guard_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that counts as a step of the render, checks its arguments and its result."""
    skip = 1 if getattr(fn, "jinja_pass_arg", None) is not None else 0
    pre = _FILTER_CHECKS.get(name)

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = CURRENT.get()
        if budget is not None:
            budget.step()
        if pre is not None:
            pre(args[skip:], kwargs)
        return check_value(fn(*args, **kwargs))

    return guarded


def _budget_iter(items: Any) -> Any:
    """Wraps the iterable of every ``for`` loop: each iteration is a step of the render."""
    budget = CURRENT.get()
    return items if budget is None else budget.iterate(items)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if n > 20 or max > 200:
        raise BudgetExceeded("lipsum() of more than 20 paragraphs or 200 words")
    return str(generate_lorem_ipsum(n=n, html=html, min=min, max=max))


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with a budget (see ``budget``): every operation that can build a large
    value checks its size first, loops and calls are counted, output and CPU time bounded."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _CodeGenerator
    checked_join = staticmethod(_checked_join)
    checked_value = staticmethod(check_value)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            return safe_multiply(left, right)
        if operator == "+":
            return safe_add(left, right)
        if operator == "%":
            return safe_modulo(left, right)
        return safe_power(left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: PYI063
        budget = CURRENT.get()
        if budget is not None:
            budget.step()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "")
            if name == "join" and args:
                args = (_str_join(owner, args[0]), *args[1:])
            else:
                check = _STR_METHODS.get(name)
                if check is not None:  # Jinja passes its own _loop_vars/_block_vars along
                    check(owner, *args, **{k: v for k, v in kwargs.items() if k[0] != "_"})
        return check_value(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format``/``format_map`` through ``_Formatter`` (a fresh one per call); on a
        ``Markup`` (``'…'|safe``), Jinja's escaping formatter after an estimate of the size."""
        sandboxed = super().wrap_str_format(value)
        if sandboxed is None:
            return None
        text: str = value.__self__
        is_map = value.__name__ == "format_map"
        if type(text) is not str:
            def estimated(*args: Any, **kwargs: Any) -> str:
                check_format_size(text, args[0] if is_map and args else kwargs, args)
                return sandboxed(*args, **kwargs)

            return functools.update_wrapper(estimated, value)

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                return str(_Formatter(self).vformat(text, (), args[0]))
            return str(_Formatter(self).vformat(text, args, kwargs))

        return functools.update_wrapper(wrapper, value)

    def concat(self, parts: Iterable[str]) -> str:
        """The output of a render, cut at ``MAX_OUTPUT`` rather than built in full."""
        out: list[str] = []
        length = 0
        for part in parts:
            length += len(part)
            if length > MAX_OUTPUT:
                raise BudgetExceeded(f"output longer than {MAX_OUTPUT:,} characters")
            out.append(part)
        return "".join(out)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """Parse, refuse what is abusive on its face, and count the iterations of every loop."""
        tree = super()._parse(source, name, filename)
        for call in tree.find_all(nodes.Call):
            if not (isinstance(call.node, nodes.Name) and call.node.name == "range"):
                continue
            bounds = [a.value for a in call.args if isinstance(a, nodes.Const) and type(a.value) is int]
            if len(bounds) == len(call.args):  # only constant integers are known before rendering
                try:
                    bounded_range(*bounds)
                except (BudgetExceeded, ValueError, TypeError) as exc:
                    raise TemplateSyntaxError(str(exc), call.lineno, name, filename) from None
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "_budget_iter", [], [], None, None,
                                     lineno=loop.iter.lineno)
        return tree


def make_environment() -> ImmutableSandboxedEnvironment:
    env = _Environment(
        undefined=ChainableUndefined, autoescape=False, finalize=_finalize, keep_trailing_newline=True
    )
    env.filters["default"] = env.filters["d"] = _default
    env.filters["format"] = _format
    env.filters = {name: _guard_filter(name, fn) for name, fn in env.filters.items()}
    env.filters["_budget_iter"] = _budget_iter
    env.globals["range"] = bounded_range
    env.globals["lipsum"] = _lipsum
    return env


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """Like Jinja's ``default``, but a value that is ``None`` (an empty CRM field) counts as missing."""
    if isinstance(value, Undefined) or value is None or (boolean and not value):
        return default_value
    return value
