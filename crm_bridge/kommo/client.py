"""HTTP to one Kommo account: bearer token, the 7 requests/second limit, the breaker, typed errors, paging.

The limit is the account's, kept once for every process (web and workers) through the shared
limiter in Redis (``bot.store.ratelimit``): ``rate`` requests spread over 1.15 s (the 150 ms are
room for a request that reaches Kommo late). Without a shared limiter (a client used on its
own) it is kept in this process only.

Separate from the backend so what a command *means* (``backend.py``) is not mixed with how a
request travels. Kommo's long-lived token never expires, so there is no refresh; no request is
retried here either: a temporary error goes back to the CRM outbox, which retries with a backoff.
Errors are typed by ``crm_bridge._http.error_for``: 429 → ``CrmRateLimited``; 401/402/403 and
5xx/timeouts/refused connections → ``CrmUnavailable``; 400/404/422 → ``CrmRejected`` with
Kommo's validation messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bot.errors import CrmRateLimited, CrmRejected, CrmUnavailable
from bot.store.ratelimit import Limit, LimiterUnavailable, LimitWait, LocalLimiter, SharedLimiter

from .._http import Breaker, SessionHolder, error_for, parse_body, unreachable
from .records import Record

#: Query parameters of a request (repeated keys allowed: ``filter[id][]``).
Params = Iterable[tuple[str, object]]


#: The longest a request waits for its turn under the account's limit before it fails with
#: ``CrmRateLimited`` (the CRM outbox retries it then).
MAX_WAIT = 30.0


class KommoClient(SessionHolder):
    """Requests to Kommo's REST API v4 of one account, rate limited and failing fast when it is down."""

    def __init__(self, base_url: str, token: str, *, session: aiohttp.ClientSession | None = None,
                 rate: int = 7, timeout: float = 10.0, limiter: SharedLimiter | None = None,
                 cooldown: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._session = session
        self._own_session = session is None
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        if rate < 1:
            raise ValueError("rate must be at least 1 request per second")
        self.limiter: SharedLimiter = limiter or LocalLimiter()
        self.limit = Limit(f"kommo:{urlsplit(self.base_url).hostname or self.base_url}", float(rate))
        self.breaker = Breaker(cooldown)

    async def request(self, method: str, path: str, *, params: Params | None = None, json: object = None) -> Any:
        """One API call (rate limited); the decoded JSON answer, or None for 204 No Content."""
        what = f"{method} {path}"
        self.breaker.check("kommo", what)
        try:
            await self.limiter.acquire(self.limit, max_wait=MAX_WAIT)
        except LimitWait as exc:
            raise CrmRateLimited(f"kommo: {what}: {exc}", retry_after=exc.retry_after) from None
        except LimiterUnavailable as exc:
            raise CrmUnavailable(f"kommo: {what}: {exc}") from None
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
        if isinstance(error, CrmRateLimited):  # every process backs off, not only this one
            with contextlib.suppress(LimiterUnavailable):
                await self.limiter.hold(self.limit, error.retry_after)
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
