"""The CRM outbox: a temporary CRM failure never blocks a conversation, and no command is lost.

``CrmOutbox.submit`` is how the server runs a flow's CRM command:

* the lead has commands waiting → this one queues behind them (commands of a lead keep their
  order) and the run goes on at once (``None``: deferred);
* otherwise it is executed directly: success returns the backend's result; ``CrmRejected``
  propagates (the step's ``failed`` branch); ``CrmTemporary`` (unreachable, 5xx, 429, auth)
  queues the command for a retry and the run goes on (``None``);
* after a temporary failure the process holds back for the retry delay: new commands of any
  lead queue at once instead of each waiting for a CRM that just failed. (The HTTP backends
  also fail fast on their own after a timeout or refused connection — ``_http.Breaker`` — and
  such an untried request, ``CircuitOpen``, costs a command no attempt.)

Queued commands live in Redis — one list per lead (``sb:crmq:{<backend>:<lead>}``) and one
schedule of leads (``sb:crmq:due``, scored by when each may try again) — so they survive a
restart. ``run_once`` (the worker loop) claims due leads with a lease (a crashed worker's
claims come back when the lease ends), executes each lead's commands in order, and on a
temporary failure reschedules the lead with exponential backoff, never sooner than the CRM's
``retry_after``. A command the CRM rejects, or one still failing after ``max_attempts``, is
dropped and reported through ``on_failed`` (the server tells the conversation with a
``crm.command_failed`` event); the lead's next command goes on.

A command keeps one ``command_id`` across its attempts, which a backend may pass on for
idempotency (the webhook backend sends it as ``X-Salesbot-Delivery``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis

from bot.errors import CrmRateLimited, CrmRejected, CrmTemporary
from bot.store.scripts import CLAIM_DUE, POP_HEAD, REPLACE_HEAD

from ._http import CircuitOpen
from .codec import pack, unpack
from .interface import CommandResult, CrmBackend, CrmRef

log = logging.getLogger("salesbot.crm.outbox")

PREFIX = "sb:crmq"
DUE_KEY = f"{PREFIX}:due"

FailedHook = Callable[[str | None, CrmRef, dict[str, Any], str], Awaitable[None]]





class CrmOutbox:
    def __init__(self, redis: Redis, crm: CrmBackend, *, on_failed: FailedHook | None = None,
                 max_attempts: int = 20, base_delay: float = 1.0, max_delay: float = 300.0,
                 lease: float = 60.0, per_round: int = 50, concurrency: int = 8,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.crm = crm
        self.on_failed = on_failed
        self.max_attempts = max(1, max_attempts)
        self.base_delay, self.max_delay = base_delay, max_delay
        self.lease = lease
        self.per_round = per_round
        self.clock = clock
        self._hold_until = 0.0
        self._sem = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self._claim = redis.register_script(CLAIM_DUE)
        self._pop = redis.register_script(POP_HEAD)
        self._replace = redis.register_script(REPLACE_HEAD)

    # ------------------------------------------------------------------ keys
    def member(self, lead_id: str) -> str:
        return f"{self.crm.name}:{lead_id}"

    @staticmethod
    def queue_key(member: str) -> str:
        return f"{PREFIX}:{{{member}}}"

    def backoff(self, attempts: int) -> float:
        return float(min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1)))

    def _delay(self, attempts: int, exc: Exception) -> float:
        floor = exc.retry_after if isinstance(exc, (CrmRateLimited, CircuitOpen)) else 0.0
        return max(floor, self.backoff(attempts))

    def _hold(self, delay: float) -> None:
        self._hold_until = max(self._hold_until, self.clock() + delay)

    @property
    def holding(self) -> bool:
        """True while the CRM failed recently: new commands queue without being tried."""
        return self.clock() < self._hold_until

    # ------------------------------------------------------------------ the conversation's side
    async def submit(self, ref: CrmRef, command: dict[str, Any], *, cid: str | None = None) -> CommandResult | None:
        """Execute now, or queue (``None``). Raises ``CrmRejected`` for a permanent failure."""
        command = {**command, "command_id": command.get("command_id") or uuid.uuid4().hex}
        member = self.member(ref.lead_id)
        item = {"id": command["command_id"], "cid": cid, "ref": [ref.contact_id, ref.lead_id, ref.company_id],
                "command": command, "attempts": 0, "queued_at": self.clock(), "error": None}
        if self.holding or await self.redis.llen(self.queue_key(member)):
            await self._enqueue(member, item, max(self.clock(), self._hold_until))
            log.info("crm.command_queued", extra={"lead": ref.lead_id, "do": command.get("do"),
                                                  "reason": "holding" if self.holding else "behind"})
            return None
        try:
            return await self.crm.execute(ref, command)
        except CrmTemporary as exc:
            tried = not isinstance(exc, CircuitOpen)  # the backend failing fast is no attempt
            item["attempts"], item["error"] = int(tried), str(exc)
            delay = exc.retry_after if isinstance(exc, CircuitOpen) else self._delay(1, exc)
            self._hold(delay)
            await self._enqueue(member, item, self.clock() + delay)
            log.warning("crm.command_deferred", extra={"lead": ref.lead_id, "do": command.get("do"),
                                                       "delay": delay, "error": str(exc)})
            return None

    async def _enqueue(self, member: str, item: dict[str, Any], due: float) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(self.queue_key(member), pack(item))
        pipe.zadd(DUE_KEY, {member: due}, nx=True)
        await pipe.execute()

    async def pending(self, lead_id: str) -> list[dict[str, Any]]:
        """The commands waiting for a lead, oldest first."""
        raw = await self.redis.lrange(self.queue_key(self.member(lead_id)), 0, -1)
        return [unpack(cast(bytes, b)) for b in raw]

    async def depth(self) -> int:
        """How many leads have commands waiting."""
        return int(await self.redis.zcard(DUE_KEY))

    # ------------------------------------------------------------------ the worker's side
    async def run_once(self) -> int:
        """One round: every due lead's commands, in order; returns how many were attempted."""
        now = self.clock()
        # Claim only what can be worked at once, so no claim waits past its lease for a slot.
        members = await self._claim(keys=[DUE_KEY], args=[now, self.concurrency, now + self.lease])
        if not members:
            return 0
        done = await asyncio.gather(*(self._drain(m.decode() if isinstance(m, bytes) else str(m)) for m in members))
        return sum(done)

    async def _drain(self, member: str) -> int:
        key = self.queue_key(member)
        done = 0
        async with self._sem:
            for _ in range(self.per_round):
                # Renew this lead's claim before each command: a slow CRM must not let another
                # worker take the same lead (and its head command) meanwhile.
                await self.redis.zadd(DUE_KEY, {member: self.clock() + self.lease}, xx=True)
                found = await self.redis.lindex(key, 0)
                if found is None:
                    break
                head = cast(bytes, found)
                item = unpack(head)
                ref = CrmRef(*item["ref"])
                done += 1
                try:
                    await self.crm.execute(ref, item["command"])
                except CrmRejected as exc:
                    await self._drop(key, head, item, str(exc))
                    continue
                except CircuitOpen as exc:  # not tried: come back when the backend will try again
                    self._hold(exc.retry_after)
                    await self.redis.zadd(DUE_KEY, {member: self.clock() + max(exc.retry_after, 0.05)})
                    return done - 1
                except Exception as exc:  # temporary, or a backend bug: keep the command, try later
                    if not isinstance(exc, CrmTemporary):
                        log.exception("crm.outbox_unexpected_error", extra={"lead": ref.lead_id})
                    item["attempts"] = int(item.get("attempts") or 0) + 1
                    item["error"] = f"{exc}" or type(exc).__name__
                    if item["attempts"] >= self.max_attempts:
                        await self._drop(key, head, item, f"gave up after {item['attempts']} attempts: {item['error']}")
                        continue
                    delay = self._delay(item["attempts"], exc)
                    self._hold(delay)
                    await self._replace(keys=[key], args=[head, pack(item)])
                    await self.redis.zadd(DUE_KEY, {member: self.clock() + delay})
                    log.warning("crm.outbox_retry", extra={"lead": ref.lead_id, "do": item["command"].get("do"),
                                                           "attempts": item["attempts"], "delay": delay,
                                                           "error": item["error"]})
                    return done
                await self._pop(keys=[key], args=[head])
                self._hold_until = 0.0
                log.info("crm.outbox_delivered", extra={"lead": ref.lead_id, "do": item["command"].get("do"),
                                                        "attempts": int(item.get("attempts") or 0) + 1})
            await self._reschedule(key, member)
        return done

    async def _drop(self, key: str, head: bytes, item: dict[str, Any], reason: str) -> None:
        await self._pop(keys=[key], args=[head])
        ref = CrmRef(*item["ref"])
        log.warning("crm.outbox_failed", extra={"lead": ref.lead_id, "do": item["command"].get("do"),
                                                "cid": item.get("cid"), "reason": reason})
        if self.on_failed is not None:
            try:
                await self.on_failed(item.get("cid"), ref, item["command"], reason)
            except Exception:
                log.exception("crm.outbox_failed_hook")

    async def _reschedule(self, key: str, member: str) -> None:
        if await self.redis.llen(key):
            await self.redis.zadd(DUE_KEY, {member: self.clock()})  # more than one round's worth
            return
        await self.redis.zrem(DUE_KEY, member)
        # A command queued between our last pop and the ZREM must not be stranded: look again.
        if await self.redis.llen(key):
            await self.redis.zadd(DUE_KEY, {member: self.clock()})
