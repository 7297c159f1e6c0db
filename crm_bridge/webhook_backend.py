"""The generic webhook backend: every CRM operation POSTed as signed JSON to one URL.

For CRMs salesbot does not support yet: a small receiver on the CRM's side answers four
operations (and optionally two reads), all at one URL::

    {"op": "identify", "id": "…", "ts": 1700000000,
     "identity": {"channel", "account", "external_id", "name", "phone", "email"}}
        → {"contact_id": "…", "lead_id": "…", "company_id": null}
    {"op": "snapshot", "id": "…", "ts": …, "ref": {"contact_id", "lead_id", "company_id"}}
        → {"contact": {…}, "lead": {…}, "company": {…}}
    {"op": "execute", "id": "<command id>", "ts": …, "ref": {…}, "command": {"do": "set_field", …}}
        → {"value": …}                          (optionally "snapshot": {…})
    {"op": "tasks" | "notes", "id": "…", "ts": …, "ref": {…}}
        → {"tasks": […]} / {"notes": […]}       (optional: the support dashboard's reads)

Every request carries ``X-Salesbot-Signature: sha256=<hex HMAC-SHA256 of the raw body with the
shared secret>``, ``X-Salesbot-Timestamp`` (equal to the body's ``ts``, so the signature covers
it: a receiver refuses stale timestamps to stop replays) and ``X-Salesbot-Delivery`` (the
body's ``id``; for ``execute`` it is the command's id, the same on every retry, so a receiver
can apply a command once). ``verify_request`` does the receiver's checks.

Answers: 2xx with the JSON above; 4xx with ``{"error": "why"}`` rejects the operation for good;
429 (``Retry-After``), 401/403, 5xx, timeouts and refused connections are temporary — the same
mapping as the Kommo backend (``crm_bridge._http``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from bot.errors import CrmError, CrmRejected, CrmUnavailable

from ._http import Breaker, SessionHolder, error_for, parse_body, unreachable
from .interface import CRM_COMMANDS, ChannelIdentity, CommandResult, CrmRef

SIGNATURE_HEADER = "X-Salesbot-Signature"
TIMESTAMP_HEADER = "X-Salesbot-Timestamp"
DELIVERY_HEADER = "X-Salesbot-Delivery"
#: How far a receiver should accept a request's timestamp from its own clock.
TOLERANCE = 300.0


class InvalidSignature(CrmError):
    """A request's signature or timestamp does not check out (receiver side)."""


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: str | bytes, body: bytes) -> str:
    """The ``X-Salesbot-Signature`` value of a raw body."""
    return "sha256=" + hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


