"""The outbox: outbound messages leave through a durable queue per channel account.

Messages of a conversation wait in its ``out`` list (written atomically with the state by the
store's save script), in order. Each account has a queue of conversations with something to
send, scored by when they may send next. A delivery round claims due conversations (with a
lease, so a crashed worker's claims come back), sends each conversation's head message,
and then either pops it (success), reschedules it with backoff (temporary failure, honouring
the platform's ``retry_after``), or gives up on it and tells the conversation
(``DeliveryFailed`` → the step's ``failed`` branch).

Per-chat pacing (``chat_interval``) and a per-account rate (``rate``, ``burst``) keep to platform
limits; the rate is kept once for every process in Redis (``ratelimit.py``): by the adapter, per
API call, when it ``SharesLimits`` (every built-in one), else here, per message. Accounts are
independent, so a slow or failing platform delays only its own messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis

from ..errors import SalesbotError
from . import codec, replies
from . import keys as k
from .ratelimit import Limit, LimitWait, LocalLimiter, SharedLimiter, SharesLimits
from .scripts import CLAIM_DUE, POP_HEAD, REPLACE_HEAD

log = logging.getLogger("salesbot.outbox")


class DeliveryError(SalesbotError):
    """A message could not be delivered."""


class DeliveryTemporary(DeliveryError):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeliveryDeferred(DeliveryTemporary):
    """Not attempted: the account's shared rate limit allows the next call only after
    ``retry_after``. The outbox puts the chat back for then without counting an attempt."""


class DeliveryRejected(DeliveryError):
    """Permanent: blocked bot, closed window, invalid recipient, …

    ``reason``: a stable code for the step's ``failed`` branch (``outside_window``), given to
    the conversation instead of the message; without one the message is the reason."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class ChannelSender(Protocol):
    async def send(self, account: str, chat: Mapping[str, str], message: Mapping[str, Any]) -> str | None:
        """Deliver one transcript entry to the chat; return the platform's message id."""
        ...


@dataclass(frozen=True, slots=True)
class AccountLimits:
    rate: float = 30.0  # messages per second for the whole account
    chat_interval: float = 1.0  # seconds between two messages to the same chat
    burst: int = 30






FailureHook = Callable[[str, str, str], Awaitable[None]]  # (cid, ref, reason)
SentHook = Callable[[str, Mapping[str, Any], str | None], Awaitable[None]]


