"""Per-client limits on unauthenticated traffic: token buckets in the process, 429 beyond them.

Anyone may open a live chat, so one script could create hundreds of conversations a second or
flood one with messages; anyone may also guess tokens. The limits (``[limits]`` in the config)
are token buckets kept in this process's memory: no Redis round trip on the message path, at
the price of each web process allowing the configured rate (documented). Buckets are bounded
(least recently used keys go first), IPv6 clients are counted by /64 (one subscriber's
network), and ``X-Forwarded-For`` is believed only from ``trusted_proxies``.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Middleware

if TYPE_CHECKING:
    from ..config import LimitsConfig, RateConfig


log = logging.getLogger("salesbot.server.limits")

#: Keys remembered per bucket kind (a flood of new addresses evicts the oldest, not memory).
MAX_KEYS = 100_000
#: A client over a limit is logged at most once a minute per kind.
LOG_EVERY = 60.0

Clock = Callable[[], float]
#: The client address, worked out once per request by the middleware.
CLIENT = web.RequestKey("salesbot.client", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Buckets:
    """Token buckets by key: ``take`` spends one token, or says how long until one is back."""

    def __init__(self, rate: RateConfig, *, clock: Clock = time.monotonic, max_keys: int = MAX_KEYS) -> None:
        self.per_second = rate.per_minute / 60.0
        self.burst = float(rate.burst)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def take(self, key: str) -> float:
        """0 when allowed (a token is spent), else the seconds until the next token."""
        now = self.clock()
        tokens, since = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - since) * self.per_second)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.per_second
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    def empty(self, key: str) -> float:
        """Like ``take`` without spending: the seconds until a token is there (0: one is)."""
        found = self._buckets.get(key)
        if found is None:
            return 0.0
        tokens = min(self.burst, found[0] + (self.clock() - found[1]) * self.per_second)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.per_second


@dataclass(frozen=True, slots=True)
class Limited:
    """A refusal: which limit, and after how many seconds to try again."""

    kind: str
    retry_after: float

    @property
    def seconds(self) -> int:
        return max(1, math.ceil(self.retry_after))

    def body(self) -> dict[str, Any]:
        message = f"too many requests ({self.kind.replace('_', ' ')}); try again in {self.seconds} s"
        return {"error": {"code": "rate_limited", "message": message}, "retry_after": self.seconds}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=429, headers={"Retry-After": str(self.seconds)})


class Limits:
    """Every bucket of the ``[limits]`` config, and who the client is."""

    def __init__(self, config: LimitsConfig, *, clock: Clock = time.monotonic) -> None:
        self.enabled = config.enabled
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in config.trusted_proxies]
        self._buckets = {kind: Buckets(getattr(config, kind), clock=clock) for kind in (
            "new_sessions_per_ip", "messages_per_session", "messages_per_ip", "ws_connects_per_ip",
            "public_per_ip", "auth_failures_per_ip", "events_per_ip", "orders_per_ip", "order_views_per_link",
            "order_submits_per_ip", "order_submits_per_link")}
        #: Live chat sessions seen lately: a session not among them counts as a new one.
        self._sessions: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._logged: collections.OrderedDict[tuple[str, str], float] = collections.OrderedDict()
        self.clock = clock

    # ------------------------------------------------------------------ who
    def _trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in net for net in self._proxies)

    def client(self, request: web.Request) -> str:
        """The client's address (its /64 for IPv6), through trusted proxies only."""
        address = _address(request.remote)
        if address is not None and self._proxies and self._trusted(address):
            hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
            for hop in reversed([h for h in hops if h]):
                found = _address(hop)
                if found is None:
                    break
                address = found
                if not self._trusted(found):
                    break
        if address is None:
            return request.remote or "unknown"
        if address.version == 6:  # one subscriber's network
            return f"{ipaddress.IPv6Address(int(address) >> 64 << 64)}/64"
        return str(address)

    # ------------------------------------------------------------------ checks
    def take(self, kind: str, key: str, who: str | None = None) -> Limited | None:
        """Spend one token of ``kind`` for ``key``; a ``Limited`` when there was none (logged
        as ``who``, the client's address: a session id is a credential, never logged)."""
        if not self.enabled:
            return None
        wait = self._buckets[kind].take(key)
        if wait <= 0:
            return None
        self._log(kind, who or key)
        return Limited(kind, wait)

    def message(self, request: web.Request, session: str) -> Limited | None:
        """A live chat message: per session, per client, and per client for a new session."""
        if not self.enabled:
            return None
        ip = request.get(CLIENT) or self.client(request)
        if session not in self._sessions and (limited := self.take("new_sessions_per_ip", ip)) is not None:
            return limited
        self._sessions[session] = None
        self._sessions.move_to_end(session)
        if len(self._sessions) > MAX_KEYS:
            self._sessions.popitem(last=False)
        return self.take("messages_per_session", session, ip) or self.take("messages_per_ip", ip)

    def _log(self, kind: str, key: str) -> None:
        now = self.clock()
        last = self._logged.get((kind, key))
        if last is not None and now - last < LOG_EVERY:
            return
        self._logged[(kind, key)] = now
        if len(self._logged) > 10_000:
            self._logged.popitem(last=False)
        log.warning("limits.exceeded", extra={"limit": kind, "client": key})

    # ------------------------------------------------------------------ the middleware
    def middleware(self) -> Middleware:
        """Token-guessing (401/403 answers) and unauthenticated routes, by client address.

        ``/api/*`` (but ``/api/continue``) and ``/live/session`` carry a token: a client with too
        many 401/403s is held off there for a while. ``/webhooks/*`` carry a platform's
        signature: their failures count, but a platform's delivery is never refused (a platform
        disables a webhook that answers errors; a signature cannot be guessed). ``/metrics``
        and ``/healthz`` are not limited. The live chat's messages are limited where they are
        read (``message``), for the POST route and the WebSocket."""
        @web.middleware
        async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not self.enabled:
                return await handler(request)
            ip = request[CLIENT] = self.client(request)
            path = request.path
            tokens = path.startswith(("/api/", "/live/session")) and not path.startswith("/api/continue/")
            if tokens or path.startswith("/webhooks/") or path in ("/metrics", "/healthz"):
                if tokens and (wait := self._buckets["auth_failures_per_ip"].empty(ip)) > 0:
                    return Limited("auth_failures_per_ip", wait).response()
                response = await handler(request)
                if response.status in (401, 403):
                    self.take("auth_failures_per_ip", ip)
                return response
            if path.endswith("/ws") and path.startswith("/chat/"):
                limited = self.take("ws_connects_per_ip", ip)
            elif request.method == "POST" and path.startswith("/chat/") and path.endswith("/messages"):
                limited = None  # counted per message in ``message``
            else:
                limited = self.take("public_per_ip", ip)
            if limited is not None:
                return limited.response()
            return await handler(request)

        return limit


def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
