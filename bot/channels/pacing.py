"""An account's outbound limit, kept once for every process through the shared limiter.

Each adapter asks before every API call that sends (the platform counts calls: a message in
three parts is three), so the limit holds whichever path sends — an outbox round or a reply
handed over at once. The account's ``rate`` and ``burst`` settings (else the adapter's
``default_limits``) are account-wide: every process draws on the same allowance.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from ..store.outbox import AccountLimits, DeliveryDeferred, DeliveryTemporary
from ..store.ratelimit import Limit, LimiterUnavailable, LimitWait, LocalLimiter, SharedLimiter

#: The longest a send waits for its turn before it goes back to the outbox (never below two
#: intervals of the limit, so a slow limit still lets the next request wait its turn).
MAX_WAIT = 1.0
_OUTBOX = AccountLimits()  # the outbox's defaults, for an adapter that has none of its own


class AccountPacing:
    """``acquire`` before each call (optionally with one chat's limit too), ``hold`` on a 429."""

    def __init__(self, channel: str, account: str, settings: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
        rate = float(settings.get("rate", defaults.get("rate", _OUTBOX.rate)))
        burst = int(settings.get("burst", defaults.get("burst", _OUTBOX.burst)))
        #: ``rate = 0``: no limit of ours (a bench, a platform without one): no limiter call at all
        self.unlimited = rate <= 0
        self.limit = Limit(f"{channel}:{account}", rate if rate > 0 else 1e6, max(1, burst))
        self.max_wait = max(MAX_WAIT, 2 * self.limit.interval)
        self.limiter: SharedLimiter = LocalLimiter()  # until the process shares its Redis one

    def use(self, limiter: SharedLimiter) -> None:
        self.limiter = limiter

    async def acquire(self, *extra: Limit) -> None:
        """Take one request of the account (and of ``extra`` limits, one round trip for all);
        ``DeliveryDeferred`` when the turn is further off than ``max_wait``."""
        limits = list(extra) if self.unlimited else [self.limit, *extra]
        if not limits:
            return
        wait = max([self.max_wait, *(2 * x.interval for x in extra)])  # a chat's turn is worth waiting for
        try:
            await self.limiter.acquire(*limits, max_wait=wait)
        except LimitWait as exc:
            raise DeliveryDeferred(str(exc), retry_after=exc.retry_after) from None
        except LimiterUnavailable as exc:
            raise DeliveryTemporary(str(exc)) from None

    async def hold(self, seconds: float | None, *, default: float = 1.0) -> None:
        """The platform rate-limited us: every process waits ``seconds`` (a best effort: the send
        fails temporarily either way)."""
        with contextlib.suppress(LimiterUnavailable):
            await self.limiter.hold(self.limit, seconds if seconds is not None else default)
