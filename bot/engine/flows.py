"""Where the interpreter finds compiled flows: a small read-only interface and an in-memory one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..builder.compiled import CompiledFlow


class FlowSource(Protocol):
    """Compiled flows by bot id: the active version, or a pinned one."""

    def get(self, bot: str, version: int | None = None) -> CompiledFlow | None: ...


class FlowLibrary:
    """An in-process ``FlowSource``: every version of every bot added to it, one active each."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, int], CompiledFlow] = {}
        self._active: dict[str, int] = {}

    def add(self, flow: CompiledFlow, *, activate: bool = True) -> CompiledFlow:
        self._versions[(flow.id, flow.version)] = flow
        if activate or flow.id not in self._active:
            self._active[flow.id] = flow.version
        return flow

    def activate(self, bot: str, version: int) -> None:
        if (bot, version) not in self._versions:
            raise KeyError(f"{bot} v{version}")
        self._active[bot] = version

    def get(self, bot: str, version: int | None = None) -> CompiledFlow | None:
        if version is None:
            version = self._active.get(bot)
            if version is None:
                return None
        return self._versions.get((bot, version))

    def bots(self) -> list[str]:
        return sorted(self._active)
