"""``POST /api/events``: an event from the outside world onto its lead's queue (accepted means
stored); ``GET /api/leads/{id}/events``: a lead's recent events and what the rules did.

Whom an event concerns: ``lead.id``; otherwise ``contact`` (``id``, ``phone``, ``email`` or
``external: {channel, id}``, ``channel`` naming a configured account) → the contact's newest open
lead, or a new lead in the pipeline's first stage when it has none; an unknown contact is created
(find-or-create, as for a new conversation). Callers: an operator or admin token, or the
``[events] secret`` as ``X-Salesbot-Signature: sha256=<hex HMAC-SHA256 of the raw body>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from crm_bridge import ChannelIdentity, CrmRef
from crm_bridge.directory import CrmDirectory
from crm_bridge.values import clean_email, clean_phone

from ..automations.events import ID_PATTERN
from ..errors import CrmError, CrmRejected, CrmTemporary
from ..inputs import BadJson, control_pointers, header_bytes, holds_control, loads
from .http import HttpError, error, query_number, require
from .keys import LIMITS, SERVICES
from .ratelimit import CLIENT
from .services import Services

if TYPE_CHECKING:
    from .event_models import ContactIn, EventIn

log = logging.getLogger("salesbot.events")
routes = web.RouteTableDef()
#: The largest event body: an event is a few fields, not a document.
MAX_BODY = 64 * 1024
#: How long an event id stays bound to its lead (the lead queue's dedupe window: 7 days).
EVENT_ID_DAYS = 7


def _authorised(request: web.Request, services: Services, raw: bytes) -> None:
    """A token (operator or admin), or a valid signature when ``[events] secret`` is set."""
    signature = request.headers.get("X-Salesbot-Signature")
    secret = services.config.events.secret
    if signature is None or secret is None:
        require(request, "operator")
        return
    given = header_bytes(signature) or b""
    expected = b"sha256=" + hmac.new(secret.get_secret_value().encode(), raw, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(given, expected):
        log.warning("events.bad_signature", extra={"path": request.path})
        raise HttpError(401, "bad_signature", "X-Salesbot-Signature is not sha256=<hex HMAC-SHA256 of the body>")


async def _lead_of(services: Services, event: EventIn) -> CrmRef:
    """The lead (and contact, when known) the event concerns, found or created."""
    directory = services.directory
    if event.lead is not None:
        if directory is not None and not await directory.exists("lead", event.lead.id):
            raise HttpError(404, "not_found", f"no lead {event.lead.id!r}")
        contact_id = event.contact.id if event.contact is not None and event.contact.id else ""
        return CrmRef(contact_id, event.lead.id)
    contact = event.contact
    assert contact is not None  # checked by the model
    if contact.external is not None:
        account = services.config.account(contact.external.channel)
        channel = account.channel if account is not None else ("livechat" if contact.external.channel == "demo"
                                                                else None)
        if channel is None:
            raise HttpError(422, "invalid", f"contact.external.channel: no account {contact.external.channel!r}",
                            [{"pointer": "/contact/external/channel", "message": "not a configured account"}])
        return await services.crm.identify(ChannelIdentity(channel, contact.external.channel, contact.external.id))
    if directory is None:  # another CRM: it finds or creates the contact by phone or e-mail itself
        if contact.id is not None:
            raise HttpError(422, "invalid", "contact.id needs the embedded CRM; give the lead id")
        key = f"phone:{contact.phone}" if contact.phone else f"email:{contact.email}"
        return await services.crm.identify(ChannelIdentity("api", "events", key, None, contact.phone, contact.email))
    return await _embedded_lead(directory, contact)


async def _embedded_lead(directory: CrmDirectory, contact: ContactIn) -> CrmRef:
    if contact.id is not None:
        record = await directory.get("contact", contact.id)
        if record is None:
            raise HttpError(404, "not_found", f"no contact {contact.id!r}")
    else:
        phone, email = clean_phone(contact.phone), clean_email(contact.email)
        wanted = phone or email or ""
        found, _ = await directory.search("contact", q=wanted, limit=50)
        same = [c for c in found if (phone and _digits(c.get("phone")) == _digits(phone))
                or (email and str(c.get("email") or "").casefold() == str(email).casefold())]
        record = same[0] if same else await directory.create_contact({"name": wanted, "phone": phone, "email": email})
    cid = str(record["id"])
    return CrmRef(cid, await directory.open_lead(cid))  # the newest open lead, else one new lead


def _digits(value: Any) -> str:
    return "".join(c for c in str(value or "") if c.isdigit())


@routes.post("/api/events")
async def post_event(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    limits = request.app[LIMITS]  # a sender's flood (a leaked secret, a loop) is held off before any work
    if (limited := limits.take("events_per_ip", request.get(CLIENT) or limits.client(request))) is not None:
        return limited.response()
    raw = await request.read()  # aiohttp refuses more than client_max_size (2 MiB) itself
    if len(raw) > MAX_BODY:
        return error(413, "too_large", f"an event body is at most {MAX_BODY} bytes")
    _authorised(request, services, raw)
    try:
        body = loads(raw, max_depth=16)
    except BadJson as exc:
        log.warning("http.bad_json", extra={"path": request.path, "reason": exc.reason})
        return error(400, "bad_json", f"the body is not valid JSON: {exc.reason}")
    if holds_control(body):
        log.warning("events.invalid", extra={"reason": "control characters"})
        return error(422, "invalid", "the event holds control characters",
                     [{"pointer": p, "message": "holds a control character"} for p in control_pointers(body)])
    # The request models (pydantic) are built with the first event, not at start (issue 14: startup).
    from pydantic import ValidationError

    from .event_models import EventIn, details

    try:
        event = EventIn.model_validate(body)
    except ValidationError as exc:
        log.warning("events.invalid", extra={"problems": len(exc.errors())})
        return error(422, "invalid", "the event is not valid", details(exc))
    try:
        ref = await _lead_of(services, event)
    except CrmRejected as exc:
        return error(422, "invalid", str(exc))
    except CrmTemporary as exc:
        log.warning("events.crm_unavailable", extra={"error": str(exc)})
        return error(503, "crm_unavailable", "the CRM cannot find the contact right now; send the event again")
    except CrmError as exc:
        return error(422, "invalid", str(exc))
    if event.id is not None and (owner := await _claim_id(services, event.id, ref.lead_id)) != ref.lead_id:
        log.info("events.duplicate_id", extra={"lead": ref.lead_id, "owner": owner})
        return web.json_response({"id": event.id, "lead": owner, "duplicate": True}, status=202)
    leads = services.leads
    lead_event = leads.event(event.type, ref.lead_id, data=event.data, id_=event.id,
                             at=event.at.timestamp() if event.at is not None else None,
                             contact_id=ref.contact_id or None, source="api")
    # answered once stored: the rules run in the background (a slow one never holds the sender,
    # nor does a flood make one request handle the others' events), or by recovery
    accepted = await leads.deliver(lead_event, dedupe=event.id is not None, background=True)
    return web.json_response({"id": accepted.id, "lead": accepted.lead_id, "duplicate": accepted.duplicate},
                             status=202)


async def _claim_id(services: Services, event_id: str, lead_id: str) -> str:
    """The lead an event id belongs to: the first lead it was sent for within ``EVENT_ID_DAYS``
    (an id is one event, whichever lead a retry resolves to: spec, "Events"). The lead queue's
    own dedupe then makes the same lead's repeats duplicates, also across a crash after this."""
    key = f"sb:events:id:{hashlib.sha256(event_id.encode()).hexdigest()[:32]}"
    if await services.redis.set(key, lead_id, nx=True, ex=EVENT_ID_DAYS * 86400):
        return lead_id
    owner = await services.redis.get(key)
    return (owner.decode() if isinstance(owner, bytes) else str(owner)) if owner else lead_id


@routes.get("/api/leads/{id}/events")
async def lead_events(request: web.Request) -> web.Response:
    require(request, "support", "operator")
    lead_id = request.match_info["id"]
    limit = int(query_number(request, "limit", 200, minimum=1, maximum=1000, integer=True, clamp=True))
    services = request.app[SERVICES]
    if not re.fullmatch(ID_PATTERN, lead_id):
        return error(404, "not_found", "no such lead")
    events = await services.leads.history(lead_id, limit)
    return web.json_response({"lead": lead_id, "events": events},
                             dumps=lambda v: json.dumps(v, ensure_ascii=False, default=str))
