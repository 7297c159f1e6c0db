"""Quick-order links: a signed URL that lets one customer order without an account.

The token (``SignedTokens``, kind ``ol``) names the customer, the link id and its expiry; the
link's record in the store (``bot.store.orderlinks``) is what makes it valid, so a link can be
revoked and an unknown id is refused even with a genuine signature. ``resolve`` says which of
valid / bad / expired / revoked a token is, reading the token's customer only: a token never
reaches another customer's data.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis

from ..errors import OrderLinkRejected
from ..outward.email import SignedTokens
from ..store.orderlinks import OrderLinkStore, ended_at

#: The token kind: never accepted as an unsubscribe or tracking token, nor they as this.
KIND = "ol"
#: What a customer id or link id may be (the token's parts, the store's keys).
ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MIN_SECONDS = 3600
MAX_SECONDS = 365 * 86400
#: Links of one customer that may work at once: a runaway flow cannot grow the hash without end.
MAX_ACTIVE = 100

Status = Literal["valid", "bad", "expired", "revoked"]


@dataclass(frozen=True, slots=True)
class Resolved:
    status: Status
    customer_id: str = ""
    link_id: str = ""


class OrderLinks:
    def __init__(self, redis: Redis, *, secret: bytes, public_url: str, ttl_days: int = 30,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = OrderLinkStore(redis)
        self.tokens = SignedTokens(secret)
        self.public_url = public_url.rstrip("/")
        self.default_seconds = min(MAX_SECONDS, max(MIN_SECONDS, ttl_days * 86400))
        self.clock = clock

    def _token(self, customer_id: str, link_id: str, expires_at: float) -> str:
        return self.tokens.dump({"k": KIND, "c": customer_id, "l": link_id, "x": int(expires_at)})

    def url(self, token: str) -> str:
        return f"{self.public_url}/order/{token}"

    def _view(self, customer_id: str, link_id: str, record: dict[str, Any], now: float) -> dict[str, Any]:
        revoked = record.get("revoked_at")
        state = "revoked" if revoked is not None else "expired" if now >= float(record["expires_at"]) else "active"
        out = {"id": link_id, "status": state, "created_at": record["created_at"],
               "expires_at": record["expires_at"], "by": record.get("by"), "source": record.get("source")}
        if state == "active":  # the same URL again (deterministic): the card can copy it once more
            out["url"] = self.url(self._token(customer_id, link_id, record["expires_at"]))
        if revoked is not None:
            out["revoked_at"], out["revoked_by"] = revoked, record.get("revoked_by")
        return out

    async def create(self, customer_id: str, *, expires: int | None = None, by: str | None = None,
                     source: str = "api") -> dict[str, Any]:
        """A new link: ``{"id", "url", "expires_at"}``. ``expires`` in seconds (1 hour to 365
        days; default the config's). Raises ``OrderLinkRejected``."""
        if not ID.match(customer_id):
            raise OrderLinkRejected("a customer id is 1 to 64 letters, digits, '_' or '-'")
        seconds = self.default_seconds if expires is None else int(expires)
        if not MIN_SECONDS <= seconds <= MAX_SECONDS:
            raise OrderLinkRejected("a link expires after 1 hour to 365 days")
        now = self.clock()
        active = [r for r in (await self.store.all(customer_id)).values() if ended_at(r) > now]
        if len(active) >= MAX_ACTIVE:
            raise OrderLinkRejected(f"this customer has {MAX_ACTIVE} working links; revoke some first")
        link_id = secrets.token_urlsafe(9)
        expires_at = int(now + seconds)
        record = {"created_at": round(now, 3), "expires_at": expires_at, "by": by, "source": source}
        await self.store.add(customer_id, link_id, record, now=now)
        return {"id": link_id, "url": self.url(self._token(customer_id, link_id, expires_at)),
                "expires_at": expires_at}

    async def list(self, customer_id: str) -> list[dict[str, Any]]:
        """The customer's links, newest first (ended ones for ``KEEP`` days)."""
        now = self.clock()
        links = [self._view(customer_id, lid, r, now) for lid, r in (await self.store.all(customer_id)).items()]
        return sorted(links, key=lambda link: (-float(link["created_at"]), link["id"]))

    async def revoke(self, customer_id: str, link_id: str, *, by: str) -> dict[str, Any] | None:
        """The link as it is after revoking; None if the customer has no such link."""
        if not ID.match(customer_id) or not ID.match(link_id):
            return None
        now = self.clock()
        record = await self.store.revoke(customer_id, link_id, now=now, by=by)
        return None if record is None else self._view(customer_id, link_id, record, now)

    async def resolve(self, token: str) -> Resolved:
        data = self.tokens.load(token, KIND) if len(token) <= 512 else None
        customer, link = (str(data.get("c", "")), str(data.get("l", ""))) if data is not None else ("", "")
        if not ID.match(customer) or not ID.match(link):
            return Resolved("bad")
        record = await self.store.get(customer, link)
        if record is None:
            return Resolved("bad")
        if record.get("revoked_at") is not None:
            return Resolved("revoked", customer, link)
        if self.clock() >= float(record["expires_at"]):
            return Resolved("expired", customer, link)
        return Resolved("valid", customer, link)
