"""The catalogue and orders in Redis. Every key shares the hash tag ``{shop}`` (one slot on a
Redis Cluster), so the scripts below may touch several of them.

==================================  ==============================================================
key                                 what
==================================  ==============================================================
``sb:shop:{shop}:products``         hash sku → product (JSON, ``bot.shop.products``)
``sb:shop:{shop}:orders``           hash order id → order (JSON, ``bot.shop.orders``)
``sb:shop:{shop}:seq``              the last order number given
``sb:shop:{shop}:o:all``            sorted set of order ids by number (the list, newest first)
``sb:shop:{shop}:o:s:<status>``     … of one status
``sb:shop:{shop}:o:p:<payment>``    … of one payment state
``sb:shop:{shop}:o:c:<customer>``   … of one customer (its size: the customer's order count)
``sb:shop:{shop}:key:<sha256>``     an idempotency key's order id (7 days)
``sb:shop:{shop}:unsent``           hash ``<order id>:<step>`` → a change's follow-up not yet done
``sb:shop:{shop}:unsent:at``        sorted set of those fields by when they were written (or claimed)
==================================  ==============================================================

An order is written with its indexes by one script (all or nothing), and changed by another only
if it is still the order the change was computed from (compare and set: two people changing one
order at once never lose a change; the second recomputes). The same script records the change's
follow-up (its lead events, the customer becoming current: an outbox), so a crash or an outage
after the write delays them and never loses them: the writer clears the entry once done, and
``claim_unsent`` hands the entries left over to the worker's sweeper.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from . import replies

TAG = "sb:shop:{shop}"
PRODUCTS = f"{TAG}:products"
ORDERS = f"{TAG}:orders"
SEQ = f"{TAG}:seq"
ALL = f"{TAG}:o:all"
UNSENT = f"{TAG}:unsent"
UNSENT_AT = f"{TAG}:unsent:at"
#: How long an idempotency key (``place_order(key=…)``) returns its order.
KEY_TTL = 7 * 86400

#: Records a follow-up (``unsent``): ARGV[n] its field ('' none), ARGV[n+1] its JSON, ARGV[n+2] now.
_RECORD = """
local function record(n)
  if ARGV[n] ~= '' then
    redis.call('HSET', KEYS[#KEYS - 1], ARGV[n], ARGV[n + 1])
    redis.call('ZADD', KEYS[#KEYS], ARGV[n + 2], ARGV[n])
  end
end
"""

#: KEYS: orders, idempotency key, all, customer, status, payment, unsent, unsent at;
#: ARGV: id, order, number, use key, ttl, then the follow-up (``_RECORD``).
#: Returns the order stored under the key when it is taken, else nil (the new order is written).
_CREATE = _RECORD + """
if ARGV[4] == '1' then
  local known = redis.call('GET', KEYS[2])
  if known then return redis.call('HGET', KEYS[1], known) end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[5])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
for i = 3, 6 do redis.call('ZADD', KEYS[i], ARGV[3], ARGV[1]) end
record(6)
return false
"""

#: KEYS: orders, old status, new status, old payment, new payment, unsent, unsent at;
#: ARGV: id, old order, new order, number, then the follow-up (``_RECORD``).
#: 1 written; 0 the order changed meanwhile (or is gone).
_CHANGE = _RECORD + """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1])
record(5)
return 1
"""

#: KEYS: unsent, unsent at; ARGV: field. The follow-up is done.
_SENT = """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
"""

#: KEYS: unsent at, unsent; ARGV: written by, now, limit. The entries written by then, each moved
#: to now (another sweeper waits a grace before taking it too); [field, JSON, ...].
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, field in ipairs(due) do
  local work = redis.call('HGET', KEYS[2], field)
  if work then
    redis.call('ZADD', KEYS[1], ARGV[2], field)
    out[#out + 1] = field
    out[#out + 1] = work
  else
    redis.call('ZREM', KEYS[1], field)
  end
end
return out
"""

#: A follow-up to record with an order's write: (its field, ``<order id>:<step>``; what to do).
Unsent = tuple[str, Mapping[str, Any]]


def index_key(kind: str, value: str) -> str:
    """The sorted set of orders of a status (``kind`` "s"), payment ("p") or customer ("c")."""
    return f"{TAG}:o:{kind}:{value}"


def idempotency_key(key: str) -> str:
    return f"{TAG}:key:{hashlib.sha256(key.encode()).hexdigest()}"


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _unsent_args(unsent: Unsent | None, now: float) -> list[str]:
    return ["", "", ""] if unsent is None else [unsent[0], _dumps(unsent[1]), repr(now)]


def _loads(raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    value: dict[str, Any] = json.loads(raw)
    return value


class ShopStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._create = redis.register_script(_CREATE)
        self._change = redis.register_script(_CHANGE)
        self._sent = redis.register_script(_SENT)
        self._claim = redis.register_script(_CLAIM)

    # ------------------------------------------------------------------ products
    async def put_product(self, product: Mapping[str, Any]) -> bool:
        """Store ``product`` (a PUT: it replaces); True when the sku is new."""
        return bool(await self.redis.hset(PRODUCTS, str(product["sku"]), _dumps(product)))

    async def product(self, sku: str) -> dict[str, Any] | None:
        return _loads(await self.redis.hget(PRODUCTS, sku))

    async def products(self, skus: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        if not skus:
            return {}
        found = await self.redis.hmget(PRODUCTS, list(skus))
        return {sku: _loads(raw) for sku, raw in zip(skus, found, strict=True)}

    async def all_products(self) -> list[dict[str, Any]]:
        """Every product, by sku (a seller's catalogue: tens to thousands, read whole)."""
        found = await self.redis.hgetall(PRODUCTS)
        return sorted((p for raw in found.values() if (p := _loads(raw)) is not None), key=lambda p: p["sku"])

    async def delete_product(self, sku: str) -> bool:
        """Remove a product (orders keep their lines); False when there was none."""
        return bool(await self.redis.hdel(PRODUCTS, sku))

    # ------------------------------------------------------------------ orders
    async def next_number(self) -> int:
        return int(await self.redis.incr(SEQ))

    async def keyed(self, customer: str, key: str) -> dict[str, Any] | None:
        """The order an idempotency key of a customer made, if any (keys are per customer)."""
        order_id = await self.redis.get(idempotency_key(f"{customer}\n{key}"))
        return None if order_id is None else await self.order(replies.text(order_id))

    async def create(self, order: Mapping[str, Any], key: str | None, *, now: float,
                     unsent: Unsent | None = None) -> tuple[dict[str, Any], bool]:
        """Write a new order, its indexes and its follow-up (``unsent``); with ``key`` taken
        already: (that order, False) and nothing is written."""
        oid, number = str(order["id"]), int(order["number"])
        keys = [ORDERS, idempotency_key(f"{order['customer']}\n{key or ''}"), ALL, index_key("c", order["customer"]),
                index_key("s", order["status"]), index_key("p", order["payment"]), UNSENT, UNSENT_AT]
        args = [oid, _dumps(order), number, "1" if key else "0", KEY_TTL, *_unsent_args(unsent, now)]
        known = await self._create(keys=keys, args=args)
        if known is not None:
            found = _loads(known)
            if found is not None:
                return found, False
        return dict(order), True

    async def order_raw(self, oid: str) -> bytes | str | None:
        raw: bytes | str | None = await self.redis.hget(ORDERS, oid)
        return raw

    async def order(self, oid: str) -> dict[str, Any] | None:
        return _loads(await self.order_raw(oid))

    async def orders(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        return [o for raw in await self.redis.hmget(ORDERS, list(ids)) if (o := _loads(raw)) is not None]

    async def replace(self, old_raw: bytes | str, old: Mapping[str, Any], new: Mapping[str, Any], *, now: float,
                      unsent: Unsent | None = None) -> bool:
        """Write ``new`` (and its follow-up, ``unsent``) over the order if it is still ``old_raw``;
        False when it changed meanwhile (nothing is written)."""
        keys = [ORDERS, index_key("s", old["status"]), index_key("s", new["status"]),
                index_key("p", old["payment"]), index_key("p", new["payment"]), UNSENT, UNSENT_AT]
        args = [str(new["id"]), old_raw, _dumps(new), int(new["number"]), *_unsent_args(unsent, now)]
        return bool(await self._change(keys=keys, args=args))

    async def sent(self, field: str) -> None:
        """A follow-up is done: forget it."""
        await self._sent(keys=[UNSENT, UNSENT_AT], args=[field])

    async def claim_unsent(self, written_by: float, now: float, limit: int) -> list[tuple[str, dict[str, Any]]]:
        """Up to ``limit`` follow-ups written (or last claimed) by ``written_by``, claimed until a
        grace after ``now``: (field, what to do). One round trip when there are none."""
        found = await self._claim(keys=[UNSENT_AT, UNSENT], args=[repr(written_by), repr(now), limit])
        pairs = [replies.text(x) for x in found]
        return [(f, work) for f, raw in zip(pairs[::2], pairs[1::2], strict=True) if (work := _loads(raw)) is not None]

    async def page(self, index: str, *, before: int | None, count: int) -> list[str]:
        """Up to ``count`` ids of ``index``, newest first, numbered below ``before``."""
        top = f"({before}" if before is not None else "+inf"
        found = await self.redis.zrevrangebyscore(index, top, "-inf", start=0, num=count)
        return replies.members(found)

    async def counts(self, customer_ids: Sequence[str]) -> dict[str, int]:
        if not customer_ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for cid in customer_ids:
            pipe.zcard(index_key("c", cid))
        return {cid: int(n) for cid, n in zip(customer_ids, await pipe.execute(), strict=True)}
