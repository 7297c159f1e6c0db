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

        await asyncio.wait_for(worker._loop(stop, body, 0.01, "test", idle=1.0), 20)
        gaps = [b - a for a, b in itertools.pairwise(calls)]
        assert len(calls) == len(found)
        assert gaps[0] < 1.0 and gaps[1] < 1.0  # after work: the short interval (0.01 s)
        assert gaps[2] >= 0.99 and gaps[3] >= 0.99  # after nothing: the idle one (1 s; the clock's rounding)


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
