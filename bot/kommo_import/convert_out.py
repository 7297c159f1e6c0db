"""salesbot.flow/1 → Kommo's Salesbot language (``salesbot flows export --to kommo``).

Only flows that say nothing Kommo cannot say are exported: every other use is listed with its
pointer ("Kommo has no …") in one ``KommoExportRefused``, so an operator fixes them all in one
pass. There is no approximation on the way out: a bot that behaves differently in Kommo is worse
than no bot.

Layout: the inverse of convert_in.py. Kommo runs a step's ``question`` handlers, waits for the
reply when the step has an ``answer``, runs ``finish`` and ends when it has one, else falls through
to the next step. Steps of ours named ``q<n>``, ``a<n>``, ``f<n>`` (an imported flow's) become those
sections of Kommo step ``n``; the start and any step reached from several places get a Kommo step
of their own; every other step is written inline, as a handler where the jump to it was, so
``import → export → import`` gives the flow back. A jump that Kommo would make anyway (the fall
through, the wait before ``answer``) is left out; every other one is an explicit ``goto`` or
``wait_answer``. Names become Kommo ids through the map (``mapping.KommoMap``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from bot.builder import models as m
from bot.errors import Problem

from . import steps_out
from .actions_out import action
from .build import unwrap_original
from .errors import KommoExportRefused
from .mapping import EMPTY, KommoMap, Table
from .placeholders import FieldNames, to_kommo
from .result import KommoImportError, map_texts, pointer_join

Handler = dict[str, Any]
#: Where the bot goes: (step id of ours or None for the end, after waiting for a reply?).
Next = tuple[str | None, bool]
#: A continuation no step of ours is: the jump after it is always written.
NOTHING: Next = ("\0", False)
MAX_BYTES = 64 * 1024  # Kommo's limit on a bot's code
_SECTION = re.compile(r"^([qaf])([0-9]{1,6})$")
KINDS = {"q": "question", "a": "answer", "f": "finish"}
ERROR_CHAIN = "on_error"  # convert_in's name for the root ``error`` handlers
MENU = "\0menu"  # an answer section written for a menu of ours (the reply routed by ``buttons``)


def export(flow: Any, kommo_map: KommoMap = EMPTY) -> list[dict[str, list[Handler]]] | dict[str, Any]:
    """The Kommo Salesbot code of a valid flow document (the array form when its step numbers have
    no gaps); ``KommoExportRefused`` lists every problem."""
    try:
        model = m.Flow.model_validate(flow)
    except ValidationError:
        raise KommoImportError("", "not a valid flow: run salesbot flows validate") from None
    forced: list[str] = []
    for _ in range(len(model.steps) + 1):  # each pass may find a step that needs a Kommo step of its own
        exporter = _Exporter(model, kommo_map, forced)
        exporter.kept = _kept(flow)
        doc = exporter.run()
        if exporter.more_heads == []:
            break
        forced += exporter.more_heads
    if exporter.problems:
        raise KommoExportRefused.of(exporter.problems)
    size = len(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_BYTES:
        raise KommoExportRefused("", f"Kommo takes at most 64 KB of bot code; this bot is {size // 1024} KB")
    return doc


def _kept(flow: Any) -> dict[str, Any]:
    """The ``x-kommo`` of each step that has one: a preset import rebuilt from steps (presets_in.py)."""
    steps = flow.get("steps") if isinstance(flow, dict) else None
    return {sid: s["x-kommo"] for sid, s in (steps or {}).items()
            if isinstance(s, dict) and isinstance(s.get("x-kommo"), dict)
            and isinstance(s["x-kommo"].get("handler"), dict)}


def _goto(number: int, kind: str) -> Handler:
    return {"handler": "goto", "params": {"type": kind, "step": number}}


class _Exporter:
    def __init__(self, flow: m.Flow, kommo_map: KommoMap, forced: list[str]) -> None:
        self.flow = flow
        self.map = kommo_map
        self.fields = FieldNames(dict(kommo_map.fields))
        self.problems: list[Problem] = []
        self.more_heads: list[str] = []
        self.emitted: set[str] = set()
        self.kept: dict[str, Any] = {}  # step id → x-kommo of an imported preset (see _kept)
        self.heads: dict[str, tuple[int, str]] = {}
        self.sections: dict[int, dict[str, str]] = {}
        self.root_error = self._root_error()
        numbered = {sid: (int(g[2]), KINDS[g[1]]) for sid in flow.steps if (g := _SECTION.match(sid))}
        start = numbered.get(flow.start)
        if start is not None and start[1] == "question" and start[0] == min(n for n, _ in numbered.values()):
            for sid, (n, kind) in numbered.items():  # an imported flow: its numbering is kept
                self._head(sid, n, kind)
        else:
            self._head(flow.start, 0, self._kind(flow.start))
        for sid in forced:
            if sid not in self.heads:
                self._head(sid, max(self.sections) + 1, self._kind(sid))

    # ------------------------------------------------------------------ values (the Exporter protocol)
    def refuse(self, pointer: str, message: str) -> None:
        self.problems.append(Problem(pointer, message))

    def text(self, template: str, pointer: str) -> str:
        """A template as Kommo text (placeholders only); problems recorded at ``pointer``."""
        rewritten = to_kommo(template, self.fields)
        for problem in rewritten.problems:
            self.refuse(pointer, problem)
        return rewritten.text

    def value(self, value: Any, pointer: str) -> Any:
        return map_texts(value, pointer, self.text)

    def kommo_id(self, table: Table, value: object, pointer: str, what: str, *,
                 computed: bool = False) -> int | str | None:
        """A Kommo id of a name (through the map) or of a number; a problem when there is none.
        With ``computed`` a template is Kommo text (``{{lead.cf.1}}``), else refused."""
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        name = str(value).strip()
        if name.isdigit():
            return int(name)
        if "{{" in name or "{%" in name:
            if computed:
                return self.text(name, pointer)
            self.refuse(pointer, f"Kommo has no computed {what}: name one (a template cannot be exported)")
            return None
        found = self.map.kommo_ids(table, name)
        if len(found) == 1:
            return found[0]
        if found:
            ids = ", ".join(map(str, found))
            self.refuse(pointer, f'Kommo has several {what}s mapped to "{name}" ({ids}): keep one in [{table}]')
        else:
            self.refuse(pointer, f'Kommo has no {what} named "{name}": add its id to [{table}] in the map')
        return None

    # ------------------------------------------------------------------ layout
    def _kind(self, sid: str) -> str:
        """Stops end a Kommo bot in ``finish``; everything else starts in ``question``."""
        return "finish" if isinstance(self.flow.steps[sid], (m.StopStep, m.StartBotStep)) else "question"

    def _menu(self, step: m.Step) -> bool:
        """A message whose buttons lead to different steps: Kommo routes the reply in an ``answer``."""
        if not isinstance(step, m.MessageStep):
            return False
        targets = {b.next for b in step.buttons if b.next is not None}
        return bool(targets) and (len(targets) > 1 or targets != {step.other_answer})

    def _head(self, sid: str, n: int, kind: str) -> None:
        self.heads[sid] = (n, kind)
        section = self.sections.setdefault(n, {})
        section[kind] = sid
        if kind == "question" and self._menu(self.flow.steps[sid]):
            if "answer" in section:
                self.refuse(pointer_join("/steps", sid), f"Kommo step {n} already has an answer: rename this "
                            "menu or the step a{n}")
            section["answer"] = MENU

    def _root_error(self) -> bool:
        """convert_in sends every undelivered message to the root ``error`` handlers (step on_error)."""
        failed = {s.failed for s in self.flow.steps.values() if isinstance(s, m.MessageStep) and s.failed}
        return failed == {ERROR_CHAIN}

    def natural(self, n: int, kind: str) -> Next:
        """Where Kommo goes after section ``kind`` of step ``n`` without being told."""
        section = self.sections[n]
        if kind == "question" and "answer" in section:
            return (section["answer"], True)
        if kind != "finish" and "finish" in section:
            return (section["finish"], False)
        following = next((k for k in sorted(self.sections) if k > n), None)
        if kind == "finish" or following is None:
            return (None, False)
        return (self.sections[following]["question"], False) if "question" in self.sections[following] else NOTHING

    def address(self, sid: str) -> tuple[int, str]:
        """The Kommo step and section of a step of ours; a step without one gets one in the next pass."""
        if sid in self.heads:
            return self.heads[sid]
        if sid not in self.more_heads:
            self.more_heads.append(sid)
        return (0, "question")

    # ------------------------------------------------------------------ the document
    def run(self) -> list[dict[str, list[Handler]]] | dict[str, Any]:
        f = self.flow
        if f.settings.working_hours:
            self.refuse("/settings/working_hours", "Kommo has no working hours in a bot's code "
                        "(set the trigger's Active hours in Kommo instead)")
        if f.settings.leave_unanswered:
            self.refuse("/settings/leave_unanswered", "Kommo has no way to leave the chat unanswered from a bot")
        if f.variables:
            self.refuse("/variables", "Kommo has no bot variables")
        if f.goals:
            self.refuse("/goals", "Kommo has no goals")
        error = self.jump(ERROR_CHAIN, False, (None, False))[0] if self.root_error else None
        steps: dict[int, dict[str, list[Handler]]] = {}
        for n in sorted(self.sections):
            out: dict[str, list[Handler]] = {}
            for kind in ("question", "answer", "finish"):
                sid = self.sections[n].get(kind)
                if sid == MENU:
                    out[kind] = self.menu_answer(self.sections[n]["question"], n)
                elif sid is not None:
                    out[kind] = self.handlers(sid, self.natural(n, kind))
            steps[n] = out
        # Steps no jump reaches get a Kommo step of their own: nothing of the flow is lost unsaid.
        self.more_heads += [sid for sid in self.flow.steps if sid not in self.emitted and sid not in self.more_heads]
        if error is None and list(steps) == list(range(len(steps))):
            return list(steps.values())
        doc: dict[str, Any] = {str(n): s for n, s in steps.items()}
        if error is not None:
            doc["error"] = error
        return doc

    def jump(self, target: str | None, wait: bool, nat: Next) -> tuple[list[Handler], Next]:
        """The handlers that go on to ``target`` (after a reply with ``wait``) where Kommo would go on
        to ``nat``, and where convert_in will see them go: inline steps where possible."""
        if (target, wait) == nat:
            return [], nat
        if target is None:
            return [{"handler": "stop", "params": {}}], NOTHING
        step = self.flow.steps[target]
        if wait:
            n, kind = self.address(target)
            return [{"handler": "wait_answer", "params": {"type": kind, "step": n}}], (target, True)
        if target not in self.heads:
            if isinstance(step, m.PauseStep) and [e.on for e in step.until] == ["message"] \
                    and (step.until[0].next or step.next) is not None:  # a wait: no step of its own
                self.emitted.add(target)
                return self.jump(step.until[0].next or step.next, True, nat)
            if isinstance(step, m.StopStep) and not step.close_chat:  # the end: no step of its own
                self.emitted.add(target)
                return self.jump(None, False, nat)
            inline = not (self._menu(step) or target in self.emitted
                          or (isinstance(step, m.StopStep) and nat != (None, False)))
            if inline:
                return self.handlers(target, nat), (target, False)
        n, kind = self.address(target)
        return [_goto(n, kind)], (target, False)

    # ------------------------------------------------------------------ steps
    def handlers(self, sid: str, nat: Next) -> list[Handler]:
        """Step ``sid`` and what follows it, as the handlers of a section whose natural way on is ``nat``."""
        self.emitted.add(sid)
        step = self.flow.steps[sid]
        at = pointer_join("/steps", sid)
        if sid in self.kept:  # an imported preset: the original handler, not the steps it became
            self.emitted.update(str(s) for s in self.kept[sid].get("steps") or [])
            then = self.kept[sid].get("next")
            return [self.kept[sid]["handler"], *self.jump(then if isinstance(then, str) else None, False, nat)[0]]
        match step:
            case m.MessageStep():
                steps_out.message_checks(self, step, at, root_error=self.root_error)
                on_error = None
                if step.failed is not None and not self.root_error:
                    on_error = _goto(*self.address(step.failed))
                show = steps_out.show(self, step, at, on_error, root_error=self.root_error)
                if self._menu(step):  # the reply is routed in this Kommo step's answer (menu_answer)
                    return [show]
                targets = {b.next for b in step.buttons if b.next is not None}
                if targets:  # every button and any other answer lead to one step: wait for the reply
                    return [show, *self.jump(targets.pop(), True, nat)[0]]
                if step.other_answer is not None:
                    self.refuse(f"{at}/other_answer", "Kommo has no other answer on a message that does not wait")
                return [show, *self.jump(step.next, False, nat)[0]]
            case m.ConditionStep():
                return self.condition(step, at, nat)
            case m.ValidationStep():
                if step.save_as is not None:
                    self.refuse(f"{at}/save_as", "Kommo has no bot variables: read last_validation_result instead")
                after, then = self.jump(step.fail, False, nat)
                value = self.text(step.value, f"{at}/value")
                rules = [steps_out.rule(self, r, value, f"{at}/rules/{i}") for i, r in enumerate(step.rules)]
                check = {"handler": "validations", "params": {
                    "logic": "and" if step.logic == "all" else "or", "conditions": rules,
                    "result": self.jump(step.pass_, False, then)[0]}}
                return [check, *after]
            case m.PauseStep():
                if [e.on for e in step.until] != ["message"] or (step.until[0].next or step.next) is None:
                    for i, e in enumerate(step.until):
                        if e.on != "message":
                            self.refuse(f"{at}/until/{i}/on", f'Kommo has no published pause on "{e.on}" '
                                        "(its wait_answer waits for a message only)")
                    if step.next is None and all(e.next is None for e in step.until):
                        self.refuse(f"{at}/next", "Kommo's wait_answer needs a step to go on at")
                    return []
                return self.jump(step.until[0].next or step.next, True, nat)[0]
            case m.ActionStep():
                if step.failed is not None:
                    self.refuse(f"{at}/failed", "Kommo has no way on when a CRM action fails")
                done = [h for i, a in enumerate(step.actions) for h in action(self, a, f"{at}/actions/{i}")]
                return [*done, *self.jump(step.next, False, nat)[0]]
            case m.InternalMessageStep():
                return [*steps_out.internal(self, step, at), *self.jump(step.next, False, nat)[0]]
            case m.GotoStep():
                return self.jump(step.step, False, nat)[0]
            case m.StartBotStep():
                return [self.start_bot(step, at)]
            case m.WidgetStep():
                return [steps_out.widget_request(self, step, at), *self.jump(step.next, False, nat)[0]]
            case m.CustomStep() if step.handler.startswith("kommo.") and isinstance(
                    kept := step.params.get("kommo"), str):
                try:
                    original = unwrap_original(kept)
                except ValueError:
                    self.refuse(f"{at}/params/kommo", "not the original Kommo handler an import keeps")
                    return []
                return [original, *self.jump(step.next, False, nat)[0]]
            case m.StopStep():
                if not step.close_chat:
                    return self.jump(None, False, nat)[0]
                return [{"handler": "stop", "params": {"action": "talk-close"}}]
            case _:
                self.refuse(f"{at}/type", f'Kommo has no "{step.type}" step'
                            + (f' ("{step.handler}")' if isinstance(step, m.CustomStep) else ""))
                return []

    def condition(self, step: m.ConditionStep, at: str, nat: Next) -> list[Handler]:
        after, then = self.jump(step.else_, False, nat)
        routes = [steps_out.route(self, b.if_, f"{at}/branches/{i}/if") for i, b in enumerate(step.branches)]
        if len(step.branches) > 1 and all(routes):  # a reply routed: Kommo's buttons handler
            items = [{**r, "params": self.jump(b.next, False, then)[0]}
                     for r, b in zip(routes, step.branches, strict=True) if r is not None]
            return [{"handler": "buttons", "params": items}, *after]
        handlers = []
        for i, b in enumerate(step.branches):  # one condition each; the first that holds jumps away
            h = steps_out.predicate(self, b.if_, f"{at}/branches/{i}/if")
            last = i == len(step.branches) - 1
            h["params"]["result"] = self.jump(b.next, False, then if last else NOTHING)[0]
            handlers.append(h)
        return [*handlers, *after]

    def menu_answer(self, sid: str, n: int) -> list[Handler]:
        """The ``answer`` of a menu: a ``buttons`` route per button (and synonym), then the other answer."""
        step = self.flow.steps[sid]
        assert isinstance(step, m.MessageStep)
        at = pointer_join("/steps", sid)
        items: list[Handler] = []
        for i, b in enumerate(step.buttons):
            if b.next is None:
                continue
            # A route per synonym too: they share the jump, so its step is not written inline.
            jump = self.jump(b.next, False, NOTHING)[0] if not b.synonyms else [_goto(*self.address(b.next))]
            items += [{"value": v, "params": jump} for v in [b.title, *b.synonyms]]
            if any(not s.strip() for s in b.synonyms):
                self.refuse(f"{at}/buttons/{i}/synonyms", "Kommo has no empty button value")
        if step.other_answer is not None:
            fallback = self.jump(step.other_answer, False, self.natural(n, "answer"))[0]
        else:  # we keep waiting: so does Kommo, for another reply to this answer
            fallback = [{"handler": "wait_answer", "params": {"type": "answer", "step": n}}]
        return [{"handler": "buttons", "params": items}, *fallback]

    def start_bot(self, step: m.StartBotStep, at: str) -> Handler:
        if step.next is not None:
            self.refuse(f"{at}/next", "Kommo has no call of another bot that comes back: leave next out")
        number = step.bot.removeprefix("kommo-")  # convert_in's name for Kommo bot 1234
        if not number.isdigit():
            self.refuse(f"{at}/bot", f'Kommo names bots by number: "{step.bot}" is not a Kommo bot id '
                        '(write "1234" or "kommo-1234")')
        return {"handler": "stop", "params": {"action": "salesbot-start",
                                              "bot": int(number) if number.isdigit() else step.bot}}
