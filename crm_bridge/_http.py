"""How the HTTP backends (Kommo, generic webhook) turn an HTTP answer into a typed CRM error.

One mapping for both, documented in docs/crm.md ("Reliability"):

* 429 → ``CrmRateLimited`` with ``retry_after`` from the ``Retry-After`` header, else the body's
  ``retry_after``, else 1 s;
* 401, 402, 403 → ``CrmUnavailable``: the credentials, the plan or an IP block (Kommo answers
  403 to every request of an address that kept exceeding its rate) are fixed by an operator or
  by time, never by changing the command — so the command waits in the outbox instead of being
  dropped, and the error is logged loudly;
* 408, 5xx, a timeout or a refused connection → ``CrmUnavailable``;
* any other 4xx (400 and 422 validation errors, 404, 409) → ``CrmRejected`` carrying the CRM's
  own message.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from bot.errors import CrmError, CrmRateLimited, CrmRejected, CrmUnavailable

log = logging.getLogger("salesbot.crm")

#: Statuses that mean "try again later", never "this command is wrong".
AUTH_STATUSES = frozenset({401, 402, 403})
DEFAULT_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 3600.0


def parse_body(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def retry_after_of(headers: Mapping[str, str], body: Any) -> float:
    """Seconds to wait: ``Retry-After`` (seconds), else the body's ``retry_after``, else 1 s."""
    candidates: list[Any] = [headers.get("Retry-After"), headers.get("retry-after")]
    if isinstance(body, Mapping):
        candidates.append(body.get("retry_after"))
    for raw in candidates:
        if raw in (None, ""):
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            continue
        if value >= 0:
            return min(value, MAX_RETRY_AFTER)
    return DEFAULT_RETRY_AFTER


def message_of(body: Any, text: str) -> str:
    """The CRM's own explanation: Kommo's validation errors, ``detail``/``title``, or ``error``."""
    if isinstance(body, Mapping):
        parts: list[str] = []
        for group in body.get("validation-errors") or []:
            for err in (group or {}).get("errors") or []:
                path, detail = err.get("path"), err.get("detail") or err.get("code")
                parts.append(f"{path}: {detail}" if path else str(detail))
        if parts:
            return "; ".join(parts)
        for key in ("detail", "error", "message", "title"):
            value = body.get(key)
            if isinstance(value, Mapping):
                value = value.get("message") or value.get("detail")
            if value:
                return str(value)
    return text.strip()[:300] or "no details"


def error_for(crm: str, status: int, headers: Mapping[str, str], text: str, what: str) -> CrmError:
    """The typed error of a non-2xx answer of ``crm`` to ``what`` (``"PATCH /api/v4/leads"``)."""
    body = parse_body(text)
    message = f"{crm}: {what}: {status} {message_of(body, text)}"
    if status == 429:
        return CrmRateLimited(message, retry_after=retry_after_of(headers, body))
    if status in AUTH_STATUSES:
        log.error("crm.auth_failed", extra={"crm": crm, "status": status, "what": what})
        return CrmUnavailable(message)
    if status == 408 or status >= 500:
        return CrmUnavailable(message)
    return CrmRejected(message)


class CircuitOpen(CrmUnavailable):
    """Not tried: the CRM timed out, refused the connection or asked to back off moments ago."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Breaker:
    """Fail fast while a CRM is known to be unreachable, so no conversation waits for its timeout.

    Opened for ``cooldown`` seconds by a timeout or a refused connection (the failures that
    cost time), and for the CRM's ``retry_after`` by a 429; closed by the next success. While
    open, requests raise ``CircuitOpen`` without touching the network; the first request after
    the cool-down is the probe.
    """

    def __init__(self, cooldown: float = 5.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown
        self.clock = clock
        self.open_until = 0.0

    def check(self, crm: str, what: str) -> None:
        now = self.clock()
        if now < self.open_until:
            wait = self.open_until - now
            raise CircuitOpen(f"{crm}: {what}: not tried, the CRM failed moments ago (next try in {wait:.1f}s)",
                              retry_after=wait)

    def record(self, exc: BaseException | None) -> None:
        """After each request: its error (None for a success)."""
        if isinstance(exc, CrmRateLimited):
            self.open_until = max(self.open_until, self.clock() + exc.retry_after)
        elif isinstance(exc, CrmUnreachable):
            self.open_until = max(self.open_until, self.clock() + self.cooldown)
        else:  # the CRM answered: it is reachable
            self.open_until = 0.0


class CrmUnreachable(CrmUnavailable):
    """A timeout or a failed connection: the failures that cost time, so they open the breaker."""


def unreachable(message: str) -> CrmUnreachable:
    """The error of a timeout or a failed connection (opens the breaker)."""
    return CrmUnreachable(message)


class SessionHolder:
    """An injected aiohttp session, or one of our own made on first use (and closed by us)."""

    _session: aiohttp.ClientSession | None
    _own_session: bool
    _closed = False

    async def aclose(self) -> None:
        self._closed = True  # a request still waiting for its turn (rate limit) makes no new session
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._closed and self._own_session:
            raise unreachable("the CRM client is closed (the process is stopping)")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session
