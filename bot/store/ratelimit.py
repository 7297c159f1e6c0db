"""Outbound rate limits shared by every process: one GCRA script in Redis.

A platform counts an account's requests wherever they come from, so its limit is kept once, in
Redis, not per process. Each limit is one key (``sb:rl:{<name>}``, sub-limits such as a
Telegram chat share the hash tag, so one call touches one slot) holding the *theoretical arrival
time* (TAT) of the next request, in Redis's own clock (``TIME``: processes on other hosts agree).

GCRA with emission interval ``T = (1 + margin) / rate`` and tolerance ``(burst - 1) * T``: a
request may go at ``TAT - tolerance``; it then moves TAT to ``max(TAT, when) + T``. The script
*reserves*: it answers "go after N ms" and the caller sleeps N ms (one round trip, never a
poll). A wait beyond the caller's bound reserves nothing and raises ``LimitWait`` with the
delay, so an outbox reschedules the message instead of holding a worker. A caller that wakes
well after its turn (``LATE``) takes a new one instead of sending bunched with the next ones. The ``margin``
(150 ms a second by default) is jitter room: ``rate`` requests are spread over 1.15 s, so a
request that reaches the platform a little late never lands in one of its seconds with
``rate`` prompt ones.

A platform's 429 (``Retry-After``) is shared too: ``hold`` moves TAT so no process sends until
then. When Redis cannot be reached the limiter raises ``LimiterUnavailable``: nothing is sent
(the send path needs Redis anyway), the message stays queued and is retried — never a bypass
that could exceed the limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import SalesbotError
from .keys import PREFIX

#: Jitter room added to each second of a limit (see the module docstring).
MARGIN = 0.15
#: A request that would leave later than this after its reserved time (a busy event loop woke it
#: late, or the reply was slow) takes a new turn instead: sent late, it would reach the platform
#: bunched with the requests after it, eating into the margin. Tried this many times, then
#: ``LimitWait`` (a process that late cannot keep a limit).
LATE, LATE_TRIES = 0.1, 3

#: GCRA over KEYS (one slot). ARGV[1]: the longest wait (µs) the caller accepts; ARGV[2]: a hold
#: (µs, 0: none); then per key its emission interval and tolerance (µs). Returns {1, wait µs}
#: (reserved: go after the wait) or {0, wait µs} (over the bound: nothing reserved). With a hold,
#: every key's TAT moves to at least now + hold (+ tolerance) and the answer is {0, hold}.
GCRA = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local max_wait, hold = tonumber(ARGV[1]), tonumber(ARGV[2])
local tats, at = {}, now
for i, key in ipairs(KEYS) do
  local interval, tolerance = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if hold > 0 then
    tat = math.max(tat, now + hold + tolerance)
    redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
  else
    tats[i] = tat
    at = math.max(at, tat - tolerance)
  end
end
if hold > 0 then return {0, hold} end
local wait = at - now
if wait > max_wait then return {0, wait} end
for i, key in ipairs(KEYS) do
  local tat = math.max(tats[i], at) + tonumber(ARGV[1 + 2 * i])
  redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
return {1, wait}
"""


@runtime_checkable
class SharesLimits(Protocol):
    """A sender that keeps its account's limits itself, per API call, through the limiter it is
    given (the built-in channel adapters); the outbox limits each ``send`` of any other."""

    def use_limiter(self, limiter: SharedLimiter) -> None: ...


class LimitWait(SalesbotError):
    """The limit allows the next request only after ``retry_after`` seconds (beyond the bound)."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"rate limit {name}: next request in {retry_after:.2f}s")
        self.retry_after = retry_after


class LimiterUnavailable(SalesbotError):
    """The shared limiter (Redis) could not be reached: nothing may be sent now."""


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``burst`` requests at once and ``rate`` a second after that (over 1 + ``margin`` s)."""

    name: str  # what is limited: "telegram:shop", "telegram:shop:chat:42" (same first part, same slot)
    rate: float
    burst: int = 1
    margin: float = MARGIN
    interval: float = field(init=False)  # seconds between two requests at the sustained rate

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError(f"limit {self.name}: rate must be > 0 and burst >= 1")
        object.__setattr__(self, "interval", (1.0 + self.margin) / self.rate)

    @property
    def tolerance(self) -> float:
        return (self.burst - 1) * self.interval

    def key(self) -> str:
        account, _, rest = self.name.partition(":chat:")
        return f"{PREFIX}:rl:{{{account}}}" + (f":chat:{rest}" if rest else "")


class SharedLimiter(Protocol):
    async def acquire(self, *limits: Limit, max_wait: float) -> None:
        """Wait (an asyncio sleep, at most ``max_wait``) until every limit allows one request and
        take it; ``LimitWait`` when that is further away; ``LimiterUnavailable`` without Redis."""
        ...

    async def hold(self, limit: Limit, seconds: float) -> None:
        """The platform said "retry after ``seconds``": no process sends under ``limit`` until then."""
        ...


Sleep = Callable[[float], Awaitable[None]]


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


class RedisLimiter:
    """The ``SharedLimiter`` of a deployment: one ``GCRA`` call (one round trip) per request."""

    def __init__(self, redis: Redis, *, sleep: Sleep = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._script = redis.register_script(GCRA)
        self._sleep, self._clock = sleep, clock

    async def _call(self, limits: tuple[Limit, ...], max_wait: float, hold: float) -> tuple[bool, float]:
        if len({limit.key().partition("}")[0] for limit in limits}) != 1:
            raise ValueError("limits acquired together must share their first name part (one slot)")
        args: list[int] = [_us(max_wait), _us(hold)]
        for limit in limits:
            args += [_us(limit.interval), _us(limit.tolerance)]
        try:
            ok, wait = await self._script(keys=[limit.key() for limit in limits], args=args)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise LimiterUnavailable(f"the shared rate limiter is unreachable: {type(exc).__name__}") from exc
        return bool(ok), int(wait) / 1_000_000

    async def acquire(self, *limits: Limit, max_wait: float) -> None:
        for _ in range(LATE_TRIES):
            asked = self._clock()  # the reserved time is at least asked + wait
            ok, wait = await self._call(limits, max_wait, 0.0)
            if not ok:
                raise LimitWait(limits[0].name, wait)
            if wait > 0:
                await self._sleep(wait)
            if self._clock() - (asked + wait) <= LATE:
                return
        raise LimitWait(limits[0].name, LATE)

    async def hold(self, limit: Limit, seconds: float) -> None:
        if seconds > 0:
            await self._call((limit,), 0.0, seconds)


class LocalLimiter:
    """The same GCRA in this process only: for an adapter or client used without a deployment's
    Redis (tests, scripts). ``clock`` and ``sleep`` are injectable."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self.clock, self._sleep = clock, sleep
        self._tat: dict[str, float] = {}

    async def acquire(self, *limits: Limit, max_wait: float) -> None:
        now = self.clock()
        at = max([now, *(self._tat.get(x.name, 0.0) - x.tolerance for x in limits)])
        if at - now > max_wait:
            raise LimitWait(limits[0].name, at - now)
        for x in limits:
            self._tat[x.name] = max(self._tat.get(x.name, 0.0), at) + x.interval
        if len(self._tat) > 10_000:  # forget limits whose TAT has passed (an idle chat)
            self._tat = {name: tat for name, tat in self._tat.items() if tat > now}
        if at > now:
            await self._sleep(at - now)

    async def hold(self, limit: Limit, seconds: float) -> None:
        until = self.clock() + seconds + limit.tolerance
        self._tat[limit.name] = max(self._tat.get(limit.name, 0.0), until)
