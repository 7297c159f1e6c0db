"""``create_form``: a hosted form at a one-time URL that writes to the CRM when submitted.

The action stores the form (``sb:form:<token>``: the fields, tags, stage, this conversation's
lead and contact) for ``[actions] form_ttl_days`` and returns ``{"url": …}``, which the
interpreter keeps in ``vars.form_url``. ``GET /forms/<token>`` shows the fields (never
prefilled: the link may be forwarded), ``POST`` checks and saves them, once:

* ``individual``: the values go to this lead's contact and lead, the tags to the lead, the lead
  moves to ``stage``; a note on the lead lists what was sent.
* ``referral``: a new contact and lead (the lead's pipeline; ``stage`` or its first stage) with
  the tags, and a note on both leads saying who referred whom.

A field is ``name``, ``first_name``, ``last_name``, ``phone``, ``email`` (the contact),
``currency``, ``language`` (the contact's card), ``price`` (the lead), ``company`` (the company
name), ``contact.<x>`` / ``lead.<x>`` / ``company.<x>`` (that record's custom field), or any
other name (a custom field of the lead). Every field is required.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import msgpack
from redis.asyncio import Redis

from crm_bridge import CrmBackend, CrmRef
from crm_bridge.directory import CrmDirectory
from crm_bridge.values import clean_email, clean_phone

from ..errors import ActionRefused, CrmRejected, CrmTemporary

FIELD_MAX = 1000
#: The largest number a form accepts (a price): exact as a float, far beyond any real deal.
NUMBER_MAX = 10**15
_FIELD = re.compile(r"^((contact|lead|company)\.)?[A-Za-z0-9_][A-Za-z0-9_ -]{0,63}$")
_CONTACT = {"name", "first_name", "last_name", "phone", "email", "currency", "language"}
_LABELS = {"name": "Name", "first_name": "First name", "last_name": "Last name", "phone": "Phone",
           "email": "E-mail", "price": "Budget", "company": "Company", "currency": "Currency",
           "language": "Language"}


def form_key(token: str) -> str:
    return f"sb:form:{token}"


@dataclass(frozen=True, slots=True)
class FormField:
    name: str  # as written in the flow; the input's name
    entity: str  # contact | lead | company
    field: str
    label: str
    input_type: str  # text | email | tel | number | textarea

    @classmethod
    def parse(cls, raw: str) -> FormField:
        if not _FIELD.match(raw):
            raise ActionRefused(f"create_form: {raw!r} is not a field name")
        entity, _, field = raw.rpartition(".")
        if not entity:
            entity = "contact" if raw in _CONTACT else "company" if raw == "company" else "lead"
            field = "name" if raw == "company" else raw
        input_type = {"email": "email", "phone": "tel", "price": "number"}.get(field, "text")
        if field in ("comment", "message", "notes", "address"):
            input_type = "textarea"
        label = _LABELS.get(raw) or field.replace("_", " ").strip().capitalize()
        return cls(raw, entity, field, label, input_type)


class FormAlreadySent(Exception):
    """Another submission of this one-time form finished first."""


class FormError(Exception):
    """The submitted values are not right: ``errors`` maps field names to messages."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def clean_values(fields: list[FormField], raw: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in fields:
        text = (raw.get(f.name) or "").strip()
        try:
            if not text:
                raise CrmRejected("please fill this in")
            if len(text) > FIELD_MAX:
                raise CrmRejected(f"at most {FIELD_MAX} characters")
            if f.input_type == "email":
                values[f.name] = clean_email(text)
            elif f.input_type == "tel":
                values[f.name] = clean_phone(text)
            elif f.input_type == "number":
                number = float(text.replace(",", "."))
                if not math.isfinite(number):  # "nan", "inf", "1e400"
                    raise ValueError(text)
                if number < 0:
                    raise CrmRejected("a number of 0 or more")
                if number > NUMBER_MAX:
                    raise CrmRejected(f"a number of at most {NUMBER_MAX:,}")
                values[f.name] = int(number) if number.is_integer() else number
            else:
                values[f.name] = text
        except ValueError:
            errors[f.name] = "please write a number"
        except CrmRejected as exc:
            errors[f.name] = str(exc).removeprefix("email: ").removeprefix("phone ")
    if errors:
        raise FormError(errors)
    return values


