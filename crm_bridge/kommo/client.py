"""HTTP to one Kommo account: bearer token, the 7 requests/second limit, the breaker, typed errors, paging.

Separate from the backend so what a command *means* (``backend.py``) is not mixed with how a
request travels. Kommo's long-lived token never expires, so there is no refresh; no request is
retried here either: a temporary error goes back to the CRM outbox, which retries with a backoff.
Errors are typed by ``crm_bridge._http.error_for``: 429 → ``CrmRateLimited``; 401/402/403 and
5xx/timeouts/refused connections → ``CrmUnavailable``; 400/404/422 → ``CrmRejected`` with
Kommo's validation messages.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp

from bot.errors import CrmRejected

from .._http import Breaker, SessionHolder, error_for, parse_body, unreachable
from .records import Record

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
#: Query parameters of a request (repeated keys allowed: ``filter[id][]``).
Params = Iterable[tuple[str, object]]


class RateLimiter:
    """At most ``rate`` requests in any window of ``per`` (+ ``margin``) seconds. The margin
    (150 ms) covers the delay between sending and Kommo's clock: with 50 ms, a busy machine's late
    first request and a prompt eighth could still land in one of Kommo's seconds.

    A token bucket whose tokens come back one window after they were spent: unlike a bucket
    refilled continuously, it never lets a burst and its refill land in the same second, which
    is how Kommo counts. ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(self, rate: int = 7, per: float = 1.0, *, margin: float = 0.15,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        if rate < 1:
            raise ValueError("rate must be at least 1 request per window")
        self.rate, self.window = int(rate), per + margin
        self.clock, self.sleep = clock, sleep
        self._sent: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = self.clock()
            while self._sent and now - self._sent[0] >= self.window:
                self._sent.popleft()
            if len(self._sent) >= self.rate:
                wait = self._sent[0] + self.window - now
                if wait > 0:
                    await self.sleep(wait)
                    now = self.clock()
                self._sent.popleft()
            self._sent.append(now)


class KommoClient(SessionHolder):
    """Requests to Kommo's REST API v4 of one account, rate limited and failing fast when it is down."""

    def __init__(self, base_url: str, token: str, *, session: aiohttp.ClientSession | None = None,
                 rate: int = 7, timeout: float = 10.0, limiter: RateLimiter | None = None,
                 cooldown: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._session = session
        self._own_session = session is None
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.limiter = limiter or RateLimiter(rate)
        self.breaker = Breaker(cooldown)

    async def request(self, method: str, path: str, *, params: Params | None = None, json: object = None) -> Any:
        """One API call (rate limited); the decoded JSON answer, or None for 204 No Content."""
        what = f"{method} {path}"
        self.breaker.check("kommo", what)
        await self.limiter.acquire()
        query = [(k, str(v)) for k, v in (params or [])]
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        try:
            async with self._http().request(method, self.base_url + path, params=query, json=json,
                                            headers=headers, timeout=self.timeout) as resp:
                status, text = resp.status, await resp.text()
                answer_headers = dict(resp.headers)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            failure = unreachable(f"kommo: {what}: {type(exc).__name__}: {exc}")
            self.breaker.record(failure)
            raise failure from None
        if 200 <= status < 300:
            self.breaker.record(None)
            return None if status == 204 else parse_body(text)
        error = error_for("kommo", status, answer_headers, text, what)
        self.breaker.record(error)
        raise error

    async def get(self, path: str, params: Params | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def get_all(self, path: str, key: str, params: Params = ()) -> list[Record]:
        """Every page of a collection (``_links.next`` until absent or 204)."""
        out: list[Record] = []
        for page in range(1, 101):
            data = await self.get(path, [*params, ("page", page), ("limit", 250)])
            items = ((data or {}).get("_embedded") or {}).get(key) or []
            out.extend(items)
            if not items or not ((data or {}).get("_links") or {}).get("next"):
                break
        return out

    async def get_one(self, path: str, params: Params = ()) -> Record:
        """One record; a 204 (Kommo's "nothing") is ``CrmRejected``."""
        data = await self.get(path, params)
        if not data:
            raise CrmRejected(f"kommo: GET {path}: not found")
        return dict(data)
