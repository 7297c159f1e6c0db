"""Narrowing redis-py's replies to what our clients get.

redis-py types a reply for both ``decode_responses`` modes (``bytes | str``); our clients never
decode, so a reply is bytes — these helpers say so once, instead of a cast at every call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def text(value: bytes | str | float) -> str:
    """A reply as text (keys, ids, counters; UTF-8 by construction)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def raw(value: bytes | str) -> bytes:
    """A reply as bytes (msgpack payloads)."""
    return value if isinstance(value, bytes) else value.encode()


def text_map(reply: Mapping[bytes, bytes] | Mapping[str, str] | Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """An HGETALL reply as a dict of text."""
    return {text(a): text(b) for a, b in reply.items()}


def members(rows: Iterable[object]) -> list[str]:
    """A sorted-set range reply without scores, as text."""
    return [text(m) for m in rows if isinstance(m, bytes | str)]


def scored(rows: Iterable[object]) -> list[tuple[str, float]]:
    """A sorted-set range reply ``WITHSCORES``, as ``(member, score)`` pairs: redis-py's pairs, or
    the raw reply's members and scores in turn (the lean clients, bot/store/resp.py and
    clusterclient.py)."""
    out: list[tuple[str, float]] = []
    rows = list(rows)
    if rows and not isinstance(rows[0], tuple | list):
        rows = list(zip(rows[::2], rows[1::2], strict=True))
    for row in rows:
        if isinstance(row, tuple | list) and len(row) == 2:
            member, score = row
            out.append((text(member), float(score)))
    return out
