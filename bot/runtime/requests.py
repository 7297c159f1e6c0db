"""How the server answers the interpreter's requests: CRM commands, round robin, widgets, custom.

The CRM reference of the conversation comes from the conversation's metadata; a CRM command's
result carries a fresh snapshot so the following steps see what the command changed.
"""

from __future__ import annotations

import inspect
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from crm_bridge import CRM_COMMANDS, CrmBackend
from crm_bridge.outbox import CrmOutbox

from ..engine import events as ev
from ..engine.process import PROCESS_ANSWERED, PROCESS_CHANNEL, score_command
from ..engine.state import ConversationState
from ..errors import ActionFailed, CrmRejected, CrmTemporary, OrderLinkRejected, SalesbotError
from ..outward.actions import crm_ref_of
from ..store.splits import SplitStore
from .orderlinks import OrderLinks
from .process_actions import ProcessActions

if TYPE_CHECKING:
    from ..engine import effects as fx

log = logging.getLogger("salesbot.runtime.requests")
#: How long a widget's continuation token (``POST /api/continue/{token}``) stays usable.
WIDGET_TOKEN_TTL = 400 * 86400

CustomHandler = Callable[[dict[str, Any], Mapping[str, Any]], Any | Awaitable[Any]]
WidgetCaller = Callable[[str, dict[str, Any], str | None], Awaitable[Any]]


