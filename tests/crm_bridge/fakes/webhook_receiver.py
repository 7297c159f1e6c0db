"""A CRM on the far side of the generic webhook backend, on loopback (aiohttp).

It does what a real receiver must: checks ``X-Salesbot-Signature`` (HMAC-SHA256 of the raw body)
and the timestamp with ``crm_bridge.webhook_backend.verify_request`` (401 otherwise), answers
the four operations from a ``MemoryCrm`` it keeps, applies each ``execute`` once per command id
(a retried delivery gets the first answer again), and answers a command the CRM refuses with
422 ``{"error": …}``. ``fail_next(status)`` and ``down(status)`` inject failures; ``deliveries``
records each verified operation it answered as ``(op, id, do)``, ``received`` every request that
reached it (headers and decoded body, failed ones included).
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Self

from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.errors import CrmRejected
from crm_bridge import ChannelIdentity, CrmRef, MemoryCrm
from crm_bridge.contract import PIPELINES
from crm_bridge.webhook_backend import InvalidSignature, verify_request

SECRET = "webhook-test-secret"


class WebhookReceiver:
    def __init__(self, secret: str = SECRET, *, pipelines: dict[str, list[str]] | None = None) -> None:
        self.secret = secret
        self.crm = MemoryCrm(pipelines=pipelines or PIPELINES)
        self.deliveries: list[tuple[str, str, str | None]] = []
        self.received: list[tuple[dict[str, str], Any]] = []
        self.bad_signatures = 0
        self.applied: dict[str, Any] = {}
        self._failures: deque[int] = deque()
        self._down: int | None = None
        app = web.Application()
        app.router.add_post("/crm", self._handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def __aenter__(self) -> Self:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()

    @property
    def url(self) -> str:
        return str(self.server.make_url("/crm"))

    def fail_next(self, status: int, times: int = 1) -> None:
        self._failures.extend([status] * times)

    def down(self, status: int = 503) -> None:
        self._down = status

    def up(self) -> None:
        self._down = None

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            self.received.append((dict(request.headers), json.loads(raw)))
        except ValueError:
            self.received.append((dict(request.headers), None))
        try:
            body = verify_request(self.secret, raw, request.headers)
        except InvalidSignature as exc:
            self.bad_signatures += 1
            return web.json_response({"error": str(exc)}, status=401)
        status = self._down or (self._failures.popleft() if self._failures else None)
        if status is not None:
            headers = {"Retry-After": "2"} if status == 429 else None
            return web.json_response({"error": "injected failure"}, status=status, headers=headers)
        op = body.get("op")
        command = body.get("command") or {}
        self.deliveries.append((str(op), str(body.get("id")), command.get("do")))
        ref_data = body.get("ref") or {}
        ref = CrmRef(str(ref_data.get("contact_id")), str(ref_data.get("lead_id")), ref_data.get("company_id"))
        if op == "identify":
            who = body["identity"]
            found = await self.crm.identify(ChannelIdentity(**who))
            return web.json_response({"contact_id": found.contact_id, "lead_id": found.lead_id,
                                      "company_id": found.company_id})
        if op == "snapshot":
            if ref.lead_id not in self.crm.leads:
                return web.json_response({"error": f"no lead {ref.lead_id}"}, status=404)
            return web.json_response(self.crm.snapshot_now(ref))
        if op == "execute":
            key = str(body["id"])
            if key not in self.applied:
                try:
                    self.applied[key] = {"value": self.crm.execute_now(ref, command).value}
                except CrmRejected as exc:
                    return web.json_response({"error": str(exc)}, status=422)
            return web.json_response(self.applied[key], dumps=lambda v: json.dumps(v, default=str))
        if op == "tasks":
            return web.json_response({"tasks": self.crm.lead_tasks(ref)})
        if op == "notes":
            return web.json_response({"notes": self.crm.lead_notes(ref)})
        return web.json_response({"error": f"unknown op {op!r}"}, status=400)
