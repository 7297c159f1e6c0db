
"""``apply_to_existing`` over real HTTP and Redis: saving a version starts a job that puts one
``ApplyRule`` on the queue of every lead in the rule's stage (and no other), with its progress
at ``GET /api/automations/{id}/jobs``; a job whose runner died is resumed from Redis without
applying the rule twice to a lead."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.runtime.applyjobs import UNFINISHED_KEY, ApplyJobs, job_key, own_set
from bot.runtime.leads import LeadService
from bot.runtime.pacing import Activity, Pacer
from bot.server.app import create_app
from bot.server.keys import SERVICES
from bot.server.services import Services
from crm_bridge import idsets
from crm_bridge.indexes import by_key
from crm_bridge.redis_crm import move_old_layout
from tests.server.conftest import ADMIN, AUTOMATIONS, make_config, running
from tests.waiting import wait_for

AUTH = {"Authorization": f"Bearer {ADMIN}"}
EXAMPLE: dict[str, Any] = json.loads((AUTOMATIONS / "sales.json").read_text(encoding="utf-8"))
RULE = {"id": "nudge_qualified", "stage": "Qualified", "on": ["moved_in"], "apply_to_existing": True,
        "do": {"actions": [{"do": "tags", "add": ["nudged"]}]}}


def with_rule(**rule: Any) -> dict[str, Any]:
    doc = copy.deepcopy(EXAMPLE)
    doc["rules"] = [*doc["rules"], {**RULE, **rule}]
    return doc


async def _leads(server: TestServer, stage: str, n: int) -> list[str]:
    """``n`` new leads in ``stage``, their ``created`` events handled: a job's push then finds each
    queue free and handles it at once, instead of leaving it to a background batch still under
    way that the test would have to wait for (under load it often was)."""
    directory = server.app[SERVICES].directory
    assert directory is not None
    ids = [str((await directory.create_lead({"name": f"{stage} {i}", "stage": stage}))["id"]) for i in range(n)]
    await server.app[SERVICES].leads.idle()
    return ids


async def _applied(http: ClientSession, lead: str) -> list[dict[str, Any]]:
    r = await http.get(f"/api/leads/{lead}/events", headers=AUTH)
    assert r.status == 200
    return [e for e in (await r.json())["events"] if e.get("type") == "apply_rule"]


async def _jobs(http: ClientSession, doc: str = "sales") -> list[dict[str, Any]]:
    r = await http.get(f"/api/automations/{doc}/jobs", headers=AUTH)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["id"] == doc
    jobs: list[dict[str, Any]] = body["jobs"]
    return jobs


async def test_saving_a_version_applies_the_rule_to_every_lead_already_in_the_stage(
        server: TestServer, http: ClientSession) -> None:
    inside = await _leads(server, "Qualified", 5)
    outside = await _leads(server, "Proposal", 2)
    assert await _jobs(http) == []  # the example has no apply_to_existing rule
    r = await http.put("/api/automations/sales", json=with_rule(), headers=AUTH)
    assert r.status == 201, await r.text()

    async def finished() -> list[dict[str, Any]] | None:
        jobs = await _jobs(http)
        return jobs if jobs and jobs[0]["state"] == "finished" else None

    (job,) = await wait_for(finished, what="the job to finish")
    assert {k: job[k] for k in ("id", "rule", "version", "stage", "total", "done")} == {
        "id": "v2-nudge_qualified", "rule": "nudge_qualified", "version": 2, "stage": "Qualified",
        "total": 5, "done": 5}
    assert job["finished"] >= job["started"] > 0
    for lead in inside:
        (applied,) = await _applied(http, lead)
        assert applied["rule"] == "nudge_qualified" and applied["job"] == "sales:v2-nudge_qualified"
    for lead in outside:
        assert await _applied(http, lead) == []
    # the same document again is no new version: no new job; a version without the flag neither
    assert (await http.put("/api/automations/sales", json=with_rule(), headers=AUTH)).status == 200
    assert (await http.put("/api/automations/sales", json=with_rule(apply_to_existing=False),
                           headers=AUTH)).status == 201
    assert [j["id"] for j in await _jobs(http)] == ["v2-nudge_qualified"]


async def test_jobs_of_an_unknown_document_are_404_and_need_a_token(http: ClientSession) -> None:
    r = await http.get("/api/automations/nobody/jobs", headers=AUTH)
    assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    assert (await http.get("/api/automations/sales/jobs")).status == 401


class _Dies:
    """A lead service whose process dies after ``after`` pushes (the job's runner with it)."""

    def __init__(self, leads: LeadService, after: int) -> None:
        self.leads, self.left = leads, after

    async def deliver_raw(self, lead_id: str, payload: bytes, *, dedupe_id: str) -> bool:
        if self.left == 0:
            raise RuntimeError("the process died")
        self.left -= 1
        return await self.leads.deliver_raw(lead_id, payload, dedupe_id=dedupe_id)


async def test_a_job_whose_runner_died_is_resumed_and_applies_the_rule_once_per_lead(
        server: TestServer, http: ClientSession, redis: Redis) -> None:
    services = server.app[SERVICES]
    inside = await _leads(server, "Qualified", 4)
    dying = ApplyJobs(redis, _Dies(services.leads, after=2), pause=0)  # type: ignore[arg-type]
    (job_id,) = await dying.start("sales", 7, with_rule())
    await dying.idle()
    state = await redis.hgetall(job_key("sales", job_id))
    assert state[b"state"] == b"running" and state[b"done"] == b"0"  # its page was never saved
    assert await redis.sismember(UNFINISHED_KEY, f"sales|{job_id}")
    assert sum([len(await _applied(http, lead)) for lead in inside]) == 2

    resumed = ApplyJobs(redis, services.leads, pause=0)
    assert await resumed.resume() == 1
    await resumed.idle()
    (job,) = [j for j in await _jobs(http) if j["id"] == job_id]
    assert (job["state"], job["total"], job["done"]) == ("finished", 4, 4)
    assert not await redis.sismember(UNFINISHED_KEY, f"sales|{job_id}")
    for lead in inside:  # the two pushed before the crash are not applied again
        assert len(await _applied(http, lead)) == 1
    assert await resumed.resume() == 0  # nothing left to take over


async def test_a_large_stage_is_paged_and_a_crash_resumes_from_the_saved_cursor(
        server: TestServer, redis: Redis) -> None:
    """600 ids in the stage index (more than fit one ``SSCAN`` reply of a small set): the pages
    before the crash are saved, the resumed job visits the rest and no lead gets it twice."""
    services = server.app[SERVICES]
    ids = await _stage_ids(redis, "Proposal", 600)
    dying = ApplyJobs(redis, _Dies(services.leads, after=350), page=100, pause=0)  # type: ignore[arg-type]
    (job_id,) = await dying.start("sales", 8, with_rule(stage="Proposal"))
    await dying.idle()
    saved = int(await redis.hget(job_key("sales", job_id), "done") or 0)
    assert 0 < saved <= 350 and await redis.hget(job_key("sales", job_id), "cursor") != b"0"
    resumed = ApplyJobs(redis, services.leads, page=100, pause=0)
    assert await resumed.resume() == 1
    await resumed.idle()
    job = await redis.hgetall(job_key("sales", job_id))
    assert job[b"state"] == b"finished" and int(job[b"done"]) >= 600
    counts = [len([e for e in await services.leads.history(lead) if e.get("type") == "apply_rule"]) for lead in ids]
    assert counts == [1] * 600


async def _resumed_to_its_end(redis: Redis, services: Services, job_id: str) -> dict[bytes, bytes]:
    """The job taken over by a new runner (or the server's worker, first) and finished: its hash."""
    resumed = ApplyJobs(redis, services.leads, page=100, pause=0)
    await resumed.resume()  # (or the server's worker takes it first)
    await resumed.idle()

    async def finished() -> bool:
        return await redis.hget(job_key("sales", job_id), "state") == b"finished"

    await wait_for(finished, what=f"the job {job_id} to finish")
    job: dict[bytes, bytes] = await redis.hgetall(job_key("sales", job_id))
    return job


async def _applied_counts(services: Services, ids: list[str]) -> list[int]:
    return [len([e for e in await services.leads.history(lead) if e.get("type") == "apply_rule"]) for lead in ids]


async def test_a_stored_job_copies_its_stage_when_it_runs_so_a_crash_at_the_put_leaves_no_set(
        server: TestServer, redis: Redis) -> None:
    """The PUT (a web-only process here: ``local`` False) writes the job and copies nothing: a
    process that died between a copy and its job's write left a set of up to every lead of the
    stage, with no TTL and no job to delete it. The worker that runs the job copies the stage's
    buckets first (``copy``), then visits every lead once."""
    services = server.app[SERVICES]
    ids = await _stage_ids(redis, "Proposal", 250)
    web = ApplyJobs(redis, services.leads, page=100, pause=0, local=False)
    (job_id,) = await web.start("sales", 9, with_rule(stage="Proposal"))
    assert not await redis.exists(own_set("sales", job_id))  # nothing copied by the PUT
    assert await redis.hget(job_key("sales", job_id), "copy") == by_key("lead", "stage", "Sales/Proposal").encode()
    job = await _resumed_to_its_end(redis, services, job_id)
    assert int(job[b"done"]) == 250 and job[b"total"] == b"250" and job[b"copy"] == b""
    assert await _applied_counts(services, ids) == [1] * 250
    assert not await redis.exists(own_set("sales", job_id))  # its own copy, deleted


async def _stage_ids(redis: Redis, stage: str, n: int) -> list[str]:
    """``n`` lead ids (from the CRM's counter, no records) in the stage's set (its buckets)."""
    last = int(await redis.incrby(idsets.IDS, n))
    ids = [str(i) for i in range(last - n + 1, last + 1)]
    pipe = redis.pipeline(transaction=False)
    for lid in ids:
        idsets.add(pipe, by_key("lead", "stage", f"Sales/{stage}"), lid)
    await pipe.execute()
    return ids


async def test_a_job_an_older_version_started_on_the_stage_set_itself_visits_every_lead(
        server: TestServer, redis: Redis) -> None:
    """An older version's job (no ``listing``: it scanned the stage's one set in place) whose set
    the start has moved into buckets: resumed, it copies the buckets and visits every lead once."""
    services = server.app[SERVICES]
    stage = by_key("lead", "stage", "Sales/Proposal")
    ids = [str(900_000 + i) for i in range(300)]
    await redis.sadd(stage, *ids)  # the older layout: one set
    await redis.set(idsets.IDS, 900_300)
    await services.redis.delete(idsets.DONE)
    assert await move_old_layout(redis) >= 300  # the start's move: the set into its buckets
    assert not await redis.exists(stage)
    job_id = "v8-nudge_qualified"  # (written after the move here: this server serves already)
    await redis.hset(job_key("sales", job_id), mapping={
        "id": job_id, "rule": "nudge_qualified", "version": 8, "stage": "Proposal", "pipeline": "Sales",
        "set": stage, "cursor": 0, "total": 300, "done": 0, "state": "running", "started": 1.0})
    await redis.sadd(UNFINISHED_KEY, f"sales|{job_id}")
    job = await _resumed_to_its_end(redis, services, job_id)
    assert job[b"state"] == b"finished" and int(job[b"done"]) == 300 and job[b"total"] == b"300"
    assert await _applied_counts(services, ids) == [1] * 300
    assert not await redis.exists(f"{job_key('sales', job_id)}:leads")  # its own copy, deleted


@pytest.fixture
async def server(redis: Redis, redis_url: str) -> AsyncIterator[TestServer]:
    """This module's servers load the example automation document at start; their worker looks
    for jobs to take over only at start (``timer_poll_interval`` 30 s): the tests hand jobs over
    between runners themselves."""
    async with running(make_config(redis_url, automations_dir=str(AUTOMATIONS), timer_poll_interval=30)) as srv:
        yield srv


async def test_a_job_gives_way_while_a_conversation_is_in_flight_and_resumes_after(
        server: TestServer, http: ClientSession, redis: Redis) -> None:
    """The ``Pacer`` holds the job before its next lead while the process has a conversation
    batch in flight (``Activity``): no lead is visited until the conversation is done."""
    services = server.app[SERVICES]
    inside = await _leads(server, "Qualified", 3)
    busy = Activity()
    pacer = Pacer(busy, max_wait=60)
    jobs = ApplyJobs(redis, services.leads, pacer=pacer, pause=0)
    with busy.track():  # a conversation is being handled
        (job_id,) = await jobs.start("sales", 9, with_rule())
        await wait_for(lambda: pacer.paused == 1, what="the job to give way")
        assert sum([len(await _applied(http, lead)) for lead in inside]) == 0
        assert (await redis.hget(job_key("sales", job_id), "state")) == b"running"
    await jobs.idle()  # the conversation is done: the job goes on
    assert [len(await _applied(http, lead)) for lead in inside] == [1, 1, 1]
    assert (await redis.hget(job_key("sales", job_id), "state")) == b"finished"


async def test_a_busy_process_still_moves_the_job_on(server: TestServer, http: ClientSession, redis: Redis) -> None:
    """A process never idle (``max_wait`` 0 here) slows a job down but does not stop it."""
    services = server.app[SERVICES]
    inside = await _leads(server, "Qualified", 2)
    busy = Activity()
    pacer = Pacer(busy, max_wait=0)
    jobs = ApplyJobs(redis, services.leads, pacer=pacer, pause=0)
    with busy.track():
        await jobs.start("sales", 10, with_rule())
        await jobs.idle()
    assert pacer.paused == 2
    assert [len(await _applied(http, lead)) for lead in inside] == [1, 1]


async def test_a_web_only_process_leaves_its_jobs_to_a_worker(
        server: TestServer, http: ClientSession, redis: Redis) -> None:
    """``local`` False (``serve --role web``): the job is stored, not run; a worker's ``resume``
    runs it."""
    services = server.app[SERVICES]
    inside = await _leads(server, "Qualified", 2)
    web = ApplyJobs(redis, services.leads, local=False)
    (job_id,) = await web.start("sales", 11, with_rule())
    await web.idle()
    assert not web._tasks and await redis.sismember(UNFINISHED_KEY, f"sales|{job_id}")
    assert sum([len(await _applied(http, lead)) for lead in inside]) == 0
    worker = ApplyJobs(redis, services.leads, pause=0)
    assert await worker.resume() == 1
    await worker.idle()
    assert [len(await _applied(http, lead)) for lead in inside] == [1, 1]


async def test_a_put_to_the_web_process_is_applied_by_the_worker_process(redis: Redis, redis_url: str) -> None:
    """``serve --role web`` + ``salesbot worker`` on one Redis: the web process stores the job,
    the worker's loop takes it over and visits the leads."""
    config = make_config(redis_url, automations_dir=str(AUTOMATIONS))
    web, worker = TestServer(create_app(config, role="web")), TestServer(create_app(config, role="worker"))  # type: ignore[arg-type]
    await web.start_server()
    try:
        assert web.app[SERVICES].jobs.local is False
        inside = await _leads(web, "Qualified", 3)
        async with ClientSession(base_url=str(web.make_url(""))) as http:
            r = await http.put("/api/automations/sales", json=with_rule(), headers=AUTH)
            assert r.status == 201, await r.text()
            (job,) = await _jobs(http)
            assert (job["state"], job["done"]) == ("running", 0) and not web.app[SERVICES].jobs._tasks  # not run here
            await worker.start_server()
            assert worker.app[SERVICES].jobs.local is True

            async def finished() -> bool:
                return (await _jobs(http))[0]["state"] == "finished"

            await wait_for(finished, what="the worker to run the job")
            await worker.app[SERVICES].leads.idle()
            assert [len(await _applied(http, lead)) for lead in inside] == [1, 1, 1]
    finally:
        await worker.close()
        await web.close()
