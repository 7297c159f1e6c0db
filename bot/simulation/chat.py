"""``salesbot chat``: a terminal conversation with a flow on a virtual clock."""

from __future__ import annotations

import json
import shlex
from datetime import datetime
from typing import Any, TextIO

from ..builder.compiled import CompiledFlow
from ..builder.durations import DurationError, parse_duration
from .simulator import Line, Simulator

HELP = """Type a message and press Enter. Commands:
  /click TITLE      click a button or list row
  /wait 2h          move the clock on, firing due timers
  /event TYPE k=v…  a CRM or platform event (lead.stage_changed stage=Won, video_opened, takeover, release step=menu)
  /state            the run, variables, lead and contact
  /quit             leave
"""


class ChatSession:
    def __init__(self, flow: CompiledFlow, *, bots: list[CompiledFlow], channel: str, now: datetime,
                 out: TextIO) -> None:
        self.sim = Simulator(flow, bots=bots, channel=channel, now=now, contact={"name": "You"})
        self.out = out

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
        text = raw.rstrip("\n")
        if not text.startswith("/"):
            self._print(await self.sim.say(text))
            return True
        cmd, _, rest = text.partition(" ")
        rest = rest.strip()
        try:
            if cmd == "/quit":
                return False
            if cmd == "/help":
                self.out.write(HELP)
            elif cmd == "/click":
                self._print(await self.sim.click(rest))
            elif cmd == "/wait":
                self._print(await self.sim.wait(parse_duration(rest)))
                self.out.write(f"        (clock: {self.sim.now.isoformat()})\n")
            elif cmd == "/event":
                parts = shlex.split(rest)
                if not parts:
                    self.out.write("usage: /event TYPE key=value …\n")
                    return True
                data: dict[str, Any] = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
                self._print(await self.sim.event(parts[0], data))
            elif cmd == "/state":
                ctx = self.sim.context()
                view = {k: ctx[k] for k in ("run", "vars", "chat", "lead", "contact", "tasks", "notes")}
                self.out.write(json.dumps(view, ensure_ascii=False, indent=2, default=str) + "\n")
            else:
                self.out.write(f"unknown command {cmd}; /help lists them\n")
        except (LookupError, DurationError, ValueError) as exc:
            self.out.write(f"! {exc}\n")
        return True

    async def repl(self, inp: TextIO) -> int:
        self.out.write(f"Chatting with {self.sim.flow.name} (clock {self.sim.now.isoformat()}). /help for commands.\n")
        while True:
            self.out.write("> ")
            self.out.flush()
            line = inp.readline()
            if not line:
                return 0
            if not await self.handle(line):
                return 0
