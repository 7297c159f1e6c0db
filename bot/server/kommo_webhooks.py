"""``POST /webhooks/kommo/{account}``: Kommo's account webhooks become CRM events of conversations.

Kommo posts form-encoded bodies (``leads[status][0][id]=…&leads[status][0][status_id]=…``);
every item of every batch becomes a ``CrmEvent`` (``lead.stage_changed``,
``lead.responsible_changed``, ``lead.added``, ``lead.updated``, ``lead.note_added``,
``task.added`` …, see ``crm_bridge.kommo.webhook_events``) delivered to the conversation working
on that lead (the ``sb:lead_conversations`` map written when a conversation's lead is found),
deduplicated, so a redelivered webhook is handled once. Leads no conversation works on are
counted and ignored.

Kommo does not sign its webhooks, so the URL carries a secret: configure the webhook in Kommo
as ``https://<public url>/webhooks/kommo/<account>?secret=<crm.webhook_secret>``; ``<account>``
is ``crm.account`` or the subdomain of ``crm.base_url``. Without ``webhook_secret`` the route
refuses everything (403). This route is registered before the generic
``/webhooks/{channel}/{account}`` of messaging channels, which it shadows for ``kommo`` only.
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from crm_bridge.factory import kommo_account
from crm_bridge.kommo import name_stages, parse_webhook_form, webhook_events

from ..engine import events as ev
from ..inputs import header_bytes, loads
from ..runtime.service import LEAD_CONVERSATIONS_KEY
from .http import error
from .keys import SERVICES

log = logging.getLogger("salesbot.crm.kommo")
routes = web.RouteTableDef()


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
    await name_stages(services.crm, events)
    delivered = 0
    for event in events:
        found = await services.redis.hget(LEAD_CONVERSATIONS_KEY, event.lead_id)
        if not found:
            continue
        cid = found.decode() if isinstance(found, bytes) else str(found)
        await services.conversations.deliver(cid, ev.CrmEvent(event.type, event.data), dedupe_id=event.dedupe_id)
        delivered += 1
    log.info("kommo.webhook", extra={"account": account, "events": len(events), "delivered": delivered})
    return web.json_response({"ok": True, "events": len(events), "delivered": delivered})
