"""``apply_to_existing``: a saved rule also acts once for every lead already in its stage.

When a new version of an automation document is stored, each rule with ``apply_to_existing``
gets a job (id ``v<version>-<rule>``) that first copies the embedded CRM's stage index (a Redis
set in buckets, ``crm_bridge/idsets.py``; named in the job's ``copy`` field until it is copied,
so a process that dies before its job is written leaves no set behind) into a set of its own,
pages through it with ``SSCAN``
(deleting it when finished) and pushes an ``ApplyRule(rule, job)`` onto each
lead's queue. Why it is safe and cheap:

- **Resumable.** The job is a Redis hash (cursor, total, done, state, times) and sits in the
  set of unfinished jobs until its scan ends. Whoever runs it holds a lease (``SET NX PX``,
  renewed every page); a process that dies lets the lease expire and the next ``resume`` takes
  the job over from the saved cursor. A page redone after a crash (or a lead ``SSCAN`` returns
  twice) is a duplicate push (dedupe id ``apply:<doc>:<job>`` per lead queue): not acted twice.
  ``done`` counts the leads visited when their page is saved; ``total`` is the stage's size
  when copied (0 until then; leads that enter the stage later are not visited: the rule acts on them as they
  enter). A job an older version started on the stage set itself (no ``listing`` field) is
  copied the same way when it is resumed and visited from the start again (dedupe ids: no lead
  acted twice).
- **Where the worker runs.** A job runs in a process with the worker role: ``salesbot serve``
  (web and worker in one) starts it at once; a web-only process (``--role web``) only stores
  it (``local`` False) and a worker's ``resume`` loop takes it within a second or so.
- **Gives way to conversations.** One lead at a time (push, then handle that lead's queue if
  nobody else does), and before each lead the ``Pacer`` (``pacing.py``) waits while a
  conversation batch is in flight in this process and keeps under ``[automations] apply_rate``
  leads/s; ``pause`` seconds between pages of ``page`` leads.
- **Kommo** has no stage index here: a job first lists the stage's leads through Kommo's API
  (``StageLister``: ``GET /api/v4/leads`` filtered by pipeline and status, ``page`` leads a
  page, oldest first) into a set of its own, resumably (the next page to list is saved), then
  visits that set as above and deletes it when finished. Listing before acting keeps Kommo's
  pages still: a rule that moves leads out of the stage would otherwise shift the pages under
  the job. A stage Kommo does not know fails the job (``state: failed``, with the error); while
  Kommo is away the job waits for the next ``resume``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from redis.asyncio import Redis

from crm_bridge import idsets
from crm_bridge.indexes import by_key, stage_value

from ..automations.events import ApplyRule
from ..errors import CrmRejected, CrmTemporary
from ..store import replies
from ..store.clusterclient import is_cluster
from ..store.scripts import RENEW_IF_HELD
from .jobs import Jobs
from .leads import LeadService, encode_apply_rule
from .pacing import Pacer

log = logging.getLogger("salesbot.automations.jobs")
#: Unfinished jobs, as ``<doc id>|<job id>``: what ``resume`` looks at.
UNFINISHED_KEY = "sb:automations:jobs:unfinished"
#: How long a lease lasts without renewal (a dead runner's job is taken over after this).
LEASE_MS = 30_000
#: Jobs listed per document (the newest).
LISTED = 50



class StageLister(Protocol):
    """A CRM that lists a stage's leads page by page (``KommoCrm.stage_leads``)."""

    async def stage_leads(self, pipeline: str, stage: str, page: int, limit: int) -> tuple[list[str], bool]:
        """The lead ids of page ``page`` (from 1), and whether more pages follow."""
        ...


def jobs_key(doc_id: str) -> str:
    """Zset job id -> start time: the document's jobs."""
    return f"sb:automations:{{{doc_id}}}:jobs"


def job_key(doc_id: str, job_id: str) -> str:
    return f"sb:automations:{{{doc_id}}}:job:{job_id}"


def own_set(doc_id: str, job_id: str) -> str:
    """The job's own set of the leads to visit (deleted when it finishes)."""
    return f"{job_key(doc_id, job_id)}:leads"


#: Buckets read per round trip when a stage set is copied into a job's own set.
_COPY_BUCKETS = 64


def lease_key(doc_id: str, job_id: str) -> str:
    return f"{job_key(doc_id, job_id)}:lease"


