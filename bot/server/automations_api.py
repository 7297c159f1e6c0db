"""The automations API: automation documents, versioned like bots (docs/automations.md, "API").

``PUT`` checks a document against the CRM's pipelines and the loaded bots and stores it as a new
active version (201), or answers 200 when it is the newest version already, or 422 with every
problem as ``details: [{pointer, message}]``. Roles as for bots: operators write, support reads.
"""

from __future__ import annotations

from aiohttp import web

from . import versioned
from .automation_docs import AutomationDocuments
from .http import error, require
from .keys import SERVICES

routes = web.RouteTableDef()


def _documents(request: web.Request) -> AutomationDocuments:
    services = request.app[SERVICES]
    return AutomationDocuments.of(services.redis, services.crm, services.bots, services.jobs, services.chat)


@routes.put("/api/automations/{id}")
async def put_automations(request: web.Request) -> web.Response:
    require(request, "operator")
    documents = _documents(request)
    return await versioned.upload(request, documents.put, documents.activate,
                                  code="invalid_automations", noun="document")


@routes.get("/api/automations")
async def list_automations(request: web.Request) -> web.Response:
    require(request, "operator", "support")
    return versioned.listing("automations", await _documents(request).documents.listing())


@routes.get("/api/automations/{id}")
async def get_automations(request: web.Request) -> web.Response:
    require(request, "operator", "support")
    return await versioned.one(_documents(request).documents, request.match_info["id"], None, "automations")


@routes.get("/api/automations/{id}/versions")
async def automation_versions(request: web.Request) -> web.Response:
    require(request, "operator", "support")
    return await versioned.history(_documents(request).documents, request.match_info["id"], "automation document")


@routes.get("/api/automations/{id}/versions/{n}")
async def automation_version(request: web.Request) -> web.Response:
    require(request, "operator", "support")
    return await versioned.one(_documents(request).documents, request.match_info["id"], request.match_info["n"],
                               "automations")


@routes.post("/api/automations/{id}/activate")
async def activate_automations(request: web.Request) -> web.Response:
    require(request, "operator")
    return await versioned.activate(request, request.match_info["id"], _documents(request).activate)


@routes.get("/api/automations/{id}/jobs")
async def automation_jobs(request: web.Request) -> web.Response:
    """``apply_to_existing`` jobs of the document, newest first: total, done, state, started/finished."""
    require(request, "operator", "support")
    documents = _documents(request)
    doc_id = request.match_info["id"]
    if not await documents.documents.versions(doc_id):
        return error(404, "not_found", f"no automation document {doc_id!r}")
    jobs = documents.jobs
    return web.json_response({"id": doc_id, "jobs": [] if jobs is None else await jobs.listing(doc_id)})
