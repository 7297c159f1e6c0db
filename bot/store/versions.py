"""Versioned documents in Redis: every change a new immutable version, one of them active.

Bots (flows) and automation documents are kept the same way: an upload that changes the
document becomes version 1, 2, … and the active one; the same document as the newest version
adds nothing (so loading a folder at every start is free); ``activate`` rolls back or forward.
Keys of a document share its hash tag (``sb:<kind>:{<id>}:…``); the set ``sb:<kind>s`` lists
the ids and each change is published on ``sb:<kind>s:changed`` for the other processes.

Each change then sets ``sb:<kind>s:generation`` to a new random token (after the document's
own MULTI/EXEC: on a Redis Cluster the token is in another slot than the document):
a process that caches the active versions reads that one small key (sent along with a round
trip it makes anyway) and reads the versions again only when the token changed. A random
token rather than a counter: a flushed and refilled Redis never hands back an old value.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from ..errors import SalesbotError
from . import replies


class DocumentNotFound(SalesbotError):
    """No document with that id (or no such version of it)."""

    def __init__(self, doc_id: str, version: int | None = None, *, kind: str = "document") -> None:
        self.doc_id, self.version, self.kind = doc_id, version, kind
        super().__init__(f"no {kind} {doc_id!r}" + (f" version {version}" if version is not None else ""))


@dataclass(frozen=True, slots=True)
class VersionInfo:
    bot: str  # the document's id (a bot's, or an automation document's)
    version: int
    created_at: float
    digest: str
    warnings: tuple[str, ...]
    name: str

    @property
    def id(self) -> str:
        return self.bot

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.bot, "version": self.version, "created_at": self.created_at,
                "digest": self.digest, "warnings": list(self.warnings), "name": self.name}


def digest_of(doc: Any) -> str:
    """What tells two versions apart: the document's canonical JSON, hashed."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _info(d: dict[str, Any]) -> VersionInfo:
    return VersionInfo(d["id"], int(d["version"]), float(d["created_at"]), d["digest"],
                       tuple(d.get("warnings") or ()), d.get("name") or d["id"])


class VersionedDocuments:
    """The versions of one kind of document (``bot``, ``automation``)."""

    def __init__(self, redis: Redis, kind: str, *,
                 not_found: Callable[[str, int | None], DocumentNotFound] | None = None) -> None:
        self.redis = redis
        self.kind = kind
        self.index = f"sb:{kind}s"
        self.channel = f"sb:{kind}s:changed"
        #: A new random token at every change of any document's active version (module docstring).
        self.generation_key = f"sb:{kind}s:generation"
        self._not_found = not_found or (lambda doc_id, version: DocumentNotFound(doc_id, version, kind=kind))

    def key(self, doc_id: str, part: str) -> str:
        return f"sb:{self.kind}:{{{doc_id}}}:{part}"

    async def put(self, doc_id: str, doc: Any, *, digest: str, name: str,
                  warnings: tuple[str, ...] = ()) -> tuple[VersionInfo, bool]:
        """Store a (valid) document as a new active version; returns it and whether it is new.
        The same digest as the newest version stores nothing (that version is returned)."""
        latest = await self.redis.lindex(self.key(doc_id, "versions"), -1)
        if latest is not None:
            info = _info(json.loads(latest))
            if info.digest == digest:
                return info, False
        version = int(await self.redis.incr(self.key(doc_id, "seq")))
        info = VersionInfo(doc_id, version, time.time(), digest, warnings, name)
        await self.redis.sadd(self.index, doc_id)  # listed first: an id without an active version is skipped
        pipe = self.redis.pipeline(transaction=True)  # the document's keys: one slot
        pipe.set(self.key(doc_id, f"v:{version}"), json.dumps(doc, ensure_ascii=False))
        pipe.rpush(self.key(doc_id, "versions"), json.dumps(info.as_dict()))
        pipe.set(self.key(doc_id, "active"), version)
        await pipe.execute()
        await self._changed(doc_id)
        return info, True

    async def _changed(self, doc_id: str) -> None:
        """A new generation token, then the notice: after the document's own MULTI/EXEC, as the
        token and the document live in different Redis Cluster slots (one MULTI cannot span them)."""
        await self.redis.set(self.generation_key, secrets.token_hex(8))
        await self.redis.publish(self.channel, doc_id)

    async def activate(self, doc_id: str, version: int) -> VersionInfo:
        """Make an existing version the active one (roll back or forward)."""
        info = next((v for v in await self.versions(doc_id) if v.version == version), None)
        if info is None:
            raise self._not_found(doc_id, version)
        await self.redis.set(self.key(doc_id, "active"), version)
        await self._changed(doc_id)
        return info

    async def actives(self) -> tuple[bytes, list[tuple[str, int]]]:
        """The generation token and ``(id, active version)`` of every document with one. The token
        is read first: a change meanwhile gives newer versions under the older token, which only
        makes the next reader read them again. A store of before the token gets one here, or its
        readers would never find it unchanged."""
        pipe = self.redis.pipeline(transaction=True)  # one key; read before the list (its own slot)
        pipe.set(self.generation_key, secrets.token_hex(8), nx=True)
        pipe.get(self.generation_key)
        _, generation = await pipe.execute()
        members = await self.redis.smembers(self.index)
        ids = sorted(replies.text(m) for m in members)
        pipe = self.redis.pipeline(transaction=False)  # one GET each: the keys are in different slots
        for i in ids:
            pipe.get(self.key(i, "active"))
        found = await pipe.execute() if ids else []
        return (replies.raw(generation),
                [(i, int(v)) for i, v in zip(ids, found, strict=True) if v is not None])

    async def ids(self) -> list[str]:
        return sorted(replies.text(m) for m in await self.redis.smembers(self.index))

    async def versions(self, doc_id: str) -> list[VersionInfo]:
        return [_info(json.loads(v)) for v in await self.redis.lrange(self.key(doc_id, "versions"), 0, -1)]

    async def active_version(self, doc_id: str) -> int | None:
        v = await self.redis.get(self.key(doc_id, "active"))
        return None if v is None else int(v)

    async def document(self, doc_id: str, version: int | None = None) -> tuple[int, Any]:
        """(version, document) of a version, the active one by default."""
        if version is None:
            version = await self.active_version(doc_id)
            if version is None:
                raise self._not_found(doc_id, None)
        raw = await self.redis.get(self.key(doc_id, f"v:{version}"))
        if raw is None:
            raise self._not_found(doc_id, version)
        return version, json.loads(raw)

    async def listing(self) -> list[dict[str, Any]]:
        """Every document: id, the active version's name, the active version, how many versions."""
        out = []
        for doc_id in await self.ids():
            versions = await self.versions(doc_id)
            active = await self.active_version(doc_id)
            current = next((v for v in versions if v.version == active), None)
            out.append({"id": doc_id, "name": current.name if current else doc_id, "active_version": active,
                        "versions": len(versions)})
        return out
