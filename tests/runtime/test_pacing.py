"""Background jobs give way to conversations: a queue processor counts its batches in flight
(``Activity``), and the ``Pacer`` holds a job's next step while any is."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.config import ConfigError, load_config
from bot.runtime.pacing import Activity, Pacer
from bot.runtime.queueloop import QueueProcessor
from bot.store.conversations import Batch, ConversationStore, SaveRequest
from tests.waiting import wait_for


class _Held(QueueProcessor[None]):
    """A processor whose batches wait for ``release`` (a slow conversation turn)."""

    def __init__(self, store: ConversationStore) -> None:
        super().__init__(store)
        self.release = asyncio.Event()
        self.started = 0

    async def _process_batch(self, batch: Batch, prefetched: None = None) -> int:
        self.started += 1
        await self.release.wait()
        return (await self.store.save(batch.cid, batch.token, SaveRequest(state=None,
                                                                          processed=len(batch.events)))).status


@pytest.fixture
async def store(redis: Redis) -> AsyncIterator[ConversationStore]:
    made = ConversationStore(redis)
    try:
        yield made
    finally:
        await made.close()


async def test_a_batch_in_flight_holds_a_paced_job_until_it_is_saved(store: ConversationStore) -> None:
    processor = _Held(store)
    pushed = await processor.store.push("c1", b"event")
    assert pushed.batch is not None and not processor.activity.busy
    turn = asyncio.create_task(processor.process(pushed.batch))
    await wait_for(lambda: processor.started == 1, what="the batch to start")
    assert processor.activity.busy
    pacer = Pacer(processor.activity, max_wait=60)
    steps = 0

    async def job() -> None:
        nonlocal steps
        for _ in range(3):
            await pacer.step()
            steps += 1

    running = asyncio.create_task(job())
    await wait_for(lambda: pacer.paused == 1, what="the job to give way")
    assert steps == 0
    processor.release.set()
    assert await turn is True
    await running
    assert steps == 3 and pacer.paused == 1 and not processor.activity.busy


async def test_a_failed_batch_leaves_the_activity_idle(store: ConversationStore) -> None:
    class _Fails(QueueProcessor[None]):
        async def _process_batch(self, batch: Batch, prefetched: None = None) -> int:
            raise ValueError("a bug in a turn")

    processor = _Fails(store)
    pushed = await processor.store.push("c2", b"event")
    assert await processor.process(pushed.batch) is False
    assert not processor.activity.busy


async def test_nested_activity_is_idle_only_when_all_are_done() -> None:
    activity = Activity()
    with activity.track():
        with activity.track():
            assert activity.busy
        assert activity.busy
    assert not activity.busy
    await asyncio.wait_for(activity.idle(), timeout=5)


def test_apply_rate_is_read_from_the_automations_table(tmp_path: Path) -> None:
    toml = tmp_path / "salesbot.toml"
    toml.write_text("[automations]\napply_rate = 250\n", encoding="utf-8")
    assert load_config(toml, env={}).automations.apply_rate == 250
    assert load_config(env={}).automations.apply_rate == 0  # no ceiling
    toml.write_text("[automations]\napply_rate = -1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"automations\.apply_rate"):
        load_config(toml, env={})
