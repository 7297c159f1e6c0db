"""``/api/crm/*``: the embedded CRM for people (roles ``support`` and ``admin``).

Contacts and leads are listed newest first, searched (``q``: name, e-mail, phone) and filtered
(contacts: ``status``, ``temperature``, ``tag``, ``stage``; leads: ``stage``, ``tag``,
``responsible``), and edited with ``PATCH`` (customer card fields included). Notes carry a
priority and are listed by priority, then newest. See ``crm_bridge/directory.py``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from crm_bridge.directory import CrmDirectory

from ..errors import CrmRejected
from ..outward.email import SUPPRESSED, fold_email
from .http import MAX_INDEX, HttpError, error, json_answer, json_body, query_number, require
from .keys import SERVICES

routes = web.RouteTableDef()
KINDS = {"contacts": "contact", "leads": "lead"}


def embedded_directory(request: web.Request) -> CrmDirectory:
    """The embedded CRM's directory, or a 409 ``HttpError`` on a server with another CRM."""
    directory = request.app[SERVICES].directory
    if directory is None:
        raise HttpError(409, "embedded_crm_disabled", "this server does not use the embedded CRM")
    return directory


def _int(request: web.Request, name: str, default: int) -> int:
    """``limit``/``offset``: whole numbers, clamped to what a page can be (400 if not numbers)."""
    low = 1 if name == "limit" else 0
    return int(query_number(request, name, default, minimum=low, maximum=MAX_INDEX, integer=True, clamp=True))


def _rejected(exc: CrmRejected) -> web.Response:
    return error(422, "invalid", str(exc))


@routes.get("/api/crm/pipelines")
async def pipelines(request: web.Request) -> web.Response:
    require(request, "support")
    return json_answer({"pipelines": embedded_directory(request).pipelines()})


@routes.get("/api/crm/users")
async def users(request: web.Request) -> web.Response:
    require(request, "support")
    directory = embedded_directory(request)
    return json_answer({"users": directory.users(), "teams": directory.teams()})


@routes.get("/api/crm/tags")
async def tags(request: web.Request) -> web.Response:
    require(request, "support")
    kind = request.query.get("entity", "contact")
    if kind not in ("contact", "lead"):
        return error(400, "bad_request", "entity is contact or lead")
    return json_answer({"entity": kind, "tags": await embedded_directory(request).tags(kind)})


async def _list(request: web.Request, plural: str) -> web.Response:
    require(request, "support")
    q = request.query
    limit, offset = _int(request, "limit", 50), _int(request, "offset", 0)
    filters: dict[str, Any] = {k: v for k, v in q.items() if k not in ("q", "limit", "offset", "tag")}
    filters["tag"] = list(q.getall("tag")) if "tag" in q else []
    try:
        items, total = await embedded_directory(request).search(KINDS[plural], q=q.get("q"), filters=filters,
                                                        limit=limit, offset=offset)
    except CrmRejected as exc:
        return error(400, "bad_request", str(exc))
    if plural == "leads":  # each lead's main contact, for the pipeline view's cards (one round trip)
        await _main_contacts(embedded_directory(request), items)
    end = max(0, offset) + len(items)
    return json_answer({plural: items, "total": total, "next_offset": end if end < total else None})


async def _main_contacts(directory: CrmDirectory, leads: list[dict[str, Any]]) -> None:
    """Set ``contact`` (id, name, phone, e-mail of the first contact, or None) on each lead."""
    firsts = {str(c[0]) for lead in leads if (c := lead.get("contacts"))}
    found = {c["id"]: c for c in await directory.get_many("contact", sorted(firsts))}
    for lead in leads:
        first = found.get(str((lead.get("contacts") or [None])[0]))
        lead["contact"] = None if first is None else {k: first.get(k) for k in ("id", "name", "phone", "email")}


@routes.get("/api/crm/contacts")
async def list_contacts(request: web.Request) -> web.Response:
    return await _list(request, "contacts")


@routes.get("/api/crm/leads")
async def list_leads(request: web.Request) -> web.Response:
    return await _list(request, "leads")


@routes.post("/api/crm/contacts")
async def create_contact(request: web.Request) -> web.Response:
    require(request, "support")
    body = await json_body(request)
    try:
        return json_answer(await embedded_directory(request).create_contact(body), 201)
    except CrmRejected as exc:
        return _rejected(exc)


@routes.post("/api/crm/leads")
async def create_lead(request: web.Request) -> web.Response:
    require(request, "support")
    body = await json_body(request)
    directory = embedded_directory(request)
    if not isinstance(body, dict):
        return _rejected(CrmRejected("the body is an object of lead fields"))
    contact_id = body.pop("contact_id", None)
    if contact_id is not None and await directory.get("contact", str(contact_id)) is None:
        return error(422, "invalid", f"no contact {contact_id!r}")
    try:
        lead = await directory.create_lead(body, contact_id=None if contact_id is None else str(contact_id))
        return json_answer(lead, 201)
    except CrmRejected as exc:
        return _rejected(exc)


