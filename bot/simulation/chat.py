"""``salesbot chat``: a terminal conversation with a flow on a virtual clock.

With ``--automations`` the simulator also runs an automation document on the chat's lead (the
code path of conversation tests with ``automations:``); after every input the session prints
what the rules did — one line per record (rule, outcome, detail) — and what they started.
"""

from __future__ import annotations

import json
import shlex
from datetime import datetime
from typing import Any, TextIO

from ..automations.compiled import CompiledAutomations
from ..automations.events import is_known_type
from ..builder.compiled import CompiledFlow
from ..builder.durations import DurationError, parse_duration
from ..errors import ConversationTestError
from .simulator import PLATFORM_EVENTS, Line, Simulator

HELP = """Type a message and press Enter. Commands:
  /click TITLE      click a button or list row
  /wait 2h          move the clock on, firing due timers
  /event TYPE k=v…  a CRM or platform event (lead.stage_changed stage=Won, video_opened, takeover, release step=menu)
  /event TYPE {…}   the same with JSON data: /event order.paid {"amount": 5}
  /event {…}        the event as JSON: /event {"type": "lead.stage_changed", "to": "Proposal"}
  /state            the run, variables, lead and contact
  /rules            what the rules did so far and the lead's pending timers (with --automations)
  /quit             leave
"""


