"""The webhook bench's load generator: live chat traffic, open-loop rate steps (latency from the
schedule: no coordinated omission), closed-loop probes and the search for the highest passing rate."""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from webhook_procs import CpuMeter

P99_LIMIT = 0.050  # seconds
ACCOUNT = "demo"
TEXTS = ("hello there, I have a question", "do you deliver to Ankara?", "how much is the blue sofa?",
         "ok thanks", "is anyone there?")
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
#: What a message is to the server: a new session's first, a follow-up, or one sent again.
KINDS = ("first", "follow_up", "duplicate")
FIRST_SHARE = 0.20
DUPLICATE_SHARE = 0.02


class Traffic:
    """Request bodies: a session of a fixed-size pool, a unique ``client_msg_id`` each.

    With ``first_share`` a message is, at that probability, the first of a new session (which
    then takes a random pool slot, so it gets follow-ups too); with ``duplicate_share`` it is an
    earlier message sent again (same session, same ``client_msg_id``: a widget's retry). The rest
    are follow-ups of the pool's sessions. ``kinds`` counts what ``body()`` made."""

    def __init__(self, sessions: int, seed: int, tag: str, *, first_share: float = 0.0,
                 duplicate_share: float = 0.0) -> None:
        rnd = random.Random(seed)
        self.sessions = [self._session_id(rnd) for _ in range(sessions)]
        self.rnd = rnd
        self.tag = tag
        self.n = 0
        self.first_share = first_share
        self.duplicate_share = duplicate_share
        self.recent: collections.deque[bytes] = collections.deque(maxlen=256)
        self.kinds = dict.fromkeys(KINDS, 0)

    @staticmethod
    def _session_id(rnd: random.Random) -> str:
        return "".join(rnd.choice(_ALPHABET) for _ in range(16))

    def _doc(self, session: str) -> bytes:
        self.n += 1
        doc = {"session": session, "text": TEXTS[self.n % len(TEXTS)], "client_msg_id": f"{self.tag}-{self.n}"}
        body = json.dumps(doc).encode()
        self.recent.append(body)
        return body

    def first(self) -> bytes:
        """The first message of a new session (it replaces a random session of the pool)."""
        session = self._session_id(self.rnd)
        if self.sessions:
            self.sessions[self.rnd.randrange(len(self.sessions))] = session
        self.kinds["first"] += 1
        return self._doc(session)

    def follow_up(self, session: str | None = None) -> bytes:
        self.kinds["follow_up"] += 1
        return self._doc(session or self.rnd.choice(self.sessions))

    def duplicate(self) -> bytes:
        """An earlier message again: the oldest one remembered (most likely answered by now)."""
        if not self.recent:
            return self.follow_up()
        self.kinds["duplicate"] += 1
        return self.recent[0]

    def body(self, session: str | None = None) -> bytes:
        """The next message of the mix (``session``: a follow-up, or the first, of that session)."""
        if session is None:
            draw = self.rnd.random()
            if draw < self.duplicate_share and self.recent:
                return self.duplicate()
            if draw < self.duplicate_share + self.first_share:
                return self.first()
        return self.follow_up(session)


HEADERS = {"Content-Type": "application/json"}


@dataclass
class Step:
    rate: float
    duration: float
    scheduled: int = 0
    ok: int = 0
    errors: int = 0
    late: int = 0
    aborted: bool = False
    achieved: float = 0.0
    p50_ms: float = math.inf
    p90_ms: float = math.inf
    p99_ms: float = math.inf
    max_ms: float = math.inf
    send_lag_p99_ms: float = 0.0
    cpu_us_per_msg: float = 0.0
    redis_cpu_us_per_msg: float = 0.0
    loadgen_cpu_us_per_msg: float = 0.0
    others_cores: float = 0.0  # CPU cores busy with processes outside the bench, on average

    @property
    def passed(self) -> bool:
        return (not self.aborted and self.errors == 0 and self.ok == self.scheduled
                and self.p99_ms < P99_LIMIT * 1000)

    def line(self) -> str:
        verdict = "pass" if self.passed else ("cut" if self.aborted else "fail")
        return (f"  {self.rate:8.0f}/s  achieved {self.achieved:8.0f}/s  p50 {self.p50_ms:7.1f}  "
                f"p99 {self.p99_ms:7.1f} ms  errors {self.errors}  other load {self.others_cores:.2f} cores  {verdict}")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.inf
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


async def post(session: Any, url: str, body: bytes) -> bool:
    try:
        async with session.post(url, data=body, headers=HEADERS) as resp:
            await resp.read()
            return resp.status == 202
    except Exception:
        return False