async def _one(request: web.Request, kind: str) -> web.Response:
    """One contact or lead with its notes (highest priority first)."""
    require(request, "support")
    directory = embedded_directory(request)
    rid = request.match_info["id"]
    item = await (directory.contact(rid) if kind == "contact" else directory.lead(rid))
    if item is None:
        return error(404, "not_found", f"no {kind} {rid!r}")
    item["notes"], item["notes_total"] = await directory.notes(kind, rid)
    return json_answer(item)


@routes.get("/api/crm/contacts/{id}")
async def get_contact(request: web.Request) -> web.Response:
    return await _one(request, "contact")


@routes.get("/api/crm/leads/{id}")
async def get_lead(request: web.Request) -> web.Response:
    return await _one(request, "lead")


async def _patch(request: web.Request, kind: str) -> web.Response:
    require(request, "support")
    body = await json_body(request)
    rid = request.match_info["id"]
    directory = embedded_directory(request)
    try:
        item = await (directory.update_contact(rid, body) if kind == "contact" else directory.update_lead(rid, body))
    except CrmRejected as exc:
        return _rejected(exc)
    if item is None:
        return error(404, "not_found", f"no {kind} {rid!r}")
    if kind == "contact" and "unsubscribed" in body and item.get("email"):  # send_email checks both
        redis = request.app[SERVICES].redis
        address = fold_email(str(item["email"]))
        await (redis.sadd(SUPPRESSED, address) if item["unsubscribed"] else redis.srem(SUPPRESSED, address))
    return json_answer(item)


@routes.patch("/api/crm/contacts/{id}")
async def patch_contact(request: web.Request) -> web.Response:
    return await _patch(request, "contact")


@routes.patch("/api/crm/leads/{id}")
async def patch_lead(request: web.Request) -> web.Response:
    return await _patch(request, "lead")


async def _notes(request: web.Request, kind: str) -> web.Response:
    require(request, "support")
    directory = embedded_directory(request)
    rid = request.match_info["id"]
    if await directory.get(kind, rid) is None:
        return error(404, "not_found", f"no {kind} {rid!r}")
    offset, limit = _int(request, "offset", 0), _int(request, "limit", 50)
    notes, total = await directory.notes(kind, rid, offset=offset, limit=limit)
    end = max(0, offset) + len(notes)
    return json_answer({"notes": notes, "total": total, "next_offset": end if end < total else None})


async def _add_note(request: web.Request, kind: str) -> web.Response:
    principal = require(request, "support")
    body = await json_body(request)
    if not isinstance(body, dict) or set(body) - {"text", "priority"}:
        return _rejected(CrmRejected('the body is {"text": "…", "priority": "high" | "medium" | "none"}'))
    rid = request.match_info["id"]
    try:
        note = await embedded_directory(request).add_note(kind, rid, body.get("text"), body.get("priority"),
                                                          principal.name)
    except CrmRejected as exc:
        return _rejected(exc)
    if note is None:
        return error(404, "not_found", f"no {kind} {rid!r}")
    return json_answer(note, 201)


async def _edit_note(request: web.Request, kind: str) -> web.Response:
    require(request, "support")
    rid, nid = request.match_info["id"], request.match_info["note"]
    directory = embedded_directory(request)
    if request.method == "DELETE":
        if not await directory.delete_note(kind, rid, nid):
            return error(404, "not_found", f"no note {nid!r} on {kind} {rid!r}")
        return json_answer({"ok": True})
    try:
        note = await directory.update_note(kind, rid, nid, await json_body(request))
    except CrmRejected as exc:
        return _rejected(exc)
    if note is None:
        return error(404, "not_found", f"no note {nid!r} on {kind} {rid!r}")
    return json_answer(note)


def _note_routes() -> None:
    for plural, kind in KINDS.items():
        async def listing(request: web.Request, kind: str = kind) -> web.Response:
            return await _notes(request, kind)

        async def adding(request: web.Request, kind: str = kind) -> web.Response:
            return await _add_note(request, kind)

        async def editing(request: web.Request, kind: str = kind) -> web.Response:
            return await _edit_note(request, kind)

        routes.get(f"/api/crm/{plural}/{{id}}/notes")(listing)
        routes.post(f"/api/crm/{plural}/{{id}}/notes")(adding)
        routes.patch(f"/api/crm/{plural}/{{id}}/notes/{{note}}")(editing)
        routes.delete(f"/api/crm/{plural}/{{id}}/notes/{{note}}")(editing)


_note_routes()
