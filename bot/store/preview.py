"""The conversation list's preview: the newest transcript entry a person sees (a customer's, the
bot's or a person's message with text), read from the transcript's tail when the list is read.

Why (issue 14 aim 3: bytes): the metadata kept a copy of it (``preview_role``, ``preview``: the
bot's last reply, up to 200 characters, about 60 B in the bench, more in real chats) in every
conversation, for the few that a listing shows. The transcript holds it anyway: a reader sends
an ``LRANGE`` of the newest ``TAIL`` entries in the pipeline that reads the metadata (no round
trip more) and decodes from the newest back to the first visible one (usually the newest).
Only when the tail holds no such entry (a run of delivery statuses after it: WhatsApp appends
three for each message sent) are the ``DEEPER`` entries before it read, for those conversations
only, in one more round trip; beyond those the row shows no preview (a listing or a live-feed
update never reads a whole transcript of up to ``transcript_max`` entries).

**Old layout**: a conversation an older version saved keeps ``preview_role`` / ``preview`` in its
metadata: read as they are (its transcript may still be the old stream) until this version's
first save drops them (``DROPPED``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from . import codec, transcriptfields
from . import keys as k

#: The newest entries read with the metadata.
TAIL = 8
#: The entries before the tail read when the tail holds no visible one (the second read's bound).
DEEPER = 120
#: The preview's text, as long as the metadata kept it.
TEXT_MAX = 200
#: The fields an older version kept it in (deleted by this version's first save of the conversation).
DROPPED = ("preview_role", "preview")
VISIBLE = ("user", "bot", "human")


class Whole(list[bytes]):
    """A transcript's newest ``TAIL + DEEPER`` entries, read whole from its metadata hash (a short
    transcript: ``transcriptfields.py``): nothing before them to read."""


def read(pipe: Any, cid: str) -> None:
    """Queue the tail's read on ``pipe`` (a redis-py pipeline): its reply goes to ``tail_of``, then
    ``fill`` (a transcript in the hash: no list, an empty reply)."""
    pipe.lrange(k.ConversationKey(cid).transcript, -TAIL, -1)


def tail_of(raw_meta: Mapping[bytes, bytes], listed: Sequence[bytes]) -> Sequence[bytes]:
    """The tail for ``fill``: the list's (``listed``, read by ``read``) or, for a transcript in the
    metadata hash (``raw_meta``: the reader's ``HGETALL``), its entries (as many as the list's
    tail and ``complete`` would read)."""
    inline = transcriptfields.entries(raw_meta)
    return listed if inline is None else Whole(inline[-(TAIL + DEEPER):])


def found(entries: Sequence[bytes]) -> tuple[str, str] | None:
    """The role and text of the newest visible entry of ``entries`` (packed, oldest first)."""
    for raw in reversed(entries):
        entry = codec.unpack(raw)
        if isinstance(entry, dict) and entry.get("role") in VISIBLE and entry.get("text"):
            return str(entry["role"]), str(entry["text"])[:TEXT_MAX]
    return None


def fill(meta: dict[str, str], tail: Sequence[bytes]) -> bool:
    """``meta`` with ``preview_role`` and ``preview`` from ``tail`` (kept by an older version: as
    they are); True when the tail had none and was full (``complete`` reads the entries before it)."""
    if not meta or meta.get("preview_role"):
        return False
    hit = found(tail)
    if hit is not None:
        meta["preview_role"], meta["preview"] = hit
    return hit is None and len(tail) >= TAIL and not isinstance(tail, Whole)


async def complete(redis: Redis, todo: Mapping[str, dict[str, str]]) -> None:
    """The preview of each conversation (id -> its metadata) whose tail had none, from the
    ``DEEPER`` entries before its tail (one round trip for them all; none found: no preview)."""
    if not todo:
        return
    pipe = redis.pipeline(transaction=False)
    for cid in todo:
        pipe.lrange(k.ConversationKey(cid).transcript, -(TAIL + DEEPER), -(TAIL + 1))
    for meta, entries in zip(todo.values(), await pipe.execute(), strict=True):
        hit = found(entries)
        if hit is not None:
            meta["preview_role"], meta["preview"] = hit


async def fill_all(redis: Redis, metas: Sequence[tuple[str, dict[str, str]]], tails: Sequence[Sequence[bytes]]
                   ) -> None:
    """``fill`` of each conversation's metadata from its tail, then ``complete`` of those it needs."""
    todo = {cid: meta for (cid, meta), tail in zip(metas, tails, strict=True) if fill(meta, tail)}
    await complete(redis, todo)
