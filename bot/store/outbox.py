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

Replies at once: the process that saves a conversation's new messages claims the account
queue's entry in the save's own round trip (``SaveRequest.outbox_lease``: ``ZADD NX`` with a
lease, read back with ``ZSCORE``, and the list's head) and, when the claim is its, sends them
right away (``committed``) instead of waiting for the poll. The queue entry is the claim for
both paths: whoever holds it sends, in order, and nobody else; success pops the head, records
the platform id and releases the entry in one round trip. A failure takes the retry path
above; a process that dies holding a claim leaves the entry to the poll once its lease ends.

That lease is short (``at_once_lease``, 5 s, against the poll's 30 s) so a reply stranded by a
crash leaves within seconds; the holder renews it every third of the lease while it still sends
(the platform's answer, a per-chat pause, the shared limiter's turn; a timer until the first
third has passed, so a send that ends sooner costs no renewal task), by a compare-and-set on
the queue key (``RENEW_CLAIM``: only while the score is the one it wrote last), and releases it
the same way. It notes each score it moves to before writing it, so a renewal crossing that
write neither undoes it nor mistakes it for a lost claim. A holder that finds its claim lost
(stalled past a whole lease) sends nothing more and leaves the entry to the poll.

On a cluster the list and the queue are on different nodes, answered apart in no set order:
there a release is sent only after its pop has been answered, the length read only after the
release, and a claimer reads the list only once its claim is known (docs/channels.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.asyncio import Redis

from ..errors import SalesbotError
from . import codec, replies, statefields
from . import keys as k
from .clusterclient import is_cluster, send_plain
from .ratelimit import Limit, LimitWait, LocalLimiter, SharedLimiter, SharesLimits
from .resp import RespClient, first_error
from .saveclaim import OUTBOX_PEEK
from .scripts import CLAIM_DUE, POP_HEAD, RENEW_CLAIM, REPLACE_HEAD

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

@dataclass(slots=True)
class _Claim:
    """A hand-off's hold on its queue entry: the score it wrote last (None once it let go), and
    whether a renewal found the score no longer its own. ``lock`` keeps a renewal and the
    holder's own compare-and-sets (keep, release, claim again) from crossing each other."""

    queue: str
    cid: str
    score: float | None
    lost: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The renewal: a timer until the first third of the lease has passed, then a task (most
    #: sends end well before it: they never start one).
    timer: asyncio.TimerHandle | None = None
    renewing: asyncio.Task[None] | None = None

    def stop(self) -> None:
        """End the renewal (the holder is done)."""
        if self.timer is not None:
            self.timer.cancel()
        if self.renewing is not None:
            self.renewing.cancel()


#: Messages one hand-off sends before it leaves the rest of the chat's backlog to the poll, and
#: the longest per-chat pause (``chat_interval``) it waits out itself while holding the claim.
AT_ONCE_ITEMS = 8
AT_ONCE_PAUSE = 2.0
#: Tries to put a queue entry back after a release whose length read failed (0.1 s, 0.2 s, …
#: apart: about 3 s in all).
LEAVE_TO_POLL_TRIES = 6


class Outbox:
    def __init__(self, redis: Redis, *, senders: Mapping[str, ChannelSender],
                 accounts: Mapping[str, tuple[str, AccountLimits]], on_failed: FailureHook,
                 on_sent: SentHook | None = None, max_attempts: int = 8, lease: float = 30.0,
                 concurrency: int = 16, limiter: SharedLimiter | None = None, at_once: bool = True,
                 at_once_concurrency: int = 256, at_once_lease: float = 5.0, fast: RespClient | None = None) -> None:
        self.redis = redis
        #: The hot-path client (``ConversationStore.fast``), for the hand-off's round trip after a
        #: send: lighter than a redis-py pipeline, and batched with other callers' commands.
        self.fast = fast
        self.senders = senders  # account -> its adapter
        self.accounts = accounts  # account -> (channel, limits)
        self.on_failed = on_failed
        self.on_sent = on_sent
        self.max_attempts = max_attempts
        self.lease = lease  # the poll's claims
        #: The hand-off's claim: short, so a reply whose process died after the save reaches the
        #: poll within seconds; renewed every third of it while the holder still sends.
        self.at_once_lease = at_once_lease
        self._claim = redis.register_script(CLAIM_DUE)
        self._pop = redis.register_script(POP_HEAD)
        self._replace = redis.register_script(REPLACE_HEAD)
        self._renew = redis.register_script(RENEW_CLAIM)
        # Senders that keep the account's limit themselves, per API call, are not limited again.
        self._limiter = limiter or LocalLimiter()
        self._limits = {a: Limit(f"{channel}:{a}", lim.rate, max(1, lim.burst))
                        for a, (channel, lim) in accounts.items()
                        if a in senders and not isinstance(senders[a], SharesLimits) and lim.rate > 0}
        #: Accounts whose platform reports delivery statuses (a sender's ``platform_statuses``,
        #: True unless it says otherwise): only their sends record the platform id, the key a
        #: status finds its conversation by (Telegram reports none: 14 days of keys for nothing).
        self._statuses = {a for a, sender in senders.items() if getattr(sender, "platform_statuses", True)}
        self._sem = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self.at_once = at_once  # False: every message waits for the poll (as before replies at once)
        self._at_once_sem = asyncio.Semaphore(at_once_concurrency)
        self._handoffs: set[asyncio.Task[None]] = set()
        #: One Redis runs a round trip's commands in order; a cluster answers each node's part apart.
        self._ordered = not is_cluster(redis)

    @property
    def sends(self) -> bool:
        """Whether any account has a sender: without one there is nothing to poll for."""
        return any(a in self.senders for a in self.accounts)

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
        key = k.ConversationKey(cid)
        queue = k.outbox_queue_key(account)
        async with self._sem:
            reply = await self.redis.lindex(key.out, 0)
            if reply is None:
                await self._reschedule(queue, key, cid, None)
                return 0
            head = replies.raw(reply)
            limit = self._limits.get(account)
            if limit is not None and not await self._acquire(queue, cid, limit):
                return 0
            # the senders read the id's fields, last_inbound_at and reply_*: not the state's
            meta = statefields.split(await self.redis.hgetall(key.meta), cid, held=False)[0]
            item = codec.unpack(head)
            sent, platform_id = await self._attempt(account, cid, head, item, meta)
            if not sent:
                return 1
            remaining = await self._pop(keys=[key.out], args=[head])
            await self._sent(account, cid, item, platform_id)
            await self._reschedule(queue, key, cid, time.time() + limits.chat_interval if remaining else None)
            return 1

    async def _attempt(self, account: str, cid: str, head: bytes, item: dict[str, Any],
                       meta: Mapping[str, str], hold: _Claim | None = None) -> tuple[bool, str | None]:
        """Send a claimed chat's head: (True, platform id) on success; on failure (False, None)
        once the retry (backoff, ``retry_after``) or the give-up is written (``hold``: the
        hand-off's claim, let go first so its renewal cannot undo that write)."""
        key = k.ConversationKey(cid)
        queue = k.outbox_queue_key(account)
        try:
            try:
                return True, await self.senders[account].send(account, meta, item["message"])
            except Exception:
                if hold is not None:
                    hold.score = None
                raise
        except DeliveryDeferred as exc:  # the account is at its rate: try this chat again then
            await self.redis.zadd(queue, {cid: time.time() + (exc.retry_after or 0.0)})
            return False, None
        except (DeliveryTemporary, Exception) as exc:  # an unclassified error counts as temporary
            if isinstance(exc, DeliveryRejected):
                await self._give_up(queue, key, cid, head, item, exc.reason or str(exc), str(exc))
                return False, None
            if not isinstance(exc, DeliveryTemporary):
                log.exception("outbox.unexpected_error", extra={"cid": cid})
                exc = DeliveryTemporary(f"{type(exc).__name__}: {exc}")
            item["attempts"] = int(item.get("attempts", 0)) + 1
            if item["attempts"] >= self.max_attempts:
                reason = f"gave up after {item['attempts']} attempts: {exc}"
                await self._give_up(queue, key, cid, head, item, reason)
                return False, None
            delay = max(exc.retry_after or 0.0, self.backoff(item["attempts"]))
            await self._replace(keys=[key.out], args=[head, codec.pack(item)])
            await self.redis.zadd(queue, {cid: time.time() + delay})
            log.warning("outbox.retry", extra={"cid": cid, "attempts": item["attempts"], "delay": delay,
                                               "error": str(exc)})
            return False, None

    async def _acquire(self, queue: str, cid: str, limit: Limit, hold: _Claim | None = None) -> bool:
        """Take a send of a sender that has no limits of its own; False: the chat is put back for
        when the account's limit allows it. ``LimiterUnavailable`` (no Redis) ends the round."""
        try:
            await self._limiter.acquire(limit, max_wait=0.0)
        except LimitWait as exc:
            if hold is not None:
                hold.score = None
            await self.redis.zadd(queue, {cid: time.time() + exc.retry_after})
            return False
        return True

    async def _sent(self, account: str, cid: str, item: Mapping[str, Any], platform_id: str | None) -> None:
        if platform_id and account in self._statuses:  # delivery statuses find their conversation and message by it
            await self.redis.set(k.platform_id_key(account, platform_id), f"{cid}|{item.get('ref') or ''}",
                                 ex=k.PLATFORM_ID_TTL)
        if self.on_sent is not None:
            await self.on_sent(cid, item, platform_id)

    # ------------------------------------------------------------------ replies at once
    def lease_for(self, account: str | None) -> float | None:
        """The lease a save claims ``account``'s queue entry with, to send its messages at once
        (None: this process has no sender for it, they wait for the poll)."""
        if not self.at_once or account is None or account not in self.senders or account not in self.accounts:
            return None
        return self.at_once_lease

    def committed(self, account: str, cid: str, meta: Mapping[str, str], pending: list[bytes],
                  claim: float) -> None:
        """A save claimed the chat's queue entry (with score ``claim``): send ``pending`` (the
        list's head) now, in the background. A failure leaves the claim to expire and the poll
        to retry."""
        hold = _Claim(k.outbox_queue_key(account), cid, claim)
        task = asyncio.create_task(self._send_claimed(account, cid, dict(meta), pending, hold))
        self._handoffs.add(task)
        task.add_done_callback(self._handoffs.discard)

    async def idle(self) -> None:
        """Wait for the hand-offs in flight (a graceful shutdown sends what it claimed)."""
        while self._handoffs:
            await asyncio.gather(*self._handoffs, return_exceptions=True)

    async def _send_claimed(self, account: str, cid: str, meta: dict[str, str], pending: list[bytes],
                            hold: _Claim) -> None:
        _channel, limits = self.accounts[account]
        key = k.ConversationKey(cid)
        queue = k.outbox_queue_key(account)
        try:
            if pending and not self._ordered:  # the save's read ran beside its claim: read again
                pending = await self._pending(key)
            if not pending:  # claimed, nothing to send (the save lost its lock; on a cluster, the
                # previous holder sent them first): let go, and send what was saved meanwhile
                pending = await self._again(key, hold, await self._let_go(key, hold))
                if not pending:
                    return
            # Renewed from the start: the wait for a semaphore, a pause, the platform's answer or
            # the shared limiter's turn must not hand the entry to the poll while we still send.
            hold.timer = asyncio.get_running_loop().call_later(self.at_once_lease / 3, self._start_keeping, hold)
            async with self._at_once_sem:
                for n in range(AT_ONCE_ITEMS + 1):
                    if not pending or hold.lost:
                        return  # done, or the poll holds the entry now (it sends the rest)
                    if n == AT_ONCE_ITEMS or (n and limits.chat_interval > AT_ONCE_PAUSE):
                        hold.score = None
                        await self.redis.zadd(queue, {cid: time.time() + (limits.chat_interval if n else 0.0)})
                        return  # the rest of the backlog: the poll's, paced
                    if n and limits.chat_interval > 0:
                        await asyncio.sleep(limits.chat_interval)  # per-chat pacing, claim held
                    limit = self._limits.get(account)
                    if limit is not None and not await self._acquire(queue, cid, limit, hold):
                        return  # the account is at its rate: the poll sends it then
                    head = pending[0]
                    item = codec.unpack(head)
                    sent, platform_id = await self._attempt(account, cid, head, item, meta, hold)
                    if not sent:
                        return
                    pending = await self._finish(account, cid, key, queue, pending, item, platform_id, hold)
        except Exception:  # the claim expires and the poll sends it: nothing is lost
            log.exception("outbox.at_once_failed", extra={"cid": cid, "account": account})
        finally:
            hold.stop()

    def _start_keeping(self, hold: _Claim) -> None:
        """A third of the lease has passed and the holder still sends: renew from now on."""
        hold.timer = None
        hold.renewing = asyncio.create_task(self._keep(hold))

    async def _keep(self, hold: _Claim) -> None:
        """Renew ``hold`` now and then every third of its lease, until it is lost (or cancelled)."""
        while True:
            if not await self._renew_once(hold):
                return
            await asyncio.sleep(self.at_once_lease / 3)

    async def _renew_once(self, hold: _Claim) -> bool:
        """Renew ``hold`` while its score is still ours (``RENEW_CLAIM``); False once it is lost.

        The holder's own compare-and-sets take ``hold.lock``; its plain writes that hand the
        entry back (a retry, the rest to the poll) set ``hold.score`` to None *before* they are
        written, so a renewal that crossed one neither undoes it nor reports the claim lost."""
        async with hold.lock:
            old = hold.score
            if old is None:
                return True  # let go for now (the holder may claim again): cancelled when it ends
            new = time.time() + self.at_once_lease
            try:
                renewed = await self._renew(keys=[hold.queue], args=[hold.cid, old, new])
            except Exception as exc:  # Redis away: try again; if the lease ends, the poll takes over
                log.warning("outbox.renew_failed", extra={"cid": hold.cid, "error": type(exc).__name__})
                return True
            if hold.score != old:
                return True  # the holder let go meanwhile: its write stands
            if renewed:
                hold.score = new
                return True
            hold.lost, hold.score = True, None
            log.warning("outbox.claim_lost", extra={"cid": hold.cid})
            return False

    async def _finish(self, account: str, cid: str, key: k.ConversationKey, queue: str, pending: list[bytes],
                      item: Mapping[str, Any], platform_id: str | None, hold: _Claim) -> list[bytes]:
        """Pop the sent head (``pending[0]``) and record its platform id, holding on to the claim
        while ``pending`` says more wait (nobody else pops meanwhile), else releasing it — either
        only while the entry's score is still ours (``RENEW_CLAIM``); if messages were saved
        meanwhile, claim the entry again. Returns the list to send next (empty: nothing left, or
        another process — a save, the poll — holds the entry).

        One round trip on one Redis (a pipeline runs in order). On a cluster the list and the
        queue are on different nodes, answered in no set order: a release must land only after
        its pop (else the next claimer reads the sent head and sends it again), and the length
        be read only after the release (else a message saved in between is stranded)."""
        head, more = pending[0], len(pending) > 1
        async with hold.lock:
            ours = hold.score
            hold.score = time.time() + self.at_once_lease if more and ours is not None else None
            # EVAL, not EVALSHA: were the script missing (first use, a restarted Redis), the release
            # below would run without the pop, and a save meanwhile would claim and resend the head.
            commands: list[tuple[Any, ...]] = [("EVAL", POP_HEAD, 1, key.out, head)]
            if platform_id and account in self._statuses:
                commands.append(("SET", k.platform_id_key(account, platform_id), f"{cid}|{item.get('ref') or ''}",
                                 "EX", k.PLATFORM_ID_TTL))
            # kept (a fresh lease: the queue never shows the chat as done) or released
            claim = None if ours is None else \
                ("EVAL", RENEW_CLAIM, 1, queue, cid, ours, "" if hold.score is None else hold.score)
            try:
                if self._ordered or (claim is not None and hold.score is not None):  # in order, or kept
                    done = await self._send_all([*commands, *([claim] if claim else []), ("LLEN", key.out)])
                    held, left = (done[-2] if claim else 0), done[-1]
                else:
                    await self._send_all(commands)
                    held = (await self._send_all([claim]))[0] if claim else 0
                    left = (await self._send_all([("LLEN", key.out)]))[0]
            except Exception:
                if claim is not None and hold.score is None:  # a release was on its way
                    await self._leave_to_poll(queue, cid)
                raise
        if self.on_sent is not None:
            await self.on_sent(cid, item, platform_id)
        if not held:  # the claim was lost (a stall past its lease): the poll holds it and sends the rest
            hold.lost, hold.score = True, None
            return []
        if more:
            return pending[1:]
        return await self._again(key, hold, left)

    async def _again(self, key: k.ConversationKey, hold: _Claim, left: int) -> list[bytes]:
        """After our release read ``left`` messages in the list (saved since, by saves that found
        our claim and so did not claim): claim the entry again and return the list's head to send.

        The length is already old when the claim lands: meanwhile another holder (a later save's
        hand-off) may have claimed the released entry, sent those messages and released it, and
        our claim then takes an entry with nothing left to send. That claim is let go again, and
        the length read once more, so no entry stays claimed with an empty list (in role ``web``
        no poll would ever clear it, and every later save would find it and not claim).
        Returns [] once the list is empty or another process (a save, the poll) holds the entry."""
        while left:
            async with hold.lock:
                until = time.time() + self.at_once_lease
                pipe = self.redis.pipeline(transaction=False)
                pipe.zadd(hold.queue, {hold.cid: until}, nx=True)
                pipe.zscore(hold.queue, hold.cid)
                if self._ordered:
                    pipe.lrange(key.out, 0, OUTBOX_PEEK - 1)
                added, score, *rows = await pipe.execute()
                if not added or score is None or float(score) != until:
                    return []  # another process's save holds the entry: it sends them
                hold.score = until
            pending = await self._pending(key) if not self._ordered else [replies.raw(r) for r in rows[0]]
            if pending:
                return pending
            left = await self._let_go(key, hold)
        return []

    async def _let_go(self, key: k.ConversationKey, hold: _Claim) -> int:
        """Release ``hold``'s claim (only while its score is ours, ``RENEW_CLAIM``) and return the
        list's length read after it: a message saved before the release whose save found our claim
        is ours to send. 0 when the claim was lost (its new holder sends)."""
        async with hold.lock:
            ours, hold.score = hold.score, None
            if ours is None:
                return 0
            release = ("EVAL", RENEW_CLAIM, 1, hold.queue, hold.cid, ours, "")
            try:
                if self._ordered:
                    held, left = await self._send_all([release, ("LLEN", key.out)])
                else:  # the length only after the release has landed (the list is on another node)
                    held = (await self._send_all([release]))[0]
                    left = (await self._send_all([("LLEN", key.out)]))[0]
            except Exception:
                await self._leave_to_poll(hold.queue, hold.cid)
                raise
        if not held:
            hold.lost = True
            return 0
        return int(left)

    async def _pending(self, key: k.ConversationKey) -> list[bytes]:
        """The head of the chat's list, read once the claim is known to be ours: on a cluster a read
        sent with the claim may run before the previous holder's pop, and see its sent head."""
        return [replies.raw(r) for r in await self.redis.lrange(key.out, 0, OUTBOX_PEEK - 1)]

    async def _send_all(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """``commands`` in one round trip: on the hot-path client when there is one; the first
        error is raised, as a redis-py pipeline raises it."""
        if self.fast is None:
            return await send_plain(self.redis, commands)
        replies = await self.fast.send(commands)
        error = first_error(replies)
        if error is not None:
            raise error
        return replies

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
        # A message saved between our pop and the ZREM must not be stranded: look again. NX: a
        # save since the ZREM may hold the entry with its claim (it sends them at once).
        try:
            if await self.redis.llen(key.out):
                await self.redis.zadd(queue, {cid: time.time()}, nx=True)
        except Exception:
            await self._leave_to_poll(queue, cid)
            raise

    async def _leave_to_poll(self, queue: str, cid: str) -> None:
        """A release (or the poll's ``ZREM``) may have landed, but the list's length read after it
        failed: a message saved meanwhile by a save that found the claim taken (and so did not
        claim) would wait with no queue entry, until the conversation's next save. Put the entry
        back, due now, for the poll (NX: a new holder's claim stands); the poll lets an entry with
        an empty list go. Retried while Redis fails, a few times: past that, it is logged."""
        error = ""
        for attempt in range(LEAVE_TO_POLL_TRIES):
            if attempt:
                await asyncio.sleep(0.05 * 2 ** attempt)
            try:
                await self.redis.zadd(queue, {cid: time.time()}, nx=True)
                return
            except Exception as exc:
                error = type(exc).__name__
        log.error("outbox.entry_not_restored", extra={"cid": cid, "queue": queue, "error": error})
