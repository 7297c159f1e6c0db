"""Processes over HTTP (docs/processes.md).

- ``POST /api/processes/{id}/contacts`` (operator): ``{"contact": {"id"|"phone"|"email": v},
  "lead"?, "variables"?}`` starts the process for one contact at once (202 with its
  conversation); ``{"contacts": [...], "variables"?}`` (1 to 10,000) stores a resumable job
  (202 with the job id; progress in ``GET /api/processes/{id}/jobs[/{job}]``).
- ``GET /api/contacts/{id}/processes`` (support): the contact's processes and their runs.
- ``POST /api/contacts/{id}/processes/{process}/stop`` (support): a person stops one.

Every field is checked before anything is looked up (400 naming it); an unknown process or
contact is a 404; a CRM over the network that is away is a 503.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web

from ..errors import CrmError, CrmTemporary
from ..runtime.outbound import LeadMismatch, NoDirectory, UnknownContact, UnknownLead
from ..runtime.processes import Processes, UnknownProcess
from ..runtime.processjobs import MAX_CONTACTS, ProcessJobs
from ..store import codec
from .http import HttpError, error, json_body, require
from .keys import SERVICES

log = logging.getLogger("salesbot.server.processes")
routes = web.RouteTableDef()

_NAME = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,200}")
_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_VARIABLES_BYTES = 16_384
_FIELDS = frozenset({"contact", "contacts", "lead", "variables"})
_USAGE = ('the body is {"contact": {"id" | "phone" | "email": value}, "lead"?: id, "variables"?: {...}} '
          f'or {{"contacts": [1 to {MAX_CONTACTS} of those], "variables"?: {{...}}}}')


class _Bad(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _name(value: Any, field: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and (field.endswith(".id") or field == "lead"):
        value = str(value)
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise _Bad(field, f"{field} is a name of 1 to 200 characters without control characters")
    return value


def _who(value: Any, field: str) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("id", "phone", "email"):
        raise _Bad(field, f'{field} is {{"id": …}}, {{"phone": …}} or {{"email": …}}')
    (key, raw), = value.items()
    return {key: _name(raw, f"{field}.{key}")}


def _parse(body: Any) -> tuple[list[dict[str, str]], bool, str | None, dict[str, Any]]:
    if not isinstance(body, dict):
        raise _Bad("", _USAGE)
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise _Bad(unknown[0][:40], f"unknown field {unknown[0][:40]!r}; {_USAGE}")
    if ("contact" in body) == ("contacts" in body):
        raise _Bad("contact", f"give contact or contacts; {_USAGE}")
    variables = body.get("variables") or {}
    if not isinstance(variables, dict):
        raise _Bad("variables", "variables is an object")
    if len(codec.pack(variables)) > MAX_VARIABLES_BYTES:
        raise _Bad("variables", f"variables take at most {MAX_VARIABLES_BYTES} bytes")
    if "contact" in body:
        lead = None if body.get("lead") is None else _name(body["lead"], "lead")
        return [_who(body["contact"], "contact")], False, lead, variables
    if "lead" in body:
        raise _Bad("lead", "lead goes with one contact only")
    contacts = body["contacts"]
    if not isinstance(contacts, list) or not 1 <= len(contacts) <= MAX_CONTACTS:
        raise _Bad("contacts", f"contacts is a list of 1 to {MAX_CONTACTS} contacts")
    return [_who(c, f"contacts[{i}]") for i, c in enumerate(contacts)], True, None, variables


def _services(request: web.Request) -> tuple[Processes, ProcessJobs | None]:
    services = request.app[SERVICES]
    if services.processes is None:  # pragma: no cover - every server builds it
        raise HttpError(409, "unsupported", "processes are not available on this server")
    return services.processes, services.process_jobs


def _process_id(request: web.Request, name: str = "id") -> str:
    value = request.match_info[name]
    if not _ID.fullmatch(value):
        log.warning("processes.bad_id", extra={"field": name})
        raise HttpError(400, "bad_request", f"{name} is a process (bot) id: a-z, 0-9, _ and -, up to 64")
    return value


def _contact_id(request: web.Request) -> str:
    value = request.match_info["contact"]
    if not _NAME.fullmatch(value):
        log.warning("processes.bad_id", extra={"field": "contact"})
        raise HttpError(400, "bad_request", "the contact id has 1 to 200 characters without control characters")
    return value


@routes.post("/api/processes/{id}/contacts")
async def start(request: web.Request) -> web.Response:
    require(request, "operator")
    process = _process_id(request)
    body = await json_body(request)
    try:
        contacts, batch, lead, variables = _parse(body)
    except _Bad as exc:
        log.warning("processes.bad_request", extra={"field": exc.field})
        return error(400, "bad_request", str(exc), [{"field": exc.field}] if exc.field else None)
    processes, jobs = _services(request)
    if await request.app[SERVICES].bots.ensure(process) is None:
        return error(404, "not_found", f"no process (bot) {process!r}")
    if batch:
        if jobs is None:  # pragma: no cover - every server builds it
            return error(409, "unsupported", "batches are not available on this server")
        job = await jobs.start(process, contacts, variables)
        return web.json_response({"job": job, "total": len(contacts)}, status=202)
    who = contacts[0]
    try:
        contact = await processes.contact(contact_id=who.get("id"), phone=who.get("phone"),
                                          email=who.get("email"), lead_id=lead)
        started = await processes.start(process, contact, variables=variables,
                                        key=_idempotency(request))
    except (UnknownContact, UnknownLead, UnknownProcess) as exc:
        return error(404, "not_found", str(exc))
    except LeadMismatch as exc:
        return error(422, "lead_mismatch", str(exc))
    except NoDirectory as exc:
        return error(409, "unsupported", str(exc))
    except _Bad as exc:
        return error(400, "bad_request", str(exc), [{"field": exc.field}])
    except CrmError as exc:
        log.warning("processes.crm_failed", extra={"error": str(exc)})
        if isinstance(exc, CrmTemporary):
            return error(503, "crm_unavailable", f"the CRM cannot be reached now: {exc}")
        return error(409, "crm_rejected", f"the CRM refused: {exc}")
    return web.json_response({"process": process, "conversation": started.conversation, "status": started.status,
                              "contact": contact.id, "lead": contact.lead_id}, status=202)


def _idempotency(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    return None if key is None else _name(key, "Idempotency-Key")


@routes.get("/api/processes/{id}/jobs")
async def jobs_list(request: web.Request) -> web.Response:
    require(request, "operator")
    process = _process_id(request)
    _, jobs = _services(request)
    return web.json_response({"jobs": await jobs.listing(process) if jobs is not None else []})


@routes.get("/api/processes/{id}/jobs/{job}")
async def job_get(request: web.Request) -> web.Response:
    require(request, "operator")
    process = _process_id(request)
    job_id = request.match_info["job"]
    _, jobs = _services(request)
    found = await jobs.get(process, job_id) if jobs is not None and re.fullmatch(r"[0-9a-f]{16}", job_id) else {}
    if not found:
        return error(404, "not_found", "no such job")
    return web.json_response(found)


@routes.get("/api/contacts/{contact}/processes")
async def of_contact(request: web.Request) -> web.Response:
    require(request, "support")
    contact = _contact_id(request)
    processes, _ = _services(request)
    return web.json_response({"contact": contact, "processes": await processes.of_contact(contact)})


@routes.post("/api/contacts/{contact}/processes/{process}/stop")
async def stop(request: web.Request) -> web.Response:
    principal = require(request, "support")
    contact = _contact_id(request)
    process = _process_id(request, "process")
    processes, _ = _services(request)
    if not await processes.stop(process, contact, by=principal.name or principal.role):
        return error(409, "not_running", f"process {process!r} is not running for contact {contact!r}")
    return web.json_response({"process": process, "contact": contact, "stopped": True})