class ChatSession:
    def __init__(self, flow: CompiledFlow, *, bots: list[CompiledFlow], channel: str, now: datetime,
                 out: TextIO, automations: CompiledAutomations | None = None,
                 pipelines: dict[str, list[str]] | None = None, lead: dict[str, Any] | None = None) -> None:
        self.sim = Simulator(flow, bots=bots, channel=channel, now=now, contact={"name": "You"},
                             automations=automations, pipelines=pipelines, lead=lead)
        self.out = out
        self._seen = (0, 0)  # rule records and starts already printed
        self._lead = self._lead_view()

    def _lead_view(self) -> dict[str, Any]:
        snap = self.sim.snapshot()
        return {"stage": snap["lead"].get("stage"), "tags": list(snap["lead"].get("tags") or ()),
                "score": snap["contact"].get("score") or 0}

    def _print_rules(self) -> None:
        """What the rules did since the last call: their records, what they started, and how the
        lead's stage, tags and the contact's score changed."""
        rules = self.sim.rules
        if rules is None:
            return
        before, after = self._lead, self._lead_view()
        self._lead = after
        mine = self.sim.ref.lead_id
        records, starts = self._seen
        for h in rules.history[records:]:
            where = "" if h["lead"] == mine else f" (lead {h['lead']})"
            detail = f": {h['detail']}" if h["detail"] else ""
            self.out.write(f"        rule {h['rule']}{where} {h['outcome']}{detail}\n")
        for s in self.sim.started[starts:]:
            what = f"bot {s['bot']}" if "bot" in s else f"process {s['process']}"
            where = "" if s["lead"] == mine else f" for lead {s['lead']}"
            self.out.write(f"        rule {s['rule']} started {what}{where}\n")
        self._seen = (len(rules.history), len(self.sim.started))
        changed = [f"stage {after['stage']}"] if after["stage"] != before["stage"] else []
        changed += [f"tag +{t}" for t in after["tags"] if t not in before["tags"]]
        changed += [f"tag -{t}" for t in before["tags"] if t not in after["tags"]]
        changed += [f"score {after['score']}"] if after["score"] != before["score"] else []
        if changed:
            self.out.write(f"        (lead {self.sim.ref.lead_id}: {', '.join(changed)})\n")

    def _print(self, lines: list[Line]) -> None:
        for line in lines:
            stamp = line.at.strftime("%a %H:%M") if line.at else ""
            prefix = {"bot": "bot", "internal": "internal", "system": "!"}.get(line.role, line.role)
            self.out.write(f"[{stamp}] {prefix}: {line.text}\n")
            numbered = [t for t, p in zip(line.buttons, line.payloads, strict=True) if p is not None]
            for i, title in enumerate(numbered, 1):
                self.out.write(f"        {i}. {title}\n")
            for title, payload in zip(line.buttons, line.payloads, strict=True):
                if payload is None:
                    self.out.write(f"        (link) {title}\n")
            for a in line.attachments:
                self.out.write(f"        [{a['kind']}] {a.get('name') or a['url']}\n")

    async def handle(self, raw: str) -> bool:
        """Handle one input line; False to quit."""
        try:
            return await self._handle(raw.rstrip("\n"))
        finally:
            self._print_rules()

    async def _handle(self, text: str) -> bool:
        cmd, _, rest = text.partition(" ") if text.startswith("/") else ("", "", "")
        rest = rest.strip()
        try:
            if not cmd:
                self._print(await self.sim.say(text))  # a customer message (rules may loop: caught below)
            elif cmd == "/quit":
                return False
            elif cmd == "/help":
                self.out.write(HELP)
            elif cmd == "/click":
                self._print(await self.sim.click(rest))
            elif cmd == "/wait":
                self._print(await self.sim.wait(parse_duration(rest)))
                self.out.write(f"        (clock: {self.sim.now.isoformat()})\n")
            elif cmd == "/event":
                parsed = _event(rest)
                if parsed is None:
                    self.out.write("usage: /event TYPE key=value …, /event TYPE {JSON}, /event {\"type\": …}\n")
                    return True
                if self.sim.rules is not None and not (parsed[0] in PLATFORM_EVENTS or is_known_type(parsed[0])):
                    self.out.write(f"! {parsed[0]} is not an event type (docs/automations.md, custom.* for yours)\n")
                    return True
                self._print(await self.sim.event(*parsed))
            elif cmd == "/state":
                ctx = self.sim.context()
                view = {k: ctx[k] for k in ("run", "vars", "chat", "lead", "contact", "tasks", "notes")}
                self.out.write(json.dumps(view, ensure_ascii=False, indent=2, default=str) + "\n")
            elif cmd == "/rules":
                self._show_rules()
            else:
                self.out.write(f"unknown command {cmd}; /help lists them\n")
        except (LookupError, DurationError, ValueError, ConversationTestError) as exc:
            self.out.write(f"! {exc}\n")
        return True

    def _show_rules(self) -> None:
        rules = self.sim.rules
        if rules is None:
            self.out.write("no automations: start with --automations FILE\n")
            return
        for h in rules.history:
            detail = f": {h['detail']}" if h["detail"] else ""
            self.out.write(f"[{h['at']}] lead {h['lead']}: rule {h['rule']} {h['outcome']}{detail}\n")
        state = rules.states.get(self.sim.ref.lead_id)
        for timer_id, pending in sorted((state.pending if state else {}).items(), key=lambda kv: kv[1].at):
            at = datetime.fromtimestamp(pending.at, self.sim.now.tzinfo).isoformat()
            what = pending.kind if pending.kind in ("idle", "decay") else f"{pending.kind} of {pending.rule}"
            self.out.write(f"        timer {timer_id}: {what} at {at}\n")

    async def repl(self, inp: TextIO) -> int:
        self.out.write(f"Chatting with {self.sim.flow.name} (clock {self.sim.now.isoformat()}). /help for commands.\n")
        if self.sim.rules is not None:
            a, lead = self.sim.rules.automations, self.sim.snapshot()["lead"]
            self.out.write(f"Automations {a.id} on pipeline {a.pipeline}; "
                           f"your lead {lead['id']} is in {lead['stage']}.\n")
            self._print(await self.sim.settle())  # the lead's first look at the rules
            self._print_rules()
        while True:
            self.out.write("> ")
            self.out.flush()
            line = inp.readline()
            if not line:
                return 0
            if not await self.handle(line):
                return 0


def _event(rest: str) -> tuple[str, dict[str, Any]] | None:
    """``/event``'s argument: ``{"type": …, …}``, ``TYPE {JSON}`` or ``TYPE key=value …`` (values
    are text); None when there is no type. Bad JSON raises ``ValueError``."""
    if rest.startswith(("{", "[")):
        doc = json.loads(rest)
        if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
            raise ValueError('/event {…} takes a JSON object with "type"')
        return doc.pop("type"), doc
    type_, _, tail = rest.partition(" ")
    if not type_:
        return None
    tail = tail.strip()
    if tail.startswith(("{", "[")):
        data = json.loads(tail)
        if not isinstance(data, dict):
            raise ValueError(f"/event {type_} takes a JSON object after the type")
        return type_, data
    return type_, dict(p.split("=", 1) for p in shlex.split(tail) if "=" in p)
