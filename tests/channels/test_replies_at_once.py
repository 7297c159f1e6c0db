"""Replies at once: the process that saves a channel reply sends it right away, without the
outbox poll (``bot.store.outbox``, "Replies at once"), exactly once even with the poll running
beside it, in order, and a process that dies between the save and the send leaves it to the
poll. Real HTTP on loopback against the fake platforms, a real Redis; no timing assertions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.server.services import Services
from bot.store import codec
from bot.store import keys as k
from bot.store.clusterclient import ClusterRespClient
from bot.store.keys import conversation_id
from bot.store.resp import Command
from bot.store.scripts import POP_HEAD, RENEW_CLAIM
from tests.waiting import wait_for

from .fakes.graph import GraphFake, wa_text, whatsapp_account
from .fakes.graph import running_app as graph_app
from .fakes.graph import write_flows as graph_flows
from .fakes.telegram import FakeTelegram
from .fakes.twilio_api import FakeTwilio, twilio_account
from .fakes.twilio_api import running_app as twilio_app
from .fakes.twilio_api import write_flows as twilio_flows
from .replies_harness import TOKEN, expected, say, telegram


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(enforce_limits=False) as f:
        f.add_bot(TOKEN)
        yield f


async def settled(svc: Services, account: str) -> None:
    """The hand-offs in flight have finished and nothing waits in the account's queue."""
    await svc.outbox.idle()
    assert await svc.redis.zcard(k.outbox_queue_key(account)) == 0


# ---------------------------------------------------------------------- Telegram
async def test_a_reply_reaches_telegram_with_no_outbox_poll_running(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram) -> None:
    """Role ``web``: no worker, so no outbox poll at all (and the poll interval an hour)."""
    chat = 9101
    async with telegram(redis_url, tmp_path, fake, role="web", timer_poll_interval=3600) as svc:
        said = ["hi", "Ana", "Lisbon", "again"]
        for n, text in enumerate(said, 1):
            await say(fake, chat, text)
            await fake.wait_for(lambda f, n=n: len(f.sent_to(chat)) >= n)
        assert [s.text for s in fake.sent_to(chat)] == expected(4, said)
        await settled(svc, "tg")
        assert await svc.redis.llen(k.ConversationKey(f"telegram:tg:{chat}").out) == 0
        # Telegram reports no delivery statuses: no platform id is kept for one to find
        assert await svc.redis.keys(k.platform_id_key("tg", "*")) == []


