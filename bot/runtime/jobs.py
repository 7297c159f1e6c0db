"""What resumable background jobs share (rules' ``apply_to_existing``: ``applyjobs.py``; process
batches: ``processjobs.py``): their tasks in this process, and ``resume``, which takes over every
unfinished job whose lease has lapsed — a process that died mid-job leaves it to the next one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from redis.asyncio import Redis

from ..store import replies

log = logging.getLogger("salesbot.jobs")


class Jobs:
    """Base of a kind of job: ``unfinished_key`` holds ``<owner>|<job id>`` of the jobs not done
    yet; a subclass says where a job's lease is (``lease``) and how it runs (``run``)."""

    unfinished_key = ""
    #: The log event of a job that failed here (it stays unfinished: ``resume`` takes it over).
    failed_event = "jobs.failed"

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._tasks: set[asyncio.Task[None]] = set()

    def lease(self, owner: str, job_id: str) -> str:
        raise NotImplementedError

    async def run(self, owner: str, job_id: str) -> None:
        raise NotImplementedError

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._logged(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _logged(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:  # the job stays unfinished: ``resume`` takes it over from its cursor
            log.exception(self.failed_event)

    async def resume(self) -> int:
        """Take over every unfinished job nobody holds (a worker calls this now and then)."""
        taken = 0
        for raw in await self.redis.smembers(self.unfinished_key):
            owner, _, job_id = replies.text(raw).partition("|")
            if not await self.redis.exists(self.lease(owner, job_id)):
                self._spawn(self.run(owner, job_id))
                taken += 1
        return taken

    async def idle(self) -> None:
        """Wait for the jobs running here (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        """Stop the jobs running here; their leases expire and another process resumes them."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
