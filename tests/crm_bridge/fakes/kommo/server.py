"""The fake Kommo's HTTP side: the REST API v4 routes over ``KommoAccount``, with Bearer auth, the
per-second rate limit, injected failures and outages, and the record of every request."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

from .records import ENTITIES, OWNER, SUBDOMAIN, TASK_TYPES, USERS, Invalid, KommoAccount, invalid_at

TOKEN = "kommo-test-token"


@dataclass
class Request:
    """One request as the fake received it, and the status it answered."""

    at: float
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    status: int = 0


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


def _status_filter(query: Mapping[str, list[str]]) -> set[tuple[int, int]]:
    """``filter[statuses][i][pipeline_id]`` + ``…[status_id]`` pairs (leads in any of these stages)."""
    found: dict[str, dict[str, int]] = {}
    for key, values in query.items():
        m = re.fullmatch(r"filter\[statuses\]\[(\d+)\]\[(pipeline_id|status_id)\]", key)
        if m:
            found.setdefault(m.group(1), {})[m.group(2)] = int(values[0])
    return {(f.get("pipeline_id", 0), f.get("status_id", 0)) for f in found.values()}


def _hal(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, ensure_ascii=False), content_type="application/hal+json")


def _problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
    body = {"title": title, "type": f"https://httpstatus.es/{status}", "status": status, "detail": detail, **extra}
    headers = {"Retry-After": str(int(extra["retry_after"]))} if "retry_after" in extra else None
    return web.Response(status=status, text=json.dumps(body), content_type="application/problem+json",
                        headers=headers)


@dataclass
class FakeKommo(KommoAccount):
    """A ``KommoAccount`` served over HTTP on loopback; ``async with`` starts and stops it."""

    rate_limit: int | None = 7
    token: str = TOKEN
    retry_after: int = 1

    requests: list[Request] = field(default_factory=list)
    writes: list[tuple[str, str, Any]] = field(default_factory=list)
    rate_limited: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._served: deque[float] = deque()
        self._failures: deque[int] = deque()
        self._down: int | None = None
        self._held: tuple[str | None, asyncio.Event] | None = None
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

    def hold(self, path: str | None = None) -> None:
        """Answer no request (to ``path``, or any) until ``release()``: a Kommo as slow as the test
        wants, with no clock involved."""
        self._held = (path, asyncio.Event())

    def release(self) -> None:
        """Answer the held requests, and the next ones at once."""
        if self._held is not None:
            self._held[1].set()
            self._held = None

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
        if self._held is not None and self._held[0] in (None, request.path):
            await self._held[1].wait()  # a slow Kommo, until the test releases it
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
                return self._invalid(invalid_at("request", "Injected validation failure", "InvalidType"))
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
                raise invalid_at(f"{i}.name", "This value should not be blank.", "NotBlank")
            f = {"id": next(self._ids), "name": item["name"], "type": item["type"], "code": item.get("code"),
                 "sort": item.get("sort", 500), "entity_type": entity}
            self.fields[entity].append(f)
            made.append(f)
        return _hal({"_embedded": {"custom_fields": made}})

    # ------------------------------------------------------------------ leads, contacts, companies
    async def _list(self, request: web.Request) -> web.Response:
        entity = self._entity(request)
        q = self._q(request)
        items = list(self._store(entity).values())
        if q.get("filter[id][]"):
            wanted = {int(i) for i in q["filter[id][]"]}
            items = [r for r in items if r["id"] in wanted]
        statuses = _status_filter(q)
        if statuses:
            items = [r for r in items if (r.get("pipeline_id"), r.get("status_id")) in statuses]
        if q.get("order[id]"):
            items.sort(key=lambda r: r["id"], reverse=q["order[id]"][0] == "desc")
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
            raise invalid_at("", "This value should be of type array.", "InvalidType")
        made = [self._create(entity, item, f"{i}.") for i, item in enumerate(body)]
        return _hal({"_embedded": {entity: [{"id": r["id"], "request_id": str(i)} for i, r in enumerate(made)]}})

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
                raise invalid_at("id", "Entity not found", "NotFound")
            self._apply(entity, record, body)
            return _hal({"id": record["id"], "updated_at": record["updated_at"]})
        if not isinstance(body, list):
            raise invalid_at("", "This value should be of type array.", "InvalidType")
        done = []
        for i, item in enumerate(body):
            record = store.get(int(item.get("id") or 0))
            if record is None:
                raise invalid_at(f"{i}.id", "Entity not found", "NotFound")
            self._apply(entity, record, item, f"{i}.")
            done.append({"id": record["id"], "updated_at": record["updated_at"]})
        return _hal({"_embedded": {entity: done}})

    async def _link(self, request: web.Request) -> web.Response:
        lead = self.leads.get(int(request.match_info["id"]))
        if lead is None:
            raise invalid_at("id", "Entity not found", "NotFound")
        for i, item in enumerate(await request.json()):
            if item.get("to_entity_type") == "companies":
                self._link_company(lead, int(item["to_entity_id"]))
            elif item.get("to_entity_type") == "contacts":
                self._link_contact(lead, int(item["to_entity_id"]))
            else:
                raise invalid_at(f"{i}.to_entity_type", "The value you selected is not a valid choice.")
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
                raise invalid_at(f"{i}.text", "This value should not be blank.", "NotBlank")
            if isinstance(item.get("complete_till"), bool) or not isinstance(item.get("complete_till"), int):
                raise invalid_at(f"{i}.complete_till", "This value should be of type int.", "InvalidType")
            if not any(t["id"] == item.get("task_type_id", 1) for t in TASK_TYPES):
                raise invalid_at(f"{i}.task_type_id", "The value you selected is not a valid choice.")
            if item.get("entity_type") == "leads" and int(item.get("entity_id") or 0) not in self.leads:
                raise invalid_at(f"{i}.entity_id", "Entity not found", "NotFound")
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
                raise invalid_at(f"{i}.id", "Entity not found", "NotFound")
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
            raise invalid_at("entity_id", "Entity not found", "NotFound")
        made = []
        for i, item in enumerate(await request.json()):
            if item.get("note_type") not in ("common", "call_in", "call_out", "service_message", "sms_in", "sms_out"):
                raise invalid_at(f"{i}.note_type", "The value you selected is not a valid choice.")
            text = (item.get("params") or {}).get("text")
            if not isinstance(text, str) or not text:
                raise invalid_at(f"{i}.params.text", "This value should not be blank.", "NotBlank")
            note = {"id": next(self._ids), "entity_id": rid, "entity_type": entity, "note_type": item["note_type"],
                    "params": {"text": text}, "created_by": OWNER, "created_at": int(time.time())}
            self.notes.append(note)
            made.append({"id": note["id"], "entity_id": rid, "request_id": str(i)})
        return _hal({"_embedded": {"notes": made}})

