"""The embedded CRM, in process memory: leads, contacts, companies, tags, tasks, notes, stages.

Used by ``salesbot test`` and ``salesbot chat`` (no network, state readable by ``expect``).
Pipelines are optional: without them any pipeline and stage name is accepted.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime
from itertools import count
from typing import Any, TypeVar

from bot.errors import CrmRejected

from .card import CARD_FIELDS, card_value
from .interface import CRM_COMMANDS, ChannelIdentity, CommandResult, CrmRef

DEFAULT_PIPELINE = "Sales"
DEFAULT_STAGES = ["Incoming", "Contacted", "Qualified", "Proposal", "Won", "Lost"]
_CONTACT_STANDARD = {"name", "first_name", "last_name", "phone", "email", "score"}
_LEAD_STANDARD = {"name", "price"}
_COMPANY_STANDARD = {"name"}
_T = TypeVar("_T")


def _same(value: _T) -> _T:
    return value


class MemoryCrm:
    """A complete, in-memory ``CrmBackend``."""

    name = "memory"

    def __init__(self, *, pipelines: dict[str, list[str]] | None = None, strict: bool | None = None,
                 ids: Callable[[], str] | None = None) -> None:
        """``ids``: where new records' ids come from (``RedisCrm`` hands out ids reserved in Redis);
        by default 1, 2, 3, …"""
        self.pipelines = pipelines or {DEFAULT_PIPELINE: list(DEFAULT_STAGES)}
        self.strict = bool(pipelines) if strict is None else strict
        counter = count(1)
        self._new_id: Callable[[], str] = ids or (lambda: str(next(counter)))
        self.contacts: dict[str, dict[str, Any]] = {}
        self.leads: dict[str, dict[str, Any]] = {}
        self.companies: dict[str, dict[str, Any]] = {}
        self.tasks: list[dict[str, Any]] = []
        self.notes: list[dict[str, Any]] = []
        self.identities: dict[tuple[str, str, str], CrmRef] = {}
        self.log: list[dict[str, Any]] = []

    def _id(self) -> str:
        return self._new_id()

    # ------------------------------------------------------------------ records
    def create_contact(self, **data: Any) -> str:
        cid = self._id()
        name = data.pop("name", None) or ""
        self.contacts[cid] = {
            "id": cid, "name": name, "first_name": data.pop("first_name", None) or (name.split()[0] if name else None),
            "phone": data.pop("phone", None), "email": data.pop("email", None),
            "fields": dict(data.pop("fields", {}) or {}), "tags": list(data.pop("tags", []) or []),
            "responsible": data.pop("responsible", None),
        }
        self.contacts[cid]["fields"].update(data)
        return cid

    def create_lead(self, *, contact_id: str | None = None, company_id: str | None = None, **data: Any) -> str:
        lid = self._id()
        pipeline = data.pop("pipeline", None) or next(iter(self.pipelines))
        stages = self.pipelines.get(pipeline)
        stage = data.pop("stage", None) or (stages[0] if stages else "Incoming")
        self.check_stage(pipeline, stage)
        self.leads[lid] = {
            "id": lid, "name": data.pop("name", None) or f"Lead #{lid}", "price": data.pop("price", 0),
            "pipeline": pipeline, "stage": stage, "responsible": data.pop("responsible", None),
            "fields": dict(data.pop("fields", {}) or {}), "tags": list(data.pop("tags", []) or []),
            "contacts": [contact_id] if contact_id else [], "company": company_id,
            "subscribers": [],
        }
        return lid

    def check_stage(self, pipeline: str, stage: str) -> None:
        if not self.strict:
            self.pipelines.setdefault(pipeline, [])
            if stage not in self.pipelines[pipeline]:
                self.pipelines[pipeline].append(stage)
            return
        if pipeline not in self.pipelines:
            raise CrmRejected(f'unknown pipeline "{pipeline}" (known: {", ".join(self.pipelines)})')
        if stage not in self.pipelines[pipeline]:
            known = ", ".join(self.pipelines[pipeline])
            raise CrmRejected(f'unknown stage "{stage}" in pipeline "{pipeline}" (known: {known})')

    # ------------------------------------------------------------------ CrmBackend
    async def identify(self, identity: ChannelIdentity) -> CrmRef:
        key = (identity.channel, identity.account, identity.external_id)
        ref = self.identities.get(key)
        if ref is None:
            cid = self.create_contact(name=identity.name, phone=identity.phone, email=identity.email)
            ref = CrmRef(cid, self.create_lead(contact_id=cid))
            self.identities[key] = ref
        return ref

    async def snapshot(self, ref: CrmRef) -> dict[str, Any]:
        return self.snapshot_now(ref)

    def snapshot_now(self, ref: CrmRef, *, copy_records: bool = True) -> dict[str, Any]:
        """The snapshot; ``copy_records=False`` when the records are a throw-away workspace."""
        lead = self.leads.get(ref.lead_id, {})
        company_id = lead.get("company") or ref.company_id
        dup: Callable[[Any], Any] = copy.deepcopy if copy_records else _same
        return {
            "contact": dup(self.contacts.get(ref.contact_id, {})),
            "lead": {k: dup(v) for k, v in lead.items() if k not in ("contacts", "company")},
            "company": dup(self.companies.get(company_id, {})) if company_id else {},
        }

    async def execute(self, ref: CrmRef, command: dict[str, Any]) -> CommandResult:
        return self.execute_now(ref, command)

    def execute_now(self, ref: CrmRef, command: dict[str, Any]) -> CommandResult:
        do = command["do"]
        if do not in CRM_COMMANDS:
            raise CrmRejected(f"the CRM does not execute {do!r}")
        self.log.append(dict(command))
        return _COMMANDS[do](self, ref, command)

    # ------------------------------------------------------------------ commands
    def _entity(self, ref: CrmRef, entity: str) -> dict[str, Any]:
        lead = self.leads[ref.lead_id]
        if entity == "lead":
            return lead
        if entity in ("contact", "main_contact", "chat_contact"):
            return self.contacts[ref.contact_id]
        if entity == "company":
            cid = lead.get("company")
            if not cid:
                cid = self._id()
                self.companies[cid] = {"id": cid, "name": "", "fields": {}, "tags": [], "responsible": None}
                lead["company"] = cid
            return self.companies[cid]
        raise CrmRejected(f"unknown entity {entity!r}")

    def _do_set_field(self, ref: CrmRef, cmd: dict[str, Any]) -> CommandResult:
        entity = cmd.get("entity", "lead")
        record = self._entity(ref, entity)
        name, value = str(cmd["field"]), cmd.get("value")
        standard = {"lead": _LEAD_STANDARD, "company": _COMPANY_STANDARD}.get(entity, _CONTACT_STANDARD)
        if entity not in ("lead", "company") and name in CARD_FIELDS:  # the customer card (card.py)
            record[name] = card_value(name, value)
        elif name in standard:
            if name == "price":
                try:
                    value = float(value) if value not in (None, "") else 0
                    value = int(value) if float(value).is_integer() else value
                except (TypeError, ValueError):
                    raise CrmRejected(f"price must be a number, not {value!r}") from None
            record[name] = value
            if entity != "lead" and name == "name" and value and "first_name" in record:
                record["first_name"] = str(value).split()[0]
        else:
            record["fields"][name] = value
        return CommandResult()

    def _do_tags(self, ref: CrmRef, cmd: dict[str, Any]) -> CommandResult:
        record = self._entity(ref, cmd.get("entity", "lead"))
        tags = record["tags"]
        for tag in cmd.get("add") or []:
            if tag and str(tag) not in tags:
                tags.append(str(tag))
        remove = {str(t) for t in cmd.get("remove") or []}
        record["tags"] = [t for t in tags if t not in remove]
        return CommandResult()

    def _do_add_note(self, ref: CrmRef, cmd: dict[str, Any]) -> CommandResult:
        entity = cmd.get("entity", "lead")
        owner = ref.lead_id if entity == "lead" else ref.contact_id
        self.notes.append({"id": self._id(), "entity": entity, "entity_id": owner, "text": str(cmd["text"])})
        return CommandResult()

    def _do_add_task(self, ref: CrmRef, cmd: dict[str, Any]) -> CommandResult:
        responsible = cmd.get("responsible", "current")
        if responsible == "current":
            responsible = self.leads[ref.lead_id].get("responsible")
        self.tasks.append({
            "id": self._id(), "lead_id": ref.lead_id, "text": str(cmd["text"]),
            "type": cmd.get("task_type", "follow_up"), "due": cmd.get("due_at"),
            "responsible": responsible, "completed": False, "result": None,
        })
        return CommandResult()

    def _do_complete_tasks(self, ref: CrmRef, cmd: dict[str, Any]) -> CommandResult:
        kind = cmd.get("task_type", "all")
        lo, hi = cmd.get("due_from"), cmd.get("due_to")
        lo_t = datetime.fromisoformat(lo) if lo else None
        hi_t = datetime.fromisoformat(hi) if hi else None
        done = 0
        for task in self.tasks:
            if task["lead_id"] != ref.lead_id or task["completed"]:
                continue
            if kind != "all" and task["type"] != kind:
                continue
            due = datetime.fromisoformat(task["due"]) if task["due"] else None
            if due is not None and ((lo_t and due < lo_t) or (hi_t and due >= hi_t)):
                continue
            task["completed"] = True
            task["result"] = cmd.get("comment")
            done += 1
        return CommandResult(done)

    def _do_change_stage(self, ref: CrmRef, cmd: dict[str, Any]) -> CommandResult:
        lead = self.leads[ref.lead_id]
        pipeline = str(cmd.get("pipeline") or lead["pipeline"])
        stage = str(cmd["stage"])
        self.check_stage(pipeline, stage)
        lead["pipeline"], lead["stage"] = pipeline, stage
        return CommandResult()

    def _do_change_responsible(self, ref: CrmRef, cmd: dict[str, Any]) -> CommandResult:
        user = cmd["user"]
        lead = self.leads[ref.lead_id]
        for entity in cmd.get("entities") or ["lead"]:
            if entity == "lead":
                lead["responsible"] = user
            elif entity in ("main_contact", "chat_contact"):
                self.contacts[ref.contact_id]["responsible"] = user
            elif entity == "all_contacts":
                for cid in lead["contacts"]:
                    self.contacts[cid]["responsible"] = user
            elif entity == "company":
                self._entity(ref, "company")["responsible"] = user
        return CommandResult()

    def _do_create_lead(self, ref: CrmRef, cmd: dict[str, Any]) -> CommandResult:
        src = self.leads[ref.lead_id]
        copy_parts = set(cmd.get("copy") or [])
        lid = self.create_lead(
            contact_id=ref.contact_id if "contacts" in copy_parts else None,
            company_id=src.get("company") if "company" in copy_parts else None,
            name=cmd.get("name") or None,
            pipeline=cmd.get("pipeline") or src["pipeline"], stage=cmd.get("stage") or None,
            price=src["price"] if "price" in copy_parts else 0,
            tags=list(src["tags"]) if "tags" in copy_parts else [],
            fields=dict(src["fields"]) if "fields" in copy_parts else {},
            responsible=cmd.get("responsible") or src.get("responsible"),
        )
        return CommandResult({"lead_id": lid})

    def _do_subscribers(self, ref: CrmRef, cmd: dict[str, Any]) -> CommandResult:
        subs = self.leads[ref.lead_id]["subscribers"]
        for user in cmd.get("add") or []:
            if user not in subs:
                subs.append(user)
        self.leads[ref.lead_id]["subscribers"] = [u for u in subs if u not in (cmd.get("remove") or [])]
        return CommandResult()

    # ------------------------------------------------------------------ reading for tests
    def lead_tasks(self, ref: CrmRef) -> list[dict[str, Any]]:
        return [dict(t) for t in self.tasks if t["lead_id"] == ref.lead_id]

    def lead_notes(self, ref: CrmRef) -> list[dict[str, Any]]:
        return [dict(n) for n in self.notes if n["entity_id"] in (ref.lead_id, ref.contact_id)]


#: The method carrying out each command of ``CRM_COMMANDS``.
_COMMANDS: dict[str, Callable[[MemoryCrm, CrmRef, dict[str, Any]], CommandResult]] = {
    "set_field": MemoryCrm._do_set_field, "tags": MemoryCrm._do_tags, "add_note": MemoryCrm._do_add_note,
    "add_task": MemoryCrm._do_add_task, "complete_tasks": MemoryCrm._do_complete_tasks,
    "change_stage": MemoryCrm._do_change_stage, "change_responsible": MemoryCrm._do_change_responsible,
    "create_lead": MemoryCrm._do_create_lead, "subscribers": MemoryCrm._do_subscribers,
}
