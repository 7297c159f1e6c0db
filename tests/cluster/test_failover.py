"""A primary killed (SIGKILL) while messages flow: none lost, none doubled, each conversation in order.

Its own cluster (the session's stays whole for the other tests), with append-only files
fsynced at every write. Senders act as a platform does: a message the server could not take
(the node was down, its slots moving) is sent again, with the same id, until it is taken. A
worker's recovery takes over the conversations whose turn a failure cut short. The counts come
from the transcripts.

Two ways back: the replica promoted (``CLUSTER FAILOVER TAKEOVER`` on it, right after the
kill; the old primary then rejoins as its replica), and the primary back (restarted on its
append-only file while its replica is told not to fail over).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from bot.config import load_config
from bot.engine import events as ev
from bot.errors import SalesbotError
from bot.runtime.worker import Worker
from bot.server.services import Services, open_services
from bot.store import codec
from bot.store.keys import EVENTS_CHANNEL
from tests.cluster.launcher import Cluster, Node
from tests.server.conftest import NO_AUTOMATIONS
from tests.waiting import wait_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CONVERSATIONS = 24  # their hash tags spread over every primary
MESSAGES = 12


@pytest.fixture(scope="module")
def cluster() -> AsyncIterator[Cluster]:
    running = Cluster.start(aof=True)
    try:
        yield running  # type: ignore[misc]
    finally:
        running.stop()


def _msg(text: str) -> ev.InboundMessage:
    return ev.InboundMessage(text=text, message_id=text, greeting="recorder")


async def _send_all(svc: Services, cids: list[str], sent: Callable[[], None]) -> int:
    """Every message of every conversation, each conversation's in order; a message refused
    (the store unreachable) is sent again with the same id. Returns how many sends failed."""
    failures = 0

    async def conversation(cid: str) -> None:
        nonlocal failures
        for i in range(MESSAGES):
            text = f"{cid}#{i}"
            while True:
                try:
                    await svc.conversations.deliver(cid, _msg(text), dedupe_id=text,
                                                    meta={"channel": "test", "account": "acct"})
                    break
                except (RedisError, SalesbotError, OSError):
                    failures += 1
                    await asyncio.sleep(0.05)  # a platform's redelivery delay, not a synchronisation
            sent()

    await asyncio.gather(*(conversation(cid) for cid in cids))
    return failures


async def _transcript(svc: Services, cid: str) -> list[dict]:  # type: ignore[type-arg]
    return [codec.unpack(b) for _, b in await svc.store.read_log(cid, 0, 10_000)]


async def _flow_through(cluster: Cluster, name: str, outage: Callable[[Node], Awaitable[None]]) -> int:
    cfg = load_config(env={}, overrides={"redis_url": cluster.url, "redis_cluster": True, "flows_dir": str(FIXTURES),
                                         "automations_dir": str(NO_AUTOMATIONS), "admin_token": "t",
                                         "lock_ttl": 1.0})
    cids = [f"test:acct:{name}{i}" for i in range(CONVERSATIONS)]
    victim = cluster.primary_of(EVENTS_CHANNEL)  # the node the live hub subscribes on, too
    count = 0

    def sent() -> None:
        nonlocal count
        count += 1

    async with open_services(cfg, start_hub=False) as svc, svc.hub.watch_all() as changed:
        worker = Worker(svc)
        sending = asyncio.create_task(_send_all(svc, cids, sent))
        await wait_for(lambda: count >= CONVERSATIONS * 2, 30, what="the first messages to be taken")
        await outage(victim)
        failures = await sending
        assert count == CONVERSATIONS * MESSAGES

        async def finished() -> bool:
            try:
                for cid in cids:
                    transcript = await _transcript(svc, cid)
                    if sum(1 for e in transcript if e["role"] == "bot") < MESSAGES:
                        return False
            except RedisError:  # a connection the outage closed: the next look opens another
                return False
            return True

        async def recover() -> bool:
            try:
                return bool(await worker.recover())
            except (RedisError, SalesbotError):
                return False

        await wait_for(finished, 60, what="every conversation answered", between=recover)
        for cid in cids:
            transcript = await _transcript(svc, cid)
            users = [e["text"] for e in transcript if e["role"] == "user"]
            bots = [e["text"] for e in transcript if e["role"] == "bot"]
            assert users == [f"{cid}#{i}" for i in range(MESSAGES)], cid  # none lost, none doubled, in order
            assert bots == [f"got {n}" for n in range(1, MESSAGES + 1)], cid

        # The live hub subscribed again: a conversation's change reaches its watchers.
        later = f"test:acct:{name}-after"
        sent_after = 0

        async def say_again() -> bool:
            nonlocal sent_after
            sent_after += 1
            with contextlib.suppress(RedisError, SalesbotError):
                await svc.conversations.deliver(later, _msg(f"{later}#{sent_after}"), dedupe_id=f"{later}#{sent_after}",
                                                meta={"channel": "test", "account": "acct"})
            return False

        def heard() -> bool:
            while not changed.empty():
                if changed.get_nowait()[0] == later:
                    return True
            return False

        await wait_for(heard, 15, what="the live hub to hear a change after the outage", between=say_again)
    return failures


async def test_a_primary_killed_and_its_replica_promoted_loses_and_doubles_no_message(cluster: Cluster) -> None:
    async def promote(victim: Node) -> None:
        replica = cluster.replica_of(victim)
        assert replica is not None
        victim.kill()
        assert replica.cli("cluster", "failover", "takeover").strip() == "OK"
        await asyncio.to_thread(wait_for_role, replica, "master")
        victim.start()  # back as the new primary's replica
        await asyncio.to_thread(cluster.wait_healthy)

    failures = await _flow_through(cluster, "promoted", promote)
    assert failures > 0  # the outage was felt: messages were refused and sent again


async def test_a_primary_killed_and_restarted_on_its_append_only_file_loses_and_doubles_no_message(
        cluster: Cluster) -> None:
    async def restart(victim: Node) -> None:
        replica = cluster.replica_of(victim)
        assert replica is not None
        replica.cli("config", "set", "cluster-replica-no-failover", "yes")
        try:
            victim.kill()
            victim.start()  # the same port, its nodes.conf and append-only file
            await asyncio.to_thread(cluster.wait_healthy)
            assert victim.role() == "master"
        finally:
            replica.cli("config", "set", "cluster-replica-no-failover", "no")

    failures = await _flow_through(cluster, "restarted", restart)
    assert failures > 0


def wait_for_role(node: Node, role: str, timeout: float = 30) -> None:
    Cluster._wait(lambda: node.role() == role, timeout, f"node {node.port} to become {role}")
