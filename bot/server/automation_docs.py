"""Automation documents on the server: checked against the CRM's pipelines and the loaded bots,
then versioned like bots (``bot.store.versions``); loaded from ``automations_dir`` at start.

The context of a check (docs/automations.md, "What the validator checks"): the embedded CRM's
configured pipelines (``[embedded_crm] pipelines``, else the default ``Sales`` pipeline); with
the Kommo backend the account's pipelines, read again for each check (a stage added in Kommo
a moment ago is known; when Kommo cannot be reached, pipelines and stages are not checked);
with the webhook backend they are not checked, and ``apply_to_existing`` is refused (that CRM
cannot list a stage's leads). Bots are the bot store's. Custom fields are not checked (neither
CRM keeps a field catalogue the embedded one could check against).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from crm_bridge import CrmBackend, RedisCrm, is_kommo
from crm_bridge.memory import DEFAULT_PIPELINE, DEFAULT_STAGES

from ..builder.loader import read_document
from ..errors import AutomationsInvalid, CrmError, FlowLoadError, Problem
from ..runtime.applyjobs import ApplyJobs
from ..runtime.chatevents import ChatEvents, chat_pipelines
from ..store.bots import BotRegistry
from ..store.versions import DocumentNotFound, VersionedDocuments, VersionInfo, digest_of

if TYPE_CHECKING:
    from ..automations.validate import AutomationContext

log = logging.getLogger("salesbot.automations")
#: How long a check waits for Kommo's pipelines before going on without them.
CATALOGUE_TIMEOUT = 5.0


class AutomationNotFound(DocumentNotFound):
    def __init__(self, doc_id: str, version: int | None = None) -> None:
        super().__init__(doc_id, version, kind="automation document")


async def crm_pipelines(crm: CrmBackend) -> dict[str, list[str]]:
    """Pipeline name -> its stages in order, as the CRM knows them; empty when it cannot say."""
    if isinstance(crm, RedisCrm):
        return {name: list(stages) for name, stages in (crm.pipelines or {DEFAULT_PIPELINE: DEFAULT_STAGES}).items()}
    if is_kommo(crm):
        try:
            found = await asyncio.wait_for(crm.account.reload_pipelines(), timeout=CATALOGUE_TIMEOUT)
        except (CrmError, TimeoutError) as exc:
            log.warning("automations.pipelines_unknown", extra={"error": str(exc) or type(exc).__name__})
            return {}
        return {str(p.get("name")): [str(s.get("name")) for s in crm.account.statuses(p) if s.get("type", 0) != 1]
                for p in found}
    return {}


class AutomationDocuments:
    """Validate, version and read automation documents (one per pipeline)."""

    def __init__(self, *, documents: VersionedDocuments, crm: CrmBackend, bots: BotRegistry,
                 jobs: ApplyJobs | None = None, chat: ChatEvents | None = None) -> None:
        self.documents = documents
        self.crm = crm
        self.bots = bots
        self.jobs = jobs
        self.chat = chat

    @classmethod
    def of(cls, redis: Redis, crm: CrmBackend, bots: BotRegistry, jobs: ApplyJobs | None = None,
           chat: ChatEvents | None = None) -> AutomationDocuments:
        return cls(documents=VersionedDocuments(redis, "automation", not_found=AutomationNotFound),
                   crm=crm, bots=bots, jobs=jobs, chat=chat)

    async def chat_pipelines(self) -> frozenset[str]:
        """The pipelines whose active document needs chat events (``ChatEvents``)."""
        found = []
        for doc_id in await self.documents.ids():
            try:
                found.append((await self.documents.document(doc_id))[1])
            except DocumentNotFound:
                continue
        return chat_pipelines(found)

    async def activate(self, doc_id: str, version: int) -> VersionInfo:
        """Make a version active (roll back or forward); chat events follow the new rules."""
        result = await self.documents.activate(doc_id, version)
        if self.chat is not None:
            self.chat.invalidate()
        return result

    async def context(self) -> AutomationContext:
        from ..automations.validate import AutomationContext  # on first use: off the start path

        return AutomationContext(await crm_pipelines(self.crm), bots=frozenset(await self.bots.ids()))

    async def put(self, doc: Any, found: Sequence[Problem] = ()) -> tuple[VersionInfo, bool]:
        """Check and store a document; ``AutomationsInvalid`` with every problem (``found`` by
        the caller included). The same document as the newest version adds no version."""
        # In a worker thread: a document of 1,000 rules takes a second or more to check, which
        # in the event loop stalled every conversation of the process (bench/automations.py).
        from ..automations.validate import check_automations  # on first use: off the start path

        problems, model = await asyncio.to_thread(check_automations, doc, await self.context())
        if model is not None:
            problems += await self._pipeline_taken(model.id, model.pipeline)
            if self.jobs is None:
                problems += [Problem(f"/rules/{i}/apply_to_existing", "apply_to_existing needs a CRM whose leads "
                                     "can be listed by stage (the embedded CRM or Kommo), not this one")
                             for i, rule in enumerate(model.rules) if rule.apply_to_existing]
        if found:
            from ..builder.problems import sorted_problems

            problems = sorted_problems([*found, *problems])
        if model is None or any(p.severity == "error" for p in problems):
            raise AutomationsInvalid(problems)
        info, new = await self.documents.put(
            model.id, doc, digest=digest_of(doc), name=model.name or model.id,
            warnings=tuple(str(p) for p in problems if p.severity == "warning"))
        if new:
            log.info("automations.version_stored", extra={"automation": model.id, "version": info.version})
            if self.jobs is not None:  # apply_to_existing rules of this version: background jobs
                await self.jobs.start(model.id, info.version, doc)
        if self.chat is not None:
            self.chat.invalidate()
        return info, new

    async def _pipeline_taken(self, doc_id: str, pipeline: str) -> list[Problem]:
        """One document per pipeline: another document already acting on it is a problem."""
        for other in await self.documents.ids():
            if other == doc_id:
                continue
            try:
                _, found = await self.documents.document(other)
            except DocumentNotFound:
                continue
            if isinstance(found, dict) and found.get("pipeline") == pipeline:
                return [Problem("/pipeline", f'pipeline "{pipeline}" already has its automations in document '
                                             f'"{other}": one document per pipeline')]
        return []


def _read_documents(directory: Path) -> list[tuple[Path, Any]]:
    """Each ``*.json`` of a folder (not the formats' schemas) with its document or its
    ``FlowLoadError``; run in a thread (file I/O)."""
    out: list[tuple[Path, Any]] = []
    for path in sorted(directory.glob("*.json")):
        if path.name.endswith("schema.json"):
            continue
        try:
            out.append((path, read_document(path)))
        except FlowLoadError as exc:
            out.append((path, exc))
    return out


async def load_automation_dir(automations: AutomationDocuments, directory: Path) -> list[str]:
    """Upload every ``*.json`` document of a folder at start (unchanged ones add no version); an
    unreadable or invalid one is logged with its problems and skipped."""
    loaded = []
    for path, doc in await asyncio.to_thread(_read_documents, directory):
        try:
            if isinstance(doc, FlowLoadError):
                raise doc
            info, _new = await automations.put(doc)
            loaded.append(f"{info.id} v{info.version}")
        except FlowLoadError as exc:
            log.error("automations.load_failed", extra={"file": str(path), "error": str(exc)})
        except AutomationsInvalid as exc:
            log.error("automations.load_failed", extra={
                "file": str(path), "error": str(exc),
                "problems": [str(p) for p in exc.problems if p.severity == "error"]})
    return loaded
