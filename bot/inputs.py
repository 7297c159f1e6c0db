"""Input checked once at the edge: strict JSON, visitor strings and header bytes.

Everything a visitor or a platform sends passes through here before it reaches a conversation,
so the rest of the code can rely on three things: numbers are finite and fit in 64 bits, JSON is
at most ``MAX_DEPTH`` levels deep, and strings hold no control characters (``\\x1f`` and NUL are
separators inside the store's index values) and have a bounded length.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterator
from typing import Any

from .errors import SalesbotError

#: Deeper JSON is refused: nothing we accept nests this far, and deep nesting costs recursion.
MAX_DEPTH = 64
#: Integers beyond 64 bits are refused (msgpack, Redis and the CRMs cannot hold them).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

#: C0/C1 control characters and lone surrogates; tab, line feed and carriage return are kept.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\ufeff]")
_LINE_BREAKS = re.compile(r"\s*[\t\n\r]+\s*")
_SURROGATE = re.compile("[\ud800-\udfff]")


class BadInput(SalesbotError, ValueError):
    """A request value that cannot be used; ``field`` names it for the 400 answer."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


class BadJson(BadInput):
    """The body is not strict JSON (NaN/Infinity, overflow, too deep, not UTF-8)."""

    def __init__(self, message: str) -> None:
        super().__init__("", message)


def _constant(name: str) -> Any:
    raise BadJson(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJson(f"the number {text[:40]} is out of range")
    return value


def _int(text: str) -> int:
    value = int(text)  # more than 4300 digits: ValueError (Python's own limit)
    if not INT_MIN <= value <= INT_MAX:
        raise BadJson(f"the integer {text[:40]} is out of range (64 bits)")
    return value


#: Built once: ``json.loads`` with hooks would build a decoder per call (4x the parse itself).
_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_float, parse_int=_int)


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deeply ``value`` nests lists and objects, counted level by level (no recursion on
    hostile input); stops counting once past ``limit``."""
    level = [value] if isinstance(value, (dict, list)) else []
    deepest = 0
    while level and deepest <= limit:
        deepest += 1
        below: list[Any] = []
        for item in level:
            for child in item.values() if isinstance(item, dict) else item:
                if isinstance(child, (dict, list)):
                    below.append(child)
        level = below
    return deepest


class RepeatedKeys:
    """An ``object_pairs_hook`` that builds objects as ``json`` does (the last of a repeated key
    wins) and remembers the repeats, so a document can refuse them: in a flow, a step written
    twice silently lost its first version."""

    def __init__(self) -> None:
        self._found: list[tuple[dict[str, Any], list[str]]] = []  # (object, its repeated keys)

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) < len(pairs):
            seen: set[str] = set()
            repeated = []
            for key, _ in pairs:
                if key in seen:
                    repeated.append(key)
                seen.add(key)
            self._found.append((obj, repeated))
        return obj

    def pointers(self, value: Any) -> list[str]:
        """JSON pointers (RFC 6901) of each repeat in ``value`` (the document parsed with this
        hook); a key written three times is listed twice."""
        if not self._found:
            return []
        where = {id(obj): keys for obj, keys in self._found}
        found: list[str] = []
        todo: list[tuple[Any, str]] = [(value, "")]
        while todo:
            item, at = todo.pop()
            if isinstance(item, dict):
                found += [f"{at}/{_escape(k)}" for k in where.get(id(item), ())]
                todo.extend((sub, f"{at}/{_escape(k)}") for k, sub in reversed(list(item.items())))
            elif isinstance(item, list):
                todo.extend((sub, f"{at}/{i}") for i, sub in reversed(list(enumerate(item))))
        return found


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def loads(data: bytes | bytearray | str, *, max_depth: int = MAX_DEPTH, repeated: list[str] | None = None) -> Any:
    """Parse request JSON strictly; ``BadJson`` for anything a standard parser would refuse
    or that would turn into NaN, an infinity, a >64-bit integer or a recursion error later.
    With ``repeated``, the pointers of keys an object repeats are appended to it."""
    hook = RepeatedKeys() if repeated is not None else None
    try:
        # Strict UTF-8 (json.loads would decode bytes with "surrogatepass", letting CESU-8 in).
        text = bytes(data).decode("utf-8-sig") if isinstance(data, (bytes, bytearray)) else data
        value = (_DECODER if hook is None else json.JSONDecoder(
            parse_constant=_constant, parse_float=_float, parse_int=_int, object_pairs_hook=hook)).decode(text)
    except BadJson:
        raise
    except RecursionError:
        raise BadJson(f"the JSON nests deeper than {max_depth} levels") from None
    except UnicodeDecodeError:
        raise BadJson("the body is not UTF-8") from None
    except ValueError as exc:
        raise BadJson(str(exc)[:80]) from None  # the callers say "the body is not valid JSON: …"
    # A document with no more brackets than levels allowed cannot nest deeper (the usual webhook
    # body): no walk. Brackets inside strings only make the count larger, never smaller.
    if text.count("{") + text.count("[") > max_depth and depth(value, max_depth) > max_depth:
        raise BadJson(f"the JSON nests deeper than {max_depth} levels")
    if ("\\ud" in text or "\\uD" in text) and _lone_surrogate(value):  # only escapes can make one
        raise BadJson("the JSON holds a lone surrogate (an unpaired \\ud800-\\udfff escape)")
    if hook is not None and repeated is not None:
        repeated += hook.pointers(value)
    return value


def _strings(value: Any) -> Iterator[str]:
    """Every string and key of a parsed JSON value."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)


