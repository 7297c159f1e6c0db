"""The fake Kommo account's data (records, fields, pipelines, tags, tasks, notes) and Kommo's
rules for writing it, with its validation errors as Kommo words them; no HTTP here."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from crm_bridge.contract import CONTACT_FIELD, LEAD_FIELD, PIPELINES

SUBDOMAIN = "acme"
OWNER = 7  # the user the token belongs to: default responsible of what the API creates
USERS = [{"id": 7, "name": "Ann Manager", "email": "ann@acme.test"},
         {"id": 8, "name": "Bob Sales", "email": "bob@acme.test"}]
TASK_TYPES = [{"id": 1, "name": "Follow-up", "code": "FOLLOW_UP"}, {"id": 2, "name": "Meeting", "code": "MEETING"},
              {"id": 3, "name": "Demo", "code": None}]
ENTITIES = ("leads", "contacts", "companies")


class Invalid(Exception):
    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['path']}: {e['detail']}" for e in errors))
        self.errors = errors


def invalid_at(path: str, detail: str, code: str = "NotSupportedChoice") -> Invalid:
    return Invalid([{"code": code, "path": path, "detail": detail}])


def _default_fields() -> dict[str, list[dict[str, Any]]]:
    return {
        "leads": [
            {"id": 501, "name": LEAD_FIELD, "type": "text", "code": None},
            {"id": 502, "name": "Score", "type": "numeric", "code": None},
            {"id": 503, "name": "Source", "type": "select", "code": None,
             "enums": [{"id": 601, "value": "Site", "sort": 1}, {"id": 602, "value": "Ads", "sort": 2}]},
            {"id": 504, "name": "Products", "type": "multiselect", "code": None,
             "enums": [{"id": 611, "value": "Kitchen", "sort": 1}, {"id": 612, "value": "Bath", "sort": 2}]},
            {"id": 505, "name": "Call back", "type": "date", "code": None},
            {"id": 506, "name": "Hot", "type": "checkbox", "code": None},
        ],
        "contacts": [
            {"id": 401, "name": "Phone", "type": "multitext", "code": "PHONE",
             "enums": [{"id": 1, "value": "WORK"}, {"id": 2, "value": "MOB"}]},
            {"id": 402, "name": "Email", "type": "multitext", "code": "EMAIL",
             "enums": [{"id": 3, "value": "WORK"}, {"id": 4, "value": "PRIV"}]},
            {"id": 403, "name": CONTACT_FIELD, "type": "text", "code": None},
            {"id": 404, "name": "Position", "type": "text", "code": "POSITION"},
        ],
        "companies": [
            {"id": 301, "name": "Phone", "type": "multitext", "code": "PHONE"},
            {"id": 302, "name": "Web", "type": "url", "code": "WEB"},
        ],
    }


def _default_pipelines() -> list[dict[str, Any]]:
    out = []
    ids = count(2000, 1)
    for n, (name, stages) in enumerate(PIPELINES.items()):
        pid = 1001 + n
        statuses = [{"id": next(ids), "name": "Incoming leads", "sort": 10, "type": 1, "pipeline_id": pid}]
        names = list(stages)
        won = next((s for s in names if s.lower() in ("won", "closed - won")), None)
        lost = next((s for s in names if s.lower() in ("lost", "closed - lost")), None)
        for i, stage in enumerate(s for s in names if s not in (won, lost)):
            statuses.append({"id": next(ids), "name": stage, "sort": 20 + 10 * i, "type": 0, "pipeline_id": pid})
        statuses.append({"id": 142, "name": won or "Closed - won", "sort": 10000, "type": 0, "pipeline_id": pid})
        statuses.append({"id": 143, "name": lost or "Closed - lost", "sort": 11000, "type": 0, "pipeline_id": pid})
        out.append({"id": pid, "name": name, "sort": n + 1, "is_main": n == 0, "is_unsorted_on": True,
                    "is_archive": False, "_embedded": {"statuses": statuses}})
    return out


@dataclass
class KommoAccount:
    """What the account holds, and how a write changes it (``Invalid`` when Kommo would refuse it)."""

    fields: dict[str, list[dict[str, Any]]] = field(default_factory=_default_fields)
    pipelines: list[dict[str, Any]] = field(default_factory=_default_pipelines)
    leads: dict[int, dict[str, Any]] = field(default_factory=dict)
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    companies: dict[int, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    notes: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ids = count(10_000)
        self._tag_ids = count(90_000)
        self._tags: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------------ queries for the tests
    def lead_notes(self, lead_id: int | str) -> list[str]:
        return [n["params"]["text"] for n in self.notes
                if n["entity_type"] == "leads" and n["entity_id"] == int(lead_id)]

    def lead_tasks(self, lead_id: int | str) -> list[dict[str, Any]]:
        return [t for t in self.tasks.values() if t["entity_type"] == "leads" and t["entity_id"] == int(lead_id)]

    def stage_of(self, lead_id: int | str) -> tuple[str, str]:
        lead = self.leads[int(lead_id)]
        pipeline = next(p for p in self.pipelines if p["id"] == lead["pipeline_id"])
        status = next(s for s in pipeline["_embedded"]["statuses"] if s["id"] == lead["status_id"])
        return pipeline["name"], status["name"]

    def status_id(self, pipeline: str, stage: str) -> int:
        p = next(p for p in self.pipelines if p["name"] == pipeline)
        return int(next(s["id"] for s in p["_embedded"]["statuses"] if s["name"] == stage))

    def pipeline_id(self, pipeline: str) -> int:
        return int(next(p["id"] for p in self.pipelines if p["name"] == pipeline))

    def add_status(self, pipeline: str, name: str, sort: int) -> int:
        """A stage added in Kommo's settings (after the runtime loaded the catalogue, say)."""
        p = next(p for p in self.pipelines if p["name"] == pipeline)
        sid = next(self._ids)
        p["_embedded"]["statuses"].append({"id": sid, "name": name, "sort": sort, "type": 0, "pipeline_id": p["id"]})
        return sid

    def new_lead(self, name: str = "Deal", *, stage: tuple[str, str] = ("Sales", "New"),
                 contact: str | None = None, responsible: int = OWNER) -> int:
        """A lead made in Kommo by a person (no API call, so no request is recorded)."""
        lead = self._create("leads", {"name": name, "pipeline_id": self.pipeline_id(stage[0]),
                                      "status_id": self.status_id(*stage), "responsible_user_id": responsible}, "")
        if contact is not None:
            made = self._create("contacts", {"name": contact}, "")
            self._link_contact(lead, made["id"])
        return int(lead["id"])

    def field_value(self, entity: str, record_id: int | str, name: str) -> Any:
        record = {"leads": self.leads, "contacts": self.contacts, "companies": self.companies}[entity][int(record_id)]
        for item in record.get("custom_fields_values") or []:
            if item["field_name"] == name:
                values = [v.get("value") for v in item["values"]]
                return values if item["field_type"] == "multiselect" else values[0]
        return None

    def tag_names(self, entity: str, record_id: int | str) -> list[str]:
        record = {"leads": self.leads, "contacts": self.contacts, "companies": self.companies}[entity][int(record_id)]
        return [t["name"] for t in record["_embedded"]["tags"]]

    def _store(self, entity: str) -> dict[int, dict[str, Any]]:
        return {"leads": self.leads, "contacts": self.contacts, "companies": self.companies}[entity]

    # ------------------------------------------------------------------ records
    def _field(self, entity: str, item: Mapping[str, Any], path: str) -> dict[str, Any]:
        if item.get("field_id") is not None:
            found = next((f for f in self.fields[entity] if f["id"] == item["field_id"]), None)
        else:
            code = item.get("field_code")
            found = next((f for f in self.fields[entity] if f.get("code") and f["code"] == code), None)
        if found is None:
            raise invalid_at(f"{path}.field_id", "The value you selected is not a valid choice.")
        return found

    def _values(self, f: Mapping[str, Any], values: list[Any], path: str) -> list[dict[str, Any]]:
        out = []
        for j, v in enumerate(values):
            p = f"{path}.values.{j}"
            if not isinstance(v, Mapping):
                raise invalid_at(p, "This value should be of type array.", "InvalidType")
            kind = f["type"]
            if kind in ("select", "multiselect", "radiobutton"):
                enum = next((e for e in f.get("enums") or [] if e["id"] == v.get("enum_id")
                             or (v.get("value") is not None and e["value"] == v.get("value"))), None)
                if enum is None:
                    raise invalid_at(f"{p}.enum_id", "The value you selected is not a valid choice.")
                out.append({"value": enum["value"], "enum_id": enum["id"], "enum_code": None})
                continue
            value = v.get("value")
            if kind == "numeric":
                if isinstance(value, bool) or (not isinstance(value, (int, float)) and not (
                        isinstance(value, str) and value.replace(".", "", 1).lstrip("-").isdigit())):
                    raise invalid_at(f"{p}.value", "This value should be of type numeric.", "InvalidType")
                value = str(value)  # Kommo returns numbers of numeric fields as strings
            elif kind == "checkbox":
                if not isinstance(value, bool):
                    raise invalid_at(f"{p}.value", "This value should be of type bool.", "InvalidType")
            elif kind == "date":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise invalid_at(f"{p}.value", "This value should be of type int.", "InvalidType")
            elif kind == "multitext":
                code = v.get("enum_code") or "WORK"
                out.append({"value": str(value), "enum_code": code,
                            "enum_id": next((e["id"] for e in f.get("enums") or [] if e["value"] == code), None)})
                continue
            elif not isinstance(value, (str, int, float)):
                raise invalid_at(f"{p}.value", "This value should be of type string.", "InvalidType")
            out.append({"value": value})
        return out

    def _apply_fields(self, entity: str, record: dict[str, Any], items: Any, path: str) -> None:
        if not isinstance(items, list):
            raise invalid_at(path, "This value should be of type array.", "InvalidType")
        current = list(record.get("custom_fields_values") or [])
        for i, item in enumerate(items):
            f = self._field(entity, item, f"{path}.{i}")
            current = [c for c in current if c["field_id"] != f["id"]]
            if item.get("values") is not None:
                values = self._values(f, item["values"], f"{path}.{i}")
                if values:
                    current.append({"field_id": f["id"], "field_name": f["name"], "field_code": f.get("code"),
                                    "field_type": f["type"], "values": values})
        record["custom_fields_values"] = current or None

    def _tag(self, entity: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        if spec.get("id") is not None:
            name = next((n for (e, n), i in self._tags.items() if e == entity and i == spec["id"]), None)
            if name is None:
                raise invalid_at("_embedded.tags", "The value you selected is not a valid choice.")
            return {"id": spec["id"], "name": name, "color": None}
        name = str(spec.get("name") or "")
        if not name:
            raise invalid_at("tags_to_add", "This value should not be blank.", "NotBlank")
        tid = self._tags.setdefault((entity, name), next(self._tag_ids))
        return {"id": tid, "name": name, "color": None}

    def _check_user(self, value: Any, path: str) -> int:
        if not any(u["id"] == value for u in USERS):
            raise invalid_at(path, "The value you selected is not a valid choice.")
        return int(value)

    def _apply(self, entity: str, record: dict[str, Any], body: Mapping[str, Any], prefix: str = "") -> None:
        for key, value in body.items():
            p = f"{prefix}{key}"
            if key in ("id", "request_id", "_embedded", "tags_to_add", "tags_to_delete", "created_at", "updated_at"):
                continue
            if key == "custom_fields_values":
                self._apply_fields(entity, record, value, p)
            elif key == "price" and entity == "leads":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise invalid_at(p, "This value should be of type int.", "InvalidType")
                record["price"] = value
            elif key == "responsible_user_id":
                record[key] = self._check_user(value, p)
            elif key in ("status_id", "pipeline_id") and entity == "leads":
                continue  # checked together below
            elif key in ("name", "first_name", "last_name"):
                if not isinstance(value, str):
                    raise invalid_at(p, "This value should be of type string.", "InvalidType")
                record[key] = value
            else:
                raise invalid_at(p, "This field was not expected.", "NotExpected")
        if entity == "leads" and ("status_id" in body or "pipeline_id" in body):
            pid = body.get("pipeline_id", record.get("pipeline_id"))
            pipeline = next((p for p in self.pipelines if p["id"] == pid), None)
            if pipeline is None:
                raise invalid_at(f"{prefix}pipeline_id", "The value you selected is not a valid choice.")
            sid = body.get("status_id", record.get("status_id"))
            if not any(s["id"] == sid for s in pipeline["_embedded"]["statuses"]):
                raise invalid_at(f"{prefix}status_id", "The value you selected is not a valid choice.")
            record["pipeline_id"], record["status_id"] = pid, sid
        embedded = body.get("_embedded") or {}
        if "tags" in embedded:  # replaces every tag
            record["_embedded"]["tags"] = [self._tag(entity, t) for t in embedded["tags"] or []]
        tags = record["_embedded"]["tags"]
        for spec in body.get("tags_to_add") or []:
            tag = self._tag(entity, spec)
            if all(t["id"] != tag["id"] for t in tags):
                tags.append(tag)
        for spec in body.get("tags_to_delete") or []:
            drop = {spec.get("id"), self._tags.get((entity, str(spec.get("name"))))} - {None}
            record["_embedded"]["tags"] = tags = [t for t in tags if t["id"] not in drop]
        record["updated_at"] = int(time.time())

    def _new(self, entity: str, body: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        now = int(time.time())
        rid = next(self._ids)
        record: dict[str, Any] = {"id": rid, "name": "", "responsible_user_id": OWNER, "group_id": 0,
                                  "created_by": OWNER, "updated_by": OWNER, "created_at": now, "updated_at": now,
                                  "custom_fields_values": None, "account_id": 1,
                                  "_embedded": {"tags": [], "companies": []}}
        if entity == "leads":
            main = self.pipelines[0]
            first = next(st for st in main["_embedded"]["statuses"] if st["type"] == 0)
            record.update({"price": 0, "pipeline_id": main["id"], "status_id": first["id"], "closed_at": None,
                           "is_deleted": False, "loss_reason_id": None, "_contacts": []})
            other = next((p for p in self.pipelines if p["id"] == body.get("pipeline_id")), None)
            if other is not None and "status_id" not in body:  # a pipeline alone: its first stage
                record["pipeline_id"] = other["id"]
                record["status_id"] = next(st["id"] for st in other["_embedded"]["statuses"] if st["type"] == 0)
        if entity == "contacts":
            record.update({"first_name": "", "last_name": "", "_leads": []})
        self._apply(entity, record, body, prefix)
        return record

    def _view(self, entity: str, record: Mapping[str, Any], with_: str) -> dict[str, Any]:
        out = {k: v for k, v in record.items() if not k.startswith("_")}
        embedded = {"tags": list(record["_embedded"]["tags"]), "companies": list(record["_embedded"]["companies"])}
        if entity == "leads" and "contacts" in with_:
            embedded["contacts"] = [{"id": c, "is_main": i == 0} for i, c in enumerate(record["_contacts"])]
        if entity == "contacts" and "leads" in with_:
            embedded["leads"] = [{"id": lid} for lid in record["_leads"]]
        out["_embedded"] = embedded
        out["_links"] = {"self": {"href": f"/api/v4/{entity}/{record['id']}"}}
        return out

    def _link_contact(self, lead: dict[str, Any], contact_id: int) -> None:
        contact = self.contacts.get(contact_id)
        if contact is None:
            raise invalid_at("_embedded.contacts", "The value you selected is not a valid choice.")
        if contact_id not in lead["_contacts"]:
            lead["_contacts"].append(contact_id)
        if lead["id"] not in contact["_leads"]:
            contact["_leads"].append(lead["id"])

    def _link_company(self, lead: dict[str, Any], company_id: int) -> None:
        if company_id not in self.companies:
            raise invalid_at("_embedded.companies", "The value you selected is not a valid choice.")
        lead["_embedded"]["companies"] = [{"id": company_id}]

    def _create(self, entity: str, item: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        record = self._new(entity, item, prefix)
        embedded = item.get("_embedded") or {}
        self._store(entity)[record["id"]] = record
        if entity == "leads":
            for c in embedded.get("contacts") or []:
                self._link_contact(record, int(c["id"]))
            for c in embedded.get("companies") or []:
                self._link_company(record, int(c["id"]))
        return record

