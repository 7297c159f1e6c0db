"""Problems of a document as the user sees them: JSON pointers, did-you-mean hints, and
pydantic's errors mapped onto the document with messages that say what to fix.

Shared by the flow validator (``bot.builder.validate``) and the automation validator
(``bot.automations.validate``): both documents embed the same steps' parts (conditions,
actions) in unions of their own.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from ..errors import Problem
from . import models as m
from .event_types import EVENT_TYPES


def model_keys(*modules: object) -> list[str]:
    """Every key (field alias or name) of the pydantic models of ``modules``."""
    names: set[str] = set()
    for module in modules:
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, BaseModel):
                names.update(f.alias or name for name, f in obj.model_fields.items())
    return sorted(names)


_KEYS = model_keys(m)


def _tags(union: object, key: str) -> list[str]:
    """The discriminator values (``type`` of steps, ``do`` of actions) of an annotated union."""
    members = get_args(get_args(union)[0])
    return sorted(get_args(t.model_fields[key].annotation)[0] for t in members)


_STEP_TYPE_NAMES = _tags(m.Step, "type")
_ACTION_NAMES = _tags(m.Action, "do")


def pointer(parts: Iterable[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean "x"?)`` when a choice is close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _at_union(path: list[str | int], step: bool) -> bool:
    """Whether the object at ``path`` (inside a step when ``step``) is a member of a union."""
    if not path:
        return step  # a step: tagged by its type
    if path[-1] in ("if", "not"):
        return True  # a predicate
    return len(path) >= 2 and isinstance(path[-1], int) and path[-2] in ("actions", "all", "any")


#: The union tag of the object at a path of another document (None: not a union there), for
#: documents that embed flow parts in unions of their own (automations' ``do``, ``scoring``).
UnionTag = Callable[[list[str | int], dict[str, Any]], str | None]


def _real_path(raw: Any, loc: tuple[Any, ...], *, step: bool = False,
               union_tag: UnionTag | None = None) -> list[str | int]:
    """Map a pydantic error location onto the document, dropping union tags pydantic adds."""
    path: list[str | int] = []
    node = raw
    tagged: set[int] = set()  # objects whose union tag was already passed
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and id(node) not in tagged and (
                (_at_union(path, step) and part in (node.get("type"), node.get("do"), m._predicate_kind(node)))
                or (union_tag is not None and part == union_tag(path, node))):
            # The tag of a step, action or predicate, which pydantic puts before its fields
            # (a widget step's tag "widget" is also one of its keys: it is not that key).
            tagged.add(id(node))
        elif (isinstance(node, dict) and part in node) or (
                isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            path.append(part)
            node = node[part]
        elif last and isinstance(node, dict):
            path.append(part)  # a missing key: point at where it belongs
        # otherwise: a union tag ("str", "function-after[…]"): skip it
    return path


def _message(err: Mapping[str, Any], raw: Any, path: list[str | int], keys: Collection[str] = _KEYS) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    bad = err.get("input")
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else ""
        # A key known elsewhere ("title" on a stop step) is misplaced, not misspelt: no hint.
        return f'unknown key "{key}"' + ("" if key in keys else suggest(key, keys))
    if kind == "union_tag_invalid":
        tag = ctx.get("tag")
        disc = str(ctx.get("discriminator", "")).strip("'")
        names = _ACTION_NAMES if disc == "do" else _STEP_TYPE_NAMES
        what = "action" if disc == "do" else "step type"
        return f'unknown {what} "{tag}"{suggest(str(tag), names)}; one of: {", ".join(names)}'
    if kind == "union_tag_not_found":
        disc = str(ctx.get("discriminator", "")).strip("'")
        return f'"{disc}" is required'
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        options = [o.strip().strip("'") for o in expected.replace(" or ", ", ").split(",")]
        return f"{json.dumps(bad, ensure_ascii=False)} is not one of: {', '.join(options)}" + (
            suggest(bad, options) if isinstance(bad, str) else ""
        )
    if kind == "too_long":
        field = path[-1] if path else "value"
        limit = ctx.get("max_length")
        actual = ctx.get("actual_length")
        if isinstance(bad, (list, tuple)):
            return f"at most {limit} {field}, got {actual}"
        return f"at most {limit} characters, got {actual}"
    if kind == "string_too_long":
        actual = len(bad) if isinstance(bad, str) else "more"
        return f"at most {ctx.get('max_length')} characters, got {actual}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "string_pattern_mismatch":
        field = path[-1] if path else ""
        if field == "id" and len(path) == 1:  # the document's own id (a split path has one too)
            return f"{json.dumps(bad)} is not a bot id: lower-case letters, digits, _ and -, up to 64"
        return f"{json.dumps(bad, ensure_ascii=False)} is not a valid {field or 'value'} (pattern {ctx.get('pattern')})"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    return str(err["msg"])


def schema_problems(exc: ValidationError, raw: Any, prefix: list[str | int], *, step: bool = False,
                    keys: Collection[str] = _KEYS, union_tag: UnionTag | None = None,
                    explain: Callable[[Mapping[str, Any], list[str | int]], str | None] | None = None,
                    ) -> list[Problem]:
    """Pydantic's errors for ``raw`` (found at ``prefix`` of its document) as problems with JSON
    pointers into the document and messages that say what to fix. Other documents give the keys
    they know (for did-you-mean hints), the tags of their own unions and, through ``explain``,
    their own wording of an error (None: the usual one)."""
    out = []
    for err in exc.errors():
        path = _real_path(raw, tuple(err["loc"]), step=step, union_tag=union_tag)
        message = explain(err, path) if explain is not None else None
        out.append(Problem(pointer(prefix + path), message or _message(err, raw, path, keys)))
    return out


def unknown_event_type(name: str) -> str:
    """The problem of a well-formed event type that is not one of ours, with a did-you-mean hint."""
    return f'unknown event type "{name}"{suggest(name, EVENT_TYPES)} (your own events are "custom.<name>")'


def repeated_key_problems(pointers: Iterable[str]) -> list[Problem]:
    """A key written twice in one object (``RepeatedKeys``): JSON parsers keep only the last one,
    so the first is lost without a word (a step written twice, say)."""
    return [Problem(p, f'"{_unescape(p.rsplit("/", 1)[-1])}" is written twice in this object: '
                       "only the last one would count") for p in pointers]


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def sorted_problems(problems: list[Problem]) -> list[Problem]:
    """Errors first, then warnings, each by pointer; duplicates dropped."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for p in sorted(problems, key=lambda p: (p.severity != "error", p.pointer)):
        key = (p.pointer, p.message, p.severity)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
