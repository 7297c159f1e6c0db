"""Split tests of a bot: ``GET /api/bots/{id}/splits`` (state and counts), and an operator's hand:
``POST /api/bots/{id}/splits/{step}/winner`` (pick a path, or ``null`` to go back to the rule) and
``POST /api/bots/{id}/splits/{step}/reset`` (start the test again). The JSON is in docs/flows.md
("Split tests over the API"); the analytics view of ``/live`` reads it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..engine.splits import SplitRecord, rate
from ..store.splits import SplitStore
from .http import MAX_INDEX, HttpError, error, json_body, query_number, require
from .keys import SERVICES

if TYPE_CHECKING:  # compiled flows are imported with the first flow (issue 14: startup)
    from ..builder import compiled as c

log = logging.getLogger("salesbot.server.splits")
routes = web.RouteTableDef()
_BOT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_STEP_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def view(step: c.CSplit, record: SplitRecord) -> dict[str, Any]:
    """One split as the API shows it (documented in docs/flows.md)."""
    paths = [p.id for p in step.paths]
    winner = record.winner if record.winner in paths else None
    return {
        "step": step.id, "goal": step.goal, "generation": record.generation,
        "rule": {"after_entries": step.after_entries, "or_after": step.or_after},
        "started_at": record.started,
        "winner": None if winner is None else {"path": winner, "by": record.winner_by or "auto",
                                               "at": record.winner_at},
        "entries": sum(record.entries.get(p, 0) for p in paths),
        "paths": [{"id": p.id, "weight": p.weight, "next": p.next, "entries": record.entries.get(p.id, 0),
                   "goals": record.goals.get(p.id, 0),
                   "rate": round(rate(record.entries.get(p.id, 0), record.goals.get(p.id, 0)), 6)}
                  for p in step.paths],
    }


async def _flow(request: web.Request, version: int | None = None) -> c.CompiledFlow:
    bot = request.match_info["id"]
    if not _BOT_ID.fullmatch(bot):
        log.warning("splits.bad_bot_id", extra={"bot": bot[:80]})
        raise HttpError(404, "not_found", "no such bot")
    flow = await request.app[SERVICES].bots.ensure(bot, version)
    if flow is None:
        raise HttpError(404, "not_found", f"no bot {bot!r}" + (f" version {version}" if version else ""))
    return flow


async def _split_step(request: web.Request) -> tuple[c.CompiledFlow, c.CSplit]:
    """The active flow and its split step named in the path, or a 404 ``HttpError``."""
    from ..builder.compiled import CSplit

    flow = await _flow(request)
    step_id = request.match_info["step"]
    step = flow.steps.get(step_id) if _STEP_ID.fullmatch(step_id) else None
    if not isinstance(step, CSplit):
        log.warning("splits.unknown_step", extra={"bot": flow.id, "step": step_id[:80]})
        raise HttpError(404, "not_found", f"bot {flow.id!r} has no split step {step_id[:64]!r}")
    return flow, step


@routes.get("/api/bots/{id}/splits")
async def list_splits(request: web.Request) -> web.Response:
    require(request, "operator", "support")
    version = query_number(request, "version", None, minimum=1, maximum=MAX_INDEX, integer=True)
    flow = await _flow(request, version)
    from ..builder.compiled import CSplit

    store = SplitStore(request.app[SERVICES].redis)
    splits = [view(s, await store.read(flow.id, s.id)) for s in flow.steps.values() if isinstance(s, CSplit)]
    return web.json_response({"bot": flow.id, "version": flow.version, "splits": splits})


@routes.post("/api/bots/{id}/splits/{step}/winner")
async def pick_winner(request: web.Request) -> web.Response:
    principal = require(request, "operator")
    flow, step = await _split_step(request)
    body = await json_body(request)
    paths = [p.id for p in step.paths]
    if not isinstance(body, dict) or set(body) != {"path"} or not (body["path"] is None or body["path"] in paths):
        log.warning("splits.bad_winner", extra={"bot": flow.id, "step": step.id})
        return error(400, "bad_request", f'the body is {{"path": one of {", ".join(paths)}, or null to let the '
                                         "rule choose}")
    store = SplitStore(request.app[SERVICES].redis)
    path = body["path"]
    if path is None:
        await store.clear_winner(flow.id, step.id)
    else:
        await store.pick(flow.id, step.id, str(path), time.time())
    log.info("splits.winner_set", extra={"bot": flow.id, "step": step.id, "path": path, "user": principal.name})
    return web.json_response(view(step, await store.read(flow.id, step.id)))


@routes.post("/api/bots/{id}/splits/{step}/reset")
async def reset_split(request: web.Request) -> web.Response:
    principal = require(request, "operator")
    flow, step = await _split_step(request)
    store = SplitStore(request.app[SERVICES].redis)
    generation = await store.reset(flow.id, step.id)
    log.info("splits.reset", extra={"bot": flow.id, "step": step.id, "generation": generation,
                                    "user": principal.name})
    return web.json_response(view(step, await store.read(flow.id, step.id)))


_PATH_VIEW = {"type": "object", "required": ["id", "weight", "next", "entries", "goals", "rate"], "properties": {
    "id": {"type": "string"}, "weight": {"type": "integer"}, "next": {"type": "string"},
    "entries": {"type": "integer"}, "goals": {"type": "integer"},
    "rate": {"type": "number", "description": "goals / entries (0 without entries)"}}}
SPLIT_VIEW: dict[str, Any] = {
    "type": "object", "required": ["step", "goal", "generation", "rule", "started_at", "winner", "entries", "paths"],
    "properties": {
        "step": {"type": "string"}, "goal": {"type": ["string", "null"]}, "generation": {"type": "integer"},
        "rule": {"type": "object", "properties": {"after_entries": {"type": ["integer", "null"]},
                                                  "or_after": {"type": ["integer", "null"]}}},
        "started_at": {"type": ["number", "null"]}, "entries": {"type": "integer"},
        "winner": {"type": ["object", "null"], "required": ["path", "by", "at"], "properties": {
            "path": {"type": "string"}, "by": {"enum": ["auto", "manual"]}, "at": {"type": ["number", "null"]}}},
        "paths": {"type": "array", "items": _PATH_VIEW}}}
SPLITS_VIEW: dict[str, Any] = {"type": "object", "required": ["bot", "version", "splits"], "properties": {
    "bot": {"type": "string"}, "version": {"type": "integer"}, "splits": {"type": "array", "items": SPLIT_VIEW}}}


def split_paths(op: Callable[..., dict[str, Any]], json_: Callable[..., dict[str, Any]],
                param: Callable[..., dict[str, Any]], err: dict[str, Any]) -> dict[str, Any]:
    """This module's routes for ``/api/openapi.json`` (built with openapi.py's helpers)."""
    ids = [param("id"), param("step")]
    view_ = json_(SPLIT_VIEW)
    return {
        "/api/bots/{id}/splits": {"get": op(
            "Split tests of a bot version (the active one by default): paths, counts, goal rates, winner",
            {"200": json_(SPLITS_VIEW), "400": json_(err), "404": json_(err)}, auth=["operator", "support"],
            params=[param("id"), param("version", "query", {"type": "integer"}, required=False)])},
        "/api/bots/{id}/splits/{step}/winner": {"post": op(
            "Pick the winner by hand (every later entry takes it), or null to let the rule choose",
            {"200": view_, "400": json_(err), "404": json_(err)}, auth=["operator"],
            body={"type": "object", "required": ["path"], "properties": {"path": {"type": ["string", "null"]}}},
            params=ids)},
        "/api/bots/{id}/splits/{step}/reset": {"post": op(
            "Start the test again: no winner, counts from zero (a new generation)",
            {"200": view_, "404": json_(err)}, auth=["operator"], params=ids)},
    }
