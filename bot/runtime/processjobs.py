"""Batches of ``POST /api/processes/{id}/contacts``: a process started for up to 10,000 contacts.

The pattern of ``apply_to_existing`` jobs (``applyjobs.py``): the job is a Redis hash (cursor,
total, started, skipped, failed, state, times) plus the list of the contacts asked for, and sits
in the set of unfinished jobs until its last page is saved. Whoever runs it holds a lease
(``SET NX PX``, renewed every page); a process that dies lets it expire and a worker's
``resume`` goes on from the saved cursor. A contact of a page redone after a crash is started
under the same idempotency key (``job:<job>:<index>``): deduplicated, not started twice. Before
each contact the ``Pacer`` waits while a conversation batch is in flight in this process (and
keeps under ``[automations] apply_rate``). Each contact's outcome is counted: ``started``,
``skipped`` (already in the process, or a duplicate), ``failed`` (unknown contact…; the last
few reasons are kept in ``errors``).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from ..errors import CrmTemporary, SalesbotError
from ..store import replies
from ..store.clusterclient import is_cluster
from ..store.scripts import RENEW_IF_HELD
from .jobs import Jobs
from .pacing import Pacer
from .processes import Processes

log = logging.getLogger("salesbot.processes.jobs")
UNFINISHED_KEY = "sb:processes:jobs:unfinished"
LEASE_MS = 30_000
LISTED = 50
#: Failure reasons kept per job (the newest).
ERRORS_KEPT = 20
MAX_CONTACTS = 10_000



def jobs_key(process: str) -> str:
    return f"sb:processes:{{{process}}}:jobs"


def job_key(process: str, job_id: str) -> str:
    return f"sb:processes:{{{process}}}:job:{job_id}"


class ProcessJobs(Jobs):
    """Starts, runs and resumes batches of process starts (see the module docstring)."""

    unfinished_key = UNFINISHED_KEY
    failed_event = "processes.job_failed"

    def __init__(self, redis: Redis, processes: Processes, *, page: int = 100, pacer: Pacer | None = None,
                 clock: Callable[[], float] = time.time, local: bool = True) -> None:
        super().__init__(redis)
        self.atomic = not is_cluster(redis)  # the unfinished set is in another slot
        self.processes = processes
        self.page = page
        self.pacer = pacer or Pacer()
        self.clock = clock
        self.local = local
        self._renew = redis.register_script(RENEW_IF_HELD)

    def lease(self, owner: str, job_id: str) -> str:
        return f"{job_key(owner, job_id)}:lease"

    async def start(self, process: str, contacts: Sequence[Mapping[str, str]],
                    variables: Mapping[str, Any]) -> str:
        """Store a job for these contacts (each ``{"id"|"phone"|"email": value}``) and run it here
        (``local``) or leave it to a worker. Returns the job id."""
        job_id = uuid.uuid4().hex[:16]
        key = job_key(process, job_id)
        now = self.clock()
        async with self.redis.pipeline(transaction=self.atomic) as pipe:
            pipe.rpush(f"{key}:contacts", *(json.dumps(dict(c), separators=(",", ":")) for c in contacts))
            pipe.hset(key, mapping={"id": job_id, "process": process, "cursor": 0, "total": len(contacts),
                                    "started": 0, "skipped": 0, "failed": 0, "state": "running", "at": now,
                                    "variables": json.dumps(dict(variables), separators=(",", ":"))})
            pipe.zadd(jobs_key(process), {job_id: now})
            await pipe.execute()
        await self.redis.sadd(UNFINISHED_KEY, f"{process}|{job_id}")
        log.info("processes.job_started", extra={"bot": process, "job": job_id, "total": len(contacts)})
        if self.local:
            self._spawn(self.run(process, job_id))
        return job_id

    async def run(self, process: str, job_id: str) -> None:
        """Start the process for the job's contacts from the saved cursor, a page at a time."""
        key = job_key(process, job_id)
        lease, token = f"{key}:lease", uuid.uuid4().hex
        if not await self.redis.set(lease, token, nx=True, px=LEASE_MS):
            return
        try:
            job = replies.text_map(await self.redis.hgetall(key))
            if job.get("state") != "running":
                await self.redis.srem(UNFINISHED_KEY, f"{process}|{job_id}")
                return
            variables = json.loads(job.get("variables") or "{}")
            cursor, total = int(job["cursor"]), int(job["total"])
            while cursor < total:
                rows = await self.redis.lrange(f"{key}:contacts", cursor, cursor + self.page - 1)
                counts = {"started": 0, "skipped": 0, "failed": 0}
                errors: list[str] = []
                for n, raw in enumerate(rows):
                    await self.pacer.step()  # conversations first
                    outcome = await self._one(process, json.loads(replies.text(raw)), variables,
                                              f"job:{job_id}:{cursor + n}")
                    if outcome in counts:
                        counts[outcome] += 1
                    else:
                        counts["failed"] += 1
                        errors.append(f"{cursor + n}: {outcome}"[:300])
                cursor += len(rows) or self.page
                async with self.redis.pipeline(transaction=self.atomic) as pipe:
                    pipe.hset(key, "cursor", min(cursor, total))
                    for name, by in counts.items():
                        pipe.hincrby(key, name, by)
                    if errors:
                        pipe.lpush(f"{key}:errors", *errors)
                        pipe.ltrim(f"{key}:errors", 0, ERRORS_KEPT - 1)
                    if cursor >= total:
                        pipe.hset(key, mapping={"state": "finished", "finished": self.clock()})
                        pipe.delete(f"{key}:contacts")
                    await pipe.execute()
                if cursor < total and not await self._renew(keys=[lease], args=[token, LEASE_MS]):
                    log.warning("processes.job_lease_lost", extra={"bot": process, "job": job_id})
                    return
            await self.redis.srem(UNFINISHED_KEY, f"{process}|{job_id}")
            log.info("processes.job_finished", extra={"bot": process, "job": job_id})
        finally:
            if await self.redis.get(lease) == token.encode():
                await self.redis.delete(lease)

    async def _one(self, process: str, who: Mapping[str, Any], variables: Mapping[str, Any], key: str) -> str:
        """``started``, ``skipped``, or why it failed."""
        try:
            contact = await self.processes.contact(contact_id=who.get("id"), phone=who.get("phone"),
                                                   email=who.get("email"))
            started = await self.processes.start(process, contact, variables=variables, key=key)
        except CrmTemporary:
            raise  # the CRM away: the job stops here and ``resume`` redoes the page
        except SalesbotError as exc:
            return str(exc) or type(exc).__name__
        return "started" if started.status == "started" else "skipped"

    async def listing(self, process: str) -> list[dict[str, Any]]:
        """The process's newest jobs, newest first, with their progress."""
        out = []
        for job_id in replies.members(await self.redis.zrevrange(jobs_key(process), 0, LISTED - 1)):
            out.append(await self.get(process, job_id))
        return [job for job in out if job]

    async def get(self, process: str, job_id: str) -> dict[str, Any]:
        key = job_key(process, job_id)
        job = replies.text_map(await self.redis.hgetall(key))
        if not job:
            return {}
        errors = [replies.text(e) for e in await self.redis.lrange(f"{key}:errors", 0, ERRORS_KEPT - 1)]
        return {"id": job["id"], "process": job["process"], "state": job["state"], "total": int(job["total"]),
                "done": int(job["cursor"]), "started": int(job["started"]), "skipped": int(job["skipped"]),
                "failed": int(job["failed"]), "errors": errors, "at": float(job["at"]),
                "finished": float(job["finished"]) if job.get("finished") else None}
