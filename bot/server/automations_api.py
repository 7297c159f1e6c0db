"""The automations API: automation documents, versioned like bots (docs/automations.md, "API").

``PUT`` checks a document against the CRM's pipelines and the loaded bots and stores it as a new
active version (201), or answers 200 when it is the newest version already, or 422 with every
problem as ``details: [{pointer, message}]``. Roles as for bots: operators write, support reads.
"""

from __future__ import annotations

from aiohttp import web

from ..errors import AutomationsInvalid
from ..store.bots import problems_as_details
from ..store.versions import DocumentNotFound
from .automation_docs import AutomationDocuments
from .http import MAX_INDEX, error, json_body, require
from .keys import SERVICES

routes = web.RouteTableDef()


def _documents(request: web.Request) -> AutomationDocuments:
    services = request.app[SERVICES]
    return AutomationDocuments.of(services.redis, services.crm, services.bots)


@routes.put("/api/automations/{id}")
async def put_automations(request: web.Request) -> web.Response:
    require(request, "operator")
    doc = await json_body(request)
    doc_id = request.match_info["id"]
    if isinstance(doc, dict) and doc.get("id") != doc_id:
        return error(422, "invalid_automations", "the document's id must match the URL",
                     [{"pointer": "/id", "message": f'must be "{doc_id}" (the id in the URL)'}])
    documents = _documents(request)
    try:
        info, new = await documents.put(doc)
    except AutomationsInvalid as exc:
        details = problems_as_details(exc.problems)
        return error(422, "invalid_automations", f"{len(details)} problem(s) in the document", details)
    if not new:
        await documents.documents.activate(info.id, info.version)
    return web.json_response({"id": info.id, "version": info.version, "warnings": list(info.warnings)},
                             status=201 if new else 200)


@routes.get("/api/automations")
async def list_automations(request: web.Request) -> web.Response:
    require(request, "operator", "support")
    return web.json_response({"automations": await _documents(request).documents.listing()})


@routes.get("/api/automations/{id}")
async def get_automations(request: web.Request) -> web.Response:
    require(request, "operator", "support")
    doc_id = request.match_info["id"]
    try:
        version, doc = await _documents(request).documents.document(doc_id)
    except DocumentNotFound as exc:
        return error(404, "not_found", str(exc))
    return web.json_response({"id": doc_id, "version": version, "automations": doc})


@routes.get("/api/automations/{id}/versions")
async def automation_versions(request: web.Request) -> web.Response:
    require(request, "operator", "support")
    documents = _documents(request).documents
    doc_id = request.match_info["id"]
    versions = await documents.versions(doc_id)
    if not versions:
        return error(404, "not_found", f"no automation document {doc_id!r}")
    active = await documents.active_version(doc_id)
    return web.json_response({"id": doc_id, "active_version": active,
                              "versions": [{**v.as_dict(), "active": v.version == active} for v in versions]})


@routes.get("/api/automations/{id}/versions/{n}")
async def automation_version(request: web.Request) -> web.Response:
    require(request, "operator", "support")
    doc_id = request.match_info["id"]
    try:
        n = int(request.match_info["n"])
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_INDEX:
        return error(400, "bad_version", "the version is a whole number")
    try:
        version, doc = await _documents(request).documents.document(doc_id, n)
    except DocumentNotFound as exc:
        return error(404, "not_found", str(exc))
    return web.json_response({"id": doc_id, "version": version, "automations": doc})


@routes.post("/api/automations/{id}/activate")
async def activate_automations(request: web.Request) -> web.Response:
    require(request, "operator")
    body = await json_body(request)
    version = body.get("version") if isinstance(body, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        return error(400, "bad_request", 'the body is {"version": n}')
    try:
        info = await _documents(request).documents.activate(request.match_info["id"], version)
    except DocumentNotFound as exc:
        return error(404, "not_found", str(exc))
    return web.json_response({"id": info.id, "version": info.version, "active": True})
