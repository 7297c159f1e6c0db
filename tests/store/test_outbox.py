"""The outbox against a real Redis with a scripted fake platform sender."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bot.channels.base import Capabilities
from bot.channels.registry import ChannelRegistry
from bot.config import load_config
from bot.engine import events as ev
from bot.server.services import Services, open_services
from bot.store import codec
from bot.store import keys as k
from bot.store.outbox import DeliveryRejected, DeliveryTemporary
from tests.server.conftest import NO_AUTOMATIONS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


class FakeSender:
    """A minimal channel adapter whose sends are scripted."""

    name = "fake"
    capabilities = Capabilities(max_buttons=3, button_title_max=20)

    def __init__(self, **_: Any) -> None:
        self.sent: list[tuple[str, str]] = []
        self.fail: dict[str, list[Exception]] = {}  # text -> errors to raise, in order

    def handshake(self, request: Any) -> None:
        return None

    def verify(self, request: Any) -> None:
        return None

    def parse(self, request: Any) -> list[Any]:
        return []

    async def acknowledge(self, item: Any) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, account: str, chat: Mapping[str, str], message: Mapping[str, Any]) -> str | None:
        errors = self.fail.get(message["text"])
        if errors:
            raise errors.pop(0)
        self.sent.append((chat["external_id"], message["text"]))
        return f"p{len(self.sent)}"


def _services(redis_url: str):  # type: ignore[no-untyped-def]
    return open_services(_config(redis_url), start_hub=False,
                         registry=ChannelRegistry(extra={"fake": FakeSender}, use_entry_points=False))


def _config(redis_url: str, **settings: Any):  # type: ignore[no-untyped-def]
    return load_config(env={}, overrides={
        "redis_url": redis_url, "flows_dir": str(FIXTURES), "admin_token": "t",
        "automations_dir": str(NO_AUTOMATIONS),
        "accounts": {"acme": {"channel": "fake", "greeting_bot": "notify",
                              "settings": {"chat_interval": 0, "rate": 1000, **settings}}}})


async def _start(svc: Services, chat: str) -> str:
    cid = f"fake:acme:{chat}"
    await svc.conversations.deliver(cid, ev.InboundMessage(text="hi", greeting="notify"),
                                    meta={"channel": "fake", "account": "acme", "external_id": chat})
    return cid


async def _drain(svc: Services, rounds: int = 20) -> None:
    await svc.outbox.idle()  # what the saves sent at once (retries and the rest: the poll's)
    for _ in range(rounds):
        if not await svc.outbox.run_once():
            return


async def test_messages_leave_in_order_through_the_outbox(redis: Redis, redis_url: str) -> None:
    async with _services(redis_url) as svc:
        sender = svc.senders["acme"]
        await _start(svc, "c1")
        await _start(svc, "c2")
        await _drain(svc)
        assert [t for c, t in sender.sent if c == "c1"] == ["first", "second", "third"]
        assert [t for c, t in sender.sent if c == "c2"] == ["first", "second", "third"]
        assert await svc.outbox.depth("acme") == 0


async def test_a_temporary_failure_is_retried_with_backoff_and_nothing_is_lost(redis: Redis, redis_url: str) -> None:
    async with _services(redis_url) as svc:
        sender = svc.senders["acme"]
        sender.fail["second"] = [DeliveryTemporary("429", retry_after=0), DeliveryTemporary("503")]
        svc.outbox.backoff = lambda attempts: 0.0  # type: ignore[method-assign]
        cid = await _start(svc, "c1")
        await _drain(svc)
        assert [t for _, t in sender.sent] == ["first", "second", "third"]
        state = codec.decode_state(await svc.store.state(cid))  # type: ignore[arg-type]
        assert state.run.step == "three" and state.run.status == "waiting"


async def test_a_rejected_message_takes_the_steps_failed_branch(redis: Redis, redis_url: str) -> None:
    async with _services(redis_url) as svc:
        sender = svc.senders["acme"]
        sender.fail["second"] = [DeliveryRejected("user blocked the bot")]
        cid = await _start(svc, "c1")
        await _drain(svc)
        state = codec.decode_state(await svc.store.state(cid))  # type: ignore[arg-type]
        assert state.run.step == "on_failed"
        transcript = [codec.unpack(b) for _, b in await svc.store.read_log(cid)]
        expected = {"role": "internal", "text": "could not deliver: the customer blocked us"}
        assert expected.items() <= transcript[-2].items()
        assert transcript[-1]["event"] == "run_end"  # the run's mark after its last step (bot/runtime/marks.py)


async def test_giving_up_after_max_attempts(redis: Redis, redis_url: str) -> None:
    async with _services(redis_url) as svc:
        sender = svc.senders["acme"]
        sender.fail["second"] = [DeliveryTemporary("down")] * 20
        svc.outbox.backoff = lambda attempts: 0.0  # type: ignore[method-assign]
        svc.outbox.max_attempts = 3
        cid = await _start(svc, "c1")
        await _drain(svc, 50)
        state = codec.decode_state(await svc.store.state(cid))  # type: ignore[arg-type]
        assert state.run.step == "on_failed"
        assert [t for _, t in sender.sent] == ["first", "third"]


async def test_a_sender_without_limits_of_its_own_is_limited_by_the_outbox_across_processes(
        redis: Redis, redis_url: str) -> None:
    """``FakeSender`` has no ``use_limiter``: the outbox takes the account's shared limit per send."""
    registry = ChannelRegistry(extra={"fake": FakeSender}, use_entry_points=False)
    config = _config(redis_url, rate=0.5, burst=2)  # two at once, then one every 2.3 s
    chats = ["c1", "c2", "c3", "c4"]
    async with (open_services(config, start_hub=False, registry=registry) as one,
                open_services(config, start_hub=False, registry=registry) as two):  # two processes
        one.outbox.at_once = two.outbox.at_once = False  # the poll's path (at once: the same limit)
        cids = [await _start(one, chat) for chat in chats]
        assert await one.outbox.run_once() == 2  # the burst; the other two chats are put back for later
        await redis.zadd(k.outbox_queue_key("acme"), dict.fromkeys(cids, 0))  # due again at once
        assert await two.outbox.run_once() == 0  # the other process finds the account's limit spent
        sent = one.senders["acme"].sent + two.senders["acme"].sent  # type: ignore[attr-defined]
        assert len(sent) == 2
        heads = [codec.unpack(await redis.lindex(k.ConversationKey(cid).out, 0)) for cid in cids]
        assert [head["attempts"] for head in heads] == [0, 0, 0, 0]  # waiting for the limit is not a failed attempt
