"""``POST /api/outbound``: start a bot that writes first to a contact (see docs/outbound.md).

Every field is checked before anything is looked up: a wrong type, a control character in a
name, too many accounts or too much ``variables`` is a 400 naming the field; an unknown bot,
account, contact or lead is a 404; a lead of another contact is a 422; a contact nothing can
reach is a 409 ``unreachable`` with one reason per account tried. A CRM read over the network
(Kommo) that fails is a 503 ``crm_unavailable`` (try again) or a 409 ``crm_rejected``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web

from ..errors import CrmError, CrmTemporary
from ..runtime.outbound import (
    LAST,
    LeadMismatch,
    NoDirectory,
    Started,
    UnknownAccount,
    UnknownContact,
    UnknownLead,
)
from ..store import codec
from .http import error, json_body, require
from .keys import SERVICES

log = logging.getLogger("salesbot.server.outbound")
routes = web.RouteTableDef()

#: A name (bot, account, contact id, lead id): printable, no control characters, bounded.
_NAME = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,200}")
MAX_ACCOUNTS = 10
#: ``variables`` as stored (msgpack) may not exceed this: they live in the run's state.
MAX_VARIABLES_BYTES = 16_384
_FIELDS = frozenset({"bot", "account", "contact", "lead", "variables"})
_USAGE = ('the body is {"bot": id, "account": name | "last" | [names], '
          '"contact": {"id" | "phone" | "email": value}, "lead"?: id, "variables"?: {...}}')


class _Bad(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _name(value: Any, field: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and field in ("contact.id", "lead"):
        value = str(value)
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise _Bad(field, f"{field} is a name of 1 to 200 characters without control characters")
    return value


def _parse(body: Any) -> tuple[str, str | list[str], dict[str, str], str | None, dict[str, Any]]:
    if not isinstance(body, dict):
        raise _Bad("", _USAGE)
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise _Bad(unknown[0], f"unknown field {unknown[0][:40]!r}; {_USAGE}")
    bot = _name(body.get("bot"), "bot")
    raw_account = body.get("account", LAST)
    account: str | list[str]
    if isinstance(raw_account, list):
        if not 1 <= len(raw_account) <= MAX_ACCOUNTS:
            raise _Bad("account", f"account is a list of 1 to {MAX_ACCOUNTS} account names")
        account = [_name(a, "account") for a in raw_account]
    else:
        account = _name(raw_account, "account")
    contact = body.get("contact")
    if not isinstance(contact, dict) or len(contact) != 1 or next(iter(contact)) not in ("id", "phone", "email"):
        raise _Bad("contact", 'contact is {"id": …}, {"phone": …} or {"email": …}')
    (key, value), = contact.items()
    who = {key: _name(value, f"contact.{key}")}
    lead = None if body.get("lead") is None else _name(body["lead"], "lead")
    variables = body.get("variables") or {}
    if not isinstance(variables, dict):
        raise _Bad("variables", "variables is an object")
    if len(codec.pack(variables)) > MAX_VARIABLES_BYTES:
        raise _Bad("variables", f"variables take at most {MAX_VARIABLES_BYTES} bytes")
    return bot, account, who, lead, variables


@routes.post("/api/outbound")
async def start_outbound(request: web.Request) -> web.Response:
    require(request, "operator")
    services = request.app[SERVICES]
    body = await json_body(request)
    try:
        bot, account, who, lead, variables = _parse(body)
        key = request.headers.get("Idempotency-Key")
        if key is not None:
            key = _name(key, "Idempotency-Key")
    except _Bad as exc:
        log.warning("outbound.bad_request", extra={"field": exc.field})
        details = [{"field": exc.field}] if exc.field else None
        return error(400, "bad_request", str(exc), details)
    outbound = services.outbound
    if outbound is None:  # pragma: no cover - every server builds it
        return error(409, "unsupported", "outbound is not available on this server")
    if await services.bots.ensure(bot) is None:
        return error(404, "not_found", f"no bot {bot!r}")
    try:
        contact = await outbound.find_contact(contact_id=who.get("id"), phone=who.get("phone"),
                                              email=who.get("email"), lead_id=lead)
        result = await outbound.start(bot, account, contact, variables=variables, idempotency_key=key)
    except (UnknownAccount, UnknownContact, UnknownLead) as exc:
        return error(404, "not_found", str(exc))
    except LeadMismatch as exc:
        return error(422, "lead_mismatch", str(exc))
    except NoDirectory as exc:
        return error(409, "unsupported", str(exc))
    except CrmError as exc:  # Kommo's API: away (503, try again) or refusing what it was asked (409)
        log.warning("outbound.crm_failed", extra={"error": str(exc)})
        if isinstance(exc, CrmTemporary):
            return error(503, "crm_unavailable", f"the CRM cannot be reached now: {exc}")
        return error(409, "crm_rejected", f"the CRM refused: {exc}")
    if not isinstance(result, Started):
        return error(409, "unreachable", f"the contact cannot be reached: {result.reason}", list(result.reasons))
    return web.json_response({"conversation": result.conversation, "account": result.account,
                              "opened": result.opened, "duplicate": result.duplicate,
                              "contact": contact.id, "lead": contact.lead_id}, status=202)