async def open_loop_step(session: Any, url: str, traffic: Traffic, rate: float, duration: float,
                         pids: tuple[int | None, int | None]) -> Step:
    """Offer ``rate`` requests/s for ``duration`` s on a fixed schedule; latency from the schedule."""
    loop = asyncio.get_running_loop()
    step = Step(rate=rate, duration=duration)
    total = max(1, int(rate * duration))
    latencies: list[float] = []
    lags: list[float] = []
    tasks: set[asyncio.Task[None]] = set()
    late_cap = max(3, int(total * 0.01))
    counts = {"late": 0, "errors": 0, "last_done": 0.0}

    async def one(scheduled: float, body: bytes) -> None:
        lags.append(loop.time() - scheduled)
        ok = await post(session, url, body)
        done = loop.time()
        counts["last_done"] = max(counts["last_done"], done)
        if ok:
            latencies.append(done - scheduled)
            if done - scheduled >= P99_LIMIT:
                counts["late"] += 1
        else:
            counts["errors"] += 1
            counts["late"] += 1

    # The load generator's own garbage collections (tens of ms with every request's latency
    # kept) would be charged to whichever server is measured: none during a step.
    gc.collect()
    gc.disable()
    meter = CpuMeter(*pids)
    t0 = loop.time() + 0.01
    i = 0
    while i < total:
        now = loop.time()
        due = min(total, int((now - t0) * rate) + 1) if now >= t0 else 0
        while i < due:
            task = asyncio.create_task(one(t0 + i / rate, traffic.body()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if counts["late"] > late_cap or len(tasks) > rate * 0.5 + 100:
            step.aborted = True
            break
        if i < total:
            await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
    step.scheduled = i
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=15)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
    cpu = meter.stop()
    gc.enable()
    step.ok = len(latencies)
    step.errors = step.scheduled - step.ok  # failed, timed out, or cancelled after a cut
    step.late = counts["late"]
    elapsed = max(1e-9, (counts["last_done"] or loop.time()) - t0)
    step.achieved = step.ok / elapsed
    # Requests never completed count as infinitely late.
    lat = sorted(latencies) + [math.inf] * (step.scheduled - step.ok)
    step.p50_ms, step.p90_ms, step.p99_ms = (percentile(lat, q) * 1000 for q in (0.50, 0.90, 0.99))
    step.max_ms = lat[-1] * 1000 if lat else math.inf
    step.send_lag_p99_ms = percentile(sorted(lags), 0.99) * 1000
    if step.ok:
        step.cpu_us_per_msg = cpu["server"] / step.ok * 1e6
        step.redis_cpu_us_per_msg = cpu["redis"] / step.ok * 1e6
        step.loadgen_cpu_us_per_msg = cpu["loadgen"] / step.ok * 1e6
    step.others_cores = cpu["others"] / max(1e-9, cpu["wall"])
    if step.aborted:
        step.p99_ms = max(step.p99_ms, P99_LIMIT * 1000)
    return step


async def closed_loop(session: Any, url: str, bodies: Iterator[bytes] | None, traffic: Traffic,
                      seconds: float | None, concurrency: int, count: int | None = None) -> tuple[int, int, float]:
    """``concurrency`` workers back to back for ``seconds`` or ``count`` messages: (ok, errors, s)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    stats = {"ok": 0, "errors": 0, "left": count if count is not None else -1}

    async def worker() -> None:
        while True:
            if seconds is not None and loop.time() - t0 >= seconds:
                return
            if count is not None:
                if stats["left"] <= 0:
                    return
                stats["left"] -= 1
            body = next(bodies, None) if bodies is not None else traffic.body()
            if body is None:
                return
            if await post(session, url, body):
                stats["ok"] += 1
            else:
                stats["errors"] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stats["ok"], stats["errors"], loop.time() - t0


async def prime(session: Any, url: str, traffic: Traffic) -> int:
    """One message per session (first contact: CRM identity, new conversation), 8 in flight."""
    bodies = iter([traffic.body(s) for s in traffic.sessions])
    _ok, errors, _ = await closed_loop(session, url, bodies, traffic, None, 8)
    return errors


class Searcher:
    """The step search of one server: bracket (x1.2 up / x0.7 down from 0.6 x probe), then bisect."""

    def __init__(self, probe_rate: float, bisect: int) -> None:
        self.rate = float(max(20, round(probe_rate * 0.6)))
        self.lo, self.hi = 0.0, math.inf
        self.bisect_left = bisect
        self.bisecting = False
        self.done = False
        self.steps: list[Step] = []

    @property
    def best(self) -> Step | None:
        passed = [st for st in self.steps if st.passed]
        return max(passed, key=lambda st: st.rate) if passed else None

    def record(self, step: Step) -> None:
        self.steps.append(step)
        if not self.bisecting:
            if step.passed:
                self.lo = step.rate
                self.bisecting = self.hi < math.inf
                self.rate = float(round(step.rate * 1.2))
            else:
                self.hi = step.rate
                self.bisecting = self.lo > 0
                self.rate = float(round(step.rate * 0.7))
                if not self.bisecting and self.rate < 10:
                    self.done = True
                    return
        else:
            if step.passed:
                self.lo = step.rate
            else:
                self.hi = step.rate
            self.bisect_left -= 1
        if self.bisecting:
            if self.bisect_left <= 0 or self.hi - self.lo < max(5.0, self.lo * 0.02):
                self.done = True
            else:
                self.rate = float(round((self.lo + self.hi) / 2))
