"""Quick-order links in Redis: one hash per customer, ``sb:olinks:{<customer>}``, link id → record.

The record (msgpack) is ``{"created_at", "expires_at", "by", "source"}`` plus ``revoked_at`` and
``revoked_by`` once revoked. The token only names the customer and the link: a link is valid
while its record is here, not revoked and not past ``expires_at``. Records are kept ``KEEP``
seconds past their expiry (so the card can list what was sent), then pruned; the hash expires
with its last record. One hash per customer: one slot on a cluster.
"""

from __future__ import annotations

from typing import Any

import msgpack
from redis.asyncio import Redis

#: How long an expired or revoked link stays listed.
KEEP = 90 * 86400


def links_key(customer_id: str) -> str:
    return f"sb:olinks:{{{customer_id}}}"


def _unpack(raw: bytes | str) -> dict[str, Any]:
    record: dict[str, Any] = msgpack.unpackb(raw, raw=False)
    return record


def _pack(record: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(record, use_bin_type=True)
    return packed


def ended_at(record: dict[str, Any]) -> float:
    """When the link stopped working (revoked or expired, whichever came first)."""
    revoked = record.get("revoked_at")
    expires = float(record["expires_at"])
    return min(expires, float(revoked)) if revoked is not None else expires


class OrderLinkStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def all(self, customer_id: str) -> dict[str, dict[str, Any]]:
        raw = await self.redis.hgetall(links_key(customer_id))
        return {(k.decode() if isinstance(k, bytes) else str(k)): _unpack(v) for k, v in raw.items()}

    async def get(self, customer_id: str, link_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(links_key(customer_id), link_id)
        return None if raw is None else _unpack(raw)

    async def add(self, customer_id: str, link_id: str, record: dict[str, Any], *, now: float) -> None:
        """Stores a new link and drops the links that ended more than ``KEEP`` ago; the hash
        lives until the last of its links may be dropped."""
        key = links_key(customer_id)
        present = await self.all(customer_id)
        old = [lid for lid, r in present.items() if ended_at(r) + KEEP < now]
        last = max([float(record["expires_at"])] + [float(r["expires_at"]) for r in present.values()])
        async with self.redis.pipeline(transaction=True) as pipe:
            if old:
                pipe.hdel(key, *old)
            pipe.hset(key, link_id, _pack(record))
            pipe.expire(key, int(last + KEEP - now) + 1)  # relative: the caller's clock, not the server's
            await pipe.execute()

    async def revoke(self, customer_id: str, link_id: str, *, now: float, by: str) -> dict[str, Any] | None:
        """The link's record, revoked now unless it was already (revoking twice keeps the first
        time); None for a link this customer does not have."""
        record = await self.get(customer_id, link_id)
        if record is None:
            return None
        if record.get("revoked_at") is None:
            record = {**record, "revoked_at": now, "revoked_by": by}
            # HSETXX-like: only a link that is still there is written back (no resurrection).
            if await self.redis.hexists(links_key(customer_id), link_id):
                await self.redis.hset(links_key(customer_id), link_id, _pack(record))
        return record
