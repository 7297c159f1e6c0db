"""The Kommo (ex-amoCRM) backend: REST API v4 with a long-lived token.

* **identify** finds the contact by its channel identity — a contact custom field (default
  "Salesbot ID", a text area created on first use holding one ``channel:account:external_id``
  line per channel the person wrote from), else by phone, else by e-mail (never by name alone:
  two people may share one) — and its newest open lead; a stranger gets a contact and a lead in
  the first stage of the main pipeline in one ``POST /api/v4/leads/complex``.
* **snapshot** is one read of the lead (``?with=contacts``) and one of the contact, in parallel,
  plus the company when the lead has one; custom fields appear under ``fields`` by name and
  under ``cf`` by id (``lead.cf.123`` as in Kommo's own placeholders).
* **execute** maps each command onto the API (see ``docs/crm.md``): custom fields by id or name
  (resolved once from ``/api/v4/{entity}/custom_fields`` and cached), ``tags_to_add`` /
  ``tags_to_delete`` (never the replacing ``_embedded.tags``), tasks with ``complete_till``
  (types 1 follow-up, 2 meeting, others by name), completing tasks in one batched PATCH,
  common notes, stages as ``pipeline_id``/``status_id`` resolved by name, responsible users by
  id, name or e-mail. Kommo's REST API cannot change a lead's subscribers: ``subscribers`` is
  rejected (permanent), so a flow takes its ``failed`` branch.
* Requests keep to Kommo's **7 requests per second** with a client-side limiter (at most
  ``rate`` requests in any window of one second, plus a small safety margin).
* Errors are typed by ``crm_bridge._http.error_for``: 429 → ``CrmRateLimited``; 401/402/403 and
  5xx/timeouts/refused connections → ``CrmUnavailable``; 400/404/422 → ``CrmRejected`` with
  Kommo's validation messages.

Also here: ``parse_webhook_form`` / ``webhook_events`` for Kommo's form-encoded account
webhooks, and ``verify_widget_jwt`` for the JWT of a Salesbot ``widget_request``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qsl

import aiohttp

from bot.errors import CrmError, CrmRejected, CrmUnavailable

from ._http import Breaker, SessionHolder, error_for, parse_body, unreachable
from .interface import CRM_COMMANDS, ChannelIdentity, CommandResult, CrmRef

log = logging.getLogger("salesbot.crm.kommo")

#: Kommo's system stages, the same ids in every pipeline.
WON, LOST = 142, 143
CLOSED = frozenset({WON, LOST})
#: Default task types of every account.
TASK_TYPE_IDS = {"follow_up": 1, "call": 1, "meeting": 2}
TASK_TYPE_NAMES = {1: "follow_up", 2: "meeting"}
#: Entities a command may name, and the API collection each lives in.
ENTITY_PATHS = {"lead": "leads", "contact": "contacts", "main_contact": "contacts",
                "chat_contact": "contacts", "company": "companies"}
_STANDARD = {"leads": {"name", "price"}, "contacts": {"name", "first_name", "last_name", "phone", "email"},
             "companies": {"name"}}
_MULTITEXT_CODES = {"phone": "PHONE", "email": "EMAIL"}
_ENUM_TYPES = frozenset({"select", "radiobutton", "category"})
_DATE_TYPES = frozenset({"date", "date_time", "birthday"})
_NUMBER_TYPES = frozenset({"numeric", "price", "monetary"})
#: The most entities Kommo advises per write request.
BATCH = 50
#: A cache (custom fields, pipelines, users) is reloaded on a miss at most this often.
REFRESH_INTERVAL = 10.0

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimiter:
    """At most ``rate`` requests in any window of ``per`` (+ ``margin``) seconds. The margin
    covers the delay between sending and Kommo's clock: 50 ms let a busy machine's late first
    request and a prompt eighth land in one of Kommo's seconds.

    A token bucket whose tokens come back one window after they were spent: unlike a bucket
    refilled continuously, it never lets a burst and its refill land in the same second, which
    is how Kommo counts. ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(self, rate: int = 7, per: float = 1.0, *, margin: float = 0.15,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        if rate < 1:
            raise ValueError("rate must be at least 1 request per window")
        self.rate, self.window = int(rate), per + margin
        self.clock, self.sleep = clock, sleep
        self._sent: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = self.clock()
            while self._sent and now - self._sent[0] >= self.window:
                self._sent.popleft()
            if len(self._sent) >= self.rate:
                wait = self._sent[0] + self.window - now
                if wait > 0:
                    await self.sleep(wait)
                    now = self.clock()
                self._sent.popleft()
            self._sent.append(now)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    return None


def _fold(value: Any) -> str:
    return str(value).strip().casefold()


def _epoch(value: Any) -> int | None:
    """An ISO date/time (or epoch) as Unix seconds; naive times are UTC."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        if re.fullmatch(r"\d+", text):
            return int(text)
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def _slug(value: Any) -> str:
    """``call_back`` for "Call back": how flows written for the embedded CRM name fields."""
    return re.sub(r"[^0-9a-z]+", "_", _fold(value)).strip("_")


def _digits(phone: Any) -> str:
    return re.sub(r"\D", "", str(phone or ""))


class KommoCrm(SessionHolder):
    """A ``CrmBackend`` over Kommo's REST API v4 (one account)."""

    name = "kommo"

    def __init__(self, base_url: str, token: str, *, session: aiohttp.ClientSession | None = None,
                 rate: int = 7, timeout: float = 10.0, identity_field: str | None = "Salesbot ID",
                 limiter: RateLimiter | None = None, cooldown: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._session = session
        self._own_session = session is None
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.identity_field = identity_field or None
        self.limiter = limiter or RateLimiter(rate)
        self.breaker = Breaker(cooldown)
        self._fields: dict[str, list[dict[str, Any]]] = {}
        self._pipelines: list[dict[str, Any]] | None = None
        self._users: list[dict[str, Any]] | None = None
        self._task_types: list[dict[str, Any]] | None = None
        self._loaded_at: dict[str, float] = {}
        self._cache_lock = asyncio.Lock()
        self._identity_lock = asyncio.Lock()

    # ------------------------------------------------------------------ HTTP

    async def request(self, method: str, path: str, *, params: Iterable[tuple[str, Any]] | None = None,
                      json: Any = None) -> Any:
        """One API call (rate limited); the decoded JSON answer, or None for 204 No Content."""
        what = f"{method} {path}"
        self.breaker.check("kommo", what)
        await self.limiter.acquire()
        query = [(k, str(v)) for k, v in (params or [])]
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        try:
            async with self._http().request(method, self.base_url + path, params=query, json=json,
                                            headers=headers, timeout=self.timeout) as resp:
                status, text = resp.status, await resp.text()
                answer_headers = dict(resp.headers)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            failure = unreachable(f"kommo: {what}: {type(exc).__name__}: {exc}")
            self.breaker.record(failure)
            raise failure from None
        if 200 <= status < 300:
            self.breaker.record(None)
            return None if status == 204 else parse_body(text)
        error = error_for("kommo", status, answer_headers, text, what)
        self.breaker.record(error)
        raise error

    async def _get(self, path: str, params: Iterable[tuple[str, Any]] | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def _list(self, path: str, key: str, params: Iterable[tuple[str, Any]] = ()) -> list[dict[str, Any]]:
        """Every page of a collection (``_links.next`` until absent or 204)."""
        out: list[dict[str, Any]] = []
        for page in range(1, 101):
            data = await self._get(path, [*params, ("page", page), ("limit", 250)])
            items = ((data or {}).get("_embedded") or {}).get(key) or []
            out.extend(items)
            if not items or not ((data or {}).get("_links") or {}).get("next"):
                break
        return out

    async def _one(self, path: str, params: Iterable[tuple[str, Any]] = ()) -> dict[str, Any]:
        data = await self._get(path, params)
        if not data:
            raise CrmRejected(f"kommo: GET {path}: not found")
        return dict(data)

    # ------------------------------------------------------------------ cached account data
    def _stale(self, key: str) -> bool:
        return time.monotonic() - self._loaded_at.get(key, -1e9) >= REFRESH_INTERVAL

    async def _cached(self, key: str, load: Callable[[], Awaitable[Any]], refresh: bool) -> Any:
        async with self._cache_lock:
            current = self._fields.get(key[7:]) if key.startswith("fields:") else getattr(self, f"_{key}")
            if current is None or (refresh and self._stale(key)):
                current = await load()
                self._loaded_at[key] = time.monotonic()
                if key.startswith("fields:"):
                    self._fields[key[7:]] = current
                else:
                    setattr(self, f"_{key}", current)
            return current

    async def fields(self, entity: str, *, refresh: bool = False) -> list[dict[str, Any]]:
        """The custom fields of ``leads``, ``contacts`` or ``companies``."""
        found: list[dict[str, Any]] = await self._cached(
            f"fields:{entity}", lambda: self._list(f"/api/v4/{entity}/custom_fields", "custom_fields"), refresh)
        return found

    async def pipelines(self, *, refresh: bool = False) -> list[dict[str, Any]]:
        async def load() -> list[dict[str, Any]]:
            found = await self._list("/api/v4/leads/pipelines", "pipelines")
            return sorted(found, key=lambda p: (not p.get("is_main"), p.get("sort", 0), p["id"]))
        return await self._cached("pipelines", load, refresh)  # type: ignore[no-any-return]

    async def users(self, *, refresh: bool = False) -> list[dict[str, Any]]:
        return await self._cached("users", lambda: self._list("/api/v4/users", "users"), refresh)  # type: ignore[no-any-return]

    async def task_types(self, *, refresh: bool = False) -> list[dict[str, Any]]:
        async def load() -> list[dict[str, Any]]:
            account = await self._get("/api/v4/account", [("with", "task_types")]) or {}
            return list((account.get("_embedded") or {}).get("task_types") or [])
        return await self._cached("task_types", load, refresh)  # type: ignore[no-any-return]

    def invalidate(self) -> None:
        """Forget every cached custom field, pipeline, user and task type."""
        self._fields.clear()
        self._pipelines = self._users = self._task_types = None
        self._loaded_at.clear()

    async def field(self, entity: str, key: Any) -> dict[str, Any]:
        """A custom field by id, name or code (case-insensitive), else by slug (``call_back`` for
        "Call back"); reloads the list once on a miss."""
        for refresh in (False, True):
            found = await self.fields(entity, refresh=refresh)
            for f in found:
                if (_int(key) is not None and f["id"] == _int(key)) or _fold(f.get("name")) == _fold(key) \
                        or (f.get("code") and _fold(f["code"]) == _fold(key)):
                    return f
            for f in found:
                if _slug(key) and _slug(f.get("name")) == _slug(key):
                    return f
        raise CrmRejected(f'kommo: no custom field "{key}" on {entity}')

    @staticmethod
    def _statuses(pipeline: Mapping[str, Any]) -> list[dict[str, Any]]:
        statuses = (pipeline.get("_embedded") or {}).get("statuses") or []
        return sorted(statuses, key=lambda s: (s.get("sort", 0), s["id"]))

    def _first_stage(self, pipeline: Mapping[str, Any]) -> dict[str, Any]:
        """The first working stage: not "Incoming leads" (type 1), not won or lost."""
        for status in self._statuses(pipeline):
            if status.get("type", 0) != 1 and status["id"] not in CLOSED:
                return status
        raise CrmRejected(f'kommo: pipeline "{pipeline.get("name")}" has no working stage')

    async def _pipeline(self, key: Any) -> dict[str, Any]:
        for refresh in (False, True):
            pipelines = await self.pipelines(refresh=refresh)
            for p in pipelines:
                if (_int(key) is not None and p["id"] == _int(key)) or _fold(p.get("name")) == _fold(key):
                    return p
        known = ", ".join(str(p.get("name")) for p in await self.pipelines())
        raise CrmRejected(f'unknown pipeline "{key}" (known: {known})')

    async def _stage(self, pipeline: dict[str, Any], key: Any) -> dict[str, Any]:
        for refresh in (False, True):
            if refresh:  # stages added since the cache was loaded
                await self.pipelines(refresh=True)
                pipeline = await self._pipeline(pipeline["id"])
            for s in self._statuses(pipeline):
                if (_int(key) is not None and s["id"] == _int(key)) or _fold(s.get("name")) == _fold(key):
                    return s
        known = ", ".join(str(s.get("name")) for s in self._statuses(pipeline) if s.get("type", 0) != 1)
        raise CrmRejected(f'unknown stage "{key}" in pipeline "{pipeline.get("name")}" (known: {known})')

    async def stage_names(self, pipeline_id: Any, status_id: Any) -> tuple[str | None, str | None]:
        """(pipeline name, stage name) of ids, from the cache (reloaded at most every few seconds)."""
        for refresh in (False, True):
            for p in await self.pipelines(refresh=refresh):
                if p["id"] == _int(pipeline_id):
                    stage = next((s.get("name") for s in self._statuses(p) if s["id"] == _int(status_id)), None)
                    if stage is not None or refresh:
                        return p.get("name"), stage
                    break
        return None, None

    async def _user_id(self, user: Any) -> int:
        if _int(user) is not None:
            return int(user)
        for refresh in (False, True):
            for u in await self.users(refresh=refresh):
                if _fold(user) in (_fold(u.get("name")), _fold(u.get("email"))):
                    return int(u["id"])
        raise CrmRejected(f'kommo: no user "{user}"')

    async def _task_type_id(self, kind: Any) -> int:
        if kind in (None, ""):
            return 1
        if _int(kind) is not None:
            return int(kind)
        if _fold(kind) in TASK_TYPE_IDS:
            return TASK_TYPE_IDS[_fold(kind)]
        for refresh in (False, True):
            for t in await self.task_types(refresh=refresh):
                if _fold(kind) in (_fold(t.get("name")), _fold(t.get("code") or "")):
                    return int(t["id"])
        raise CrmRejected(f'kommo: no task type "{kind}"')

    async def _task_type_name(self, type_id: int) -> str:
        if type_id in TASK_TYPE_NAMES:
            return TASK_TYPE_NAMES[type_id]
        for t in await self.task_types():
            if t["id"] == type_id:
                return str(t.get("name"))
        return str(type_id)

    # ------------------------------------------------------------------ custom field values
    @staticmethod
    def encode_values(field: Mapping[str, Any], value: Any) -> list[dict[str, Any]] | None:
        """The ``values`` of one ``custom_fields_values`` item for ``value`` (None clears the field)."""
        kind = field.get("type")
        if value is None or value == "" or value == []:
            return None
        enums = field.get("enums") or []

        def enum_of(v: Any) -> dict[str, Any]:
            for e in enums:
                if _fold(e.get("value")) == _fold(v) or (_int(v) is not None and e["id"] == _int(v)):
                    return {"enum_id": e["id"]}
            choices = ", ".join(str(e.get("value")) for e in enums)
            raise CrmRejected(f'kommo: "{v}" is not a choice of "{field.get("name")}" ({choices})')

        if kind in _ENUM_TYPES:
            return [enum_of(value)]
        if kind == "multiselect":
            items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v.strip()]
            return [enum_of(v) for v in items]
        if kind == "checkbox":
            flag = value if isinstance(value, bool) else _fold(value) in ("1", "true", "yes", "on", "y")
            return [{"value": flag}]
        if kind in _NUMBER_TYPES:
            try:
                number = float(value)
                return [{"value": int(number) if number.is_integer() else number}]
            except (TypeError, ValueError):
                return [{"value": value}]  # Kommo's own validation error says what is wrong
        if kind in _DATE_TYPES:
            stamp = _epoch(value)
            return [{"value": stamp if stamp is not None else value}]
        if kind == "multitext":
            return [{"value": str(value), "enum_code": "WORK"}]
        return [{"value": str(value)}]

    @staticmethod
    def decode_values(item: Mapping[str, Any]) -> Any:
        values = item.get("values") or []
        if item.get("field_type") == "multiselect":
            return [v.get("value") for v in values]
        if not values:
            return None
        first = values[0]
        value = first.get("value") if isinstance(first, Mapping) else first
        if item.get("field_type") == "checkbox":
            return bool(value)
        return value

    def _custom(self, record: Mapping[str, Any], *, skip_codes: Iterable[str] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
        """(by name, by id) of a record's custom fields."""
        by_name: dict[str, Any] = {}
        by_id: dict[str, Any] = {}
        skip = set(skip_codes)
        for item in record.get("custom_fields_values") or []:
            value = self.decode_values(item)
            by_id[str(item.get("field_id"))] = value
            if item.get("field_code") not in skip and item.get("field_name") != self.identity_field:
                by_name[str(item.get("field_name"))] = value
        for name, value in list(by_name.items()):  # "Call back" is also call_back (unless taken)
            by_name.setdefault(_slug(name) or name, value)
        return by_name, by_id

    @staticmethod
    def _multitext(record: Mapping[str, Any], code: str) -> list[str]:
        for item in record.get("custom_fields_values") or []:
            if item.get("field_code") == code:
                return [str(v.get("value")) for v in item.get("values") or [] if v.get("value")]
        return []

    # ------------------------------------------------------------------ snapshot
    async def _lead(self, lead_id: str, *, with_contacts: bool = True) -> dict[str, Any]:
        return await self._one(f"/api/v4/leads/{lead_id}", [("with", "contacts")] if with_contacts else [])

    async def snapshot(self, ref: CrmRef) -> dict[str, Any]:
        lead, contact = await asyncio.gather(self._lead(ref.lead_id), self._get(f"/api/v4/contacts/{ref.contact_id}"))
        companies = (lead.get("_embedded") or {}).get("companies") or []
        company_id = companies[0]["id"] if companies else None
        company = await self._get(f"/api/v4/companies/{company_id}") if company_id else None
        return {
            "lead": await self._lead_view(lead),
            "contact": self._contact_view(contact or {}),
            "company": self._company_view(company) if company else {},
        }

    @staticmethod
    def _tags(record: Mapping[str, Any]) -> list[str]:
        return [str(t.get("name")) for t in (record.get("_embedded") or {}).get("tags") or []]

    @staticmethod
    def _str_id(value: Any) -> str | None:
        return None if value in (None, 0, "") else str(value)

    async def _lead_view(self, lead: Mapping[str, Any]) -> dict[str, Any]:
        pipeline, stage = await self.stage_names(lead.get("pipeline_id"), lead.get("status_id"))
        fields, cf = self._custom(lead)
        return {
            "id": str(lead["id"]), "name": lead.get("name") or "", "price": lead.get("price") or 0,
            "pipeline": pipeline, "stage": stage, "responsible": self._str_id(lead.get("responsible_user_id")),
            "fields": fields, "cf": cf, "tags": self._tags(lead),
            "pipeline_id": lead.get("pipeline_id"), "status_id": lead.get("status_id"),
        }

    def _contact_view(self, contact: Mapping[str, Any]) -> dict[str, Any]:
        if not contact:
            return {}
        fields, cf = self._custom(contact, skip_codes=("PHONE", "EMAIL"))
        phones, emails = self._multitext(contact, "PHONE"), self._multitext(contact, "EMAIL")
        name = contact.get("name") or ""
        return {
            "id": str(contact["id"]), "name": name,
            "first_name": contact.get("first_name") or (name.split()[0] if name else None),
            "last_name": contact.get("last_name") or None,
            "phone": phones[0] if phones else None, "email": emails[0] if emails else None,
            "phones": phones, "emails": emails, "fields": fields, "cf": cf, "tags": self._tags(contact),
            "responsible": self._str_id(contact.get("responsible_user_id")),
        }

    def _company_view(self, company: Mapping[str, Any]) -> dict[str, Any]:
        fields, cf = self._custom(company, skip_codes=("PHONE", "EMAIL"))
        return {"id": str(company["id"]), "name": company.get("name") or "", "fields": fields, "cf": cf,
                "tags": self._tags(company), "responsible": self._str_id(company.get("responsible_user_id"))}

    # ------------------------------------------------------------------ identify
    async def _identity_field_def(self) -> dict[str, Any] | None:
        """The contact field holding channel identities; created (text area) when missing."""
        name = self.identity_field
        if not name:
            return None
        for f in await self.fields("contacts"):
            if _fold(f.get("name")) == _fold(name):
                return f
        async with self._identity_lock:  # one creation, even for identifies running at once
            self._fields.pop("contacts", None)  # another process may have created it meanwhile
            for f in await self.fields("contacts"):
                if _fold(f.get("name")) == _fold(name):
                    return f
            try:
                created = await self.request("POST", "/api/v4/contacts/custom_fields",
                                             json=[{"name": name, "type": "textarea", "sort": 9999}])
            except CrmRejected as exc:  # no rights to add fields: identify by phone / e-mail only
                log.warning("kommo.identity_field_unavailable", extra={"error": str(exc)})
                self.identity_field = None
                return None
            self._fields.pop("contacts", None)
            made = ((created or {}).get("_embedded") or {}).get("custom_fields") or []
            return dict(made[0]) if made else await self.field("contacts", name)

    async def _search_contacts(self, query: str) -> list[dict[str, Any]]:
        data = await self._get("/api/v4/contacts", [("query", query), ("with", "leads"), ("limit", 50)])
        return list(((data or {}).get("_embedded") or {}).get("contacts") or [])

    @staticmethod
    def _identity_lines(contact: Mapping[str, Any], field_id: int) -> list[str]:
        for item in contact.get("custom_fields_values") or []:
            if item.get("field_id") == field_id:
                text = "\n".join(str(v.get("value") or "") for v in item.get("values") or [])
                return [line.strip() for line in text.splitlines() if line.strip()]
        return []

    async def _find_contact(self, identity: ChannelIdentity, key: str,
                            field: dict[str, Any] | None) -> dict[str, Any] | None:
        if field is not None:
            for c in await self._search_contacts(key):
                if key in self._identity_lines(c, field["id"]):
                    return c
        if identity.phone and len(_digits(identity.phone)) >= 5:
            want = _digits(identity.phone)
            for c in await self._search_contacts(want):
                if any(_digits(p)[-10:] == want[-10:] for p in self._multitext(c, "PHONE")):
                    return c
        if identity.email:
            for c in await self._search_contacts(identity.email):
                if any(_fold(e) == _fold(identity.email) for e in self._multitext(c, "EMAIL")):
                    return c
        return None

    async def _open_lead(self, contact: Mapping[str, Any]) -> str | None:
        ids = [str(lead["id"]) for lead in (contact.get("_embedded") or {}).get("leads") or []]
        if not ids:
            return None
        leads = await self._list("/api/v4/leads", "leads", [("filter[id][]", i) for i in ids[:BATCH]])
        open_ = [lead for lead in leads if lead.get("status_id") not in CLOSED and not lead.get("is_deleted")]
        return str(max(open_, key=lambda lead: lead["id"])["id"]) if open_ else None

    async def identify(self, identity: ChannelIdentity) -> CrmRef:
        key = f"{identity.channel}:{identity.account}:{identity.external_id}"
        field = await self._identity_field_def()
        contact = await self._find_contact(identity, key, field)
        if contact is None:
            return await self._create_contact_and_lead(identity, key, field)
        contact_id = str(contact["id"])
        if field is not None:
            lines = self._identity_lines(contact, field["id"])
            if key not in lines:  # found by phone or e-mail: remember this channel too
                await self.request("PATCH", f"/api/v4/contacts/{contact_id}", json={"custom_fields_values": [
                    {"field_id": field["id"], "values": [{"value": "\n".join([*lines, key])}]}]})
        lead_id = await self._open_lead(contact)
        if lead_id is None:
            pipeline = (await self.pipelines())[0]
            created = await self.request("POST", "/api/v4/leads", json=[{
                "name": self._lead_name(identity), "pipeline_id": pipeline["id"],
                "status_id": self._first_stage(pipeline)["id"],
                "_embedded": {"contacts": [{"id": int(contact_id)}]}}])
            lead_id = str(created["_embedded"]["leads"][0]["id"])
        return CrmRef(contact_id, lead_id)

    @staticmethod
    def _lead_name(identity: ChannelIdentity) -> str:
        return identity.name or f"Chat: {identity.channel}"

    async def _create_contact_and_lead(self, identity: ChannelIdentity, key: str,
                                       field: dict[str, Any] | None) -> CrmRef:
        pipeline = (await self.pipelines())[0]
        values: list[dict[str, Any]] = []
        if field is not None:
            values.append({"field_id": field["id"], "values": [{"value": key}]})
        if identity.phone:
            values.append({"field_code": "PHONE", "values": [{"value": identity.phone, "enum_code": "WORK"}]})
        if identity.email:
            values.append({"field_code": "EMAIL", "values": [{"value": identity.email, "enum_code": "WORK"}]})
        contact: dict[str, Any] = {"name": identity.name or "", "custom_fields_values": values}
        if identity.name:
            contact["first_name"] = identity.name.split()[0]
        created = await self.request("POST", "/api/v4/leads/complex", json=[{
            "name": self._lead_name(identity), "pipeline_id": pipeline["id"],
            "status_id": self._first_stage(pipeline)["id"], "_embedded": {"contacts": [contact]}}])
        item = created[0] if isinstance(created, list) else (created or {})
        if not item.get("id") or not item.get("contact_id"):
            raise CrmUnavailable(f"kommo: POST /api/v4/leads/complex: unexpected answer {created!r}"[:300])
        return CrmRef(str(item["contact_id"]), str(item["id"]))

    # ------------------------------------------------------------------ execute
    async def execute(self, ref: CrmRef, command: dict[str, Any]) -> CommandResult:
        do = command.get("do")
        if do not in CRM_COMMANDS:
            raise CrmRejected(f"the CRM does not execute {do!r}")
        result: CommandResult = await getattr(self, f"_do_{do}")(ref, command)
        return result

    async def _target(self, ref: CrmRef, entity: str, *, create_company: bool = True) -> tuple[str, str]:
        """(API collection, record id) of the entity a command names."""
        path = ENTITY_PATHS.get(entity)
        if path is None:
            raise CrmRejected(f"unknown entity {entity!r}")
        if path == "leads":
            return path, ref.lead_id
        if path == "contacts":
            return path, ref.contact_id
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

    async def _do_set_field(self, ref: CrmRef, cmd: dict[str, Any]) -> CommandResult:
        path, record_id = await self._target(ref, str(cmd.get("entity") or "lead"))
        name, value = cmd["field"], cmd.get("value")
        body: dict[str, Any]
        if _fold(name) in _STANDARD[path]:
            key = _fold(name)
            if key == "price":
                try:
                    number = float(value) if value not in (None, "") else 0.0
                except (TypeError, ValueError):
                    raise CrmRejected(f"price must be a number, not {value!r}") from None
                body = {"price": int(number)}
            elif key in _MULTITEXT_CODES:
                body = {"custom_fields_values": [{"field_code": _MULTITEXT_CODES[key], "values": (
                    [{"value": str(value), "enum_code": "WORK"}] if value not in (None, "") else None)}]}
            elif key == "name" and path == "contacts":
                words = str(value or "").split()
                body = {"name": str(value or ""), "first_name": words[0] if words else "",
                        "last_name": " ".join(words[1:])}
            else:
                body = {key: "" if value is None else str(value)}
        else:
            field = await self.field(path, name)
            body = {"custom_fields_values": [{"field_id": field["id"], "values": self.encode_values(field, value)}]}
        await self.request("PATCH", f"/api/v4/{path}/{record_id}", json=body)
        return CommandResult()

    async def _do_tags(self, ref: CrmRef, cmd: dict[str, Any]) -> CommandResult:
        add = [str(t) for t in cmd.get("add") or [] if str(t).strip()]
        remove = [str(t) for t in cmd.get("remove") or [] if str(t).strip()]
        if not add and not remove:
            return CommandResult()
        path, record_id = await self._target(ref, str(cmd.get("entity") or "lead"))
        item: dict[str, Any] = {"id": int(record_id)}
        if add:
            item["tags_to_add"] = [{"name": t} for t in add]
        if remove:
            item["tags_to_delete"] = [{"name": t} for t in remove]
        await self.request("PATCH", f"/api/v4/{path}", json=[item])
        return CommandResult()

    async def _do_add_note(self, ref: CrmRef, cmd: dict[str, Any]) -> CommandResult:
        entity = str(cmd.get("entity") or "lead")
        path, record_id = ("leads", ref.lead_id) if entity == "lead" else await self._target(ref, entity)
        await self.request("POST", f"/api/v4/{path}/{record_id}/notes",
                           json=[{"note_type": "common", "params": {"text": str(cmd["text"])}}])
        return CommandResult()

    async def _do_add_task(self, ref: CrmRef, cmd: dict[str, Any]) -> CommandResult:
        responsible = cmd.get("responsible", "current")
        task: dict[str, Any] = {
            "task_type_id": await self._task_type_id(cmd.get("task_type", "follow_up")),
            "text": str(cmd["text"]), "entity_id": int(ref.lead_id), "entity_type": "leads",
            "complete_till": _epoch(cmd.get("due_at")) or int(time.time()),
        }
        if responsible in (None, "", "current"):
            owner = (await self._lead(ref.lead_id, with_contacts=False)).get("responsible_user_id")
            if owner:
                task["responsible_user_id"] = owner
        else:
            task["responsible_user_id"] = await self._user_id(responsible)
        await self.request("POST", "/api/v4/tasks", json=[task])
        return CommandResult()

    async def _open_tasks(self, lead_id: str, kind: Any = "all") -> list[dict[str, Any]]:
        params: list[tuple[str, Any]] = [("filter[entity_type]", "leads"), ("filter[entity_id][]", lead_id),
                                         ("filter[is_completed]", 0)]
        if kind not in (None, "", "all"):
            params.append(("filter[task_type][]", await self._task_type_id(kind)))
        return await self._list("/api/v4/tasks", "tasks", params)

    async def _do_complete_tasks(self, ref: CrmRef, cmd: dict[str, Any]) -> CommandResult:
        lo, hi = _epoch(cmd.get("due_from")), _epoch(cmd.get("due_to"))
        chosen = []
        for task in await self._open_tasks(ref.lead_id, cmd.get("task_type", "all")):
            due = task.get("complete_till")
            if task.get("is_completed") or (due is not None and ((lo is not None and due < lo) or (hi is not None and due >= hi))):
                continue
            chosen.append(task["id"])
        comment = cmd.get("comment")
        for start in range(0, len(chosen), BATCH):
            items = []
            for task_id in chosen[start:start + BATCH]:
                item: dict[str, Any] = {"id": task_id, "is_completed": True}
                if comment:
                    item["result"] = {"text": str(comment)}
                items.append(item)
            await self.request("PATCH", "/api/v4/tasks", json=items)
        return CommandResult(len(chosen))

    async def _do_change_stage(self, ref: CrmRef, cmd: dict[str, Any]) -> CommandResult:
        key = cmd.get("pipeline")
        if key in (None, ""):
            key = (await self._lead(ref.lead_id, with_contacts=False)).get("pipeline_id")
        pipeline = await self._pipeline(key)
        stage = await self._stage(pipeline, cmd["stage"])
        await self.request("PATCH", f"/api/v4/leads/{ref.lead_id}",
                           json={"pipeline_id": pipeline["id"], "status_id": stage["id"]})
        return CommandResult()

    async def _do_change_responsible(self, ref: CrmRef, cmd: dict[str, Any]) -> CommandResult:
        user = await self._user_id(cmd["user"])
        entities = list(cmd.get("entities") or ["lead"])
        targets: dict[str, set[int]] = {"leads": set(), "contacts": set(), "companies": set()}
        lead: dict[str, Any] | None = None
        if "all_contacts" in entities or "company" in entities:
            lead = await self._lead(ref.lead_id)
        for entity in entities:
            if entity == "lead":
                targets["leads"].add(int(ref.lead_id))
            elif entity in ("main_contact", "chat_contact", "contact"):
                targets["contacts"].add(int(ref.contact_id))
            elif entity == "all_contacts" and lead is not None:
                targets["contacts"].update(int(c["id"]) for c in (lead.get("_embedded") or {}).get("contacts") or [])
            elif entity == "company" and lead is not None:
                targets["companies"].update(int(c["id"]) for c in (lead.get("_embedded") or {}).get("companies") or [])
        for path, ids in targets.items():
            items = [{"id": i, "responsible_user_id": user} for i in sorted(ids)]
            for start in range(0, len(items), BATCH):
                await self.request("PATCH", f"/api/v4/{path}", json=items[start:start + BATCH])
        return CommandResult()

    async def _do_create_lead(self, ref: CrmRef, cmd: dict[str, Any]) -> CommandResult:
        src = await self._lead(ref.lead_id)
        parts = set(cmd.get("copy") or [])
        pipeline = await self._pipeline(cmd.get("pipeline") or src.get("pipeline_id"))
        stage = await self._stage(pipeline, cmd["stage"]) if cmd.get("stage") else self._first_stage(pipeline)
        lead: dict[str, Any] = {"name": cmd.get("name") or src.get("name") or "",
                                "pipeline_id": pipeline["id"], "status_id": stage["id"]}
        responsible = cmd.get("responsible")
        if responsible:
            lead["responsible_user_id"] = await self._user_id(responsible)
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
        embedded: dict[str, Any] = {}
        src_embedded = src.get("_embedded") or {}
        if "tags" in parts and src_embedded.get("tags"):
            embedded["tags"] = [{"id": t["id"]} for t in src_embedded["tags"]]
        if "contacts" in parts:
            embedded["contacts"] = [{"id": c["id"]} for c in src_embedded.get("contacts") or []] \
                or [{"id": int(ref.contact_id)}]
        if "company" in parts and src_embedded.get("companies"):
            embedded["companies"] = [{"id": c["id"]} for c in src_embedded["companies"]]
        if embedded:
            lead["_embedded"] = embedded
        created = await self.request("POST", "/api/v4/leads", json=[lead])
        return CommandResult({"lead_id": str(created["_embedded"]["leads"][0]["id"])})

    async def _do_subscribers(self, ref: CrmRef, cmd: dict[str, Any]) -> CommandResult:
        raise CrmRejected("kommo: the API v4 cannot change a lead's subscribers (they are read-only there)")

    # ------------------------------------------------------------------ reading (support dashboard, tests)
    async def lead_tasks(self, ref: CrmRef) -> list[dict[str, Any]]:
        tasks = await self._list("/api/v4/tasks", "tasks", [("filter[entity_type]", "leads"),
                                                            ("filter[entity_id][]", ref.lead_id)])
        out = []
        for t in sorted(tasks, key=lambda t: t["id"]):
            due = t.get("complete_till")
            out.append({
                "id": str(t["id"]), "lead_id": str(t.get("entity_id")), "text": t.get("text"),
                "type": await self._task_type_name(int(t.get("task_type_id") or 1)),
                "due": datetime.fromtimestamp(due, UTC).isoformat() if due else None,
                "responsible": self._str_id(t.get("responsible_user_id")),
                "completed": bool(t.get("is_completed")), "result": (t.get("result") or {}).get("text"),
            })
        return out

    async def lead_notes(self, ref: CrmRef) -> list[dict[str, Any]]:
        out = []
        for entity, path, record_id in (("lead", "leads", ref.lead_id), ("contact", "contacts", ref.contact_id)):
            for n in await self._list(f"/api/v4/{path}/{record_id}/notes", "notes"):
                out.append({"id": str(n["id"]), "entity": entity, "entity_id": record_id,
                            "text": (n.get("params") or {}).get("text"), "type": n.get("note_type")})
        return out


# ---------------------------------------------------------------------- account webhooks
def parse_webhook_form(body: bytes | str) -> dict[str, Any]:
    """Kommo's form-encoded webhook (``leads[status][0][id]=…``) as nested dicts and lists."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    root: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        m = re.match(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$", key)
        if not m:
            continue
        parts = [m.group(1), *re.findall(r"\[([^\[\]]*)\]", m.group(2))]
        node: dict[str, Any] = root
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
    return _listify(root)  # type: ignore[no-any-return]


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {k: _listify(v) for k, v in node.items()}
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


def _as_list(value: Any) -> list[Any]:
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
            if not lead_id:
                continue
            data["lead"] = lead_id
            marker = f"{data.get('status_id', '')}:{data.get('responsible_user_id', '')}:{stamp}"
            out.append(KommoEvent(kind, lead_id, data, f"kommo:{kind}:{lead_id}:{marker}"))
    tasks: Mapping[str, Any] = payload["task"] if isinstance(payload.get("task"), dict) else {}
    for action, kind in TASK_EVENTS.items():
        for item in _as_list(tasks.get(action)):
            if not isinstance(item, dict) or str(item.get("element_type")) != "2" or not item.get("element_id"):
                continue
            lead_id = str(item["element_id"])
            data = {"lead": lead_id, "task_id": item.get("id"), "text": item.get("text"),
                    "task_type": item.get("task_type"), "completed": str(item.get("status")) == "1",
                    "result": (item.get("result") or {}).get("text") if isinstance(item.get("result"), dict) else None}
            stamp = item.get("last_modified") or item.get("updated_at") or item.get("status") or ""
            out.append(KommoEvent(kind, lead_id, data, f"kommo:{kind}:{item.get('id')}:{stamp}"))
    return out


async def name_stages(crm: Any, events: list[KommoEvent], *, timeout: float = 1.0) -> None:
    """Add ``pipeline``/``stage`` (and ``old_…``) names to stage events from the backend's cache."""
    if not isinstance(crm, KommoCrm):
        return

    async def name_all() -> None:
        for e in events:
            if "status_id" in e.data and "pipeline_id" in e.data:
                e.data["pipeline"], e.data["stage"] = await crm.stage_names(e.data["pipeline_id"], e.data["status_id"])
            if "old_status_id" in e.data:
                old_pipeline = e.data.get("old_pipeline_id") or e.data.get("pipeline_id")
                e.data["old_pipeline"], e.data["old_stage"] = await crm.stage_names(old_pipeline, e.data["old_status_id"])

    try:  # Kommo wants an answer within 2 s: names are a convenience, ids are always there
        await asyncio.wait_for(name_all(), timeout)
    except (TimeoutError, CrmError) as exc:
        log.warning("kommo.webhook_names_unavailable", extra={"error": str(exc) or type(exc).__name__})


# ---------------------------------------------------------------------- widget_request JWT
class InvalidWidgetToken(CrmError):
    """The JWT of a Kommo ``widget_request`` is missing, forged, expired or for someone else."""


def verify_widget_jwt(token: str, secret: str, *, audience: str | None = None,
                      leeway: float = 5.0) -> dict[str, Any]:
    """The claims of a ``widget_request`` token, verified as Kommo signs it: HS512 with the
    integration's client secret, ``exp`` required (and ``aud`` when ``audience`` is given).

    Claims include ``account_id``, ``subdomain``, ``entity_id``, ``entity_type`` (2 leads,
    12 customers), ``bot_type`` and ``client_uuid``. Raises ``InvalidWidgetToken``.
    """
    import jwt  # PyJWT

    if not token or not secret:
        raise InvalidWidgetToken("no token or no client secret")
    options = {"require": ["exp"], "verify_aud": audience is not None}
    short_key = getattr(jwt, "InsecureKeyLengthWarning", None)
    try:
        with warnings.catch_warnings():
            if short_key is not None:  # the key is Kommo's client secret: not ours to lengthen
                warnings.simplefilter("ignore", short_key)
            claims = jwt.decode(token, secret, algorithms=["HS512"], audience=audience, leeway=leeway,
                                options=options)  # type: ignore[arg-type]
    except jwt.PyJWTError as exc:
        raise InvalidWidgetToken(f"widget token rejected: {exc}") from None
    return dict(claims)
