"""What one template render may cost: loop iterations, value sizes, numbers, output, CPU time.

A flow's templates are written by an operator and run on every message, inside the server
process. The sandbox stops them from reaching Python internals; the budget stops them from
freezing or exhausting the process (nested ``range`` loops, ``(9**999)**999``,
``'%0200000000d' % 1``, a string doubled forty times). Every check raises ``BudgetExceeded``,
which the template turns into ``TemplateFailed`` (the step logs ``template.error``, the
conversation goes on).

Two kinds of checks:

* *stateless* size checks on each operation that can multiply a value (``*``, ``**``, ``%``,
  ``+``, ``~``, ``str.format``, width arguments, ``replace``, ``join``…), made before the value
  is built, and a check of every call's result;
* a per-render ``RenderBudget`` (loop iterations and calls, output length, CPU time), held in a
  context variable while a Jinja template renders, so renders in parallel threads each have
  their own. Constants and plain placeholders never reach Jinja and never pay for it. The
  shell may also bound the CPU time of all the renders of one turn (``within_turn_budget``).
"""

from __future__ import annotations

import math
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

#: Largest string, list or dict (items counted deeply) a template may build.
MAX_SIZE = 100_000
#: Largest text one render may output.
MAX_OUTPUT = 64 * 1024
#: Most text the ``{{ … }}`` of one render may produce (macros and ``{% set %}`` blocks too).
MAX_PRODUCED = 4 * MAX_OUTPUT
#: Most numbers ``range()`` may give.
MAX_RANGE = 10_000
#: Most loop iterations and calls of one render.
MAX_STEPS = 10_000
#: Largest integer a template may build (about 10**100).
MAX_INT_BITS = 333
#: CPU time one render may take, in seconds.
CPU_SECONDS = 0.2
#: CPU time all the renders of one ``advance`` may take together, in seconds.
TURN_CPU_SECONDS = 1.0
_CLOCK_EVERY = 8  # steps between two looks at the (~0.3 µs) thread CPU clock


class BudgetExceeded(Exception):
    """A template went over its budget (its message says which limit)."""


class RenderBudget:
    """The running totals of one render."""

    __slots__ = ("_next_clock", "deadline", "output", "steps")

    def __init__(self) -> None:
        self.steps = 0
        self.output = 0
        now = time.thread_time()
        self.deadline = now + CPU_SECONDS
        self._next_clock = _CLOCK_EVERY
        turn = TURN_DEADLINE.get()
        if turn is not None:
            if turn.deadline is None:  # the turn's first render: its clock starts now
                turn.deadline = now + TURN_CPU_SECONDS
            elif turn.deadline < self.deadline:
                if now > turn.deadline:
                    raise BudgetExceeded(f"this turn's templates took more than {TURN_CPU_SECONDS} s of CPU")
                self.deadline = turn.deadline

    def step(self) -> None:
        self.steps += 1
        if self.steps >= self._next_clock:
            if self.steps > MAX_STEPS:
                raise BudgetExceeded(f"more than {MAX_STEPS:,} loop iterations and calls")
            self._next_clock += _CLOCK_EVERY
            if time.thread_time() > self.deadline:
                raise BudgetExceeded(f"took more than {CPU_SECONDS} s of CPU")

    def emit(self, n: int) -> None:
        self.output += n
        if self.output > MAX_PRODUCED:
            raise BudgetExceeded(f"produced more than {MAX_PRODUCED:,} characters")

    def iterate(self, items: Iterable[Any]) -> Iterator[Any]:
        for item in items:
            self.step()
            yield item


class TurnBudget:
    """The thread CPU time by which the renders of one turn must be done: ``TURN_CPU_SECONDS``
    from its first render (None until then). Started by the first render rather than by the turn:
    most turns render no Jinja template, and reading the thread's CPU clock is a system call
    (~2 µs, 1 % of a timer's fire; issue 14 aim 5)."""

    __slots__ = ("deadline",)

    def __init__(self) -> None:
        self.deadline: float | None = None


CURRENT: ContextVar[RenderBudget | None] = ContextVar("salesbot_render_budget", default=None)
#: The budget of the current turn's renders (set by the shell).
TURN_DEADLINE: ContextVar[TurnBudget | None] = ContextVar("salesbot_turn_deadline", default=None)


def within_turn_budget(fn: Callable[..., T], /, *args: Any) -> T:
    """``fn(*args)`` with every render inside sharing ``TURN_CPU_SECONDS`` of CPU time."""
    token = TURN_DEADLINE.set(TurnBudget())
    try:
        return fn(*args)
    finally:
        TURN_DEADLINE.reset(token)


