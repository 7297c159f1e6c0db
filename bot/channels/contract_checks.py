"""What the channel contract checks of an adapter's values and limiter use (``contract.py``).

The runtime trusts these shapes without checking them again: ``dispatch`` drops an item that
``clean_inbound`` refuses (the customer's message is lost, logged as ``webhook.bad_item``), the
webhook route unpacks ``handshake``'s answer, the outbox keys platform ids by ``send``'s answer
and builds ``AccountLimits`` from ``default_limits`` at start. So the suite fails an adapter here,
with the reason, rather than let it pass and break a deployment.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import fields

from ..inputs import BadInput
from ..store.outbox import AccountLimits
from ..store.ratelimit import Limit, LimitWait, LocalLimiter
from .base import ChannelAdapter, Inbound, InboundAttachment, clean_inbound

__all__ = ["CountingLimiter", "RefusingLimiter", "check_adapter_methods", "check_default_limits",
           "check_handshake", "check_items", "check_platform_id"]

_SYNC = ("handshake", "verify", "parse")
_ASYNC = ("send", "acknowledge", "close")


def check_adapter_methods(adapter: ChannelAdapter) -> None:
    """``isinstance(adapter, ChannelAdapter)`` only sees that the names exist: the runtime calls
    ``verify``/``parse``/``handshake`` without awaiting them and awaits the other three."""
    for name in _SYNC:
        assert not inspect.iscoroutinefunction(getattr(adapter, name)), (
            f"{type(adapter).__name__}.{name} must be a plain method: the webhook route does not await it")
    for name in _ASYNC:
        assert inspect.iscoroutinefunction(getattr(adapter, name)), (
            f"{type(adapter).__name__}.{name} must be `async def`: the runtime awaits it")


def check_items(items: object) -> list[Inbound]:
    """``parse``'s answer as ``dispatch`` takes it: a list of ``Inbound`` that ``clean_inbound``
    accepts (every text field a string, attachments a tuple of ``InboundAttachment``)."""
    assert isinstance(items, list), f"parse() must return a list of Inbound, not {type(items).__name__}"
    for item in items:
        assert isinstance(item, Inbound), f"parse() returned a {type(item).__name__}, not an Inbound"
        assert isinstance(item.attachments, tuple) and all(
            isinstance(a, InboundAttachment) for a in item.attachments), (
            f"Inbound.attachments must be a tuple of InboundAttachment, not {item.attachments!r}")
        try:
            clean_inbound(item)
        except BadInput as exc:
            raise AssertionError(f"dispatch would drop this item (webhook.bad_item): {exc}; "
                                 f"every Inbound field the platform supplies must be a string") from None
    return items


def check_platform_id(platform_id: object) -> str | None:
    """``send``'s answer: the platform's message id as a string, or None."""
    assert platform_id is None or isinstance(platform_id, str), (
        f"send() must return the platform's message id as str or None, not {type(platform_id).__name__}")
    return platform_id


def check_handshake(answer: object) -> None:
    """``handshake``'s answer: None (no GET verification) or ``(HTTP status, body text)``."""
    if answer is None:
        return
    assert isinstance(answer, tuple) and len(answer) == 2, (
        f"handshake() must return None or (status, text), not {answer!r}")
    status, text = answer
    assert isinstance(status, int) and 100 <= status < 600 and isinstance(text, str), (
        f"handshake() must return (int status, str text), not {answer!r}")


def check_default_limits(adapter: ChannelAdapter) -> None:
    """``default_limits``, when the adapter has it, is what the server builds ``AccountLimits`` of."""
    limits = getattr(adapter, "default_limits", None)
    if limits is None:
        return
    known = {f.name for f in fields(AccountLimits)}
    assert isinstance(limits, Mapping), f"default_limits must be a dict, not {type(limits).__name__}"
    assert set(limits) <= known, f"default_limits may hold only {sorted(known)}, not {sorted(set(limits) - known)}"
    for key, value in limits.items():
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0, (
            f"default_limits[{key!r}] must be a number >= 0, not {value!r}")


class CountingLimiter(LocalLimiter):
    """A ``SharedLimiter`` that lets everything through and counts the requests taken."""

    def __init__(self) -> None:
        super().__init__()
        self.acquired: list[tuple[Limit, ...]] = []
        self.held: list[tuple[Limit, float]] = []

    async def acquire(self, *limits: Limit, max_wait: float) -> None:
        self.acquired.append(limits)

    async def hold(self, limit: Limit, seconds: float) -> None:
        self.held.append((limit, seconds))


class RefusingLimiter(CountingLimiter):
    """A ``SharedLimiter`` whose account is spent for the next ``wait`` seconds."""

    def __init__(self, wait: float = 30.0) -> None:
        super().__init__()
        self.wait = wait

    async def acquire(self, *limits: Limit, max_wait: float) -> None:
        self.acquired.append(limits)
        raise LimitWait(limits[0].name if limits else "account", self.wait)

