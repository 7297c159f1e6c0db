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


def _load(target: str) -> Factory:
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)  # whatever an entry point names: checked below
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ChannelError(f"{target!r} is not a channel adapter factory")
    factory: Factory = obj
    return factory


class ChannelRegistry:
    def __init__(self, *, extra: dict[str, Factory] | None = None, use_entry_points: bool = True) -> None:
        self._targets: dict[str, str | Factory] = dict(BUILTIN)
        if use_entry_points:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                self._targets[ep.name] = ep.value
        self._targets.update(extra or {})

    def names(self) -> list[str]:
        return sorted(self._targets)

    def factory(self, name: str) -> Factory:
        target = self._targets.get(name)
        if target is None:
            raise UnknownChannel(name, list(self._targets))
        return _load(target) if isinstance(target, str) else target

    def create(self, name: str, **kwargs: Any) -> ChannelAdapter:
        adapter = self.factory(name)(**kwargs)
        if not isinstance(adapter, ChannelAdapter):
            raise ChannelError(f"the {name!r} factory did not return a ChannelAdapter")
        return adapter
