"""A part of a document that failed the schema, pruned until it parses, so that the checks the
schema cannot make (templates, regexes, ids, event types, the timezone) run on the rest of it.

Without it one unknown key in a step hid a template of the same step that does not compile,
and the author met the second problem only after fixing the first ("every problem at once",
docs/flows.md). Each round drops what pydantic complains about: a wrong value goes, a missing
one gets a stand-in ("x", 1, [], {}), a wrong list item a sibling's copy, and when nothing fits,
the object around it goes. What
was dropped or made up is returned, so the caller ignores whatever is found there (the schema
has already reported it: no problem twice).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import ValidationError

from .problems import _real_path, pointer

T = TypeVar("T")

#: Stand-ins for a required key that is missing or was dropped, tried in turn.
_STAND_INS: tuple[Any, ...] = ("x", 1, [], {})
#: At most this many rounds of validation per part (each fixes at least one key).
MAX_ROUNDS = 40


def salvage(validate: Callable[[Any], T], raw: Any, prefix: list[str | int], *,
            step: bool = False) -> tuple[T, list[str]] | None:
    """``validate`` of ``raw`` pruned until it passes, with the pointers (under ``prefix``) of
    what was dropped or made up; None when nothing short of the whole part would do."""
    work = copy.deepcopy(raw)
    tried: dict[tuple[str | int, ...], int] = {}  # path -> the next stand-in to try there
    for _ in range(MAX_ROUNDS):
        try:
            return validate(work), [pointer(prefix + list(p)) for p in tried]
        except ValidationError as exc:
            done: set[tuple[str | int, ...]] = set()
            for err in exc.errors():
                path = tuple(_real_path(work, tuple(err["loc"]), step=step))
                if path in done or not _exists(work, path[:-1]):
                    continue  # the same place twice (a union), or inside what was dropped
                done.add(path)
                if not _fix(work, path, tried):
                    return None
    return None


def _exists(node: Any, path: tuple[str | int, ...]) -> bool:
    try:
        _at(node, path)
    except (KeyError, IndexError, TypeError):
        return False
    return True


def _at(node: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        if isinstance(node, list) and not isinstance(part, int):
            raise TypeError(part)
        node = node[part]
    return node


def _fix(work: Any, path: tuple[str | int, ...], tried: dict[tuple[str | int, ...], int]) -> bool:
    """Drop the key at ``path`` or give it the next stand-in; a list item becomes a copy of the
    next sibling (dropping it would shift the pointers of those after it); when nothing fits,
    the same at the object around it. False when that would be the part itself."""
    while path:
        parent = _at(work, path[:-1])
        key = path[-1]
        n = tried.get(path, 0)
        if isinstance(parent, dict):
            if key in parent and path not in tried:
                del parent[key]
                tried[path] = 0
                return True
            if n < len(_STAND_INS):
                parent[key] = copy.deepcopy(_STAND_INS[n])
                tried[path] = n + 1
                return True
        elif isinstance(parent, list) and isinstance(key, int):
            siblings: list[Any] = [item for i, item in enumerate(parent) if i != key]
            if n < len(siblings):
                parent[key] = _fresh_ids(copy.deepcopy(siblings[n]))
                tried[path] = n + 1
                return True
        path = path[:-1]
    return False


def _fresh_ids(value: Any) -> Any:
    """A sibling's copy with ids of its own (rows, paths): a copy of an id is not used twice."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            if isinstance(item.get("id"), str):
                item["id"] = f"salvage-{id(item):x}"
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return value


def outside(problem_pointer: str, touched: list[str]) -> bool:
    """Whether a problem lies outside every dropped or made-up part (else it is not the document's)."""
    return not any(problem_pointer == t or problem_pointer.startswith(t + "/") for t in touched)
