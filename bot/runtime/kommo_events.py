"""The lead loop's completion of Kommo's events: stage names for the status ids of a webhook.

Kept out of the webhook route (``bot/server/kommo_webhooks.py``) on purpose: the route only
stores and answers within Kommo's 2 seconds; the names are looked up when the lead loop handles
the event, however long a cold or outdated catalogue takes to load.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable

from crm_bridge.kommo import KommoCrm, name_event_data

from ..automations.events import LeadEvent
from ..errors import CrmError

log = logging.getLogger("salesbot.crm.kommo")


def name_events(crm: KommoCrm) -> Callable[[LeadEvent], Awaitable[LeadEvent]]:
    """For the lead loop (``LeadService.complete``): a Kommo webhook's event with the stage names
    of its ids; unchanged when Kommo cannot be asked now (logged; its ids stay). Any event also
    loads a cold catalogue first: the rule engine orders the stages by it (``allow_backward``)."""
    async def complete(event: LeadEvent) -> LeadEvent:
        try:
            await crm.account.pipelines()  # a cold catalogue is loaded: the rules order stages by it
            data = await name_event_data(crm, event.type, event.data) if event.source == "kommo" else None
        except CrmError as exc:
            log.warning("kommo.event_names_unavailable", extra={"lead": event.lead_id, "error": str(exc)})
            return event
        return event if data is None else dataclasses.replace(event, data=data)
    return complete
