"""Bots and their versions in Redis, with an in-process cache of compiled flows.

Every upload that changes a flow becomes a new immutable version (1, 2, …) and the active one;
``activate`` rolls back or forward. Running conversations keep the version they started with.
The cache holds every bot's active version (refreshed through pub/sub when any process
changes one) and the pinned versions that conversations ask for (``ensure``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..errors import FlowInvalid, Problem
from .versions import DocumentNotFound, VersionedDocuments, VersionInfo

if TYPE_CHECKING:
    from ..builder.compiled import CompiledFlow
    from ..engine.state import ConversationState


def _sorted(problems: list[Problem]) -> list[Problem]:
    from ..builder.problems import sorted_problems

    return sorted_problems(problems)


def _check_document(doc: Any) -> tuple[list[Problem], CompiledFlow | None]:
    """``bot.builder.validate.check_document``, imported on first use: a server with no flow to
    load starts without the flow models and the validator (issue 14: startup)."""
    from ..builder.validate import check_document

    return check_document(doc)


def _check_stored(doc: Any) -> tuple[list[Problem], CompiledFlow | None]:
    """``_check_document`` reading scalars of the wrong type as the validator did before it
    refused them (``"yes"`` true, ``"100"`` 100): a stored version that relied on it still runs."""
    from ..builder.model_base import lenient_scalars

    with lenient_scalars():
        return _check_document(doc)

__all__ = ["CHANGED_CHANNEL", "BotNotFound", "BotRegistry", "VersionInfo", "problems_as_details"]

log = logging.getLogger("salesbot.bots")
CHANGED_CHANNEL = "sb:bots:changed"  # VersionedDocuments(kind="bot")'s


class BotNotFound(DocumentNotFound):
    def __init__(self, bot: str, version: int | None = None) -> None:
        self.bot = bot
        super().__init__(bot, version, kind="bot")


class BotRegistry:
    """A ``FlowSource`` backed by Redis."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.documents = VersionedDocuments(redis, "bot", not_found=BotNotFound)
        self._flows: dict[tuple[str, int], CompiledFlow] = {}
        self._active: dict[str, int] = {}

    # ------------------------------------------------------------------ FlowSource
    def get(self, bot: str, version: int | None = None) -> CompiledFlow | None:
        if version is None:
            version = self._active.get(bot)
            if version is None:
                return None
        return self._flows.get((bot, version))

    # ------------------------------------------------------------------ writing
    async def put(self, doc: Any, found: Sequence[Problem] = ()) -> tuple[VersionInfo, bool]:
        """Validate and store a flow; returns its version and whether it is new.

        Raises ``FlowInvalid`` with every problem, ``found`` (by the caller: an id other than
        the URL's, keys the JSON repeats) included. The same document as the newest version is
        not stored again (so loading ``flows/`` at every start adds nothing).
        """
        # In a worker thread, as an automation document's check: a big flow's templates take
        # seconds to compile, which on the event loop stalled every conversation of the process.
        problems, flow = await asyncio.to_thread(_check_document, doc)
        if flow is None or any(p.severity == "error" for p in found):
            raise FlowInvalid(_sorted([*found, *problems]))
        info, new = await self.documents.put(flow.id, doc, digest=flow.digest, name=flow.name,
                                             warnings=tuple(str(p) for p in problems if p.severity == "warning"))
        if new:
            self._store(flow, info.version)
            self._active[flow.id] = info.version
            log.info("bot.version_stored", extra={"bot": flow.id, "version": info.version})
        return info, new

    async def activate(self, bot: str, version: int) -> VersionInfo:
        await self.ensure(bot, version)  # in this process's cache before anyone is told
        info = await self.documents.activate(bot, version)
        self._active[bot] = version
        return info

    # ------------------------------------------------------------------ reading
    async def ids(self) -> list[str]:
        return await self.documents.ids()

    async def versions(self, bot: str) -> list[VersionInfo]:
        return await self.documents.versions(bot)

    async def active_version(self, bot: str) -> int | None:
        return await self.documents.active_version(bot)

    async def document(self, bot: str, version: int | None = None) -> tuple[int, Any]:
        return await self.documents.document(bot, version)

    # ------------------------------------------------------------------ cache
    def _store(self, flow: CompiledFlow, version: int) -> CompiledFlow:
        from dataclasses import replace

        compiled = replace(flow, version=version)
        self._flows[(flow.id, version)] = compiled
        return compiled

    async def ensure(self, bot: str, version: int | None = None) -> CompiledFlow | None:
        """Load a version (the active one by default) into the cache; None if it does not exist."""
        active = version is None
        if version is None:
            version = await self.active_version(bot)
            if version is None:
                return None
        found = self._flows.get((bot, version))
        if found is None:
            found = await self._load(bot, version)
        # Made active only once compiled (the compile runs in a thread, for seconds on a big flow):
        # meanwhile ``get`` still answers the version before, not None (a greeting's "unknown bot").
        if active:
            self._active[bot] = version
        return found

    async def _load(self, bot: str, version: int) -> CompiledFlow | None:
        try:
            _, doc = await self.document(bot, version)
        except BotNotFound:
            return None
        problems, flow = await asyncio.to_thread(_check_document, doc)
        if flow is None:  # stored versions were valid when stored; a newer runtime may be stricter
            _, flow = await asyncio.to_thread(_check_stored, doc)
            if flow is not None:  # runs as before; a new upload must fix what is listed
                log.warning("bot.version_lenient", extra={"bot": bot, "version": version,
                                                          "problems": [str(p) for p in problems[:5]]})
        if flow is None:
            log.error("bot.version_invalid", extra={"bot": bot, "version": version,
                                                   "problems": [str(p) for p in problems[:5]]})
            return None
        return self._store(flow, version)

    def loaded(self) -> list[CompiledFlow]:
        """Every version in the cache (the active ones from the start, others as runs need them)."""
        return list(self._flows.values())

    def loaded_count(self) -> int:
        """How many versions are in the cache (it only grows)."""
        return len(self._flows)

    async def refresh(self, bot: str | None = None) -> None:
        """Reload the active version of one bot, or of all."""
        for b in [bot] if bot else await self.ids():
            await self.ensure(b)

    async def ensure_for(self, state: ConversationState | None, greeting: str | None = None) -> None:
        """Make sure every flow an event of this conversation may need is in the cache."""
        if greeting and greeting not in self._active:
            await self.ensure(greeting)
        if state is None or state.run is None:
            return
        run = state.run
        if (run.bot, run.version) not in self._flows:
            await self.ensure(run.bot, run.version)
        for frame in run.callers:
            if (frame.bot, frame.version) not in self._flows:
                await self.ensure(frame.bot, frame.version)
        flow = self._flows.get((run.bot, run.version))
        for callee in flow.called_bots if flow else ():
            if callee not in self._active:
                await self.ensure(callee)

    async def listen(self, stop: asyncio.Event) -> None:
        """Follow other processes' uploads and activations until ``stop`` is set; a lost
        connection (Redis restarting) is retried, then every bot reloaded (changes missed)."""
        resync = False
        while not stop.is_set():
            try:
                await self._listen(stop, resync)
            except (RedisError, OSError):
                log.warning("bot.listen_reconnect", exc_info=True)  # rate-limited while it lasts
                resync = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)

    async def _listen(self, stop: asyncio.Event, resync: bool) -> None:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(CHANGED_CHANNEL)
            if resync:
                await self.refresh()
            while not stop.is_set():
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg and msg.get("type") == "message":
                    bot = msg["data"].decode() if isinstance(msg["data"], bytes) else str(msg["data"])
                    await self.refresh(bot)
        finally:
            await pubsub.aclose()


def problems_as_details(problems: list[Problem]) -> list[dict[str, str]]:
    return [{"pointer": p.pointer, "message": p.message} for p in problems if p.severity == "error"]
