"""``Limiter``: at most ``limit`` bodies at once, the others in arrival order, no slot lost or
doubled by a cancellation (the worker's timer deliveries: bot/runtime/timerloop.py)."""

from __future__ import annotations

import asyncio
import random

import pytest

from bot.runtime.limiter import Limiter


async def test_at_most_limit_run_at_once_and_the_others_start_in_arrival_order() -> None:
    limiter = Limiter(3)
    gates = [asyncio.Event() for _ in range(10)]
    started: list[int] = []
    running = 0
    most = 0

    async def body(i: int) -> None:
        nonlocal running, most
        async with limiter:
            started.append(i)
            running += 1
            most = max(most, running)
            await gates[i].wait()
            running -= 1

    tasks = [asyncio.create_task(body(i)) for i in range(10)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert started == [0, 1, 2] and limiter.waiting == 7
    for i in (1, 0, 2, 3, 4, 5, 6, 7, 8, 9):  # each finish lets the oldest waiter in
        gates[i].set()
        for _ in range(5):
            await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert started == list(range(10)) and most == 3 and limiter.waiting == 0


async def test_a_waiter_cancelled_before_its_turn_takes_no_slot() -> None:
    limiter = Limiter(1)
    holder_done = asyncio.Event()
    order: list[str] = []

    async def body(name: str, until: asyncio.Event | None = None) -> None:
        async with limiter:
            order.append(name)
            if until is not None:
                await until.wait()

    holder = asyncio.create_task(body("holder", holder_done))
    await asyncio.sleep(0)
    gone = asyncio.create_task(body("gone"))
    last = asyncio.create_task(body("last"))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    holder_done.set()
    await asyncio.gather(holder, last)
    assert gone.cancelled() and order == ["holder", "last"]
    async with limiter:  # the slot came back: one may enter at once
        pass
    assert limiter.waiting == 0


async def test_a_waiter_cancelled_after_it_was_given_the_slot_passes_it_on() -> None:
    limiter = Limiter(1)
    entered: list[str] = []

    async def body(name: str) -> None:
        async with limiter:
            entered.append(name)

    await limiter.__aenter__()  # the slot held here
    handed = asyncio.create_task(body("handed"))
    after = asyncio.create_task(body("after"))
    await asyncio.sleep(0)
    assert limiter.waiting == 2
    await limiter.__aexit__(None, None, None)  # handed to "handed", whose task has not run yet
    handed.cancel()
    await asyncio.gather(after, handed, return_exceptions=True)
    assert handed.cancelled() and entered == ["after"]
    await asyncio.wait_for(body("again"), 1)  # one slot, free again
    assert entered == ["after", "again"] and limiter.waiting == 0


async def test_an_error_in_the_body_frees_its_slot() -> None:
    limiter = Limiter(1)
    with pytest.raises(RuntimeError):
        async with limiter:
            raise RuntimeError("boom")
    async with limiter:
        pass


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        Limiter(0)


@pytest.mark.parametrize("seed", range(200))
async def test_random_arrivals_errors_and_cancellations_never_exceed_the_limit_nor_lose_a_slot(seed: int) -> None:
    """Bodies arrive, fail and are cancelled (queued, just handed a slot, or inside) in a seeded
    random interleaving: never more than ``limit`` inside, and every slot free at the end."""
    rnd = random.Random(seed)
    limit = rnd.randint(1, 4)
    limiter = Limiter(limit)
    inside = most = 0

    async def body() -> None:
        nonlocal inside, most
        async with limiter:
            inside += 1
            most = max(most, inside)
            try:
                for _ in range(rnd.randint(0, 3)):
                    await asyncio.sleep(0)
                if rnd.random() < 0.2:
                    raise RuntimeError("a failed delivery")
            finally:
                inside -= 1

    tasks: list[asyncio.Task[None]] = []
    for _ in range(60):
        if rnd.random() < 0.5:
            tasks.append(asyncio.create_task(body()))
        elif tasks:
            rnd.choice(tasks).cancel()
        for _ in range(rnd.randint(0, 2)):
            await asyncio.sleep(0)
        assert inside <= limit
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)  # (a slot lost: stuck)
    assert most <= limit and inside == 0
    gate = asyncio.Event()
    holders = [asyncio.create_task(_hold(limiter, gate)) for _ in range(limit + 1)]
    await asyncio.sleep(0)
    assert limiter.waiting == 1  # every slot came back: ``limit`` entered at once, one more waits
    gate.set()
    await asyncio.wait_for(asyncio.gather(*holders), 1)


async def _hold(limiter: Limiter, gate: asyncio.Event) -> None:
    async with limiter:
        await gate.wait()