def _lone_surrogate(value: Any) -> bool:
    """Whether any string or key of a parsed value holds a lone surrogate (not UTF-8 encodable:
    msgpack, Redis and every client would fail on it later)."""
    return any(_SURROGATE.search(item) for item in _strings(value))


def holds_control(value: Any) -> bool:
    """Whether any string or key of a parsed JSON value holds a control character (for input
    that is refused rather than cleaned, such as API events)."""
    return any(_CONTROL.search(item) for item in _strings(value))


def control_pointers(value: Any, *, limit: int = 20) -> list[str]:
    """JSON pointers (RFC 6901) of the strings and keys of a parsed JSON value that hold a control
    character, in document order, at most ``limit``: a refusal names each place, not just "somewhere"."""
    found: list[str] = []
    todo: list[tuple[Any, str]] = [(value, "")]
    while todo and len(found) < limit:
        item, at = todo.pop()
        if isinstance(item, str):
            if _CONTROL.search(item):
                found.append(at or "/")
        elif isinstance(item, dict):
            for key, sub in reversed(list(item.items())):
                here = f"{at}/{str(key).replace('~', '~0').replace('/', '~1')}"
                todo.append((sub, here))
                if isinstance(key, str) and _CONTROL.search(key):
                    todo.append((key, here))
        elif isinstance(item, list):
            todo.extend((sub, f"{at}/{i}") for i, sub in reversed(list(enumerate(item))))
    return found


def clean_text(value: object, field: str, *, limit: int, line: bool = False) -> str:
    """A visitor-supplied string made safe to store: control characters removed (tab and line
    breaks kept unless ``line``, where whitespace runs become one space), NFC-normalised, cut to
    ``limit`` characters. ``BadInput`` if ``value`` is not a string."""
    if not isinstance(value, str):
        raise BadInput(field, "is not a string")
    if value.isascii() and value.isprintable():  # the usual id, name or text: nothing to remove or normalise
        return (value.strip() if line else value)[:limit]
    text = unicodedata.normalize("NFC", _CONTROL.sub("", value))
    if line:
        text = _LINE_BREAKS.sub(" ", text).strip()
    return text[:limit]


def clean_optional(value: object, field: str, *, limit: int, line: bool = False) -> str | None:
    """``clean_text`` for an optional field: None stays None, and so does a string that is
    empty once cleaned."""
    if value is None:
        return None
    return clean_text(value, field, limit=limit, line=line) or None


def header_bytes(value: str | None) -> bytes | None:
    """A header or cookie value as UTF-8 bytes, None if absent or not encodable (aiohttp keeps
    undecodable bytes as lone surrogates, which ``str.encode`` refuses)."""
    if value is None:
        return None
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        return None
