"""Meta's webhook side, shared by WhatsApp, Instagram and Messenger: the GET subscription
check, ``X-Hub-Signature-256`` over the raw body, the body's ``entry`` list, and timestamps."""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Mapping
from typing import Any

from ..inputs import BadJson, header_bytes, loads
from .base import MalformedWebhook, RawRequest, WebhookRejected

SIGNATURE_HEADER = "X-Hub-Signature-256"
DAY = 86400.0


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name (``RawRequest.headers`` may be a plain dict)."""
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for key, val in headers.items():
        if key.lower() == lower:
            return val
    return None


def signature(app_secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends for ``body``."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(request: RawRequest, app_secret: str | None) -> None:
    """Raise ``WebhookRejected`` unless the raw body carries the app secret's signature."""
    given = header(request.headers, SIGNATURE_HEADER)
    if not given:
        raise WebhookRejected("missing X-Hub-Signature-256", 401)
    if not app_secret:
        raise WebhookRejected("no app_secret configured for this account", 403)
    expected = signature(app_secret, request.body)
    if not hmac.compare_digest(header_bytes(given.strip().lower()) or b"", expected.encode()):
        raise WebhookRejected("X-Hub-Signature-256 does not match", 403)


def answer_handshake(request: RawRequest, verify_token: str | None) -> tuple[int, str]:
    """Meta's subscription check: echo ``hub.challenge`` when the verify token matches; else 403
    and the reason (which the route logs as ``webhook.rejected``; it never holds a token)."""
    query = request.query
    token = header_bytes(query.get("hub.verify_token", "")) or b""
    challenge = query.get("hub.challenge")
    if query.get("hub.mode") != "subscribe":
        return 403, "verification failed: hub.mode is not subscribe"
    if not verify_token:
        return 403, "verification failed: no verify_token configured for this account"
    if challenge is None:
        return 403, "verification failed: no hub.challenge"
    if not hmac.compare_digest(token, verify_token.encode()):
        return 403, "verification failed: hub.verify_token does not match"
    return 200, challenge


def load_body(request: RawRequest) -> dict[str, Any]:
    """The webhook's JSON object with an ``entry`` list; ``MalformedWebhook`` otherwise."""
    try:
        data = loads(request.body)
    except BadJson as exc:
        raise MalformedWebhook(f"the body is not JSON: {exc.reason}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("entry"), list):
        raise MalformedWebhook("the body has no entry list")
    return data


def seconds(stamp: Any, default: float | None = None) -> float | None:
    """Meta timestamps are seconds or milliseconds, as numbers or strings. One that is not a
    finite positive time ("nan", "inf") or lies more than a day ahead of now is ``default``
    (callers then take now): a broken stamp must neither close the messaging window (NaN
    compares false) nor hold it open for years."""
    try:
        value = float(stamp)
    except (TypeError, ValueError, OverflowError):
        return default
    if not math.isfinite(value) or value <= 0:
        return default
    value = value / 1000.0 if value > 1e11 else value
    return default if value > time.time() + DAY else value


def number(value: Any) -> float | None:
    """A float kept in chat meta (``reply_dm_at``, …); None when absent or not a finite number."""
    try:
        out = float(value) if value not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return None
    return out if out is None or math.isfinite(out) else None
