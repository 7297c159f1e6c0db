"""The worker's periodic loops (bot/runtime/worker.py): a loop given an idle interval waits it
after a round that found nothing to do, and its short interval after one that did."""

from __future__ import annotations

import asyncio
import itertools

from bot.runtime.worker import Worker
from bot.server.services import open_services
from tests.server.conftest import make_config
from tests.waiting import wait_for


async def test_a_loop_waits_its_idle_interval_only_after_a_round_with_nothing_to_do(redis_url: str) -> None:
    async with open_services(make_config(redis_url), start_hub=False) as svc:  # type: ignore[arg-type]
        worker = Worker(svc)
        found = [1, 1, 0, 0, 1]  # what each round does
        calls: list[float] = []
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def body() -> int:
            calls.append(loop.time())
            if len(calls) == len(found):
                stop.set()
            return found[len(calls) - 1]

        worker.phase = 0.0  # its grid unshifted: ticks at whole seconds
        await asyncio.wait_for(worker._loop(stop, body, 0.01, "test", idle=1.0), 20)
        gaps = [b - a for a, b in itertools.pairwise(calls)]
        assert len(calls) == len(found)
        assert gaps[0] < 0.5 and gaps[1] < 0.5  # after work: the short interval (0.01 s)
        # after nothing: the idle one, on the clock's grid of 1 s (``ticks.py``): the round after
        # the first idle one waits until the next whole second, the one after it a whole second
        assert gaps[3] >= 0.99, gaps  # (the clock's rounding)
        assert abs(calls[3] - round(calls[3])) < 0.02 and abs(calls[4] - round(calls[4])) < 0.02, calls


async def test_loops_of_one_interval_wake_together_on_the_clocks_grid() -> None:
    """A wake-up costs more CPU than an idle round: loops of one interval share theirs."""
    from bot.runtime.ticks import next_tick, wait_tick

    assert next_tick(12.3, 1.0) == 13.0 and next_tick(13.0, 1.0) == 14.0 and next_tick(0.26, 0.25) == 0.5
    assert next_tick(12.3, 1.0, 0.5) == 12.5 and next_tick(12.6, 1.0, 0.5) == 13.5  # a process's own phase
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    woke: list[float] = []

    async def one(delay: float) -> None:
        await asyncio.sleep(delay)  # started apart, as the worker's loops end their rounds apart
        await wait_tick(stop, 0.2)
        woke.append(loop.time())

    await wait_tick(stop, 0.2)  # just after a tick: all three start before the next one
    await asyncio.gather(one(0.0), one(0.03), one(0.07))
    assert max(woke) - min(woke) < 0.005, woke


async def test_an_idle_crm_outbox_retries_a_failed_command_after_its_backoff_not_a_second_later(
        redis_url: str) -> None:
    """``crm.retry_base`` may be under a second: a command that met a temporary failure is due
    again after it, and the idle outbox loop must not push its retry past it by up to a second."""
    from bot.errors import CrmUnavailable
    from crm_bridge import CrmRef
    from crm_bridge.outbox import CrmOutbox
    from tests.crm_bridge.test_outbox import ScriptedCrm

    async with open_services(make_config(redis_url), start_hub=False) as svc:  # type: ignore[arg-type]
        crm = ScriptedCrm()
        crm.failures.append(CrmUnavailable("down for a moment"))
        outbox = svc.crm_outbox = CrmOutbox(svc.redis, crm, base_delay=0.1)
        idle_rounds = 0
        run_once = outbox.run_once

        async def counted() -> int:
            nonlocal idle_rounds
            done = await run_once()
            idle_rounds += not done
            return done

        outbox.run_once = counted  # type: ignore[method-assign]
        worker = Worker(svc)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        running = asyncio.gather(*worker.crm_retries(stop))
        try:
            await wait_for(lambda: idle_rounds >= 2, 5, 0.01, what="two rounds with nothing to do")
            failed_at = loop.time()
            ref = CrmRef("c1", "l1")
            assert await svc.crm_outbox.submit(ref, {"do": "add_note", "text": "hi"}) is None  # queued
            await wait_for(lambda: len(crm.attempts) == 2, 5, 0.01, what="the retry")
            assert loop.time() - failed_at < 0.6  # due 0.1 s after the failure, looked at every 0.1 s
        finally:
            stop.set()
            await running


async def test_a_worker_with_no_channel_account_does_not_poll_the_outbox(redis_url: str) -> None:
    """The live chat's replies are in the transcript: with no channel account the outbox poll had
    nothing to do, ten times a second."""
    async with open_services(make_config(redis_url), start_hub=False) as svc:  # type: ignore[arg-type]
        assert not svc.outbox.sends
        polls = recoveries = 0
        run_once, recover = svc.outbox.run_once, None

        async def counted_poll() -> int:
            nonlocal polls
            polls += 1
            return await run_once()

        svc.outbox.run_once = counted_poll  # type: ignore[method-assign]
        worker = Worker(svc)
        recover = worker.recover

        async def counted_recovery() -> int:
            nonlocal recoveries
            recoveries += 1
            return await recover()

        worker.recover = counted_recovery  # type: ignore[method-assign]
        worker.poll = 0.01  # the recovery round every second, the outbox's every 0.01 s
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        try:
            await wait_for(lambda: recoveries >= 2, 10, 0.01, what="two recovery rounds")
        finally:
            stop.set()
            await running
        assert polls == 0
