"""Notes of the embedded CRM, with a priority, per lead or contact.

Each record's notes are a hash (note id -> msgpack note) and a zset whose score orders them by
priority, then newest (``card.note_score``): listing a page is one ``ZREVRANGE`` plus one
``HMGET``, whatever the number of notes. Notes written by a flow's ``add_note`` have priority
``none``; people set a priority through the HTTP API.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from bot.errors import CrmRejected
from bot.inputs import holds_control

from .card import note_priority, note_score
from .codec import pack, unpack

NOTE_MAX = 20_000  # characters of one note


def _order_key(entity: str, eid: str) -> str:
    return f"sb:crm:pnotes:{entity}:{eid}"


def _body_key(entity: str, eid: str) -> str:
    return f"sb:crm:pnote:{entity}:{eid}"


def make_note(nid: str, entity: str, eid: str, text: Any, priority: Any, created_at: float,
              author: str | None = None) -> dict[str, Any]:
    if text is not None and not isinstance(text, str):
        raise CrmRejected("a note's text is text")
    body = (text or "").strip()
    if not body:
        raise CrmRejected("a note needs text")
    if holds_control(body):  # tabs and line breaks are text; a NUL or an escape is not
        raise CrmRejected("a note's text holds a control character")
    if len(body) > NOTE_MAX:
        raise CrmRejected(f"a note is at most {NOTE_MAX} characters")
    return {"id": nid, "entity": entity, "entity_id": eid, "text": body,
            "priority": note_priority(priority), "created_at": created_at, "updated_at": created_at,
            "author": author}


class NoteStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @staticmethod
    def queue_put(pipe: Pipeline, note: dict[str, Any]) -> None:
        entity, eid, nid = note["entity"], str(note["entity_id"]), str(note["id"])
        pipe.hset(_body_key(entity, eid), nid, pack(note))
        pipe.zadd(_order_key(entity, eid), {nid: note_score(note["priority"], note["created_at"])})

    async def put(self, note: dict[str, Any]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        self.queue_put(pipe, note)
        await pipe.execute()

    async def page(self, entity: str, eid: str, *, offset: int = 0,
                   limit: int = 50) -> tuple[list[dict[str, Any]], int]:
        """Notes by priority (high, medium, none), then newest first; and how many there are."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrevrange(_order_key(entity, eid), offset, offset + limit - 1)
        pipe.zcard(_order_key(entity, eid))
        ids, total = await pipe.execute()
        if not ids:
            return [], int(total)
        bodies = await self.redis.hmget(_body_key(entity, eid), ids)
        return [unpack(b) for b in bodies if b], int(total)

    async def firsts(self, entity: str, ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """Each record's first note (highest priority, then newest), or None: two round trips for a
        page of records (the customers list shows it on every row)."""
        if not ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for eid in ids:
            pipe.zrevrange(_order_key(entity, eid), 0, 0)
        tops = await pipe.execute()
        pipe = self.redis.pipeline(transaction=False)
        asked = [(eid, top[0]) for eid, top in zip(ids, tops, strict=True) if top]
        for eid, nid in asked:
            pipe.hget(_body_key(entity, eid), nid)
        found: dict[str, dict[str, Any] | None] = dict.fromkeys(ids)
        for (eid, _), raw in zip(asked, await pipe.execute() if asked else [], strict=True):
            found[eid] = unpack(raw) if raw else None
        return found

    async def every(self, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """All notes of several records, oldest first (the order they were written)."""
        pipe = self.redis.pipeline(transaction=False)
        for entity, eid in pairs:
            pipe.hvals(_body_key(entity, eid))
        notes = [unpack(b) for values in await pipe.execute() for b in values]
        return sorted(notes, key=lambda n: (n["created_at"], int(n["id"]) if str(n["id"]).isdigit() else 0))

    async def get(self, entity: str, eid: str, nid: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(_body_key(entity, eid), nid)
        if raw is None:
            return None
        note: dict[str, Any] = unpack(raw)
        return note

    async def delete(self, entity: str, eid: str, nid: str) -> bool:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hdel(_body_key(entity, eid), nid)
        pipe.zrem(_order_key(entity, eid), nid)
        deleted, _ = await pipe.execute()
        return bool(deleted)
