"""``POST /webhooks/kommo/{account}``: Kommo's account webhooks become events of the lead queues.

Kommo posts form-encoded bodies (``leads[status][0][id]=…&leads[status][0][status_id]=…``);
every item of every batch becomes a lead event (``lead.created``, ``lead.stage_changed`` with
``from``/``to``, ``lead.responsible_changed``, ``task.completed``, and Kommo's own
``lead.updated``, ``lead.note_added``, ``task.added`` …; see ``crm_bridge.kommo.as_lead_event``)
stored on that lead's queue with the item's dedupe id, so a redelivered webhook is handled once
and rules fire from Kommo as from the embedded CRM. The lead loop names the stages of the
Kommo ids when it handles the event (``bot/runtime/kommo_events.py``: the account's catalogue,
reloaded when it does not know an id) and forwards each event to the conversation working on the lead, if any
(``bot/runtime/leads.py``). A stage or responsible change that our own command made in Kommo
was already emitted as a lead event by the backend: its webhook is an echo, dropped
(``crm_bridge/kommo/echo.py``). The route answers at once (Kommo waits 2 s and disables a
webhook that keeps failing): a well-formed body with nothing we handle is acknowledged too.

Kommo does not sign its webhooks, so the URL carries a secret: configure the webhook in Kommo
as ``https://<public url>/webhooks/kommo/<account>?secret=<crm.webhook_secret>``; ``<account>``
is ``crm.account`` or the subdomain of ``crm.base_url``. Without ``webhook_secret`` the route
refuses everything (403). This route is registered before the generic
``/webhooks/{channel}/{account}`` of messaging channels, which it shadows for ``kommo`` only.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from crm_bridge import is_kommo
from crm_bridge.factory import kommo_account

from ..inputs import header_bytes, loads
from .http import error
from .keys import SERVICES

log = logging.getLogger("salesbot.crm.kommo")
routes = web.RouteTableDef()

if TYPE_CHECKING:
    from crm_bridge.kommo import KommoEvent


@routes.post("/webhooks/kommo/{account}")
async def receive(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    crm = services.config.crm
    account = request.match_info["account"]
    if crm.backend != "kommo" or account != kommo_account(crm):
        return error(404, "not_found", "no Kommo account with this name")
    if crm.webhook_secret is None:
        return error(403, "not_configured", "Kommo webhooks need crm.webhook_secret (and ?secret= in the URL)")
    given = request.query.get("secret", "")
    if not hmac.compare_digest(header_bytes(given) or b"", crm.webhook_secret.get_secret_value().encode()):
        log.warning("kommo.webhook_rejected", extra={"account": account})
        return error(401, "bad_secret", "missing or wrong ?secret=")
    # Kommo's modules: loaded by a server on Kommo (services built its backend), not by this route's import.
    from crm_bridge.kommo import as_lead_event, parse_webhook_form, webhook_events

    raw = await request.read()
    try:
        # BadJson is a ValueError
        payload = loads(raw) if request.content_type == "application/json" else parse_webhook_form(raw)
        if not isinstance(payload, dict):
            raise ValueError("not an object")
        events = webhook_events(payload)
    except (ValueError, TypeError, AttributeError) as exc:
        log.warning("kommo.webhook_malformed", extra={"account": account, "reason": str(exc)})
        return error(400, "malformed", "not a Kommo webhook body")
    delivered = echoes = 0
    leads = services.leads
    for event in events:
        if await _is_echo(services.crm, event):
            echoes += 1
            continue
        type_, data = as_lead_event(event)
        accepted = await leads.deliver(leads.event(type_, event.lead_id, data=data, id_=event.dedupe_id,
                                                   source="kommo"), background=True)
        delivered += not accepted.duplicate
    log.info("kommo.webhook", extra={"account": account, "events": len(events), "delivered": delivered,
                                     "echoes": echoes})
    return web.json_response({"ok": True, "events": len(events), "delivered": delivered})


async def _is_echo(crm: object, event: KommoEvent) -> bool:
    """Whether the event reports a change our own command made (already emitted as a lead event)."""
    echo = crm.echo if is_kommo(crm) else None
    if echo is None:
        return False
    d = event.data
    if event.type == "lead.stage_changed" and d.get("status_id"):
        kind, new, old = "stage", d["status_id"], d.get("old_status_id")
    elif event.type == "lead.responsible_changed" and d.get("responsible_user_id"):
        kind, new, old = "responsible", d["responsible_user_id"], d.get("old_responsible_user_id")
    else:
        return False
    found = await echo.is_echo(event.lead_id, kind, new, old, event.dedupe_id)
    if found:
        log.info("kommo.webhook_echo", extra={"lead": event.lead_id, "type": event.type})
    return found
