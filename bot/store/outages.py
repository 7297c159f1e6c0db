"""Which failures are store outages (Redis away or full) rather than bugs, in one place.

An outage delays work and never counts against a conversation (no parking), is answered 503
with ``Retry-After`` at the HTTP edge, and is logged a line per kind every few seconds.
"""

from __future__ import annotations

from typing import Literal

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import StoreFull


def store_outage(exc: BaseException) -> Literal["full", "unavailable"] | None:
    """``full``: Redis at its memory limit (``StoreFull`` before it, its ``OOM`` refusal after);
    ``unavailable``: Redis not reachable or not answering; None: not an outage."""
    # Redis's refusal reads "OOM command not allowed …", also inside a script's error.
    if isinstance(exc, StoreFull) or (isinstance(exc, ResponseError) and "OOM command not allowed" in str(exc)):
        return "full"
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return "unavailable"
    return None