class ServerRequests:
    def __init__(
        self,
        *,
        redis: Redis,
        crm: CrmBackend,
        custom_handlers: Mapping[str, CustomHandler] | None = None,
        widgets: Mapping[str, WidgetCaller] | None = None,
        public_url: str = "http://127.0.0.1:8080",
        outward: Callable[[dict[str, Any], ConversationState], Awaitable[Any]] | None = None,
        crm_outbox: CrmOutbox | None = None,
    ) -> None:
        self.redis = redis
        self.crm = crm
        self.custom = dict(custom_handlers or {})
        self.widgets = dict(widgets or {})
        self.public_url = public_url.rstrip("/")
        self.outward = outward
        self.crm_outbox = crm_outbox  # temporary CRM failures queue there, never block the conversation
        #: The process actions (``bot.runtime.process_actions``); set by the services once built.
        self.processes: ProcessActions | None = None
        #: Quick-order links (the ``order_link`` action); set by the services.
        self.order_links: OrderLinks | None = None

    async def __call__(self, request: fx.Request, state: ConversationState,
                       snapshot: Mapping[str, Any]) -> ev.RequestResult:
        try:
            handler = getattr(self, f"_{request.kind}")
        except AttributeError:
            return ev.RequestResult(request.id, ok=False, error=f"unknown request kind {request.kind!r}")
        result: ev.RequestResult = await handler(request, state, snapshot)
        return result

    async def _action(self, request: fx.Request, state: ConversationState,
                      snapshot: Mapping[str, Any]) -> ev.RequestResult:
        command = dict(request.payload)
        do = command["do"]
        if do == "score":  # the contact's score: a CRM write like any other
            command = score_command(command, snapshot)
            do = "set_field"
        elif do == "order_link":
            return await self._order_link(request, command, state)
        elif do in PROCESS_ANSWERED or (do == "send_email" and state.channel == PROCESS_CHANNEL):
            answered = await self._process_action(request, command, state, snapshot)
            if answered is not None:
                return answered
        if do in CRM_COMMANDS:
            ref = crm_ref_of(state)
            if ref is None:
                return ev.RequestResult(request.id, ok=False, error="this conversation has no CRM lead")
            try:
                if self.crm_outbox is not None:
                    result = await self.crm_outbox.submit(ref, command, cid=state.id)
                    if result is None:  # queued behind the lead's waiting commands or for a retry: go on
                        return ev.RequestResult(request.id, value=None)
                else:
                    result = await self.crm.execute(ref, command)
            except CrmRejected as exc:
                return ev.RequestResult(request.id, ok=False, error=str(exc), permanent=True)
            except CrmTemporary as exc:
                log.warning("crm.temporary_failure", extra={"do": do, "error": str(exc)})
                return ev.RequestResult(request.id, ok=False, error=str(exc), permanent=False)
            return ev.RequestResult(request.id, value=result.value, snapshot=result.extra.get("snapshot"))
        if self.outward is None:
            return ev.RequestResult(request.id, ok=False, error=f"{do} is not configured on this server")
        try:
            value = await self.outward(command, state)
        except (CrmRejected, ActionFailed) as exc:  # outward actions are not retried: `failed` branch
            log.warning("action.failed", extra={"do": do, "error": str(exc)})
            return ev.RequestResult(request.id, ok=False, error=str(exc))
        return ev.RequestResult(request.id, value=value)

    async def _order_link(self, request: fx.Request, command: dict[str, Any],
                          state: ConversationState) -> ev.RequestResult:
        """A quick-order link for the conversation's contact (``vars.order_url``); a failure is the
        step's ``failed`` branch, never retried."""
        ref = crm_ref_of(state)
        if self.order_links is None or ref is None:
            error = "order_link is not configured on this server" if ref is not None \
                else "order_link: this conversation has no CRM contact"
            return ev.RequestResult(request.id, ok=False, error=error)
        expires = command.get("expires")
        try:
            value = await self.order_links.create(ref.contact_id, source="flow",
                                                  expires=expires if isinstance(expires, int) else None,
                                                  by=state.run.bot if state.run else None)
        except OrderLinkRejected as exc:
            log.warning("action.failed", extra={"do": "order_link", "error": str(exc)})
            return ev.RequestResult(request.id, ok=False, error=f"order_link: {exc}")
        return ev.RequestResult(request.id, value=value)

    async def _process_action(self, request: fx.Request, command: dict[str, Any], state: ConversationState,
                              snapshot: Mapping[str, Any]) -> ev.RequestResult | None:
        """A process action's result; None for a process's ``send_email`` to a contact that did not
        unsubscribe from e-mail (it goes on as any ``send_email``)."""
        processes = self.processes
        do = command["do"]
        if processes is None:
            return ev.RequestResult(request.id, ok=False, error=f"{do} is not configured on this server")
        try:
            if do == "send_email":
                if not await processes.unsubscribed(state, snapshot):
                    return None
                raise ActionFailed("send_email: the contact unsubscribed from e-mail")
            value = await processes(request.id, command, state)
        except (CrmRejected, ActionFailed, SalesbotError) as exc:  # not retried: the `failed` branch
            log.warning("action.failed", extra={"do": do, "error": str(exc)})
            return ev.RequestResult(request.id, ok=False, error=str(exc))
        return ev.RequestResult(request.id, value=value)

    async def _round_robin(self, request: fx.Request, state: ConversationState,
                           snapshot: Mapping[str, Any]) -> ev.RequestResult:
        p = request.payload
        n = int(await self.redis.incr(f"sb:rr:{{{p['bot']}}}:{p['rotation']}"))
        return ev.RequestResult(request.id, value=(n - 1) % int(p["options"]))

    async def _split(self, request: fx.Request, state: ConversationState,
                     snapshot: Mapping[str, Any]) -> ev.RequestResult:
        """A split step's path: the winner's once there is one, else the contact's own (docs/flows.md)."""
        return ev.RequestResult(request.id, value=await SplitStore(self.redis).answer(request.payload, time.time()))

    async def _widget(self, request: fx.Request, state: ConversationState,
                      snapshot: Mapping[str, Any]) -> ev.RequestResult:
        p = request.payload
        name = str(p["widget"])
        caller = self.widgets.get(name)
        if caller is None:
            return ev.RequestResult(request.id, ok=False, error=f"no widget named {name!r}")
        token = secrets.token_urlsafe(24) if p.get("wait") else None
        if token:
            await self.redis.set(f"sb:widget:{token}", state.id, ex=WIDGET_TOKEN_TTL)
        return_url = f"{self.public_url}/api/continue/{token}" if token else None
        try:
            body = await caller(name, dict(p.get("params") or {}), return_url)
        except Exception as exc:  # the widget's failure is the step's failed branch
            return ev.RequestResult(request.id, ok=False, error=f"{type(exc).__name__}: {exc}")
        return ev.RequestResult(request.id, value={"token": token, "json": body})

    async def _custom(self, request: fx.Request, state: ConversationState,
                      snapshot: Mapping[str, Any]) -> ev.RequestResult:
        name = str(request.payload["handler"])
        handler = self.custom.get(name)
        if handler is None:
            return ev.RequestResult(request.id, ok=False, error=f"no custom handler named {name!r}")
        try:
            value = handler(dict(request.payload.get("params") or {}), snapshot)
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            return ev.RequestResult(request.id, ok=False, error=f"{type(exc).__name__}: {exc}")
        return ev.RequestResult(request.id, value=value)
