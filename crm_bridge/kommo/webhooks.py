"""Kommo's account webhooks, parsed: the form-encoded body as nested data, and the events it reports.

Apart from the backend: it reads what Kommo sends instead of calling Kommo, and the webhook route
(``bot/server/kommo_webhooks.py``) only needs stage names from the backend's cache.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import parse_qsl

from bot.errors import CrmError

from ..interface import CrmBackend
from .backend import KommoCrm

log = logging.getLogger("salesbot.crm.kommo")

#: What a form body parses to: text, lists (keys 0, 1, …) and objects.
FormValue: TypeAlias = str | list["FormValue"] | dict[str, "FormValue"]
#: The body while it is parsed: every level an object (``a[0]`` still under the key "0").
_Tree: TypeAlias = dict[str, "_Tree | str"]


def parse_webhook_form(body: bytes | str) -> dict[str, FormValue] | list[FormValue]:
    """Kommo's form-encoded webhook (``leads[status][0][id]=…``) as nested dicts and lists; a list when
    every top-level key is a number (not a Kommo webhook: the route refuses it)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    root: _Tree = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        m = re.match(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$", key)
        if not m:
            continue
        parts = [m.group(1), *re.findall(r"\[([^\[\]]*)\]", m.group(2))]
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":  # a[]=x: the next free index
                part = str(len(node))
            if last:
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):  # a scalar and a nested key under one name: keep the nested one
                    child = node[part] = {}
                node = child
    return _listify(root)


def _listify(tree: _Tree) -> dict[str, FormValue] | list[FormValue]:
    """Objects whose keys are all numbers become lists, in the order of the numbers."""
    items: dict[str, FormValue] = {k: v if isinstance(v, str) else _listify(v) for k, v in tree.items()}
    if items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


@dataclass(frozen=True, slots=True)
class KommoEvent:
    """One CRM event of a webhook: its type (``lead.stage_changed`` …), lead id, data, dedupe id."""

    type: str
    lead_id: str
    data: dict[str, Any]
    dedupe_id: str


#: ``leads[<action>]`` → event type.
LEAD_EVENTS = {"add": "lead.added", "update": "lead.updated", "status": "lead.stage_changed",
               "responsible": "lead.responsible_changed", "delete": "lead.deleted",
               "restore": "lead.restored", "note": "lead.note_added"}
TASK_EVENTS = {"add": "task.added", "update": "task.updated", "delete": "task.deleted",
               "responsible": "task.responsible_changed"}


def _as_list(value: object) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    return []


def webhook_events(payload: Mapping[str, Any]) -> list[KommoEvent]:
    """The lead events of a parsed webhook, every item of every batch, in order."""
    out: list[KommoEvent] = []
    leads: Mapping[str, Any] = payload["leads"] if isinstance(payload.get("leads"), dict) else {}
    for action, kind in LEAD_EVENTS.items():
        for item in _as_list(leads.get(action)):
            if not isinstance(item, dict):
                continue
            if action == "note":
                note: dict[str, Any] = item["note"] if isinstance(item.get("note"), dict) else item
                lead_id = str(note.get("element_id") or "")
                data = {"text": note.get("text"), "note_type": note.get("note_type"), "note_id": note.get("id")}
                stamp = note.get("id") or note.get("created_at")
            else:
                lead_id = str(item.get("id") or "")
                data = {k: item.get(k) for k in ("name", "status_id", "old_status_id", "pipeline_id",
                                                 "old_pipeline_id", "responsible_user_id",
                                                 "old_responsible_user_id", "price") if item.get(k) not in (None, "")}
                if "responsible_user_id" in data:
                    data["responsible"] = data["responsible_user_id"]
                if "old_responsible_user_id" in data:
                    data["old_responsible"] = data["old_responsible_user_id"]
                stamp = item.get("last_modified") or item.get("updated_at") or ""
            if not lead_id.isdigit():  # Kommo's ids are numbers: anything else is not Kommo's
                continue
            data["lead"] = lead_id
            marker = f"{data.get('status_id', '')}:{data.get('responsible_user_id', '')}:{stamp}"
            out.append(KommoEvent(kind, lead_id, data, f"kommo:{kind}:{lead_id}:{marker}"))
    tasks: Mapping[str, Any] = payload["task"] if isinstance(payload.get("task"), dict) else {}
    for action, kind in TASK_EVENTS.items():
        for item in _as_list(tasks.get(action)):
            if not isinstance(item, dict) or str(item.get("element_type")) != "2" \
                    or not str(item.get("element_id") or "").isdigit():
                continue
            lead_id = str(item["element_id"])
            data = {"lead": lead_id, "task_id": item.get("id"), "text": item.get("text"),
                    "task_type": item.get("task_type"), "completed": str(item.get("status")) == "1",
                    "result": item["result"].get("text") if isinstance(item.get("result"), dict) else None}
            stamp = item.get("last_modified") or item.get("updated_at") or item.get("status") or ""
            out.append(KommoEvent(kind, lead_id, data, f"kommo:{kind}:{item.get('id')}:{stamp}"))
    return out


