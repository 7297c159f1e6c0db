"""The Kommo (ex-amoCRM) backend: our CRM commands as calls to Kommo's REST API v4.

* **identify** finds the contact by its channel identity — a contact custom field (default
  "Salesbot ID", a text area created on first use holding one ``channel:account:external_id``
  line per channel the person wrote from), else by phone, else by e-mail (never by name alone:
  two people may share one) — and its newest open lead; a stranger gets a contact and a lead in
  the first stage of the main pipeline in one ``POST /api/v4/leads/complex``.
* **snapshot** is one read of the lead (``?with=contacts``) and one of the contact, in parallel,
  plus the company when the lead has one; custom fields appear under ``fields`` by name and
  under ``cf`` by id (``lead.cf.123`` as in Kommo's own placeholders).
* **execute** maps each command onto the API (see ``docs/crm.md``): custom fields by id or name
  (resolved from the account's cached catalogue, ``account.py``), ``tags_to_add`` /
  ``tags_to_delete`` (never the replacing ``_embedded.tags``), tasks with ``complete_till``
  (types 1 follow-up, 2 meeting, others by name), completing tasks in one batched PATCH,
  common notes, stages as ``pipeline_id``/``status_id`` resolved by name, responsible users by
  id, name or e-mail. Kommo's REST API cannot change a lead's subscribers: ``subscribers`` is
  rejected (permanent), so a flow takes its ``failed`` branch. With an ``echo`` (the server's),
  a real move, new responsible user, tag or field change of the lead is also emitted as a lead event.
* **outbound** (``bot/runtime/outbound_kommo.py``) reads a contact by id, phone or e-mail, its
  newest open lead, the chats it wrote from (its identity field), and ``attach``es a chat the bot
  opened for it.

How requests travel (rate limit, breaker, typed errors) is ``client.py``; how values are encoded
``records.py``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bot.errors import CrmRejected, CrmUnavailable
from bot.store.ratelimit import SharedLimiter

from ..changes import Change
from ..interface import ChannelIdentity, CommandResult, CrmRef
from .account import CLOSED, KommoAccount
from .client import KommoClient
from .echo import KommoEcho
from .records import (
    MULTITEXT_CODES,
    STANDARD,
    Record,
    company_view,
    contact_view,
    digits,
    encode_values,
    epoch,
    field_change,
    fold,
    lead_view,
    multitext,
    str_id,
    tags,
)

log = logging.getLogger("salesbot.crm.kommo")

#: Entities a command may name, and the API collection each lives in.
ENTITY_PATHS = {"lead": "leads", "contact": "contacts", "main_contact": "contacts",
                "chat_contact": "contacts", "company": "companies"}
#: The most entities Kommo advises per write request.
BATCH = 50
#: One command of a flow's CRM action (``{"do": "set_field", …}``), as the interface passes it.
Command = dict[str, Any]


class KommoCrm(KommoClient):
    """A ``CrmBackend`` over Kommo's REST API v4 (one account)."""

    name = "kommo"

    def __init__(self, base_url: str, token: str, *, session: aiohttp.ClientSession | None = None,
                 rate: int = 7, timeout: float = 10.0, identity_field: str | None = "Salesbot ID",
                 limiter: SharedLimiter | None = None, cooldown: float = 5.0) -> None:
        super().__init__(base_url, token, session=session, rate=rate, timeout=timeout, limiter=limiter,
                         cooldown=cooldown)
        self.identity_field = identity_field or None
        self.account = KommoAccount(self)
        #: Emits our stage and responsible changes as lead events, recognises Kommo's echo (``echo.py``).
        self.echo: KommoEcho | None = None
        self._identity_lock = asyncio.Lock()
        self._commands: dict[str, Callable[[CrmRef, Command], Awaitable[CommandResult]]] = {
            "set_field": self._do_set_field, "tags": self._do_tags, "add_note": self._do_add_note,
            "add_task": self._do_add_task, "complete_tasks": self._do_complete_tasks,
            "change_stage": self._do_change_stage, "change_responsible": self._do_change_responsible,
            "create_lead": self._do_create_lead, "subscribers": self._do_subscribers,
        }

    # ------------------------------------------------------------------ snapshot
    async def _lead(self, lead_id: str, *, with_contacts: bool = True) -> Record:
        return await self.get_one(f"/api/v4/leads/{lead_id}", [("with", "contacts")] if with_contacts else [])

    @staticmethod
    def _main_contact(lead: Mapping[str, Any]) -> str:
        """The lead's main contact ("" when it has none: Kommo leads often have no contact)."""
        contacts = (lead.get("_embedded") or {}).get("contacts") or []
        main = next((c for c in contacts if c.get("is_main")), contacts[0] if contacts else None)
        return str(main["id"]) if main else ""

    async def _contact_id(self, ref: CrmRef) -> str:
        """The contact a command names: the reference's, else the lead's main contact (events of
        Kommo's webhooks know only the lead); ``CrmRejected`` when the lead has none."""
        found = ref.contact_id or self._main_contact(await self._lead(ref.lead_id))
        if not found:
            raise CrmRejected(f"kommo: lead {ref.lead_id} has no contact")
        return found

    async def snapshot(self, ref: CrmRef) -> dict[str, Any]:
        if ref.contact_id:
            lead, contact = await asyncio.gather(self._lead(ref.lead_id),
                                                 self.get(f"/api/v4/contacts/{ref.contact_id}"))
        else:  # an event of a webhook or an automation: the lead's main contact, if it has one
            lead = await self._lead(ref.lead_id)
            main = self._main_contact(lead)
            contact = await self.get(f"/api/v4/contacts/{main}") if main else None
        companies = (lead.get("_embedded") or {}).get("companies") or []
        company_id = companies[0]["id"] if companies else None
        company = await self.get(f"/api/v4/companies/{company_id}") if company_id else None
        pipeline, stage = await self.account.stage_names(lead.get("pipeline_id"), lead.get("status_id"))
        return {
            "lead": lead_view(lead, pipeline, stage, self.identity_field),
            "contact": contact_view(contact or {}, self.identity_field),
            "company": company_view(company, self.identity_field) if company else {},
        }

    # ------------------------------------------------------------------ identify
    async def _identity_field_def(self) -> Record | None:
        """The contact field holding channel identities; created (text area) when missing."""
        name = self.identity_field
        if not name:
            return None
        for f in await self.account.fields("contacts"):
            if fold(f.get("name")) == fold(name):
                return f
        async with self._identity_lock:  # one creation, even for identifies running at once
            self.account.forget_fields("contacts")  # another process may have created it meanwhile
            for f in await self.account.fields("contacts"):
                if fold(f.get("name")) == fold(name):
                    return f
            try:
                created = await self.request("POST", "/api/v4/contacts/custom_fields",
                                             json=[{"name": name, "type": "textarea", "sort": 9999}])
            except CrmRejected as exc:  # no rights to add fields: identify by phone / e-mail only
                log.warning("kommo.identity_field_unavailable", extra={"error": str(exc)})
                self.identity_field = None
                return None
            self.account.forget_fields("contacts")
            made = ((created or {}).get("_embedded") or {}).get("custom_fields") or []
            return dict(made[0]) if made else await self.account.field("contacts", name)

    async def _search_contacts(self, query: str) -> list[Record]:
        data = await self.get("/api/v4/contacts", [("query", query), ("with", "leads"), ("limit", 50)])
        return list(((data or {}).get("_embedded") or {}).get("contacts") or [])

    @staticmethod
    def _identity_lines(contact: Mapping[str, Any], field_id: int) -> list[str]:
        for item in contact.get("custom_fields_values") or []:
            if item.get("field_id") == field_id:
                text = "\n".join(str(v.get("value") or "") for v in item.get("values") or [])
                return [line.strip() for line in text.splitlines() if line.strip()]
        return []

    async def _find_contact(self, identity: ChannelIdentity, key: str,
                            field: Record | None) -> Record | None:
        if field is not None:
            for c in await self._search_contacts(key):
                if key in self._identity_lines(c, field["id"]):
                    return c
        found = await self.contact_by_phone(identity.phone) if identity.phone else None
        if found is None and identity.email:
            found = await self.contact_by_email(identity.email)
        return found

    async def contact_by_phone(self, phone: str) -> Record | None:
        """The contact with this phone among its ``PHONE`` values (the last 10 digits compared)."""
        want = digits(phone)
        if len(want) < 5:
            return None
        for c in await self._search_contacts(want):
            if any(digits(p)[-10:] == want[-10:] for p in multitext(c, "PHONE")):
                return c
        return None

    async def contact_by_email(self, email: str) -> Record | None:
        for c in await self._search_contacts(email):
            if any(fold(e) == fold(email) for e in multitext(c, "EMAIL")):
                return c
        return None

    async def contact(self, contact_id: str) -> Record | None:
        """One contact with its leads (None when Kommo has none with this id)."""
        if not contact_id.isdigit():
            return None
        found = await self.get(f"/api/v4/contacts/{contact_id}", [("with", "leads")])
        return dict(found) if found else None

    async def lead_contacts(self, lead_id: str) -> list[str] | None:
        """The lead's contacts, the main one first; None when Kommo has no such lead."""
        if not lead_id.isdigit():
            return None
        lead = await self.get(f"/api/v4/leads/{lead_id}", [("with", "contacts")])
        if not lead:
            return None
        main = self._main_contact(lead)
        others = [str(c["id"]) for c in (lead.get("_embedded") or {}).get("contacts") or []]
        return [main, *[c for c in others if c != main]] if main else others

    async def open_lead(self, contact: Mapping[str, Any]) -> str | None:
        """The newest open lead of a contact read ``with=leads``."""
        ids = [str(lead["id"]) for lead in (contact.get("_embedded") or {}).get("leads") or []]
        if not ids:
            return None
        leads = await self.get_all("/api/v4/leads", "leads", [("filter[id][]", i) for i in ids[:BATCH]])
        open_ = [lead for lead in leads if lead.get("status_id") not in CLOSED and not lead.get("is_deleted")]
        return str(max(open_, key=lambda lead: lead["id"])["id"]) if open_ else None

    async def new_lead(self, contact_id: str, name: str) -> str:
        """A lead of the contact in the first stage of the main pipeline."""
        pipeline = (await self.account.pipelines())[0]
        created = await self.request("POST", "/api/v4/leads", json=[{
            "name": name, "pipeline_id": pipeline["id"], "status_id": self.account.first_stage(pipeline)["id"],
            "_embedded": {"contacts": [{"id": int(contact_id)}]}}])
        return str(created["_embedded"]["leads"][0]["id"])

    async def identities(self, contact_id: str) -> list[tuple[str, str, str]]:
        """``(channel, account, external id)`` of every chat the contact wrote from (its identity field)."""
        field = await self._identity_field_def()
        contact = await self.contact(contact_id) if field is not None else None
        if field is None or contact is None:
            return []
        out = []
        for line in self._identity_lines(contact, field["id"]):
            parts = line.split(":", 2)
            if len(parts) == 3 and all(parts):
                out.append((parts[0], parts[1], parts[2]))
        return out

    async def attach(self, identity: ChannelIdentity, ref: CrmRef) -> CrmRef:
        """Record that ``identity`` is ``ref``'s contact (a chat the bot opened for a known contact):
        a later conversation of that chat finds this contact."""
        field = await self._identity_field_def()
        contact = await self.contact(ref.contact_id) if field is not None else None
        if field is not None and contact is not None:
            await self._remember(contact, field, f"{identity.channel}:{identity.account}:{identity.external_id}")
        return ref

    async def _remember(self, contact: Mapping[str, Any], field: Record, key: str) -> None:
        lines = self._identity_lines(contact, field["id"])
        if key not in lines:
            await self.request("PATCH", f"/api/v4/contacts/{contact['id']}", json={"custom_fields_values": [
                {"field_id": field["id"], "values": [{"value": "\n".join([*lines, key])}]}]})

    async def identify(self, identity: ChannelIdentity) -> CrmRef:
        key = f"{identity.channel}:{identity.account}:{identity.external_id}"
        field = await self._identity_field_def()
        contact = await self._find_contact(identity, key, field)
        if contact is None:
            return await self._create_contact_and_lead(identity, key, field)
        contact_id = str(contact["id"])
        if field is not None:  # found by phone or e-mail: remember this channel too
            await self._remember(contact, field, key)
        lead_id = await self.open_lead(contact) or await self.new_lead(contact_id, self._lead_name(identity))
        return CrmRef(contact_id, lead_id)

    @staticmethod
    def _lead_name(identity: ChannelIdentity) -> str:
        return identity.name or f"Chat: {identity.channel}"

    async def _create_contact_and_lead(self, identity: ChannelIdentity, key: str,
                                       field: Record | None) -> CrmRef:
        pipeline = (await self.account.pipelines())[0]
        values: list[Record] = []
        if field is not None:
            values.append({"field_id": field["id"], "values": [{"value": key}]})
        if identity.phone:
            values.append({"field_code": "PHONE", "values": [{"value": identity.phone, "enum_code": "WORK"}]})
        if identity.email:
            values.append({"field_code": "EMAIL", "values": [{"value": identity.email, "enum_code": "WORK"}]})
        contact: Record = {"name": identity.name or "", "custom_fields_values": values}
        if identity.name:
            contact["first_name"] = identity.name.split()[0]
        created = await self.request("POST", "/api/v4/leads/complex", json=[{
            "name": self._lead_name(identity), "pipeline_id": pipeline["id"],
            "status_id": self.account.first_stage(pipeline)["id"], "_embedded": {"contacts": [contact]}}])
        item = created[0] if isinstance(created, list) else (created or {})
        if not item.get("id") or not item.get("contact_id"):
            raise CrmUnavailable(f"kommo: POST /api/v4/leads/complex: unexpected answer {created!r}"[:300])
        return CrmRef(str(item["contact_id"]), str(item["id"]))

    # ------------------------------------------------------------------ execute
    async def execute(self, ref: CrmRef, command: Command) -> CommandResult:
        do = command.get("do")
        handler = self._commands.get(do) if isinstance(do, str) else None
        if handler is None:
            raise CrmRejected(f"the CRM does not execute {do!r}")
        return await handler(ref, command)

    async def _target(self, ref: CrmRef, entity: str, *, create_company: bool = True) -> tuple[str, str]:
        """(API collection, record id) of the entity a command names."""
        path = ENTITY_PATHS.get(entity)
        if path is None:
            raise CrmRejected(f"unknown entity {entity!r}")
        if path == "leads":
            return path, ref.lead_id
        if path == "contacts":
            return path, await self._contact_id(ref)
        return path, await self._company_id(ref, create=create_company)

    async def _company_id(self, ref: CrmRef, *, create: bool) -> str:
        lead = await self._lead(ref.lead_id)
        companies = (lead.get("_embedded") or {}).get("companies") or []
        if companies:
            return str(companies[0]["id"])
        if not create:
            return ""
        made = await self.request("POST", "/api/v4/companies", json=[{"name": lead.get("name") or ""}])
        company_id = str(made["_embedded"]["companies"][0]["id"])
        await self.request("POST", f"/api/v4/leads/{ref.lead_id}/link",
                           json=[{"to_entity_id": int(company_id), "to_entity_type": "companies"}])
        return company_id

    async def _do_set_field(self, ref: CrmRef, cmd: Command) -> CommandResult:
        path, record_id = await self._target(ref, str(cmd.get("entity") or "lead"))
        name, value = cmd["field"], cmd.get("value")
        body: Record
        field: Record | None = None
        if fold(name) in STANDARD[path]:
            key = fold(name)
            if key == "price":
                try:
                    number = float(value) if value not in (None, "") else 0.0
                except (TypeError, ValueError):
                    raise CrmRejected(f"price must be a number, not {value!r}") from None
                body = {"price": int(number)}
            elif key in MULTITEXT_CODES:
                body = {"custom_fields_values": [{"field_code": MULTITEXT_CODES[key], "values": (
                    [{"value": str(value), "enum_code": "WORK"}] if value not in (None, "") else None)}]}
            elif key == "name" and path == "contacts":
                words = str(value or "").split()
                body = {"name": str(value or ""), "first_name": words[0] if words else "",
                        "last_name": " ".join(words[1:])}
            else:
                body = {key: "" if value is None else str(value)}
        else:
            field = await self.account.field(path, name)
            body = {"custom_fields_values": [{"field_id": field["id"], "values": encode_values(field, value)}]}
        before: Record | None = None
        if path == "leads" and self.echo is not None:  # the lead's field event, as the embedded CRM's
            before = await self._lead(ref.lead_id, with_contacts=False)
        await self.request("PATCH", f"/api/v4/{path}/{record_id}", json=body)
        change = field_change(before, field, body) if before is not None else None
        if change is not None and self.echo is not None:
            await self.echo.emit([Change("lead.field_changed", ref.lead_id, change, ref.contact_id or None,
                                         _depth(cmd))])
        return CommandResult()

    async def _do_tags(self, ref: CrmRef, cmd: Command) -> CommandResult:
        add = [str(t) for t in cmd.get("add") or [] if str(t).strip()]
        remove = [str(t) for t in cmd.get("remove") or [] if str(t).strip()]
        if not add and not remove:
            return CommandResult()
        path, record_id = await self._target(ref, str(cmd.get("entity") or "lead"))
        item: Record = {"id": int(record_id)}
        if add:
            item["tags_to_add"] = [{"name": t} for t in add]
        if remove:
            item["tags_to_delete"] = [{"name": t} for t in remove]
        before: set[str] | None = None
        if path == "leads" and self.echo is not None:  # the lead's tag events, as the embedded CRM's
            before = {fold(t) for t in tags(await self._lead(ref.lead_id, with_contacts=False))}
        await self.request("PATCH", f"/api/v4/{path}", json=[item])
        if before is not None and self.echo is not None:
            contact, depth = ref.contact_id or None, _depth(cmd)
            await self.echo.emit(
                [Change("lead.tag_added", ref.lead_id, {"tag": t}, contact, depth)
                 for t in dict.fromkeys(add) if fold(t) not in before]
                + [Change("lead.tag_removed", ref.lead_id, {"tag": t}, contact, depth)
                   for t in dict.fromkeys(remove) if fold(t) in before and t not in add])
        return CommandResult()

    async def _do_add_note(self, ref: CrmRef, cmd: Command) -> CommandResult:
        entity = str(cmd.get("entity") or "lead")
        path, record_id = ("leads", ref.lead_id) if entity == "lead" else await self._target(ref, entity)
        await self.request("POST", f"/api/v4/{path}/{record_id}/notes",
                           json=[{"note_type": "common", "params": {"text": str(cmd["text"])}}])
        return CommandResult()

    async def _do_add_task(self, ref: CrmRef, cmd: Command) -> CommandResult:
        responsible = cmd.get("responsible", "current")
        task: Record = {
            "task_type_id": await self.account.task_type_id(cmd.get("task_type", "follow_up")),
            "text": str(cmd["text"]), "entity_id": int(ref.lead_id), "entity_type": "leads",
            "complete_till": epoch(cmd.get("due_at")) or int(time.time()),
        }
        if responsible in (None, "", "current"):
            owner = (await self._lead(ref.lead_id, with_contacts=False)).get("responsible_user_id")
            if owner:
                task["responsible_user_id"] = owner
        else:
            task["responsible_user_id"] = await self.account.user_id(responsible)
        await self.request("POST", "/api/v4/tasks", json=[task])
        return CommandResult()

    async def _open_tasks(self, lead_id: str, kind: object = "all") -> list[Record]:
        params: list[tuple[str, object]] = [("filter[entity_type]", "leads"), ("filter[entity_id][]", lead_id),
                                            ("filter[is_completed]", 0)]
        if kind not in (None, "", "all"):
            params.append(("filter[task_type][]", await self.account.task_type_id(kind)))
        return await self.get_all("/api/v4/tasks", "tasks", params)

    async def _do_complete_tasks(self, ref: CrmRef, cmd: Command) -> CommandResult:
        lo, hi = epoch(cmd.get("due_from")), epoch(cmd.get("due_to"))
        chosen = []
        for task in await self._open_tasks(ref.lead_id, cmd.get("task_type", "all")):
            due = task.get("complete_till")
            outside = due is not None and ((lo is not None and due < lo) or (hi is not None and due >= hi))
            if task.get("is_completed") or outside:
                continue
            chosen.append(task["id"])
        comment = cmd.get("comment")
        for start in range(0, len(chosen), BATCH):
            items = []
            for task_id in chosen[start:start + BATCH]:
                item: Record = {"id": task_id, "is_completed": True}
                if comment:
                    item["result"] = {"text": str(comment)}
                items.append(item)
            await self.request("PATCH", "/api/v4/tasks", json=items)
        return CommandResult(len(chosen))

    async def _do_change_stage(self, ref: CrmRef, cmd: Command) -> CommandResult:
        key = cmd.get("pipeline")
        lead: Record | None = None
        if key in (None, "") or self.echo is not None:
            lead = await self._lead(ref.lead_id, with_contacts=False)
            key = key if key not in (None, "") else lead.get("pipeline_id")
        pipeline = await self.account.pipeline(key)
        stage = await self.account.stage(pipeline, cmd["stage"])
        old = (lead.get("pipeline_id"), lead.get("status_id")) if lead is not None else None
        moved = old is not None and old != (pipeline["id"], stage["id"])
        await self._written(ref, "stage", stage["id"], old[1] if old else None, moved, functools.partial(
            self.request, "PATCH", f"/api/v4/leads/{ref.lead_id}",
            json={"pipeline_id": pipeline["id"], "status_id": stage["id"]}))
        if moved and self.echo is not None and old is not None:
            old_pipeline, old_stage = await self.account.stage_names(*old)
            await self.echo.emit([Change("lead.stage_changed", ref.lead_id, {
                "from": {"pipeline": old_pipeline, "stage": old_stage},
                "to": {"pipeline": pipeline.get("name"), "stage": stage.get("name")},
                "pipeline_id": pipeline["id"], "status_id": stage["id"],
                "old_pipeline_id": old[0], "old_status_id": old[1]}, ref.contact_id or None, _depth(cmd))],
                noted=(ref.lead_id, "stage", stage["id"]))
        return CommandResult()

    async def _written(self, ref: CrmRef, kind: str, new: object, old: object, changes: bool,
                       write: Callable[[], Awaitable[Any]]) -> None:
        """Carry out ``write``; when it ``changes`` something, Kommo's webhook about it is noted as
        an echo first (``echo.py``), and forgotten if the write fails — even a timeout, after which
        the write may have happened: then Kommo's webhook is the event (a retry finds no move)."""
        if not changes or self.echo is None:
            await write()
            return
        await self.echo.expect(ref.lead_id, kind, new, old)
        try:
            await write()
        except BaseException:
            await self.echo.forget(ref.lead_id, kind, new)
            raise

    async def _do_change_responsible(self, ref: CrmRef, cmd: Command) -> CommandResult:
        user = await self.account.user_id(cmd["user"])
        entities = list(cmd.get("entities") or ["lead"])
        targets: dict[str, set[int]] = {"leads": set(), "contacts": set(), "companies": set()}
        lead: Record | None = None
        if "all_contacts" in entities or "company" in entities:
            lead = await self._lead(ref.lead_id)
        for entity in entities:
            if entity == "lead":
                targets["leads"].add(int(ref.lead_id))
            elif entity in ("main_contact", "chat_contact", "contact"):
                targets["contacts"].add(int(await self._contact_id(ref)))
            elif entity == "all_contacts" and lead is not None:
                targets["contacts"].update(int(c["id"]) for c in (lead.get("_embedded") or {}).get("contacts") or [])
            elif entity == "company" and lead is not None:
                targets["companies"].update(int(c["id"]) for c in (lead.get("_embedded") or {}).get("companies") or [])
        before: object = None
        if self.echo is not None and targets["leads"]:
            lead = lead or await self._lead(ref.lead_id)
            before = lead.get("responsible_user_id")
        changed = self.echo is not None and bool(targets["leads"]) and before != user
        for path, ids in targets.items():
            items = [{"id": i, "responsible_user_id": user} for i in sorted(ids)]
            for start in range(0, len(items), BATCH):
                write = functools.partial(self.request, "PATCH", f"/api/v4/{path}", json=items[start:start + BATCH])
                await self._written(ref, "responsible", user, before, changed and path == "leads", write)
        if changed and self.echo is not None:
            await self.echo.emit([Change("lead.responsible_changed", ref.lead_id, {
                "from": str_id(before), "to": str(user)}, ref.contact_id or None, _depth(cmd))],
                noted=(ref.lead_id, "responsible", user))
        return CommandResult()

    async def _do_create_lead(self, ref: CrmRef, cmd: Command) -> CommandResult:
        src = await self._lead(ref.lead_id)
        parts = set(cmd.get("copy") or [])
        pipeline = await self.account.pipeline(cmd.get("pipeline") or src.get("pipeline_id"))
        if cmd.get("stage"):
            stage = await self.account.stage(pipeline, cmd["stage"])
        else:
            stage = self.account.first_stage(pipeline)
        lead: Record = {"name": cmd.get("name") or src.get("name") or "",
                        "pipeline_id": pipeline["id"], "status_id": stage["id"]}
        responsible = cmd.get("responsible")
        if responsible:
            lead["responsible_user_id"] = await self.account.user_id(responsible)
        elif src.get("responsible_user_id"):
            lead["responsible_user_id"] = src["responsible_user_id"]
        if "price" in parts:
            lead["price"] = src.get("price") or 0
        if "fields" in parts and src.get("custom_fields_values"):
            lead["custom_fields_values"] = [
                {"field_id": item["field_id"], "values": [
                    {"enum_id": v["enum_id"]} if v.get("enum_id") else {"value": v.get("value")}
                    for v in item.get("values") or []]}
                for item in src["custom_fields_values"]]
        embedded: Record = {}
        src_embedded = src.get("_embedded") or {}
        if "tags" in parts and src_embedded.get("tags"):
            embedded["tags"] = [{"id": t["id"]} for t in src_embedded["tags"]]
        if "contacts" in parts:
            embedded["contacts"] = [{"id": c["id"]} for c in src_embedded.get("contacts") or []] \
                or ([{"id": int(ref.contact_id)}] if ref.contact_id else [])
        if "company" in parts and src_embedded.get("companies"):
            embedded["companies"] = [{"id": c["id"]} for c in src_embedded["companies"]]
        if embedded:
            lead["_embedded"] = embedded
        created = await self.request("POST", "/api/v4/leads", json=[lead])
        return CommandResult({"lead_id": str(created["_embedded"]["leads"][0]["id"])})

    async def stage_leads(self, pipeline: str, stage: str, page: int, limit: int = 250) -> tuple[list[str], bool]:
        """One page (from 1) of the ids of the leads in a stage, oldest first, and whether more
        follow: ``GET /api/v4/leads`` filtered by ``filter[statuses][0]`` (``apply_to_existing``)."""
        found = await self.account.pipeline(pipeline)
        status = await self.account.stage(found, stage)
        data = await self.get("/api/v4/leads", [
            ("filter[statuses][0][pipeline_id]", found["id"]), ("filter[statuses][0][status_id]", status["id"]),
            ("order[id]", "asc"), ("page", page), ("limit", limit)])
        items = ((data or {}).get("_embedded") or {}).get("leads") or []
        more = bool(items) and bool(((data or {}).get("_links") or {}).get("next"))
        return [str(lead["id"]) for lead in items], more

    async def _do_subscribers(self, ref: CrmRef, cmd: Command) -> CommandResult:
        raise CrmRejected("kommo: the API v4 cannot change a lead's subscribers (they are read-only there)")

    # ------------------------------------------------------------------ reading (support dashboard, tests)
    async def lead_tasks(self, ref: CrmRef) -> list[dict[str, Any]]:
        tasks = await self.get_all("/api/v4/tasks", "tasks", [("filter[entity_type]", "leads"),
                                                              ("filter[entity_id][]", ref.lead_id)])
        out = []
        for t in sorted(tasks, key=lambda t: t["id"]):
            due = t.get("complete_till")
            out.append({
                "id": str(t["id"]), "lead_id": str(t.get("entity_id")), "text": t.get("text"),
                "type": await self.account.task_type_name(int(t.get("task_type_id") or 1)),
                "due": datetime.fromtimestamp(due, UTC).isoformat() if due else None,
                "responsible": str_id(t.get("responsible_user_id")),
                "completed": bool(t.get("is_completed")), "result": (t.get("result") or {}).get("text"),
            })
        return out

    async def lead_notes(self, ref: CrmRef) -> list[dict[str, Any]]:
        out = []
        for entity, path, record_id in (("lead", "leads", ref.lead_id), ("contact", "contacts", ref.contact_id)):
            if not record_id:
                continue
            for n in await self.get_all(f"/api/v4/{path}/{record_id}/notes", "notes"):
                out.append({"id": str(n["id"]), "entity": entity, "entity_id": record_id,
                            "text": (n.get("params") or {}).get("text"), "type": n.get("note_type")})
        return out


def _depth(cmd: Command) -> int:
    """How many rule actions led to a command (set by the automations' effects; 0 for a flow)."""
    try:
        return int(cmd.get("depth") or 0)
    except (TypeError, ValueError):
        return 0