class ApplyJobs(Jobs):
    """Starts, runs, resumes and lists ``apply_to_existing`` jobs (see the module docstring)."""

    unfinished_key = UNFINISHED_KEY
    failed_event = "automations.job_failed"

    def __init__(self, redis: Redis, leads: LeadService, *, page: int = 100, pause: float = 0.02,
                 clock: Callable[[], float] = time.time, lister: StageLister | None = None,
                 pacer: Pacer | None = None, local: bool = True) -> None:
        super().__init__(redis)
        #: A job's hash, its document's job list and the unfinished set are in different Redis
        #: Cluster slots: there each write is a plain pipeline (a crash may leave a finished job
        #: listed as unfinished: resuming it finds nothing left to do).
        self.atomic = not is_cluster(redis)
        self.leads = leads
        self.pacer = pacer or Pacer()
        #: Run a job here as soon as it is started; False (a web-only process): a worker resumes it.
        self.local = local
        self.lister = lister  # None: the embedded CRM's stage index
        self.page = page
        self.pause = pause
        self.clock = clock
        self._renew = redis.register_script(RENEW_IF_HELD)

    def lease(self, owner: str, job_id: str) -> str:
        return lease_key(owner, job_id)

    # ------------------------------------------------------------------ start
    async def start(self, doc_id: str, version: int, document: Mapping[str, Any]) -> list[str]:
        """A job for each rule of this (new) version with ``apply_to_existing``; run in the
        background. Returns the job ids."""
        pipeline = str(document.get("pipeline", ""))
        started = []
        for rule in document.get("rules") or ():
            if not isinstance(rule, Mapping) or rule.get("apply_to_existing") is not True:
                continue
            job_id = f"v{version}-{rule.get('id')}"
            listing = self.lister is not None  # the CRM's leads are listed into the job's own set first (``_list``)
            # the embedded CRM's: its stage set's buckets are copied into the job's own set first, by
            # ``run`` (so a process that dies here leaves no set without its job)
            copy = "" if listing else by_key("lead", "stage", stage_value(pipeline, rule.get("stage")))
            now = self.clock()
            async with self.redis.pipeline(transaction=self.atomic) as pipe:
                pipe.hset(job_key(doc_id, job_id), mapping={
                    "id": job_id, "rule": str(rule.get("id")), "version": version, "stage": str(rule.get("stage")),
                    "pipeline": pipeline, "set": own_set(doc_id, job_id), "cursor": 0, "total": 0, "done": 0,
                    "state": "running", "started": now, "copy": copy})
                # the next page of the CRM's leads to list (0: listed; either way the set is the job's own)
                pipe.hset(job_key(doc_id, job_id), "listing", 1 if listing else 0)
                pipe.zadd(jobs_key(doc_id), {job_id: now})
                pipe.sadd(UNFINISHED_KEY, f"{doc_id}|{job_id}")
                await pipe.execute()
            log.info("automations.job_started", extra={"automation": doc_id, "job": job_id})
            started.append(job_id)
            if self.local:
                self._spawn(self.run(doc_id, job_id))
        return started

    # ------------------------------------------------------------------ run
    async def run(self, doc_id: str, job_id: str) -> None:
        """Page through the stage's leads from the saved cursor, under the job's lease."""
        token = uuid.uuid4().hex
        lease = lease_key(doc_id, job_id)
        if not await self.redis.set(lease, token, nx=True, px=LEASE_MS):
            return  # another process runs it
        key = job_key(doc_id, job_id)
        try:
            job = replies.text_map(await self.redis.hgetall(key))
            if job.get("state") != "running":
                await self.redis.srem(UNFINISHED_KEY, f"{doc_id}|{job_id}")
                return
            if job.get("copy") or "listing" not in job:  # the stage's buckets to copy first; or an
                # older version's job on the stage set itself (now in buckets), visited from the start
                # again: a lead visited before is a duplicate push (its dedupe id), not acted twice
                stage = job.get("copy") or job["set"]
                job = {**job, "set": own_set(doc_id, job_id), "listing": "0", "cursor": "0", "copy": ""}
                await self.redis.delete(job["set"])  # a copy a process died in is made again, whole
                total = await self._copy_stage(job["set"], stage)
                await self.redis.hset(key, mapping={"set": job["set"], "listing": 0, "cursor": 0, "done": 0,
                                                    "total": total, "copy": ""})
            if int(job.get("listing") or 0) and not await self._list(doc_id, job_id, job, token):
                return
            cursor = int(job["cursor"])
            payload = encode_apply_rule(ApplyRule(job["rule"], f"{doc_id}:{job_id}"))
            dedupe = f"apply:{doc_id}:{job_id}"
            while True:
                cursor, members = await self.redis.sscan(job["set"], cursor, count=self.page)
                for member in members:
                    await self.pacer.step()  # conversations first
                    await self.leads.deliver_raw(replies.text(member), payload, dedupe_id=dedupe)
                async with self.redis.pipeline(transaction=self.atomic) as pipe:
                    pipe.hset(key, "cursor", cursor)
                    pipe.hincrby(key, "done", len(members))
                    if cursor == 0:
                        pipe.hset(key, mapping={"state": "finished", "finished": self.clock()})
                        pipe.srem(UNFINISHED_KEY, f"{doc_id}|{job_id}")
                        if "listing" in job:  # the job's own list of the CRM's leads
                            pipe.delete(job["set"])
                    await pipe.execute()
                if cursor == 0:
                    log.info("automations.job_finished", extra={"automation": doc_id, "job": job_id})
                    return
                if not await self._renew(keys=[lease], args=[token, LEASE_MS]):
                    log.warning("automations.job_lease_lost", extra={"automation": doc_id, "job": job_id})
                    return
                await asyncio.sleep(self.pause)  # throttle: conversations come first
        finally:
            if await self.redis.get(lease) == token.encode():
                await self.redis.delete(lease)

    async def _copy_stage(self, own: str, stage: str) -> int:
        """Copy the embedded CRM's stage set ``stage`` (its buckets, ``crm_bridge/idsets.py``) into
        the job's own set ``own`` (another slot: read, then written); the number of leads."""
        names = await idsets.names(self.redis, stage)
        for start in range(0, len(names), _COPY_BUCKETS):
            pipe = self.redis.pipeline(transaction=False)
            for name in names[start:start + _COPY_BUCKETS]:
                pipe.smembers(name)
            ids = [m for found in await pipe.execute() for m in found]
            if ids:
                await self.redis.sadd(own, *ids)
        return int(await self.redis.scard(own))

    async def _list(self, doc_id: str, job_id: str, job: Mapping[str, str], token: str) -> bool:
        """List the stage's leads from the CRM into the job's set, from the saved page; False when
        the job cannot go on (its lease lost, or the CRM refused: the job failed)."""
        assert self.lister is not None
        key, page = job_key(doc_id, job_id), int(job["listing"])
        while page:
            try:
                ids, more = await self.lister.stage_leads(job["pipeline"], job["stage"], page, self.page)
            except CrmRejected as exc:  # e.g. a stage Kommo does not know: retrying will not help
                log.warning("automations.job_refused", extra={"automation": doc_id, "job": job_id, "error": str(exc)})
                async with self.redis.pipeline(transaction=self.atomic) as pipe:
                    pipe.hset(key, mapping={"state": "failed", "error": str(exc)[:500], "finished": self.clock()})
                    pipe.srem(UNFINISHED_KEY, f"{doc_id}|{job_id}")
                    pipe.delete(job["set"])
                    await pipe.execute()
                return False
            except CrmTemporary as exc:  # Kommo away: the job waits, ``resume`` goes on from this page
                log.warning("automations.job_paused", extra={"automation": doc_id, "job": job_id, "error": str(exc)})
                return False
            page = page + 1 if more else 0
            async with self.redis.pipeline(transaction=self.atomic) as pipe:
                if ids:
                    pipe.sadd(job["set"], *ids)
                pipe.hset(key, "listing", page)
                pipe.scard(job["set"])
                total = (await pipe.execute())[-1]
            await self.redis.hset(key, "total", int(total))
            if not await self._renew(keys=[lease_key(doc_id, job_id)], args=[token, LEASE_MS]):
                log.warning("automations.job_lease_lost", extra={"automation": doc_id, "job": job_id})
                return False
        return True

    # ------------------------------------------------------------------ out
    async def listing(self, doc_id: str) -> list[dict[str, Any]]:
        """The document's newest jobs, newest first: progress as the API shows it."""
        out = []
        ids = [replies.text(i) for i in await self.redis.zrevrange(jobs_key(doc_id), 0, LISTED - 1)
               if isinstance(i, (bytes, str))]
        for raw in ids:
            job = replies.text_map(await self.redis.hgetall(job_key(doc_id, raw)))
            if not job:
                continue
            done = int(job["done"])
            out.append({"id": job["id"], "rule": job["rule"], "version": int(job["version"]), "stage": job["stage"],
                        "total": max(int(job["total"]), done), "done": done, "state": job["state"],
                        **({"error": job["error"]} if job.get("error") else {}),
                        "started": float(job["started"]),
                        "finished": float(job["finished"]) if job.get("finished") else None})
        return out
