"""The account's catalogue, cached: custom fields, pipelines and stages, users, task types, by id or name.

Separate from the backend because names are resolved the same way for every command, and the
cache (reloaded on a miss at most every ``REFRESH_INTERVAL`` seconds) is shared with the
webhook route, which names the stages of its events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

from bot.errors import CrmRejected

from .client import KommoClient
from .records import Record, fold, int_id, slug

#: Kommo's system stages, the same ids in every pipeline.
WON, LOST = 142, 143
CLOSED = frozenset({WON, LOST})
#: Default task types of every account.
TASK_TYPE_IDS = {"follow_up": 1, "call": 1, "meeting": 2}
TASK_TYPE_NAMES = {1: "follow_up", 2: "meeting"}
#: A cache (custom fields, pipelines, users) is reloaded on a miss at most this often.
REFRESH_INTERVAL = 10.0


class StageOrder(Mapping[str, Sequence[str]]):
    """Pipeline name -> its working stages in order, read from the account's cache as it is now
    (empty while the catalogue is cold): what the rule engine orders stages by (``allow_backward``)."""

    def __init__(self, account: KommoAccount) -> None:
        self.account = account

    def _now(self) -> dict[str, list[str]]:
        return {str(p.get("name")): [str(s.get("name")) for s in self.account.statuses(p) if s.get("type", 0) != 1]
                for p in self.account.cached_pipelines()}

    def __getitem__(self, name: str) -> Sequence[str]:
        return self._now()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._now())

    def __len__(self) -> int:
        return len(self._now())


class KommoAccount:
    """What a Kommo account defines, loaded once through ``client`` and looked up by id or name."""

    def __init__(self, client: KommoClient) -> None:
        self.client = client
        self._cache: dict[str, list[Record]] = {}
        self._loaded_at: dict[str, float] = {}
        self._generation: dict[str, int] = {}
        self._lock = asyncio.Lock()

    def _stale(self, key: str) -> bool:
        return time.monotonic() - self._loaded_at.get(key, -1e9) >= REFRESH_INTERVAL

    async def _cached(self, key: str, load: Callable[[], Awaitable[list[Record]]], refresh: bool,
                      newer_than: int | None = None) -> list[Record]:
        """The cached list; reloaded when missing, when ``refresh`` and stale, or when it is still
        the generation ``newer_than`` (a miss in that one: waiters of one miss share one reload)."""
        async with self._lock:
            current = self._cache.get(key)
            outdated = newer_than is not None and self._generation.get(key, 0) <= newer_than
            if current is None or (refresh and self._stale(key)) or outdated:
                current = self._cache[key] = await load()
                self._loaded_at[key] = time.monotonic()
                self._generation[key] = self._generation.get(key, 0) + 1
            return current

    async def fields(self, entity: str, *, refresh: bool = False) -> list[Record]:
        """The custom fields of ``leads``, ``contacts`` or ``companies``."""
        return await self._cached(
            f"fields:{entity}", lambda: self.client.get_all(f"/api/v4/{entity}/custom_fields", "custom_fields"),
            refresh)

    async def pipelines(self, *, refresh: bool = False, newer_than: int | None = None) -> list[Record]:
        """The pipelines, the main one first."""
        async def load() -> list[Record]:
            found = await self.client.get_all("/api/v4/leads/pipelines", "pipelines")
            return sorted(found, key=lambda p: (not p.get("is_main"), p.get("sort", 0), p["id"]))
        return await self._cached("pipelines", load, refresh, newer_than)

    def cached_pipelines(self) -> list[Record]:
        """The pipelines as last loaded (none while the catalogue is cold); no request."""
        return list(self._cache.get("pipelines") or [])

    async def reload_pipelines(self) -> list[Record]:
        """The pipelines as Kommo has them now (a reload already running is shared): what a
        document is checked against, so a stage added in Kommo a moment ago is known."""
        return await self.pipelines(newer_than=self._generation.get("pipelines", 0))

    async def users(self, *, refresh: bool = False) -> list[Record]:
        return await self._cached("users", lambda: self.client.get_all("/api/v4/users", "users"), refresh)

    async def task_types(self, *, refresh: bool = False) -> list[Record]:
        async def load() -> list[Record]:
            account = await self.client.get("/api/v4/account", [("with", "task_types")]) or {}
            return list((account.get("_embedded") or {}).get("task_types") or [])
        return await self._cached("task_types", load, refresh)

    def forget_fields(self, entity: str) -> None:
        """Load the custom fields of ``entity`` again on next use (another process may have added one)."""
        self._cache.pop(f"fields:{entity}", None)

    def invalidate(self) -> None:
        """Forget every cached custom field, pipeline, user and task type."""
        self._cache.clear()
        self._loaded_at.clear()

    # ------------------------------------------------------------------ lookups by id or name
    async def field(self, entity: str, key: object) -> Record:
        """A custom field by id, name or code (case-insensitive), else by slug (``call_back`` for
        "Call back"); reloads the list once on a miss."""
        for refresh in (False, True):
            found = await self.fields(entity, refresh=refresh)
            for f in found:
                if (int_id(key) is not None and f["id"] == int_id(key)) or fold(f.get("name")) == fold(key) \
                        or (f.get("code") and fold(f["code"]) == fold(key)):
                    return f
            for f in found:
                if slug(key) and slug(f.get("name")) == slug(key):
                    return f
        raise CrmRejected(f'kommo: no custom field "{key}" on {entity}')

    @staticmethod
    def statuses(pipeline: Mapping[str, Any]) -> list[Record]:
        """The stages of a pipeline, in the order Kommo shows them."""
        found: list[Record] = (pipeline.get("_embedded") or {}).get("statuses") or []
        return sorted(found, key=lambda s: (s.get("sort", 0), s["id"]))

    def first_stage(self, pipeline: Mapping[str, Any]) -> Record:
        """The first working stage: not "Incoming leads" (type 1), not won or lost."""
        for status in self.statuses(pipeline):
            if status.get("type", 0) != 1 and status["id"] not in CLOSED:
                return status
        raise CrmRejected(f'kommo: pipeline "{pipeline.get("name")}" has no working stage')

    async def pipeline(self, key: object) -> Record:
        for refresh in (False, True):
            pipelines = await self.pipelines(refresh=refresh)
            for p in pipelines:
                if (int_id(key) is not None and p["id"] == int_id(key)) or fold(p.get("name")) == fold(key):
                    return p
        known = ", ".join(str(p.get("name")) for p in await self.pipelines())
        raise CrmRejected(f'unknown pipeline "{key}" (known: {known})')

    async def stage(self, pipeline: Record, key: object) -> Record:
        for refresh in (False, True):
            if refresh:  # stages added since the cache was loaded
                await self.pipelines(refresh=True)
                pipeline = await self.pipeline(pipeline["id"])
            for s in self.statuses(pipeline):
                if (int_id(key) is not None and s["id"] == int_id(key)) or fold(s.get("name")) == fold(key):
                    return s
        known = ", ".join(str(s.get("name")) for s in self.statuses(pipeline) if s.get("type", 0) != 1)
        raise CrmRejected(f'unknown stage "{key}" in pipeline "{pipeline.get("name")}" (known: {known})')

    async def stage_names(self, pipeline_id: object, status_id: object) -> tuple[str | None, str | None]:
        """(pipeline name, stage name) of ids, from the cache; an id the cache does not know (a
        pipeline or status added in Kommo since it was loaded) reloads it, whenever it was loaded."""
        found: tuple[str | None, str | None] = (None, None)
        for attempt in (0, 1):
            generation = self._generation.get("pipelines", 0)
            pipelines = await self.pipelines(newer_than=generation if attempt else None)
            p = next((p for p in pipelines if p["id"] == int_id(pipeline_id)), None)
            if p is not None:
                found = p.get("name"), next((s.get("name") for s in self.statuses(p)
                                             if s["id"] == int_id(status_id)), None)
                if found[1] is not None:
                    break
        return found

    async def user_id(self, user: object) -> int:
        """A user by id, name or e-mail."""
        found = int_id(user)
        if found is not None:
            return found
        for refresh in (False, True):
            for u in await self.users(refresh=refresh):
                if fold(user) in (fold(u.get("name")), fold(u.get("email"))):
                    return int(u["id"])
        raise CrmRejected(f'kommo: no user "{user}"')

    async def task_type_id(self, kind: object) -> int:
        """A task type by id, by our name (``follow_up``, ``meeting``) or by the account's name or code."""
        if kind in (None, ""):
            return 1
        found = int_id(kind)
        if found is not None:
            return found
        if fold(kind) in TASK_TYPE_IDS:
            return TASK_TYPE_IDS[fold(kind)]
        for refresh in (False, True):
            for t in await self.task_types(refresh=refresh):
                if fold(kind) in (fold(t.get("name")), fold(t.get("code") or "")):
                    return int(t["id"])
        raise CrmRejected(f'kommo: no task type "{kind}"')

    async def task_type_name(self, type_id: int) -> str:
        if type_id in TASK_TYPE_NAMES:
            return TASK_TYPE_NAMES[type_id]
        for t in await self.task_types():
            if t["id"] == type_id:
                return str(t.get("name"))
        return str(type_id)