class Forms:
    def __init__(self, redis: Redis, crm: CrmBackend, *, public_url: str, ttl_days: int = 30,
                 directory: CrmDirectory | None = None) -> None:
        self.redis = redis
        self.crm = crm
        self.public_url = public_url.rstrip("/")
        self.ttl = max(1, ttl_days) * 86400
        self.directory = directory

    async def create(self, command: dict[str, Any], ref: CrmRef, conversation: str) -> dict[str, Any]:
        kind = command.get("form") or "individual"
        if kind not in ("individual", "referral"):
            raise ActionRefused(f"create_form: form is individual or referral, not {kind!r}")
        raw_fields = command.get("fields") or []
        if not raw_fields or len(raw_fields) > 20:
            raise ActionRefused("create_form: 1 to 20 fields")
        for raw in raw_fields:
            FormField.parse(str(raw))
        stage = command.get("stage")
        record = {
            "form": kind, "fields": [str(f) for f in raw_fields],
            "tags": [str(t).strip() for t in command.get("tags") or [] if str(t).strip()],
            "stage": None if stage in (None, "") else str(stage), "contact_id": ref.contact_id,
            "lead_id": ref.lead_id, "company_id": ref.company_id, "conversation": conversation,
            "created_at": time.time(), "done": False,
        }
        token = secrets.token_urlsafe(24)
        await self.redis.set(form_key(token), msgpack.packb(record, use_bin_type=True), ex=self.ttl)
        return {"url": f"{self.public_url}/forms/{token}", "expires_in": self.ttl}

    async def load(self, token: str) -> dict[str, Any] | None:
        if not token or len(token) > 64:
            return None
        raw = await self.redis.get(form_key(token))
        return None if raw is None else msgpack.unpackb(raw, raw=False)

    @staticmethod
    def fields(record: dict[str, Any]) -> list[FormField]:
        return [FormField.parse(f) for f in record["fields"]]

    async def submit(self, token: str, record: dict[str, Any], raw: dict[str, str]) -> dict[str, Any]:
        """Checks and saves the values once. Raises ``FormError`` (wrong values), ``CrmRejected``
        (the CRM refused) or ``CrmTemporary`` (try again); returns what was written."""
        fields = self.fields(record)
        values = clean_values(fields, raw)
        if not await self.redis.set(f"{form_key(token)}:lock", "1", nx=True, ex=60):
            raise CrmTemporary("this form is being sent already")
        done = False
        try:
            # Read again under the lock: a submission that finished meanwhile must not run twice.
            current = await self.load(token)
            if current is None or current.get("done"):
                raise FormAlreadySent()
            ref = CrmRef(record["contact_id"], record["lead_id"], record.get("company_id"))
            if record["form"] == "referral":
                result = await self._referral(ref, record, fields, values)
            else:
                result = await self._individual(ref, record, fields, values)
            await self.redis.set(form_key(token), msgpack.packb({**record, "done": True, "result": result},
                                                                use_bin_type=True), keepttl=True)
            done = True
            return result
        finally:
            if not done:  # after a success the lock stays (it expires): nothing can submit again
                await self.redis.delete(f"{form_key(token)}:lock")

    async def _individual(self, ref: CrmRef, record: dict[str, Any], fields: list[FormField],
                          values: dict[str, Any]) -> dict[str, Any]:
        for f in fields:
            value = values[f.name]
            if f.entity == "contact" and f.field in ("first_name", "last_name"):
                value = str(value)
            await self.crm.execute(ref, {"do": "set_field", "entity": f.entity, "field": f.field, "value": value})
        if record["tags"]:
            await self.crm.execute(ref, {"do": "tags", "entity": "lead", "add": record["tags"]})
        if record["stage"]:
            await self.crm.execute(ref, {"do": "change_stage", "stage": record["stage"]})
        summary = "\n".join(f"{f.label}: {values[f.name]}" for f in fields)
        await self.crm.execute(ref, {"do": "add_note", "entity": "lead", "text": f"Form filled in:\n{summary}"})
        return {"lead_id": ref.lead_id}

    async def _referral(self, ref: CrmRef, record: dict[str, Any], fields: list[FormField],
                        values: dict[str, Any]) -> dict[str, Any]:
        summary = "\n".join(f"{f.label}: {values[f.name]}" for f in fields)
        if self.directory is None:  # another CRM: a new lead through the CRM's own commands
            result = await self.crm.execute(ref, {"do": "create_lead", "copy": [], "stage": record["stage"]})
            await self.crm.execute(ref, {"do": "add_note", "entity": "lead", "text": f"Referral:\n{summary}"})
            return {"lead_id": (result.value or {}).get("lead_id")}
        by_entity: dict[str, dict[str, Any]] = {"contact": {}, "lead": {}, "company": {}}
        for f in fields:
            by_entity[f.entity][f.field] = values[f.name]
        contact_data: dict[str, Any] = {k: by_entity["contact"].pop(k) for k in
                                        ("name", "first_name", "phone", "email", "currency", "language")
                                        if k in by_entity["contact"]}
        if by_entity["contact"]:
            contact_data["fields"] = by_entity["contact"]
        contact_data.setdefault("name", " ".join(str(v) for k, v in values.items()
                                                 if k in ("first_name", "last_name")) or "Referral")
        source = await self.directory.get("lead", ref.lead_id) or {}
        contact = await self.directory.create_contact(contact_data)
        lead_data: dict[str, Any] = {"name": f"Referral: {contact['name']}", "tags": record["tags"],
                                     "pipeline": source.get("pipeline"), "stage": record["stage"]}
        if "price" in by_entity["lead"]:
            lead_data["price"] = by_entity["lead"].pop("price")
        if by_entity["lead"]:
            lead_data["fields"] = by_entity["lead"]
        lead = await self.directory.create_lead(lead_data, contact_id=contact["id"])
        await self.directory.add_note("lead", lead["id"], f"Referred by lead #{ref.lead_id} "
                                      f"({source.get('name') or ''}).\n{summary}")
        await self.crm.execute(ref, {"do": "add_note", "entity": "lead",
                                     "text": f"Referred a new lead #{lead['id']} ({contact['name']})."})
        return {"lead_id": lead["id"], "contact_id": contact["id"]}
