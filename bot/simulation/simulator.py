"""A whole conversation in one process, on a virtual clock, with the embedded CRM.

``salesbot chat`` and ``salesbot test`` drive this; it uses the same ``Driver`` and
interpreter as the server, and answers requests with sandboxed stand-ins for the outside
world (no network): webhooks and widgets answer from configured fixtures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from crm_bridge import CRM_COMMANDS, ChannelIdentity, CommandResult, CrmRef, MemoryCrm

from ..automations import effects as afx
from ..automations.compiled import CompiledAutomations
from ..builder.compiled import CompiledFlow
from ..builder.normalize import normalize
from ..engine import effects as fx
from ..engine import events as ev
from ..engine.analytics import Counts, Visit, count_turn
from ..engine.flows import FlowLibrary
from ..engine.process import EMAIL_LIST, PROCESS_ANSWERED, PROCESS_CHANNEL, score_command
from ..engine.state import ConversationState
from ..errors import ConversationTestError, CrmRejected
from ..runtime.driver import Driver
from .leadsim import LEAD_TIMER_PREFIX, OUTCOMES, LeadRules, lead_of_timer
from .splitbook import SplitBook

CustomHandler = Callable[[dict[str, Any], Mapping[str, Any]], Any]
#: Events of the conversation's platform, not of the lead (they never reach the rule engine).
PLATFORM_EVENTS = frozenset({"video_opened", "video_closed", "takeover", "release", "stop", "start_bot",
                             "widget_callback", "delivery_failed"})
#: Lead events one input may cause at most: more is a loop the depth guard cannot see (a bot a
#: rule starts changing the lead, whose event starts the bot again …).
MAX_LEAD_EVENTS = 1000


@dataclass
class Line:
    """One line of the transcript: who said what (and what buttons it showed)."""

    role: str  # user | bot | internal | system
    text: str = ""
    buttons: list[str] = field(default_factory=list)
    payloads: list[str | None] = field(default_factory=list)  # one per button, in order
    kind: str = "message"
    attachments: list[dict[str, Any]] = field(default_factory=list)
    at: datetime | None = None
    ref: str | None = None

    def show(self) -> str:
        out = f"{self.role}: {self.text}"
        if self.buttons:
            out += " [" + " | ".join(self.buttons) + "]"
        if self.attachments:
            out += " (" + ", ".join(f"{a['kind']}: {a.get('name') or a['url']}" for a in self.attachments) + ")"
        return out


class Simulator:
    def __init__(
        self,
        flow: CompiledFlow,
        *,
        bots: Sequence[CompiledFlow] = (),
        channel: str = "livechat",
        now: datetime,
        contact: Mapping[str, Any] | None = None,
        lead: Mapping[str, Any] | None = None,
        pipelines: dict[str, list[str]] | None = None,
        webhooks: Mapping[str, Any] | None = None,
        widgets: Mapping[str, Any] | None = None,
        custom_handlers: Mapping[str, CustomHandler] | None = None,
        automations: CompiledAutomations | None = None,
        splits: SplitBook | None = None,
        crm: MemoryCrm | None = None,
    ) -> None:
        self.library = FlowLibrary()
        for b in bots:
            self.library.add(b)
        self.library.add(flow)
        self.flow = flow
        self.channel = channel
        self.now = now
        # A CRM shared by many simulators gives each its own contact (a split test over many contacts).
        self.crm = crm if crm is not None else MemoryCrm(pipelines=pipelines)
        contact = dict(contact or {})
        lead = dict(lead or {})
        unsubscribed = bool(contact.pop("unsubscribed", False))  # the contact's flag, not a custom field
        cid = self.crm.create_contact(**contact)
        if unsubscribed:
            self.crm.contacts[cid]["unsubscribed"] = True
        self.ref = CrmRef(cid, self.crm.create_lead(contact_id=cid, **lead))
        self.crm.identities[(channel, "sim", "customer")] = self.ref
        self.state = ConversationState(id="sim", channel=channel, account="sim")
        self.driver = Driver(self.library, self._answer)
        self.timers: dict[str, float] = {}
        self.transcript: list[Line] = []
        self.internal: list[dict[str, Any]] = []
        self.traces: list[fx.Trace] = []
        self.outbox: list[dict[str, Any]] = []  # outward actions: e-mails, webhooks, conversions
        self.webhooks = dict(webhooks or {})
        self.widgets = dict(widgets or {})
        self.custom = dict(custom_handlers or {})
        self.rotations: dict[tuple[str, str], int] = {}
        self.splits = splits if splits is not None else SplitBook()  # shared to test many contacts
        self.lists: dict[str, str] = {}  # the contact's lists (the ``lists`` action)
        #: The funnel counts the server would keep (docs/analytics.md), and the visit open now.
        self.analytics: Counts = {}
        self.visit: Visit | None = None
        self._seq = 0
        # Automations (docs/testing.md): the rule engine's side, and what rules started.
        self.rules = LeadRules(automations, self.crm) if automations is not None else None
        self.started: list[dict[str, Any]] = []
        self._draining = False
        self._depth = 0  # the depth of CRM changes the conversation makes now (a bot a rule started)
        self._messages = 0
        if self.rules is not None and automations is not None:
            self.rules.shell(self.ref.lead_id, afx.AutomationsChanged(automations.version))

    # ------------------------------------------------------------------ identity
    def identity(self) -> ChannelIdentity:
        return ChannelIdentity(self.channel, "sim", "customer")

    def snapshot(self) -> dict[str, Any]:
        return self.crm.snapshot_now(self.ref)

    # ------------------------------------------------------------------ inputs
    async def say(self, text: str = "", *, payload: str | None = None, kind: str = "text",
                  attachments: tuple[ev.Attachment, ...] = ()) -> list[Line]:
        self._seq += 1
        shown = text if payload is None else f"{text}"
        self.transcript.append(Line("user", shown, kind=kind, at=self.now,
                                    attachments=[{"kind": a.kind, "url": a.url, "name": a.name} for a in attachments]))
        start = len(self.transcript)
        await self._turn(ev.InboundMessage(text=text, payload=payload, kind=kind, attachments=attachments,
                                           message_id=f"sim-{self._seq}", greeting=self.flow.id))
        if self.rules is not None:
            self._messages += 1
            data = {"text": text, "channel": self.channel, "account": "sim"}
            lid, cid = self.ref.lead_id, self.ref.contact_id
            if self._messages == 1:
                self.rules.add("chat.first_message", lid, data, self.now, contact_id=cid, source="chat")
            self.rules.add("chat.message", lid, data, self.now, contact_id=cid, source="chat")
        await self._drain()
        return self._produced(start)

    def find_button(self, title: str) -> tuple[str, str]:
        """The text and payload of a button or list row on the newest bot message offering it."""
        want = normalize(title)
        for line in reversed(self.transcript):
            if line.role != "bot" or not line.buttons:
                continue
            for t, p in zip(line.buttons, line.payloads, strict=True):
                if normalize(t) == want:
                    if p is None:
                        raise LookupError(f'"{title}" is a link button; it cannot be clicked in a test')
                    return t, p
        raise LookupError(f'no button "{title}" on any message the bot sent')

    async def click(self, title: str) -> list[Line]:
        text, payload = self.find_button(title)
        return await self.say(text, payload=payload, kind="button")

    async def wait(self, seconds: float) -> list[Line]:
        """Move the virtual clock, firing every timer due on the way, in order."""
        end = self.now + timedelta(seconds=seconds)
        start = len(self.transcript)
        await self._drain()
        while True:
            due = [(at, tid) for tid, at in self.timers.items() if at <= end.timestamp()]
            if not due:
                break
            at, tid = min(due)
            del self.timers[tid]
            self.now = max(self.now, datetime.fromtimestamp(at, tz=self.now.tzinfo))
            if self.rules is not None and tid.startswith(LEAD_TIMER_PREFIX):
                self.rules.shell(lead_of_timer(tid), ev.TimerFired(tid))
                await self._drain()
            else:
                await self.feed(ev.TimerFired(tid))
        self.now = end
        return self._produced(start)

    async def event(self, type_: str, data: Mapping[str, Any]) -> list[Line]:
        """A business or platform event, named as in ``/event`` and test files."""
        data = dict(data)
        if self.rules is not None and type_ not in PLATFORM_EVENTS:
            return await self.lead_event(type_, data)
        if type_ in ("video_opened", "video_closed"):
            return await self.feed(ev.VideoEvent(type_))
        if type_ == "takeover":
            return await self.feed(ev.Takeover(str(data.get("user", "support"))))
        if type_ == "release":
            answer = data.get("answer") in (True, "1", "true", "yes")  # the bot answers a held message
            return await self.feed(ev.Release(data.get("step"), str(data.get("user", "support")), answer))
        if type_ == "stop":
            return await self.feed(ev.StopBot())
        if type_ == "start_bot":
            return await self.feed(ev.StartBot(str(data["bot"]), data.get("step")))
        if type_ == "widget_callback":
            wait = self.state.run.wait if self.state.run else None
            token = str(data.pop("token", None) or (wait.token if wait else ""))
            return await self.feed(ev.WidgetCallback(token, data.get("body", data)))
        if type_ == "delivery_failed":
            ref = data.get("ref") or next((x.ref for x in reversed(self.transcript) if x.role == "bot"), "")
            return await self.feed(ev.DeliveryFailed(str(ref), str(data.get("reason", "failed"))))
        if type_ in ("lead.tag_added", "lead.tag_removed", "lead.field_changed"):  # the change, as the CRM made it
            command = _change_command(type_, data)
            if command is not None:
                self._crm_write(self.ref, command, 0)
        if type_ == "lead.stage_changed" and "stage" in data:
            lead = self.crm.leads[self.ref.lead_id]
            pipeline, stage = str(data.get("pipeline") or lead["pipeline"]), str(data["stage"])
            try:  # a stage the test's pipelines do not have is refused, as the CRM would
                self.crm.check_stage(pipeline, stage)
            except CrmRejected as exc:
                raise ValueError(str(exc)) from exc
            lead["pipeline"], lead["stage"] = pipeline, stage
        return await self.feed(ev.CrmEvent(type_, data))

    async def lead_event(self, type_: str, data: dict[str, Any]) -> list[Line]:
        """An event about the test's lead, with automations. A change of the lead
        (``lead.stage_changed``, ``lead.responsible_changed``, ``lead.tag_added``/``removed``,
        ``lead.field_changed``) is made in the CRM, whose change event reaches the rules, as on the
        server; any other type reaches them as it is (``data``, or the other keys). The
        conversation hears it too, as without automations."""
        assert self.rules is not None
        start = len(self.transcript)
        command = _change_command(type_, data)
        if command is not None:
            self._crm_write(self.ref, command, 0)
        else:
            raw = data.get("data")
            payload = dict(raw) if isinstance(raw, Mapping) else {k: v for k, v in data.items() if k != "data"}
            self.rules.add(type_, self.ref.lead_id, payload, self.now, contact_id=self.ref.contact_id)
        await self._turn(ev.CrmEvent(type_, data))
        await self._drain()
        return self._produced(start)

    async def settle(self) -> list[Line]:
        """Handle the lead events still queued (at the start: the lead's first look at the rules)."""
        start = len(self.transcript)
        await self._drain()
        return self._produced(start)

    # ------------------------------------------------------------------ the loop
    async def feed(self, event: ev.Event) -> list[Line]:
        start = len(self.transcript)
        await self._turn(event)
        await self._drain()
        return self._produced(start)

    def _produced(self, start: int) -> list[Line]:
        return [line for line in self.transcript[start:] if line.role != "user"]

    async def _turn(self, event: ev.Event) -> None:
        run = self.state.run
        result = await self.driver.turn(self.state, event, self.now, self.snapshot())
        after = result.state.run
        self.visit = count_turn(self.analytics, self.visit, (run.bot, run.version) if run else None, result.steps,
                                after.status if after else None, self.now.timestamp())
        self.state = result.state
        for effect in result.effects:
            self._apply(effect)

    def _crm_write(self, ref: CrmRef, command: dict[str, Any], depth: int) -> CommandResult:
        """Run a CRM command; with automations, its changes become lead events at ``depth``."""
        if self.rules is None:
            return self.crm.execute_now(ref, command)
        before = self.rules.before()
        try:
            return self.crm.execute_now(ref, command)
        except CrmRejected as exc:
            raise ValueError(str(exc)) from exc
        finally:
            self.rules.changed(before, depth, self.now, ref)

    async def _drain(self) -> None:
        """Handle queued lead events until none is left (the effects may queue more)."""
        if self.rules is None or self._draining:
            return
        self._draining = True
        try:
            for _ in range(MAX_LEAD_EVENTS):
                item = self.rules.next(self.now)
                if item is None:
                    return
                lead_id, effects = item
                for effect in effects:
                    await self._apply_rule(lead_id, effect)
            raise ConversationTestError(f"more than {MAX_LEAD_EVENTS} lead events at once: rules loop")
        finally:
            self._draining = False

    async def _apply_rule(self, lead_id: str, effect: afx.Effect) -> None:
        """Carry out one effect of the rule engine, as the server's lead loop does."""
        assert self.rules is not None
        ref = self.ref if lead_id == self.ref.lead_id else self.rules.ref(lead_id)
        if isinstance(effect, afx.SetTimer):
            self.timers[effect.timer_id] = effect.at
        elif isinstance(effect, afx.CancelTimer):
            self.timers.pop(effect.timer_id, None)
        elif isinstance(effect, afx.RunActions):
            for action in effect.actions:
                if action["do"] == "score":  # a rule's score action: the contact's score, as on the server
                    action = score_command(action, self.crm.snapshot_now(ref))
                if action["do"] in CRM_COMMANDS:
                    try:
                        self._crm_write(ref, dict(action), effect.depth)
                    except ValueError as exc:
                        self.rules.note(lead_id, effect.rule, "failed", f"{action['do']}: {exc}", self.now)
                        self.transcript.append(Line("system", f"rule {effect.rule}: {exc}", at=self.now))
                else:
                    self.outbox.append({**action, "rule": effect.rule})
                    if action["do"] == "send_email":
                        self._email_sent(ref, action, effect.depth)
        elif isinstance(effect, afx.MoveStage):
            try:
                self._crm_write(ref, {"do": "change_stage", "stage": effect.stage,
                                      "pipeline": effect.pipeline or None}, effect.depth)
            except ValueError as exc:
                self.rules.note(lead_id, effect.trigger, "failed", f"change_stage: {exc}", self.now)
        elif isinstance(effect, afx.AddScore):
            contact = self.crm.contacts.get(ref.contact_id)
            once = (ref.contact_id, effect.once)
            if effect.once and once in self.rules.once:
                return  # another lead of the contact has decayed the score in this period
            if effect.once:
                self.rules.once.add(once)
            if contact is not None:  # a CRM write on the server: its lead.field_changed too
                before = self.rules.before()
                contact["score"] = max(0, int(contact.get("score") or 0) + effect.delta)
                self.rules.changed(before, effect.depth, self.now, ref)
        elif isinstance(effect, afx.StartBot):
            self.started.append({"rule": effect.rule, "bot": effect.bot, "lead": lead_id,
                                 "channels": list(effect.channels), "variables": dict(effect.variables)})
            if lead_id == self.ref.lead_id:  # the test's conversation; another lead has none here
                self._depth = effect.depth
                try:
                    await self._turn(ev.StartBot(effect.bot, None, dict(effect.variables)))
                finally:
                    self._depth = 0
        elif isinstance(effect, afx.StartProcess):
            self.started.append({"rule": effect.rule, "process": effect.process, "lead": lead_id,
                                 "variables": dict(effect.variables)})

    def _process_action(self, request_id: str, p: Mapping[str, Any]) -> ev.RequestResult | None:
        """The process actions as the server answers them, without the outside world: messages
        become bot lines (``send_sms``, ``send_message``), lists are kept in ``lists``; None for
        what the generic path records (``notify``, ``start_process``, ``send_email``)."""
        do = p["do"]
        if do == "send_email":
            record = self.crm.contacts.get(self.ref.contact_id) or {}
            if self.channel == PROCESS_CHANNEL and (self.lists.get(EMAIL_LIST) == "unsubscribed"
                                                    or record.get("unsubscribed")):
                return ev.RequestResult(request_id, ok=False, error="send_email: the contact unsubscribed from e-mail")
            return None
        if do == "lists":
            self.lists.update(dict.fromkeys(p.get("subscribe") or (), "subscribed"))
            self.lists.update(dict.fromkeys(p.get("unsubscribe") or (), "unsubscribed"))
            if EMAIL_LIST in (p.get("unsubscribe") or ()):
                contact = self.crm.contacts.get(self.ref.contact_id)
                if contact is not None:
                    contact["unsubscribed"] = True
            return ev.RequestResult(request_id, value={"lists": dict(self.lists)})
        if do in ("send_sms", "send_message"):
            self.outbox.append(dict(p))
            buttons = [str(b.get("title") or "") for b in p.get("buttons") or () if isinstance(b, Mapping)]
            text = str(p.get("text") or "") or f"[template {p.get('template')}]"
            self.transcript.append(Line("bot", text, buttons, [None] * len(buttons), do.removeprefix("send_"),
                                        at=self.now, ref=f"{request_id}"))
            return ev.RequestResult(request_id, value={"account": p.get("account")})
        if do == "start_process":
            self.started.append({"rule": None, "process": p.get("process"), "lead": self.ref.lead_id,
                                 "variables": dict(p.get("variables") or {})})
        return None

    def _email_sent(self, ref: CrmRef, action: Mapping[str, Any], depth: int) -> None:
        """``email.sent`` for each e-mail the server would send (to the contacts ``to`` names that
        have an address and are not unsubscribed), as its lead queue would get it; the subject of
        a named template is not rendered here (``null``)."""
        if self.rules is None:
            return
        if action.get("to") == "all_contacts":
            ids = list(self.crm.leads.get(ref.lead_id, {}).get("contacts") or [ref.contact_id])
        else:
            ids = [ref.contact_id]
        template = action.get("template")
        for contact_id in ids:
            contact = self.crm.contacts.get(str(contact_id)) or {}
            if not contact.get("email") or contact.get("unsubscribed"):
                continue
            subject = template.get("subject") if isinstance(template, Mapping) else None
            data = {"to": str(contact["email"]), "subject": None if subject is None else str(subject),
                    "template": template if isinstance(template, str) else None,
                    "message": f"sim-email-{len(self.outbox)}-{contact_id}"}  # the outbox entry's, per contact
            self.rules.add("email.sent", ref.lead_id, data, self.now, depth=depth, contact_id=str(contact_id),
                           source="email")

    def _apply(self, effect: fx.Effect) -> None:
        if isinstance(effect, fx.SendMessage):
            if effect.channels is not None and self.channel not in effect.channels:
                return
            if effect.list is not None:
                rows = [r for _, rows in effect.list.sections for r in rows]
                line = Line("bot", effect.text, [r.title for r in rows], [r.id for r in rows], "list")
            else:
                line = Line("bot", effect.text, [b.title for b in effect.buttons],
                            [b.payload for b in effect.buttons], effect.kind,
                            [{"kind": a.kind, "url": a.url, "name": a.name} for a in effect.attachments])
            if effect.template and not effect.text:
                line.text = f"[template {effect.template}]"
            line.at, line.ref = self.now, effect.ref
            self.transcript.append(line)
        elif isinstance(effect, fx.SetTimer):
            self.timers[effect.timer_id] = effect.at
        elif isinstance(effect, fx.CancelTimer):
            self.timers.pop(effect.timer_id, None)
        elif isinstance(effect, fx.InternalMessage):
            self.internal.append({"text": effect.text, "to": list(effect.to)})
            self.transcript.append(Line("internal", effect.text, at=self.now))
        elif isinstance(effect, fx.SplitCount):
            self.splits.count(effect)
        elif isinstance(effect, fx.Trace):
            self.traces.append(effect)
            if effect.level == "error":
                self.transcript.append(Line("system", f"{effect.event}: {effect.data.get('error', '')}", at=self.now))

    async def _answer(self, request: fx.Request, state: ConversationState,
                      snapshot: Mapping[str, Any]) -> ev.RequestResult:
        p = request.payload
        if request.kind == "action":
            do = p["do"]
            if do == "score":  # as the server does it: the contact's score through the CRM
                p, do = score_command(p, self.snapshot()), "set_field"
            elif do in PROCESS_ANSWERED or do == "send_email":
                answered = self._process_action(request.id, p)
                if answered is not None:
                    return answered
            if do in CRM_COMMANDS:
                try:
                    result = self._crm_write(self.ref, p, self._depth)
                except (CrmRejected, ValueError) as exc:
                    return ev.RequestResult(request.id, ok=False, error=str(exc), snapshot=self.snapshot())
                return ev.RequestResult(request.id, value=result.value, snapshot=self.snapshot())
            self.outbox.append(dict(p))
            if do == "send_email":
                self._email_sent(self.ref, p, 0)  # a flow's e-mail: depth 0, as on the server
            if do == "send_webhook":
                answer = self._fixture(self.webhooks, str(p.get("url", "")), {"ok": True})
                return ev.RequestResult(request.id, value=answer)
            if do == "create_form":
                return ev.RequestResult(request.id, value={"url": f"https://forms.invalid/f/{len(self.outbox)}"})
            if do == "order_link":  # as the server answers it, with a URL that names no real link
                n = len(self.outbox)
                return ev.RequestResult(request.id, value={"id": f"sim-{n}", "url": f"https://orders.invalid/order/{n}",
                                                           "expires_at": None})
            return ev.RequestResult(request.id, value={"ok": True})
        if request.kind == "round_robin":
            key = (str(p["bot"]), str(p["rotation"]))
            n = self.rotations.get(key, 0)
            self.rotations[key] = n + 1
            return ev.RequestResult(request.id, value=n % int(p["options"]))
        if request.kind == "split":
            return ev.RequestResult(request.id, value=self.splits.answer(p, self.now.timestamp()))
        if request.kind == "widget":
            response = self._fixture(self.widgets, str(p["widget"]), {})
            if isinstance(response, Mapping) and response.get("fail"):
                return ev.RequestResult(request.id, ok=False, error=str(response["fail"]))
            self._seq += 1
            return ev.RequestResult(request.id, value={"token": f"sim-widget-{self._seq}", "json": response})
        if request.kind == "custom":
            handler = self.custom.get(str(p["handler"]))
            if handler is None:
                return ev.RequestResult(request.id, ok=False, error=f"no custom handler named {p['handler']!r}")
            try:
                return ev.RequestResult(request.id, value=handler(dict(p.get("params") or {}), snapshot))
            except Exception as exc:  # a handler's bug becomes the step's failed branch
                return ev.RequestResult(request.id, ok=False, error=f"{type(exc).__name__}: {exc}")
        return ev.RequestResult(request.id, ok=False, error=f"unknown request {request.kind}")

    @staticmethod
    def _fixture(table: Mapping[str, Any], key: str, default: Any) -> Any:
        if key in table:
            return table[key]
        for pattern, value in table.items():
            if pattern.endswith("*") and key.startswith(pattern[:-1]):
                return value
        return default

    # ------------------------------------------------------------------ reading
    def context(self) -> dict[str, Any]:
        """What ``expect`` and ``/state`` read: the template context plus run, tasks, notes."""
        snap = self.snapshot()
        run = self.state.run
        return {
            **snap,
            "vars": dict(run.vars) if run else {},
            "json": run.json if run else None,
            "last_validation_result": run.last_validation_result if run else None,
            "message": self.state.last_message or {},
            "run": {"bot": run.bot, "step": run.step, "status": run.status, "error": run.error,
                    "waiting_for": run.wait.kind if run.wait else None,
                    "splits": {step: path for _, step, path, _, _ in run.splits}, "goals": list(run.goals)}
            if run else {"status": None},
            "splits": self.splits.view(),
            "chat": {"status": self.state.chat_status, "channel": self.channel, "owner": self.state.owner},
            "tasks": self.crm.lead_tasks(self.ref),
            "leads": [dict(lead) for lead in self.crm.leads.values()],
            "notes": self.crm.lead_notes(self.ref),
            "internal": list(self.internal),
            "outbox": list(self.outbox),
            "emails": [x for x in self.outbox if x.get("do") == "send_email"],
            "webhooks": [x for x in self.outbox if x.get("do") == "send_webhook"],
            "timers": sorted(self.timers.values()),
            "rules": self.rules.view() if self.rules is not None else {**{o: [] for o in OUTCOMES}, "history": []},
            "started": list(self.started),
            "lists": dict(self.lists),
            "notifications": [x for x in self.outbox if x.get("do") == "notify"],
        }


def _change_command(type_: str, data: Mapping[str, Any]) -> dict[str, Any] | None:
    """The CRM command making the change a lead event of a test reports (None: not a change)."""
    to: Any = data.get("to", data.get("stage") if type_ == "lead.stage_changed" else None)
    if type_ == "lead.stage_changed":
        where: Mapping[str, Any] = to if isinstance(to, Mapping) else {"stage": to, "pipeline": data.get("pipeline")}
        if not where.get("stage"):
            raise ValueError("lead.stage_changed takes to: STAGE (or {pipeline, stage})")
        return {"do": "change_stage", "stage": str(where["stage"]), "pipeline": where.get("pipeline")}
    if type_ == "lead.responsible_changed":
        if to is None:
            raise ValueError("lead.responsible_changed takes to: USER")
        return {"do": "change_responsible", "user": str(to), "entities": ["lead"]}
    if type_ in ("lead.tag_added", "lead.tag_removed"):
        if not data.get("tag"):
            raise ValueError(f"{type_} takes tag: TAG")
        return {"do": "tags", ("add" if type_ == "lead.tag_added" else "remove"): [str(data["tag"])]}
    if type_ == "lead.field_changed":
        name = str(data.get("field") or "")
        if not name or "to" not in data:
            raise ValueError("lead.field_changed takes field: NAME and to: VALUE")
        name = name.removeprefix("lead.").removeprefix("fields.")
        return {"do": "set_field", "entity": "lead", "field": name, "value": data["to"]}
    return None