def _position(pipeline: Any, stage: Any) -> dict[str, Any]:
    return {"pipeline": pipeline, "stage": stage}


def as_lead_event(e: KommoEvent) -> tuple[str, dict[str, Any]]:
    """The type and ``data`` of the spec's lead event for a Kommo webhook event (Kommo's own data
    kept beside): ``lead.added`` is ``lead.created``, a stage or responsible change gets
    ``from``/``to`` (stage names when ``name_stages`` found them, else Kommo's ids), a task
    update that completed a task is ``task.completed``. Others keep Kommo's type."""
    d = dict(e.data)
    if e.type == "lead.added":
        return "lead.created", {**d, **_position(d.get("pipeline", d.get("pipeline_id")),
                                                 d.get("stage", d.get("status_id")))}
    if e.type == "lead.stage_changed":
        new = _position(d.get("pipeline", d.get("pipeline_id")), d.get("stage", d.get("status_id")))
        old = _position(d.get("old_pipeline", d.get("old_pipeline_id") or new["pipeline"]),
                        d.get("old_stage", d.get("old_status_id")))
        return e.type, {**d, "from": old, "to": new}
    if e.type == "lead.responsible_changed":
        return e.type, {**d, "from": d.get("old_responsible"), "to": d.get("responsible")}
    if e.type == "task.updated" and d.get("completed"):
        return "task.completed", {**d, "task": str(d.get("task_id") or "")}
    return e.type, d


async def name_event_data(crm: KommoCrm, type_: str, data: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``data`` of a ``lead.created`` or ``lead.stage_changed`` event of Kommo's webhook
    (``as_lead_event``) with stage *names* for its ids, as rules name stages; None for other events.

    Run when the lead loop handles the event, not in the webhook route: names come from the
    account's catalogue, which is loaded when cold and reloaded when it does not know an id (a
    status added in Kommo since), however long that takes. An id Kommo does not know either stays
    an id (logged): no rule names it, and the lead's position still moves on."""
    if type_ not in ("lead.created", "lead.stage_changed") or data.get("status_id") in (None, ""):
        return None
    d = dict(data)
    d["pipeline"], d["stage"] = await _names(crm, d.get("lead"), d.get("pipeline_id"), d["status_id"])
    if type_ == "lead.created":
        return d
    if d.get("old_status_id") not in (None, ""):
        d["old_pipeline"], d["old_stage"] = await _names(
            crm, d.get("lead"), d.get("old_pipeline_id") or d.get("pipeline_id"), d["old_status_id"])
    d["to"] = _position(d["pipeline"], d["stage"])
    d["from"] = _position(d.get("old_pipeline", d["pipeline"]), d.get("old_stage"))
    return d


async def _names(crm: KommoCrm, lead: object, pipeline_id: object, status_id: object) -> tuple[Any, Any]:
    pipeline, stage = await crm.account.stage_names(pipeline_id, status_id)
    if stage is None:
        log.warning("kommo.unknown_stage", extra={"lead": lead, "pipeline_id": pipeline_id, "status_id": status_id})
    return (pipeline if pipeline is not None else pipeline_id), (stage if stage is not None else status_id)


async def name_stages(crm: CrmBackend, events: list[KommoEvent], *, timeout: float = 1.0) -> None:
    """Add ``pipeline``/``stage`` (and ``old_…``) names to stage events from the backend's cache."""
    if not isinstance(crm, KommoCrm):
        return
    account = crm.account

    async def name_all() -> None:
        for e in events:
            if "status_id" in e.data and "pipeline_id" in e.data:
                e.data["pipeline"], e.data["stage"] = await account.stage_names(e.data["pipeline_id"],
                                                                                e.data["status_id"])
            if "old_status_id" in e.data:
                old_pipeline = e.data.get("old_pipeline_id") or e.data.get("pipeline_id")
                e.data["old_pipeline"], e.data["old_stage"] = await account.stage_names(old_pipeline,
                                                                                        e.data["old_status_id"])

    try:  # Kommo wants an answer within 2 s: names are a convenience, ids are always there
        await asyncio.wait_for(name_all(), timeout)
    except (TimeoutError, CrmError) as exc:
        log.warning("kommo.webhook_names_unavailable", extra={"error": str(exc) or type(exc).__name__})
