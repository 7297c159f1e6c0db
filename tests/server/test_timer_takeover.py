"""A worker killed (SIGKILL) while it holds timer claims: another worker takes them over by
liveness (the claim TTL is ten minutes here, so only the heartbeat path can return them) and
fires each exactly once, at its due time."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bot.engine import events as ev
from bot.server.services import open_services
from bot.store import codec
from bot.store import keys as k
from tests import transcripts
from tests.procs import salesbot
from tests.server.conftest import REMINDER, make_config, nudge_flow
from tests.waiting import wait_for

FLOW = nudge_flow("20s")
CHATS = 12


async def _worker_claims(redis: Redis, pid: int) -> set[bytes]:
    """The timer ids a worker process holds (its registry name is ``<host>-<pid>-<random>``)."""
    names = [n.decode() for n in await redis.zrange(k.timer_workers_key(), 0, -1)]
    mine = [n for n in names if n.split("-")[-2:-1] == [str(pid)]]
    held: set[bytes] = set()
    for name in mine:
        for shard in range(16):
            held |= set(await redis.zrange(k.timer_worker_claims_key(shard, name), 0, -1))
    return held


async def _reminders(redis: Redis, cid: str) -> list[dict[str, Any]]:
    rows = await transcripts.blobs(redis, cid)
    entries = [codec.unpack(raw) for raw in rows]
    return [e for e in entries if e.get("text") == REMINDER]


async def test_a_killed_workers_claims_are_taken_over_by_liveness_and_fired_once(
        tmp_path: Path, redis: Redis, redis_url: str) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "nudge.json").write_text(json.dumps(FLOW))
    cids = [f"livechat:demo:takeover-{i:02d}" for i in range(CHATS)]
    async with open_services(make_config(redis_url, flows), start_hub=False) as svc:  # type: ignore[arg-type]
        for cid in cids:  # each waits with a 20 s no-answer timer
            await svc.conversations.deliver(cid, ev.InboundMessage(text="hi", greeting="nudge"),
                                            meta={"channel": "livechat", "account": "demo"})
        timers = {m for s in range(16) for b in range(k.TIMER_BUCKETS)
                  for m in await redis.zrange(k.timer_bucket_key(s, b), 0, -1)}
    assert len(timers) == CHATS
    env = {"SALESBOT_REDIS_URL": redis_url, "SALESBOT_ADMIN_TOKEN": "t", "SALESBOT_FLOWS_DIR": str(flows),
           "SALESBOT_TIMER_CLAIM_TTL": "600"}  # the long path: ten minutes, longer than any wait here
    # Worker A looks a minute ahead: its first round claims every timer, to fire each when due.
    with salesbot(["worker"], tmp=tmp_path, env={**env, "SALESBOT_TIMER_POLL_INTERVAL": "60"}, name="a") as a:
        held = await wait_for(lambda: _held_all(redis, a.popen.pid, timers), 15, what="worker A to claim every timer")
        a.stop(signal.SIGKILL)
    assert held
    assert not any([await _reminders(redis, cid) for cid in cids])  # A fired none: it held them all
    with salesbot(["worker"], tmp=tmp_path, env={**env, "SALESBOT_TIMER_POLL_INTERVAL": "0.05"}, name="b") as b:
        async def all_reminded() -> bool:
            return all([await _reminders(redis, cid) for cid in cids])

        await wait_for(all_reminded, 60, what="worker B to fire the timers A held")
        async def acknowledged() -> bool:
            return not await _worker_claims(redis, b.popen.pid)

        await wait_for(acknowledged, 10, what="worker B to acknowledge them")
        log = b.output()
    assert "timer.claims_taken_over" in log  # by liveness: B's heartbeat found A silent
    for cid in cids:
        assert len(await _reminders(redis, cid)) == 1, cid  # exactly once
    assert await _worker_claims(redis, a.popen.pid) == set()
    assert await redis.zrange(k.timer_workers_key(), 0, -1) != []  # B is registered, A forgotten
    assert all(str(a.popen.pid) not in n.decode() for n in await redis.zrange(k.timer_workers_key(), 0, -1))


async def _held_all(redis: Redis, pid: int, timers: set[bytes]) -> bool:
    return await _worker_claims(redis, pid) == timers