class Outbox:
    def __init__(self, redis: Redis, *, senders: Mapping[str, ChannelSender],
                 accounts: Mapping[str, tuple[str, AccountLimits]], on_failed: FailureHook,
                 on_sent: SentHook | None = None, max_attempts: int = 8, lease: float = 30.0,
                 concurrency: int = 16, limiter: SharedLimiter | None = None) -> None:
        self.redis = redis
        self.senders = senders  # account -> its adapter
        self.accounts = accounts  # account -> (channel, limits)
        self.on_failed = on_failed
        self.on_sent = on_sent
        self.max_attempts = max_attempts
        self.lease = lease
        self._claim = redis.register_script(CLAIM_DUE)
        self._pop = redis.register_script(POP_HEAD)
        self._replace = redis.register_script(REPLACE_HEAD)
        # Senders that keep the account's limit themselves, per API call, are not limited again.
        self._limiter = limiter or LocalLimiter()
        self._limits = {a: Limit(f"{channel}:{a}", lim.rate, max(1, lim.burst))
                        for a, (channel, lim) in accounts.items()
                        if a in senders and not isinstance(senders[a], SharesLimits) and lim.rate > 0}
        self._sem = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency

    @staticmethod
    def backoff(attempts: int) -> float:
        return float(min(300, 2 ** max(0, attempts - 1)))

    async def depth(self, account: str) -> int:
        return int(await self.redis.zcard(k.outbox_queue_key(account)))

    async def run_once(self) -> int:
        """One delivery round over every account; returns how many messages were attempted."""
        rounds = await asyncio.gather(*(self._account_round(a) for a in self.accounts if a in self.senders))
        return sum(rounds)

    async def _account_round(self, account: str) -> int:
        now = time.time()
        queue = k.outbox_queue_key(account)
        # Claim no more than can be sent at once, so no claim outlives its lease while it waits.
        cids = await self._claim(keys=[queue], args=[now, self.concurrency, now + self.lease])
        if not cids:
            return 0
        results = await asyncio.gather(*(self._drain_chat(account, replies.text(c))
                                         for c in cids))
        return sum(results)

    async def _drain_chat(self, account: str, cid: str) -> int:
        """Send this chat's head message (one per round: per-chat pacing)."""
        _channel, limits = self.accounts[account]
        sender = self.senders[account]
        key = k.ConversationKey(cid)
        queue = k.outbox_queue_key(account)
        async with self._sem:
            reply = await self.redis.lindex(key.out, 0)
            if reply is None:
                await self._reschedule(queue, key, cid, None)
                return 0
            head = replies.raw(reply)
            item = codec.unpack(head)
            limit = self._limits.get(account)
            if limit is not None and not await self._acquire(queue, cid, limit):
                return 0
            meta = replies.text_map(await self.redis.hgetall(key.meta))
            try:
                platform_id = await sender.send(account, meta, item["message"])
            except DeliveryDeferred as exc:  # the account is at its rate: try this chat again then
                await self.redis.zadd(queue, {cid: time.time() + (exc.retry_after or 0.0)})
                return 0
            except (DeliveryTemporary, Exception) as exc:  # an unclassified error counts as temporary
                if isinstance(exc, DeliveryRejected):
                    return await self._give_up(queue, key, cid, head, item, exc.reason or str(exc), str(exc))
                if not isinstance(exc, DeliveryTemporary):
                    log.exception("outbox.unexpected_error", extra={"cid": cid})
                    exc = DeliveryTemporary(f"{type(exc).__name__}: {exc}")
                item["attempts"] = int(item.get("attempts", 0)) + 1
                if item["attempts"] >= self.max_attempts:
                    reason = f"gave up after {item['attempts']} attempts: {exc}"
                    return await self._give_up(queue, key, cid, head, item, reason)
                delay = max(exc.retry_after or 0.0, self.backoff(item["attempts"]))
                await self._replace(keys=[key.out], args=[head, codec.pack(item)])
                await self.redis.zadd(queue, {cid: time.time() + delay})
                log.warning("outbox.retry", extra={"cid": cid, "attempts": item["attempts"], "delay": delay,
                                                   "error": str(exc)})
                return 1
            remaining = await self._pop(keys=[key.out], args=[head])
            if self.on_sent is not None:
                await self.on_sent(cid, item, platform_id)
            await self._reschedule(queue, key, cid, time.time() + limits.chat_interval if remaining else None)
            return 1

    async def _acquire(self, queue: str, cid: str, limit: Limit) -> bool:
        """Take a send of a sender that has no limits of its own; False: the chat is put back for
        when the account's limit allows it. ``LimiterUnavailable`` (no Redis) ends the round."""
        try:
            await self._limiter.acquire(limit, max_wait=0.0)
        except LimitWait as exc:
            await self.redis.zadd(queue, {cid: time.time() + exc.retry_after})
            return False
        return True

    async def _give_up(self, queue: str, key: k.ConversationKey, cid: str, head: bytes,
                       item: dict[str, Any], reason: str, detail: str | None = None) -> int:
        remaining = await self._pop(keys=[key.out], args=[head])
        log.warning("outbox.failed", extra={"cid": cid, "ref": item.get("ref"), "reason": reason,
                                            "detail": detail or reason})
        if not item.get("human"):
            await self.on_failed(cid, str(item.get("ref") or ""), reason)
        await self._reschedule(queue, key, cid, time.time() if remaining else None)
        return 1

    async def _reschedule(self, queue: str, key: k.ConversationKey, cid: str, at: float | None) -> None:
        if at is not None:
            await self.redis.zadd(queue, {cid: at})
            return
        await self.redis.zrem(queue, cid)
        # A message saved between our pop and the ZREM must not be stranded: look again.
        if await self.redis.llen(key.out):
            await self.redis.zadd(queue, {cid: time.time()})