def verify_request(secret: str | bytes, body: bytes, headers: Mapping[str, str], *,
                   now: float | None = None, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """A receiver's checks: signature over the raw body, timestamp header equal to the body's
    ``ts`` and within ``tolerance`` of ``now``. Returns the decoded body."""
    given = headers.get(SIGNATURE_HEADER) or headers.get(SIGNATURE_HEADER.lower()) or ""
    if not hmac.compare_digest(given.encode(), sign(secret, body).encode()):
        raise InvalidSignature("bad signature")
    try:
        data = json.loads(body)
    except ValueError:
        raise InvalidSignature("the body is not JSON") from None
    stamp = headers.get(TIMESTAMP_HEADER) or headers.get(TIMESTAMP_HEADER.lower())
    if not isinstance(data, dict) or stamp is None or str(data.get("ts")) != str(stamp):
        raise InvalidSignature("the timestamp header does not match the signed body")
    if abs((time.time() if now is None else now) - float(data["ts"])) > tolerance:
        raise InvalidSignature("stale timestamp")
    return data


def _ref(ref: CrmRef) -> dict[str, Any]:
    return {"contact_id": ref.contact_id, "lead_id": ref.lead_id, "company_id": ref.company_id}


class WebhookCrm(SessionHolder):
    """A ``CrmBackend`` that asks a signed HTTP endpoint."""

    name = "webhook"

    def __init__(self, url: str, secret: str, *, session: aiohttp.ClientSession | None = None,
                 timeout: float = 10.0, clock: Callable[[], float] = time.time, cooldown: float = 5.0) -> None:
        if not secret:
            raise ValueError("the webhook backend needs a secret to sign with")
        self.url = url
        self._secret = secret
        self._session = session
        self._own_session = session is None
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.clock = clock
        self.breaker = Breaker(cooldown)


    async def call(self, op: str, delivery: str | None = None, **fields: Any) -> Any:
        """One signed operation; the decoded JSON answer."""
        body = {"op": op, "id": delivery or uuid.uuid4().hex, "ts": int(self.clock()), **fields}
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self._secret, raw),
                   TIMESTAMP_HEADER: str(body["ts"]), DELIVERY_HEADER: str(body["id"]),
                   "User-Agent": "salesbot-crm-webhook/1"}
        self.breaker.check("webhook crm", op)
        try:
            async with self._http().post(self.url, data=raw, headers=headers, timeout=self.timeout) as resp:
                status, text, answer_headers = resp.status, await resp.text(), dict(resp.headers)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            failure = unreachable(f"webhook crm: {op}: {type(exc).__name__}: {exc}")
            self.breaker.record(failure)
            raise failure from None
        if not 200 <= status < 300:
            error = error_for("webhook crm", status, answer_headers, text, op)
            self.breaker.record(error)
            raise error
        self.breaker.record(None)
        answer = parse_body(text)
        if status != 204 and answer is None and text.strip():
            raise CrmUnavailable(f"webhook crm: {op}: the answer is not JSON")
        return answer

    async def identify(self, identity: ChannelIdentity) -> CrmRef:
        answer = await self.call("identify", identity={
            "channel": identity.channel, "account": identity.account, "external_id": identity.external_id,
            "name": identity.name, "phone": identity.phone, "email": identity.email})
        if not isinstance(answer, dict) or not answer.get("contact_id") or not answer.get("lead_id"):
            raise CrmUnavailable(f"webhook crm: identify: expected contact_id and lead_id, got {answer!r}"[:300])
        return CrmRef(str(answer["contact_id"]), str(answer["lead_id"]),
                      str(answer["company_id"]) if answer.get("company_id") else None)

    async def snapshot(self, ref: CrmRef) -> dict[str, Any]:
        answer = await self.call("snapshot", ref=_ref(ref))
        if not isinstance(answer, dict):
            raise CrmUnavailable(f"webhook crm: snapshot: expected an object, got {answer!r}"[:300])
        return {"contact": dict(answer.get("contact") or {}), "lead": dict(answer.get("lead") or {}),
                "company": dict(answer.get("company") or {})}

    async def execute(self, ref: CrmRef, command: dict[str, Any]) -> CommandResult:
        if command.get("do") not in CRM_COMMANDS:
            raise CrmRejected(f"the CRM does not execute {command.get('do')!r}")
        plain = {k: v for k, v in command.items() if k != "command_id"}
        answer = await self.call("execute", command.get("command_id"), ref=_ref(ref), command=plain)
        answer = answer if isinstance(answer, dict) else {}
        extra = {"snapshot": answer["snapshot"]} if isinstance(answer.get("snapshot"), dict) else {}
        return CommandResult(answer.get("value"), extra)

    async def _read(self, op: str, ref: CrmRef) -> list[dict[str, Any]]:
        try:
            answer = await self.call(op, ref=_ref(ref))
        except CrmRejected:  # the receiver does not offer this optional read
            return []
        items = answer.get(op) if isinstance(answer, dict) else None
        return [dict(i) for i in items] if isinstance(items, list) else []

    async def lead_tasks(self, ref: CrmRef) -> list[dict[str, Any]]:
        return await self._read("tasks", ref)

    async def lead_notes(self, ref: CrmRef) -> list[dict[str, Any]]:
        return await self._read("notes", ref)