async def test_a_send_well_within_the_lease_starts_no_renewal_task(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram) -> None:
    """The claim's renewal is a timer until a third of the lease has passed: a reply that leaves
    sooner (the usual one) creates one task, its send, and no renewal task beside it."""
    chat = 9105
    loop = asyncio.get_running_loop()
    started: list[str] = []
    factory = loop.get_task_factory()

    def counting(loop_: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Future[Any]:
        started.append(getattr(coro, "__qualname__", ""))
        return factory(loop_, coro, **kw) if factory is not None else asyncio.Task(coro, loop=loop_, **kw)

    async with telegram(redis_url, tmp_path, fake, role="web", timer_poll_interval=3600) as svc:
        loop.set_task_factory(counting)
        try:
            for n, text in enumerate(["hi", "Ana", "Lisbon"], 1):
                await say(fake, chat, text)
                await fake.wait_for(lambda f, n=n: len(f.sent_to(chat)) >= n)
                await svc.outbox.idle()  # done: the next save claims the entry itself (its own hand-off)
            await settled(svc, "tg")
        finally:
            loop.set_task_factory(factory)
    assert started.count("Outbox._send_claimed") == 3
    assert started.count("Outbox._keep") == 0


async def test_replies_leave_once_and_in_order_with_the_poll_running_beside(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram) -> None:
    """Role ``all`` with a 50 ms poll, and the test running more poll rounds in a loop: every
    reply is sent exactly once, each chat's in the order they were written."""
    chats = [9200 + i for i in range(12)]
    said = ["hi", "Ana", "Porto", "x", "Bea", "Faro"]
    async with telegram(redis_url, tmp_path, fake, role="all", timer_poll_interval=0.05) as svc:
        stop = asyncio.Event()

        async def poll() -> None:
            while not stop.is_set():
                await svc.outbox.run_once()
                await asyncio.sleep(0)

        async def chat_loop(chat: int) -> None:
            for n, text in enumerate(said, 1):
                await say(fake, chat, text)
                await fake.wait_for(lambda f, n=n: len(f.sent_to(chat)) >= n, timeout=20)

        pollers = [asyncio.create_task(poll()) for _ in range(2)]
        try:
            await asyncio.gather(*(chat_loop(c) for c in chats))
        finally:
            stop.set()
            await asyncio.gather(*pollers)
        await svc.outbox.idle()
        for c in chats:
            assert [s.text for s in fake.sent_to(c)] == expected(len(said), said), c
        assert len(fake.sent) == len(chats) * len(said)


async def test_a_burst_of_replies_to_one_chat_keeps_its_order(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram) -> None:
    """Updates posted back to back without waiting: the replies leave in the order of the turns."""
    chat = 9301
    said = [f"w{i}" for i in range(9)]
    async with telegram(redis_url, tmp_path, fake, role="all", timer_poll_interval=0.05) as svc:
        for text in said:
            await say(fake, chat, text)
        await fake.wait_for(lambda f: len(f.sent_to(chat)) >= len(said), timeout=20)
        await svc.outbox.idle()
        transcript = [codec.unpack(b) for _, b in await svc.store.read_log(f"telegram:tg:{chat}", 0, 1000)]
        written = [e["text"] for e in transcript if e["role"] == "bot"]
        assert [s.text for s in fake.sent_to(chat)] == written  # the transcript's order, each once
        assert len(written) == len(said)


async def test_a_crash_between_the_save_and_the_send_is_delivered_by_the_poll_once(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process claims the entry with its save and dies before sending (its hand-off never
    runs): the claim's SHORT lease (``at_once_lease``) ends and the poll sends the reply, once.
    The poll's own lease is ten minutes, so only the short one can let the reply out."""
    chat = 9401
    async with telegram(redis_url, tmp_path, fake, role="all", timer_poll_interval=0.05) as svc:
        svc.outbox.lease, svc.outbox.at_once_lease = 600.0, 0.5
        monkeypatch.setattr(svc.outbox, "committed", lambda *a, **kw: None)  # dies before the send
        await say(fake, chat, "hi")
        queue = k.outbox_queue_key("tg")
        claimed = await svc.redis.zscore(queue, f"telegram:tg:{chat}")
        assert claimed is not None and not fake.sent_to(chat)  # claimed by the save, not yet sent
        await wait_for(lambda: fake.sent_to(chat), timeout=10, what="the poll's send after the short lease")
        await wait_for(lambda: _released(svc, queue), timeout=5, what="the entry released")
        assert [s.text for s in fake.sent_to(chat)] == ["What is your name?"]
        monkeypatch.undo()
        await say(fake, chat, "Ana")  # the next reply leaves at once again
        await fake.wait_for(lambda f: len(f.sent_to(chat)) >= 2)
        assert [s.text for s in fake.sent_to(chat)] == expected(2, ["hi", "Ana"])


async def test_a_send_slower_than_the_short_lease_keeps_its_claim_and_leaves_once(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram) -> None:
    """The platform holds the at-once send past several short leases while the poll runs (the
    worker's and the test's rounds): the holder renews its claim, the poll never takes the
    entry, and the reply is sent once."""
    chat = 9411
    cid, queue = f"telegram:tg:{chat}", k.outbox_queue_key("tg")
    async with telegram(redis_url, tmp_path, fake, role="all", timer_poll_interval=0.05) as svc:
        svc.outbox.lease, svc.outbox.at_once_lease = 600.0, 0.3
        fake.hold = asyncio.Event()
        try:
            await say(fake, chat, "hi")
            await wait_for(lambda: fake.arrivals, what="the at-once send at the platform")
            first = float(await svc.redis.zscore(queue, cid) or 0)

            async def poll_round() -> int:
                return int(await svc.outbox.run_once())

            # The send is still held once the first claim's lease is three times over.
            await wait_for(lambda: time.time() > first + 3 * svc.outbox.at_once_lease, timeout=10,
                           what="three short leases to pass", between=poll_round)
            assert len(fake.arrivals) == 1  # the poll did not take the entry and send again
            renewed = await svc.redis.zscore(queue, cid)
            assert renewed is not None and float(renewed) > first  # still held, by a renewed claim
        finally:
            fake.hold.set()
        await wait_for(lambda: fake.sent_to(chat), what="the held send answered")
        await settled(svc, "tg")
        for _ in range(3):
            await svc.outbox.run_once()
        assert [s.text for s in fake.sent_to(chat)] == ["What is your name?"]
        assert len(fake.arrivals) == 1


async def test_a_holder_that_lost_its_claim_leaves_the_entry_to_the_new_holder(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram) -> None:
    """While the at-once send waits on the platform, another holder takes the entry (as the poll
    would after a stall past the lease): the first holder records its send but neither renews
    nor releases the new holder's claim (both are compare-and-sets on its own score)."""
    chat = 9421
    cid, queue = f"telegram:tg:{chat}", k.outbox_queue_key("tg")
    async with telegram(redis_url, tmp_path, fake, role="web") as svc:
        svc.outbox.lease, svc.outbox.at_once_lease = 600.0, 0.3
        fake.hold = asyncio.Event()
        try:
            await say(fake, chat, "hi")
            await wait_for(lambda: fake.arrivals, what="the at-once send at the platform")
            theirs = time.time() + 600
            await svc.redis.zadd(queue, {cid: theirs})  # the other holder's claim
        finally:
            fake.hold.set()
        await wait_for(lambda: fake.sent_to(chat), what="the held send answered")
        await svc.outbox.idle()
        assert await svc.redis.zscore(queue, cid) == theirs  # neither renewed over nor released
        assert await svc.redis.llen(k.ConversationKey(cid).out) == 0  # the sent reply is popped
        assert [s.text for s in fake.sent_to(chat)] == ["What is your name?"]


class SlowNode:
    """One node of a cluster answers late, once: the first batch that ``when`` picks has its
    other commands answered first, and the ``late`` ones (that node's) only once ``go`` is set.
    On a cluster that is a legal order (the client sends each node's part on its own connection,
    at once); on one Redis a batch is one ordered pipeline, so it is held whole."""

    def __init__(self, svc: Services, monkeypatch: pytest.MonkeyPatch, *,
                 when: Callable[[Command], bool], late: Callable[[Command], bool]) -> None:
        self.fast = svc.store.fast
        self.when, self.late = when, late
        self.holding, self.go = asyncio.Event(), asyncio.Event()
        self._send = self.fast.send
        self._used = False
        monkeypatch.setattr(self.fast, "send", self.send)

    async def send(self, commands: Sequence[Command]) -> list[Any]:
        if self._used or not any(self.when(c) for c in commands):
            return await self._send(commands)
        self._used = True
        split = isinstance(self.fast, ClusterRespClient)
        later = [i for i, c in enumerate(commands) if self.late(c) or not split]
        first = [i for i in range(len(commands)) if i not in later]
        replies: dict[int, Any] = {}
        if first:
            replies.update(zip(first, await self._send([commands[i] for i in first]), strict=True))
        self.holding.set()
        await self.go.wait()
        replies.update(zip(later, await self._send([commands[i] for i in later]), strict=True))
        return [replies[i] for i in range(len(commands))]


def _in_slot(key: str) -> Callable[[Command], bool]:
    """Whether a command's key is in ``key``'s slot (on its node)."""
    slot = key_slot(key.encode())

    def check(command: Command) -> bool:
        name = command[3] if command[0] in ("EVAL", "EVALSHA") else command[1]
        return key_slot(name if isinstance(name, bytes) else str(name).encode()) == slot
    return check


async def test_a_reply_is_sent_once_when_its_pop_lands_late(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch) -> None:
    """The at-once sender has sent its reply and pops it; the node with the conversation's list
    answers late. Meanwhile the next update's save claims the entry: it must not find the sent
    reply still at the list's head and send it again (on a cluster the release landed before
    the pop: the race that sent "Hi!" twice in tests/cluster/test_telegram.py)."""
    chat = 9431
    cid = f"telegram:tg:{chat}"
    async with telegram(redis_url, tmp_path, fake, role="web") as app:
        slow = SlowNode(app, monkeypatch, when=lambda c: c[0] == "EVAL" and c[1] == POP_HEAD,
                        late=_in_slot(k.ConversationKey(cid).out))
        try:
            await say(fake, chat, "hi")
            await wait_for(slow.holding.is_set, what="the sent reply's pop held")
            await say(fake, chat, "Ana")  # saved while the pop is held: it may not resend "hi"'s reply
            assert [s.text for s in fake.sent_to(chat)] == expected(1, ["hi"])
        finally:
            slow.go.set()
        await fake.wait_for(lambda f: len(f.sent_to(chat)) >= 2)
        await settled(app, "tg")
        assert [s.text for s in fake.sent_to(chat)] == expected(2, ["hi", "Ana"])


async def _second_save_held(redis_url: str, tmp_path: Path, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch,
                            chat: int, claim_late: bool) -> None:
    """Two replies to ``chat``; the second save's batch is held part-way (its claim answered
    late when ``claim_late``, else its script: the list's slot) until the first hand-off is done
    (sent, released, and sent what it found); then both replies must have left, once, in order."""
    cid, queue = f"telegram:tg:{chat}", k.outbox_queue_key("tg")
    in_list_slot = _in_slot(k.ConversationKey(cid).out)
    async with telegram(redis_url, tmp_path, fake, role="web") as app:
        fake.hold = asyncio.Event()
        try:
            await say(fake, chat, "hi")
            await wait_for(lambda: fake.arrivals, what="the first reply at the platform")
            slow = SlowNode(app, monkeypatch, when=lambda c: c[0] == "ZADD" and c[1] == queue and c[2] == "NX",
                            late=(lambda c: not in_list_slot(c)) if claim_late else in_list_slot)
            said = asyncio.create_task(say(fake, chat, "Ana"))
            await wait_for(slow.holding.is_set, what="the second save held part-way")
        finally:
            fake.hold.set()
        try:
            await wait_for(lambda: fake.sent_to(chat), what="the first reply sent")
            await app.outbox.idle()  # the first holder is done
        finally:
            slow.go.set()
        await said
        await fake.wait_for(lambda f: len(f.sent_to(chat)) >= 2)
        await settled(app, "tg")
        assert [s.text for s in fake.sent_to(chat)] == expected(2, ["hi", "Ana"])


async def test_a_claim_that_lands_late_reads_the_list_after_it(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save's claim (the queue's node) answers late, its read of the list (the conversation's
    node) at once: the read saw the previous reply still unsent, while by the time the claim
    lands that reply was sent, popped and released. The claimer must send from what the list
    holds once its claim is known, not from its early read (which would send the reply again)."""
    await _second_save_held(redis_url, tmp_path, fake, monkeypatch, 9432, claim_late=True)


async def test_a_save_whose_list_write_lands_after_the_holders_length_read_claims_again(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save's claim (the queue's node) answers at once and finds the entry held by the hand-off
    still sending; its script (the conversation's node: the reply pushed on the list) answers
    late, after that holder has popped, released and read the list's length (empty then). The
    holder is gone and the claim was refused: the save must claim again once its script is
    answered, else its reply waits in the list with no queue entry, for no sender and no poll.
    On one Redis the batch is held whole (a legal order there): the save then simply claims."""
    await _second_save_held(redis_url, tmp_path, fake, monkeypatch, 9433, claim_late=False)


async def _first_holder_paused_while_a_third_save_sends(
        svc: Services, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch, chat: int, said: list[str],
) -> asyncio.Event:
    """Replies to ``said[0]`` and ``said[1]``: the first hand-off sends the first, releases the
    entry, reads the length (the second reply, saved by a save that found its claim and so did
    not claim) and is paused there (``on_sent``), before it claims again. ``said[2]``'s save then
    claims the released entry and its hand-off sends both replies and releases it. Returns the
    event that lets the first holder go on."""
    cid, queue = f"telegram:tg:{chat}", k.outbox_queue_key("tg")
    seen: list[str] = []
    paused, go = asyncio.Event(), asyncio.Event()

    async def on_sent(cid_: str, item: Mapping[str, Any], platform_id: str | None) -> None:
        seen.append(cid_)
        if len(seen) == 1:  # the first holder: between its length read and its claim again
            paused.set()
            await go.wait()

    monkeypatch.setattr(svc.outbox, "on_sent", on_sent)
    fake.hold = asyncio.Event()
    try:
        await say(fake, chat, said[0])
        await wait_for(lambda: fake.arrivals, what="the first reply at the platform")
        await say(fake, chat, said[1])  # the entry is the first holder's: this save does not claim
        assert len(svc.outbox._handoffs) == 1
    finally:
        fake.hold.set()
    await wait_for(paused.is_set, what="the first holder past its release and length read")
    assert await svc.redis.zcard(queue) == 0 and await svc.redis.llen(k.ConversationKey(cid).out) == 1
    await say(fake, chat, said[2])  # claims the released entry: its hand-off sends both replies
    await wait_for(lambda: len(seen) == 3, what="the second hand-off's two sends recorded")
    assert await svc.redis.zcard(queue) == 0  # it released the entry (its on_sent runs after)
    return go


async def test_a_holder_whose_claim_again_finds_the_rest_sent_lets_the_entry_go(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first hand-off has sent its reply and released the entry; its length read found the
    next reply (saved while it sent, by a save that found its claim and so did not claim).
    Before it claims the entry again, a third save claims the released entry and its hand-off
    sends both replies and releases it. The first holder's claim then takes an entry with an
    empty list: it must let it go again. In role ``web`` no poll clears an entry left claimed,
    and every later save would find it and not claim: the next reply would never leave (the
    intermittent failure of this module's first test on the loaded cluster)."""
    chat = 9441
    said = ["hi", "Ana", "Lisbon", "again"]
    async with telegram(redis_url, tmp_path, fake, role="web") as svc:
        go = await _first_holder_paused_while_a_third_save_sends(svc, fake, monkeypatch, chat, said)
        go.set()
        await settled(svc, "tg")  # the first holder's late claim found nothing to send: let go
        assert [s.text for s in fake.sent_to(chat)] == expected(3, said)
        await say(fake, chat, said[3])  # the next save claims the entry and its reply leaves at once
        await fake.wait_for(lambda f: len(f.sent_to(chat)) >= 4)
        await settled(svc, "tg")
        assert [s.text for s in fake.sent_to(chat)] == expected(4, said)


async def test_a_save_refused_by_an_empty_claim_again_is_sent_by_its_holder(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim-again loop's second round: the first holder's late claim took an entry with an
    empty list (as in the test above) and, before it lets go, a fourth save finds the entry
    taken and does not claim. Letting go, the holder reads the list's length (1), claims again
    and sends that reply itself, in order; nothing is left claimed."""
    chat = 9442
    cid, queue = f"telegram:tg:{chat}", k.outbox_queue_key("tg")
    said = ["hi", "Ana", "Lisbon", "again"]
    async with telegram(redis_url, tmp_path, fake, role="web") as svc:
        empty_held, go_on = asyncio.Event(), asyncio.Event()
        let_go = svc.outbox._let_go
        calls: list[Any] = []

        async def pausing_let_go(key: Any, hold: Any) -> int:
            calls.append(hold)
            if len(calls) == 1:  # the first holder's empty claim again, before it lets go
                assert await svc.redis.zscore(queue, cid) == hold.score
                empty_held.set()
                await go_on.wait()
            return await let_go(key, hold)

        monkeypatch.setattr(svc.outbox, "_let_go", pausing_let_go)
        go = await _first_holder_paused_while_a_third_save_sends(svc, fake, monkeypatch, chat, said)
        go.set()
        await wait_for(empty_held.is_set, what="the first holder holding an empty claim")
        await say(fake, chat, said[3])  # refused: the entry is the first holder's (empty) claim
        assert len(fake.sent_to(chat)) == 3
        go_on.set()
        await fake.wait_for(lambda f: len(f.sent_to(chat)) >= 4)
        await settled(svc, "tg")
        assert [s.text for s in fake.sent_to(chat)] == expected(4, said)
        assert await svc.redis.zcard(queue) == 0


@pytest.mark.parametrize("where", ["finish", "let_go"])
async def test_a_release_whose_length_read_is_lost_leaves_the_entry_to_the_poll(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch,
        where: str) -> None:
    """The hand-off's release lands but its answer, and the list's length read after it, are
    lost (the connection drops). A reply saved meanwhile, by a save that found the claim taken
    and so did not claim, must not wait with no queue entry until the conversation's next save:
    the entry is put back for the poll, which sends it, once, in order. ``finish``: the release
    sent with the sent head's pop; ``let_go``: a claim that finds nothing to send, let go."""
    chat = 9451 if where == "finish" else 9452
    cid, queue = f"telegram:tg:{chat}", k.outbox_queue_key("tg")
    async with telegram(redis_url, tmp_path, fake, role="web") as svc:
        fast = svc.outbox.fast
        assert fast is not None
        send, lost = fast.send, []

        async def answer_lost(commands: Sequence[Command]) -> list[Any]:
            out = await send(commands)  # every command has run
            if not lost and any(c[0] == "EVAL" and c[1] == RENEW_CLAIM and c[-1] == "" for c in commands):
                lost.append(commands)
                raise RedisConnectionError("Connection closed by server.")
            return out

        monkeypatch.setattr(fast, "send", answer_lost)
        if where == "let_go":  # the hand-off finds nothing to send: the list emptied before it reads
            committed = svc.outbox.committed

            def nothing_pending(account: str, cid_: str, meta: Mapping[str, str], pending: list[bytes],
                                claim: float) -> None:
                committed(account, cid_, meta, [], claim)
            monkeypatch.setattr(svc.outbox, "committed", nothing_pending)
            await say(fake, chat, "hi")  # saved, claimed; its hand-off lets go and the answer is lost
        else:
            fake.hold = asyncio.Event()
            try:
                await say(fake, chat, "hi")
                await wait_for(lambda: fake.arrivals, what="the first reply at the platform")
                await say(fake, chat, "Ana")  # the entry is the hand-off's: this save does not claim
            finally:
                fake.hold.set()
        await svc.outbox.idle()
        assert lost, "the release's answer was not lost"
        assert await svc.redis.llen(k.ConversationKey(cid).out) == 1  # a reply waits ...
        assert await svc.redis.zscore(queue, cid) is not None  # ... with an entry for the poll
        await svc.outbox.run_once()  # the poll (a worker's; this process is role web)
        await settled(svc, "tg")
        said = ["hi"] if where == "let_go" else ["hi", "Ana"]
        assert [s.text for s in fake.sent_to(chat)] == expected(len(said), said)


async def _released(svc: Services, queue: str) -> bool:
    return int(await svc.redis.zcard(queue)) == 0


async def test_a_platform_error_goes_to_the_retry_path(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram) -> None:
    chat = 9501
    async with telegram(redis_url, tmp_path, fake, role="all", timer_poll_interval=0.05) as svc:
        fake.fail_next(502, method="sendMessage")
        await say(fake, chat, "hi")
        await fake.wait_for(lambda f: len(f.sent_to(chat)) >= 1, timeout=10)  # the poll's retry, ~1 s later
        assert [c[2] for c in fake.calls if c[1] == str(chat)] == [502, 200]
        assert [s.text for s in fake.sent_to(chat)] == ["What is your name?"]
        await svc.outbox.idle()


# ---------------------------------------------------------------------- WhatsApp, Twilio
async def test_a_whatsapp_reply_leaves_at_once(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """The graph harness runs role ``web`` and never drives the worker here: no poll sends it."""
    customer = "16505550101"
    graph = GraphFake()
    await graph.start()
    try:
        async with graph_app(redis_url, graph, {"wa": whatsapp_account(graph.base_url)},
                             graph_flows(tmp_path / "flows")) as app:
            status, _ = await app.webhook("whatsapp", "wa", wa_text(customer, "Hello"))
            assert status == 200
            await wait_for(lambda: graph.sent_to(customer), what="the reply at the fake Graph API")
            await app.services.outbox.idle()
            assert len(graph.sent_to(customer)) >= 1
            assert await app.services.outbox.depth("wa") == 0
            transcript = await app.transcript(conversation_id("whatsapp", "wa", customer))
            assert sum(e["role"] == "bot" for e in transcript) == len(graph.sent_to(customer))
    finally:
        await graph.close()


async def test_a_twilio_reply_leaves_at_once(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    sender, customer = "+14155230000", "+15550001111"
    async with (FakeTwilio(account_sid="AC" + "2e" * 16, auth_token="replies-auth") as fake,
                twilio_app(redis_url, fake, {"wa": twilio_account(fake, "twilio", from_number=sender)},
                           twilio_flows(tmp_path / "flows")) as app):
            post = await fake.post(app.url("twilio", "wa"),
                                   fake.inbound(to=f"whatsapp:{sender}", from_=f"whatsapp:{customer}", body="Hello"))
            assert post.status == 200
            await wait_for(lambda: [m for m in fake.sent if m.number == customer], what="the reply at the fake")
            await app.services.outbox.idle()
            sent = [m for m in fake.sent if m.number == customer]
            transcript = await app.transcript(conversation_id("twilio", "wa", customer))
            assert sent and await app.services.outbox.depth("wa") == 0
            assert len(sent) >= sum(e["role"] == "bot" for e in transcript) >= 1


async def test_replies_leave_once_when_redis_has_lost_its_scripts(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram) -> None:
    """Scripts flushed (a restarted Redis, a first use): the send's release must not run
    without its pop, or the next update's save claims the entry and sends the old head again."""
    chats = [9700 + i for i in range(16)]
    said = ["hi", "Ana", "Porto", "x"]
    async with telegram(redis_url, tmp_path, fake, role="web") as svc:
        await redis.script_flush()

        async def chat_loop(chat: int) -> None:
            for n, text in enumerate(said, 1):
                await say(fake, chat, text)
                await fake.wait_for(lambda f, n=n: len(f.sent_to(chat)) >= n, timeout=20)

        await asyncio.gather(*(chat_loop(c) for c in chats))
        await svc.outbox.idle()
        for c in chats:
            assert [s.text for s in fake.sent_to(c)] == expected(len(said), said), c
