"""The channel registry: built-in adapters plus those other packages register through the
``salesbot.channels`` entry point group (``name = "package.module:factory"``).

A factory is called as ``factory(account=name, config=AccountConfig, http=aiohttp.ClientSession,
public_url=str)`` and returns a ``ChannelAdapter``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from .base import ChannelAdapter, ChannelError

log = logging.getLogger("salesbot.channels")

Factory = Callable[..., ChannelAdapter]

#: Built-in adapters, imported only when an account uses them.
BUILTIN: dict[str, str] = {
    "telegram": "bot.channels.telegram:create",
    "whatsapp": "bot.channels.whatsapp:create",
    "twilio": "bot.channels.twilio:create",
    "sms": "bot.channels.twilio:create_sms",
    "instagram": "bot.channels.meta:create_instagram",
    "messenger": "bot.channels.meta:create_messenger",
}
ENTRY_POINT_GROUP = "salesbot.channels"


class UnknownChannel(ChannelError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no channel adapter named {name!r} (known: {', '.join(sorted(known))})")


#: What ``isinstance(adapter, ChannelAdapter)`` looks for, named in the error when it fails.
_MEMBERS = ("name", "capabilities", "handshake", "verify", "parse", "send", "acknowledge", "close")


def _load(name: str, target: str, origin: str) -> Factory:
    """The factory ``target`` names; a ``ChannelError`` naming the channel, the target and where
    it was registered (a distribution's entry point) when it cannot be imported or found."""
    module, _, attr = target.partition(":")
    where = f"channel {name!r} ({origin}: {target!r})"
    if not attr:
        raise ChannelError(f"{where}: name the factory as 'module:function'")
    try:
        obj: Any = importlib.import_module(module)  # whatever an entry point names: checked below
        for part in attr.split("."):
            obj = getattr(obj, part)
    except ImportError as exc:
        raise ChannelError(f"{where}: cannot import {module!r}: {exc}") from exc
    except AttributeError as exc:
        raise ChannelError(f"{where}: module {module!r} has no {attr!r}") from exc
    if not callable(obj):
        raise ChannelError(f"{where}: {attr!r} is a {type(obj).__name__}, not a channel adapter factory")
    factory: Factory = obj
    return factory


class ChannelRegistry:
    def __init__(self, *, extra: dict[str, Factory] | None = None, use_entry_points: bool = True) -> None:
        self._targets: dict[str, str | Factory] = dict(BUILTIN)
        self._origins: dict[str, str] = dict.fromkeys(BUILTIN, "built in")
        if use_entry_points:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                self._targets[ep.name] = ep.value
                dist = ep.dist.name if ep.dist is not None else "an unnamed distribution"
                self._origins[ep.name] = f"entry point of {dist}"
        self._targets.update(extra or {})
        self._origins.update(dict.fromkeys(extra or {}, "given"))

    def names(self) -> list[str]:
        return sorted(self._targets)

    def factory(self, name: str) -> Factory:
        target = self._targets.get(name)
        if target is None:
            raise UnknownChannel(name, list(self._targets))
        return _load(name, target, self._origins[name]) if isinstance(target, str) else target

    def create(self, name: str, **kwargs: Any) -> ChannelAdapter:
        """The adapter for one account; a factory's own failure (a missing credential, a wrong
        signature) is a ``ChannelError`` naming the channel and the account."""
        factory = self.factory(name)
        where = f"channel {name!r}, account {kwargs.get('account')!r}"
        try:
            adapter = factory(**kwargs)
        except ChannelError:
            raise
        except Exception as exc:
            raise ChannelError(f"{where}: the adapter factory failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(adapter, ChannelAdapter):
            missing = [m for m in _MEMBERS if not hasattr(adapter, m)]
            raise ChannelError(f"{where}: the factory returned a {type(adapter).__name__}, not a ChannelAdapter "
                               f"(missing: {', '.join(missing)})")
        return adapter
