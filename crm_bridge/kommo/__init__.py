"""Kommo (ex-amoCRM): the ``CrmBackend`` over its REST API v4, its account webhooks, its widget JWT.

* ``backend.py`` — ``KommoCrm``: identify, snapshot, and each CRM command as API calls;
* ``client.py`` — ``KommoClient``: how a request travels (token, 7 requests/second, breaker, errors);
* ``account.py`` — ``KommoAccount``: the account's custom fields, pipelines, users, task types, cached;
* ``records.py`` — Kommo's JSON and ours: ids, dates, custom-field values, the snapshot's views;
* ``webhooks.py`` — Kommo's form-encoded account webhooks as events (``webhook_events``);
* ``echo.py`` — ``KommoEcho``: our own moves as lead events at once, Kommo's webhook about them dropped;
* ``widget.py`` — ``verify_widget_jwt`` for the JWT of a Salesbot ``widget_request``.
"""

from .account import CLOSED, LOST, TASK_TYPE_IDS, TASK_TYPE_NAMES, WON, KommoAccount
from .backend import BATCH, ENTITY_PATHS, KommoCrm
from .client import KommoClient
from .echo import KommoEcho
from .webhooks import (
    LEAD_EVENTS,
    TASK_EVENTS,
    FormValue,
    KommoEvent,
    as_lead_event,
    name_event_data,
    name_stages,
    parse_webhook_form,
    webhook_events,
)
from .widget import InvalidWidgetToken, verify_widget_jwt

__all__ = [
    "BATCH",
    "CLOSED",
    "ENTITY_PATHS",
    "LEAD_EVENTS",
    "LOST",
    "TASK_EVENTS",
    "TASK_TYPE_IDS",
    "TASK_TYPE_NAMES",
    "WON",
    "FormValue",
    "InvalidWidgetToken",
    "KommoAccount",
    "KommoClient",
    "KommoCrm",
    "KommoEcho",
    "KommoEvent",
    "as_lead_event",
    "name_event_data",
    "name_stages",
    "parse_webhook_form",
    "verify_widget_jwt",
    "webhook_events",
]
