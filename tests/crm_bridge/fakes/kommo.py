"""A fake Kommo account behind the documented REST API v4, on loopback (aiohttp).

Follows shared/research/kommo.md §5 (developers.kommo.com): Bearer long-lived token (401
``Invalid user name or password`` otherwise); at most ``rate_limit`` requests in any second
(429 ``Too Many Requests`` with ``retry_after`` and ``Retry-After``); validation errors as
400 ``{"validation-errors": [{"request_id", "errors": [{"code", "path", "detail"}]}], …}``;
empty lists and unknown ids as 204 No Content; HAL-shaped answers (``_embedded``, ``_links``).

Endpoints: ``/api/v4/account?with=task_types``, ``/api/v4/users``, ``/api/v4/leads/pipelines``,
``/api/v4/{leads,contacts,companies}/custom_fields`` (GET, POST), ``/api/v4/leads`` (GET
``filter[id][]``, POST, PATCH), ``/api/v4/leads/complex``, ``/api/v4/leads/{id}`` (GET
``?with=contacts``, PATCH), ``/api/v4/leads/{id}/link``, ``/api/v4/contacts`` (GET ``query``
``with=leads``, POST, PATCH) and ``/{id}``, ``/api/v4/companies`` likewise, ``/api/v4/tasks``
(GET with ``filter[entity_type]``, ``filter[entity_id][]``, ``filter[is_completed]``,
``filter[task_type][]``; POST; PATCH) and ``/{id}``, ``/api/v4/{entity}/{id}/notes`` (GET, POST).
PATCH understands ``tags_to_add`` / ``tags_to_delete`` and the replacing ``_embedded.tags``.

Test controls: ``fail_next(status)`` fails coming requests; ``down(status)`` / ``up()`` answer
every request with an error; ``stop_listening()`` / ``start_listening()`` refuse connections
on the same port; ``requests`` records every request (monotonic arrival time, method, path,
query, body, answer status); ``writes`` the successful writes in order.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Self

from aiohttp import web

from crm_bridge.contract import CONTACT_FIELD, LEAD_FIELD, PIPELINES
from tests.waiting import wait_for

TOKEN = "kommo-test-token"
SUBDOMAIN = "acme"
OWNER = 7  # the user the token belongs to: default responsible of what the API creates
USERS = [{"id": 7, "name": "Ann Manager", "email": "ann@acme.test"},
         {"id": 8, "name": "Bob Sales", "email": "bob@acme.test"}]
TASK_TYPES = [{"id": 1, "name": "Follow-up", "code": "FOLLOW_UP"}, {"id": 2, "name": "Meeting", "code": "MEETING"},
              {"id": 3, "name": "Demo", "code": None}]
ENTITIES = ("leads", "contacts", "companies")


@dataclass
class Request:
    at: float
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    status: int = 0


class Invalid(Exception):
    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['path']}: {e['detail']}" for e in errors))
        self.errors = errors


def _err(path: str, detail: str, code: str = "NotSupportedChoice") -> Invalid:
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


def _page(items: list[dict[str, Any]], key: str, query: Mapping[str, list[str]], path: str) -> web.Response:
    limit = min(250, int((query.get("limit") or ["50"])[0]))
    page = int((query.get("page") or ["1"])[0])
    chunk = items[(page - 1) * limit: page * limit]
    if not chunk:
        return web.Response(status=204)
    links: dict[str, Any] = {"self": {"href": f"{path}?page={page}&limit={limit}"}}
    if page * limit < len(items):
        links["next"] = {"href": f"{path}?page={page + 1}&limit={limit}"}
    return _hal({"_page": page, "_links": links, "_embedded": {key: chunk}})


def _hal(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, ensure_ascii=False), content_type="application/hal+json")


def _problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
    body = {"title": title, "type": f"https://httpstatus.es/{status}", "status": status, "detail": detail, **extra}
    headers = {"Retry-After": str(int(extra["retry_after"]))} if "retry_after" in extra else None
    return web.Response(status=status, text=json.dumps(body), content_type="application/problem+json",
                        headers=headers)


@dataclass
class FakeKommo:
    rate_limit: int | None = 7
    token: str = TOKEN
    retry_after: int = 1
    fields: dict[str, list[dict[str, Any]]] = field(default_factory=_default_fields)
    pipelines: list[dict[str, Any]] = field(default_factory=_default_pipelines)
    leads: dict[int, dict[str, Any]] = field(default_factory=dict)
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    companies: dict[int, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    notes: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    writes: list[tuple[str, str, Any]] = field(default_factory=list)
    rate_limited: int = 0

    def __post_init__(self) -> None:
        self._ids = count(10_000)
        self._tag_ids = count(90_000)
        self._tags: dict[tuple[str, str], int] = {}
        self._served: deque[float] = deque()
        self._failures: deque[int] = deque()
        self._down: int | None = None
        self.app = web.Application(middlewares=[self._middleware])
        self._routes()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await self.start_listening()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def start_listening(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        if not self.port:
            self.port = self._site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop_listening(self) -> None:
        """Close the listening socket: new connections are refused until ``start_listening``."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        if self._runner is not None and self._runner.server is not None:
            await self._runner.server.shutdown(0.1)  # and drop kept-alive connections: nothing gets through

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ test controls
    def fail_next(self, status: int, times: int = 1) -> None:
        self._failures.extend([status] * times)

    def down(self, status: int = 503) -> None:
        self._down = status

    def up(self) -> None:
        self._down = None

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

    # ------------------------------------------------------------------ middleware: auth, limits, failures
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        query: dict[str, list[str]] = {}
        for k, v in request.query.items():
            query.setdefault(k, []).append(v)
        record = Request(time.monotonic(), request.method, request.path, query, body)
        self.requests.append(record)
        response = await self._answer(request, handler, record)
        record.status = response.status
        return response

    async def _answer(self, request: web.Request, handler: Any, record: Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _problem(401, "Unauthorized", "Invalid user name or password")
        if self._down is not None:
            return _problem(self._down, "Service Unavailable", "maintenance")
        if self._failures:
            status = self._failures.popleft()
            if status == 429:
                return self._too_many()
            if status == 400:
                return self._invalid(_err("request", "Injected validation failure", "InvalidType"))
            return _problem(status, "Error", "injected failure", trace_id="fake")
        now = record.at
        while self._served and now - self._served[0] >= 1.0:
            self._served.popleft()
        if self.rate_limit is not None and len(self._served) >= self.rate_limit:
            self.rate_limited += 1
            return self._too_many()
        self._served.append(now)
        try:
            response: web.StreamResponse = await handler(request)
        except Invalid as exc:
            return self._invalid(exc)
        except web.HTTPNotFound:
            return _problem(404, "Not Found", "no such resource")
        if request.method != "GET" and 200 <= response.status < 300:
            self.writes.append((request.method, request.path, record.body))
        return response

    def _too_many(self) -> web.Response:
        return _problem(429, "Too Many Requests",
                        "You have sent too many requests in a given amount of time. Please try again later.",
                        retry_after=self.retry_after)

    @staticmethod
    def _invalid(exc: Invalid) -> web.Response:
        return _problem(400, "Bad Request", "Request validation failed",
                        **{"validation-errors": [{"request_id": "0", "errors": exc.errors}]})

    # ------------------------------------------------------------------ routes
    def _routes(self) -> None:
        r = self.app.router
        r.add_get("/api/v4/account", self._account)
        r.add_get("/api/v4/users", self._users)
        r.add_get("/api/v4/leads/pipelines", self._pipelines)
        for entity in ENTITIES:
            r.add_get(f"/api/v4/{entity}/custom_fields", self._fields_list)
            r.add_post(f"/api/v4/{entity}/custom_fields", self._fields_add)
        r.add_post("/api/v4/leads/complex", self._leads_complex)
        r.add_get("/api/v4/tasks", self._tasks_list)
        r.add_post("/api/v4/tasks", self._tasks_add)
        r.add_patch("/api/v4/tasks", self._tasks_patch)
        r.add_patch("/api/v4/tasks/{id:\\d+}", self._tasks_patch)
        r.add_post("/api/v4/leads/{id:\\d+}/link", self._link)
        for entity in ENTITIES:
            r.add_get(f"/api/v4/{entity}", self._list)
            r.add_post(f"/api/v4/{entity}", self._add)
            r.add_patch(f"/api/v4/{entity}", self._patch)
            r.add_get(f"/api/v4/{entity}/{{id:\\d+}}", self._get)
            r.add_patch(f"/api/v4/{entity}/{{id:\\d+}}", self._patch)
            r.add_get(f"/api/v4/{entity}/{{id:\\d+}}/notes", self._notes_list)
            r.add_post(f"/api/v4/{entity}/{{id:\\d+}}/notes", self._notes_add)

    @staticmethod
    def _entity(request: web.Request) -> str:
        return request.path.split("/")[3]

    def _store(self, entity: str) -> dict[int, dict[str, Any]]:
        return {"leads": self.leads, "contacts": self.contacts, "companies": self.companies}[entity]

    async def _account(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {"id": 1, "name": "Acme", "subdomain": SUBDOMAIN, "current_user_id": OWNER}
        if "task_types" in request.query.get("with", ""):
            body["_embedded"] = {"task_types": TASK_TYPES}
        return _hal(body)

    async def _users(self, request: web.Request) -> web.Response:
        return _page(USERS, "users", self._q(request), request.path)

    async def _pipelines(self, request: web.Request) -> web.Response:
        return _hal({"_total_items": len(self.pipelines), "_embedded": {"pipelines": self.pipelines}})

    @staticmethod
    def _q(request: web.Request) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in request.query.items():
            out.setdefault(k, []).append(v)
        return out

    async def _fields_list(self, request: web.Request) -> web.Response:
        return _page(self.fields[self._entity(request)], "custom_fields", self._q(request), request.path)

    async def _fields_add(self, request: web.Request) -> web.Response:
        entity = self._entity(request)
        made = []
        for i, item in enumerate(await request.json()):
            if not item.get("name") or not item.get("type"):
                raise _err(f"{i}.name", "This value should not be blank.", "NotBlank")
            f = {"id": next(self._ids), "name": item["name"], "type": item["type"], "code": item.get("code"),
                 "sort": item.get("sort", 500), "entity_type": entity}
            self.fields[entity].append(f)
            made.append(f)
        return _hal({"_embedded": {"custom_fields": made}})

    # ------------------------------------------------------------------ records
    def _field(self, entity: str, item: Mapping[str, Any], path: str) -> dict[str, Any]:
        if item.get("field_id") is not None:
            found = next((f for f in self.fields[entity] if f["id"] == item["field_id"]), None)
        else:
            code = item.get("field_code")
            found = next((f for f in self.fields[entity] if f.get("code") and f["code"] == code), None)
        if found is None:
            raise _err(f"{path}.field_id", "The value you selected is not a valid choice.")
        return found

    def _values(self, f: Mapping[str, Any], values: list[Any], path: str) -> list[dict[str, Any]]:
        out = []
        for j, v in enumerate(values):
            p = f"{path}.values.{j}"
            if not isinstance(v, Mapping):
                raise _err(p, "This value should be of type array.", "InvalidType")
            kind = f["type"]
            if kind in ("select", "multiselect", "radiobutton"):
                enum = next((e for e in f.get("enums") or [] if e["id"] == v.get("enum_id")
                             or (v.get("value") is not None and e["value"] == v.get("value"))), None)
                if enum is None:
                    raise _err(f"{p}.enum_id", "The value you selected is not a valid choice.")
                out.append({"value": enum["value"], "enum_id": enum["id"], "enum_code": None})
                continue
            value = v.get("value")
            if kind == "numeric":
                if isinstance(value, bool) or (not isinstance(value, (int, float)) and not (
                        isinstance(value, str) and value.replace(".", "", 1).lstrip("-").isdigit())):
                    raise _err(f"{p}.value", "This value should be of type numeric.", "InvalidType")
                value = str(value)  # Kommo returns numbers of numeric fields as strings
            elif kind == "checkbox":
                if not isinstance(value, bool):
                    raise _err(f"{p}.value", "This value should be of type bool.", "InvalidType")
            elif kind == "date":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise _err(f"{p}.value", "This value should be of type int.", "InvalidType")
            elif kind == "multitext":
                code = v.get("enum_code") or "WORK"
                out.append({"value": str(value), "enum_code": code,
                            "enum_id": next((e["id"] for e in f.get("enums") or [] if e["value"] == code), None)})
                continue
            elif not isinstance(value, (str, int, float)):
                raise _err(f"{p}.value", "This value should be of type string.", "InvalidType")
            out.append({"value": value})
        return out

    def _apply_fields(self, entity: str, record: dict[str, Any], items: Any, path: str) -> None:
        if not isinstance(items, list):
            raise _err(path, "This value should be of type array.", "InvalidType")
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
                raise _err("_embedded.tags", "The value you selected is not a valid choice.")
            return {"id": spec["id"], "name": name, "color": None}
        name = str(spec.get("name") or "")
        if not name:
            raise _err("tags_to_add", "This value should not be blank.", "NotBlank")
        tid = self._tags.setdefault((entity, name), next(self._tag_ids))
        return {"id": tid, "name": name, "color": None}

    def _check_user(self, value: Any, path: str) -> int:
        if not any(u["id"] == value for u in USERS):
            raise _err(path, "The value you selected is not a valid choice.")
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
                    raise _err(p, "This value should be of type int.", "InvalidType")
                record["price"] = value
            elif key == "responsible_user_id":
                record[key] = self._check_user(value, p)
            elif key in ("status_id", "pipeline_id") and entity == "leads":
                continue  # checked together below
            elif key in ("name", "first_name", "last_name"):
                if not isinstance(value, str):
                    raise _err(p, "This value should be of type string.", "InvalidType")
                record[key] = value
            else:
                raise _err(p, "This field was not expected.", "NotExpected")
        if entity == "leads" and ("status_id" in body or "pipeline_id" in body):
            pid = body.get("pipeline_id", record.get("pipeline_id"))
            pipeline = next((p for p in self.pipelines if p["id"] == pid), None)
            if pipeline is None:
                raise _err(f"{prefix}pipeline_id", "The value you selected is not a valid choice.")
            sid = body.get("status_id", record.get("status_id"))
            if not any(s["id"] == sid for s in pipeline["_embedded"]["statuses"]):
                raise _err(f"{prefix}status_id", "The value you selected is not a valid choice.")
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
            raise _err("_embedded.contacts", "The value you selected is not a valid choice.")
        if contact_id not in lead["_contacts"]:
            lead["_contacts"].append(contact_id)
        if lead["id"] not in contact["_leads"]:
            contact["_leads"].append(lead["id"])

    def _link_company(self, lead: dict[str, Any], company_id: int) -> None:
        if company_id not in self.companies:
            raise _err("_embedded.companies", "The value you selected is not a valid choice.")
        lead["_embedded"]["companies"] = [{"id": company_id}]

    async def _list(self, request: web.Request) -> web.Response:
        entity = self._entity(request)
        q = self._q(request)
        items = list(self._store(entity).values())
        if q.get("filter[id][]"):
            wanted = {int(i) for i in q["filter[id][]"]}
            items = [r for r in items if r["id"] in wanted]
        if q.get("query"):
            needle = q["query"][0].casefold()
            digits = "".join(ch for ch in needle if ch.isdigit())

            def hit(r: Mapping[str, Any]) -> bool:
                texts = [str(r.get("name") or "")]
                for item in r.get("custom_fields_values") or []:
                    texts.extend(str(v.get("value") or "") for v in item["values"])
                return any(needle in t.casefold() or (len(digits) >= 5 and digits in "".join(
                    ch for ch in t if ch.isdigit())) for t in texts)
            items = [r for r in items if hit(r)]
        with_ = ",".join(q.get("with") or [])
        return _page([self._view(entity, r, with_) for r in items], entity, q, request.path)

    async def _get(self, request: web.Request) -> web.Response:
        entity = self._entity(request)
        record = self._store(entity).get(int(request.match_info["id"]))
        if record is None:
            return web.Response(status=204)
        return _hal(self._view(entity, record, request.query.get("with", "")))

    async def _add(self, request: web.Request) -> web.Response:
        entity = self._entity(request)
        body = await request.json()
        if not isinstance(body, list):
            raise _err("", "This value should be of type array.", "InvalidType")
        made = [self._create(entity, item, f"{i}.") for i, item in enumerate(body)]
        return _hal({"_embedded": {entity: [{"id": r["id"], "request_id": str(i)} for i, r in enumerate(made)]}})

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

    async def _leads_complex(self, request: web.Request) -> web.Response:
        body = await request.json()
        out = []
        for i, item in enumerate(body):
            embedded = dict(item.get("_embedded") or {})
            contacts = embedded.pop("contacts", []) or []
            companies = embedded.pop("companies", []) or []
            lead = self._create("leads", {**item, "_embedded": embedded}, f"{i}.")
            contact_id = company_id = None
            for c in contacts:
                contact = self._create("contacts", c, f"{i}._embedded.contacts.0.")
                self._link_contact(lead, contact["id"])
                contact_id = contact_id or contact["id"]
            for c in companies:
                company = self._create("companies", c, f"{i}._embedded.companies.0.")
                self._link_company(lead, company["id"])
                company_id = company["id"]
            out.append({"id": lead["id"], "contact_id": contact_id, "company_id": company_id,
                        "request_id": [str(i)], "merged": False})
        return _hal(out)

    async def _patch(self, request: web.Request) -> web.Response:
        entity = self._entity(request)
        body = await request.json()
        store = self._store(entity)
        if "id" in request.match_info:
            record = store.get(int(request.match_info["id"]))
            if record is None:
                raise _err("id", "Entity not found", "NotFound")
            self._apply(entity, record, body)
            return _hal({"id": record["id"], "updated_at": record["updated_at"]})
        if not isinstance(body, list):
            raise _err("", "This value should be of type array.", "InvalidType")
        done = []
        for i, item in enumerate(body):
            record = store.get(int(item.get("id") or 0))
            if record is None:
                raise _err(f"{i}.id", "Entity not found", "NotFound")
            self._apply(entity, record, item, f"{i}.")
            done.append({"id": record["id"], "updated_at": record["updated_at"]})
        return _hal({"_embedded": {entity: done}})

    async def _link(self, request: web.Request) -> web.Response:
        lead = self.leads.get(int(request.match_info["id"]))
        if lead is None:
            raise _err("id", "Entity not found", "NotFound")
        for i, item in enumerate(await request.json()):
            if item.get("to_entity_type") == "companies":
                self._link_company(lead, int(item["to_entity_id"]))
            elif item.get("to_entity_type") == "contacts":
                self._link_contact(lead, int(item["to_entity_id"]))
            else:
                raise _err(f"{i}.to_entity_type", "The value you selected is not a valid choice.")
        return _hal({"_embedded": {"links": await request.json()}})

    # ------------------------------------------------------------------ tasks
    async def _tasks_list(self, request: web.Request) -> web.Response:
        q = self._q(request)
        items = sorted(self.tasks.values(), key=lambda t: t["id"])
        if q.get("filter[entity_type]"):
            items = [t for t in items if t["entity_type"] == q["filter[entity_type]"][0]]
        if q.get("filter[entity_id][]"):
            wanted = {int(i) for i in q["filter[entity_id][]"]}
            items = [t for t in items if t["entity_id"] in wanted]
        if q.get("filter[is_completed]"):
            flag = q["filter[is_completed]"][0] in ("1", "true")
            items = [t for t in items if t["is_completed"] == flag]
        if q.get("filter[task_type][]"):
            kinds = {int(i) for i in q["filter[task_type][]"]}
            items = [t for t in items if t["task_type_id"] in kinds]
        return _page(items, "tasks", q, request.path)

    async def _tasks_add(self, request: web.Request) -> web.Response:
        made = []
        for i, item in enumerate(await request.json()):
            if not item.get("text"):
                raise _err(f"{i}.text", "This value should not be blank.", "NotBlank")
            if isinstance(item.get("complete_till"), bool) or not isinstance(item.get("complete_till"), int):
                raise _err(f"{i}.complete_till", "This value should be of type int.", "InvalidType")
            if not any(t["id"] == item.get("task_type_id", 1) for t in TASK_TYPES):
                raise _err(f"{i}.task_type_id", "The value you selected is not a valid choice.")
            if item.get("entity_type") == "leads" and int(item.get("entity_id") or 0) not in self.leads:
                raise _err(f"{i}.entity_id", "Entity not found", "NotFound")
            now = int(time.time())
            task = {"id": next(self._ids), "text": item["text"], "task_type_id": item.get("task_type_id", 1),
                    "complete_till": item["complete_till"], "entity_id": item.get("entity_id"),
                    "entity_type": item.get("entity_type"),
                    "responsible_user_id": self._check_user(item.get("responsible_user_id", OWNER),
                                                            f"{i}.responsible_user_id"),
                    "is_completed": False, "result": [], "duration": 0, "group_id": 0, "created_by": OWNER,
                    "created_at": now, "updated_at": now, "account_id": 1}
            self.tasks[task["id"]] = task
            made.append({"id": task["id"], "request_id": str(i)})
        return _hal({"_embedded": {"tasks": made}})

    async def _tasks_patch(self, request: web.Request) -> web.Response:
        body = await request.json()
        items = [{**body, "id": int(request.match_info["id"])}] if "id" in request.match_info else body
        done = []
        for i, item in enumerate(items):
            task = self.tasks.get(int(item.get("id") or 0))
            if task is None:
                raise _err(f"{i}.id", "Entity not found", "NotFound")
            if "is_completed" in item:
                task["is_completed"] = bool(item["is_completed"])
            if isinstance(item.get("result"), Mapping):
                task["result"] = {"text": str(item["result"].get("text") or "")}
            if "text" in item:
                task["text"] = str(item["text"])
            task["updated_at"] = int(time.time())
            done.append({"id": task["id"], "updated_at": task["updated_at"]})
        return _hal({"_embedded": {"tasks": done}} if "id" not in request.match_info else done[0])

    # ------------------------------------------------------------------ notes
    async def _notes_list(self, request: web.Request) -> web.Response:
        entity, rid = self._entity(request), int(request.match_info["id"])
        items = [n for n in self.notes if n["entity_type"] == entity and n["entity_id"] == rid]
        return _page(items, "notes", self._q(request), request.path)

    async def _notes_add(self, request: web.Request) -> web.Response:
        entity, rid = self._entity(request), int(request.match_info["id"])
        if rid not in self._store(entity):
            raise _err("entity_id", "Entity not found", "NotFound")
        made = []
        for i, item in enumerate(await request.json()):
            if item.get("note_type") not in ("common", "call_in", "call_out", "service_message", "sms_in", "sms_out"):
                raise _err(f"{i}.note_type", "The value you selected is not a valid choice.")
            text = (item.get("params") or {}).get("text")
            if not isinstance(text, str) or not text:
                raise _err(f"{i}.params.text", "This value should not be blank.", "NotBlank")
            note = {"id": next(self._ids), "entity_id": rid, "entity_type": entity, "note_type": item["note_type"],
                    "params": {"text": text}, "created_by": OWNER, "created_at": int(time.time())}
            self.notes.append(note)
            made.append({"id": note["id"], "entity_id": rid, "request_id": str(i)})
        return _hal({"_embedded": {"notes": made}})


async def wait_until(predicate: Any, timeout: float = 10.0, what: str = "", interval: float = 0.02) -> Any:
    """Poll ``predicate()`` (sync or async) until it is truthy; bounded by ``timeout``."""
    return await wait_for(predicate, timeout, interval, what=what)