def size(value: Any, limit: int = MAX_SIZE) -> int:
    """Characters of a string, items (counted deeply) of a collection; 1 for anything else.

    Stops counting once past ``limit``, so sizing a huge value costs no more than a small one.
    """
    t = type(value)
    if t is str:
        return len(value)
    if t is int or t is float or t is bool or value is None:
        return 1
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        total = len(value)
        if total > limit:
            return total
        for item in (value.items() if isinstance(value, dict) else value):
            total += size(item, limit - total)
            if total > limit:
                break
        return total
    return 1


def check_size(n: int) -> None:
    if n > MAX_SIZE:
        raise BudgetExceeded(f"the result would be longer than {MAX_SIZE:,}")


def check_value(value: Any) -> Any:
    """``value`` itself, if within the limits of size and magnitude."""
    t = type(value)
    if t is str:
        if len(value) > MAX_SIZE:
            check_size(len(value))
    elif t is int:
        if value.bit_length() > MAX_INT_BITS:
            raise BudgetExceeded("number larger than 10**100")
    elif t is float:
        if not math.isfinite(value):
            raise BudgetExceeded(f"number out of range ({value})")
    elif isinstance(value, (str, list, tuple, dict, set, frozenset)):
        check_size(size(value))
    return value


def bounded_range(*args: int) -> range:
    """``range`` for templates: at most ``MAX_RANGE`` numbers."""
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise BudgetExceeded(f"range() of more than {MAX_RANGE:,} numbers")
    return r


def check_width(width: Any) -> None:
    """A width, fill or count argument (``center(n)``, ``batch(n)``…) within ``MAX_SIZE``."""
    if isinstance(width, int) and width > MAX_SIZE:
        raise BudgetExceeded(f"width {width} is more than {MAX_SIZE:,}")


# ``%``-formatting: the fields, with their literal or ``*`` widths and precisions.
_PERCENT_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_DIGITS = re.compile(r"\d+")


def check_percent(fmt: str, args: Any) -> None:
    """Refuse ``fmt % args`` whose result could pass ``MAX_SIZE`` (a width, many large args)."""
    values = list(args.values()) if isinstance(args, Mapping) else (
        list(args) if isinstance(args, tuple) else [args])
    fields, widest = 0, 0
    for m in _PERCENT_FIELD.finditer(fmt):
        fields += 1
        for g in m.groups():
            if g == "*":
                widest = max([widest, *(abs(v) for v in values if type(v) is int)])
            elif g:
                widest = max(widest, int(g) if len(g) < 8 else MAX_SIZE + 1)
    check_width(widest)
    largest = max((size(v) for v in values), default=0)
    check_size(len(fmt) + fields * (widest + min(largest, MAX_SIZE) + 110))


def check_format_spec(spec: str) -> None:
    """A ``str.format`` field's spec (``>200000000``) within ``MAX_SIZE``."""
    for digits in _DIGITS.findall(spec):
        check_width(int(digits) if len(digits) < 8 else MAX_SIZE + 1)


def check_format_size(fmt: str, kwargs: Any, args: tuple[Any, ...]) -> None:
    """Refuse ``fmt.format(*args, **kwargs)`` whose result could pass ``MAX_SIZE``."""
    values = [*args, *(kwargs.values() if isinstance(kwargs, Mapping) else ())]
    fields, widest = 0, 0
    for _, field, spec, _ in string.Formatter().parse(fmt):
        if field is not None:
            fields += 1
            check_format_spec(spec or "")
            if spec and "{" in spec:  # a width taken from the arguments
                widest = max([widest, *(abs(v) for v in values if type(v) is int)])
            widest = max([widest, *(int(d) for d in _DIGITS.findall(spec or ""))])
    check_width(widest)
    largest = max((size(v) for v in values), default=0)
    check_size(len(fmt) + fields * (widest + min(largest, MAX_SIZE) + 110))


def replaced_size(text: str, old: str, new: str, count: int = -1) -> int:
    """The length ``text.replace(old, new, count)`` would have, without building it."""
    n = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        n = min(n, count)
    return len(text) + n * (len(new) - len(old))


def joined_size(separator: str, items: list[Any]) -> int:
    """About the length ``separator.join(items)`` would have, without building it."""
    return len(separator) * max(len(items) - 1, 0) + sum(size(x) for x in items)
