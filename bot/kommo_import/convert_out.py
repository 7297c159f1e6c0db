"""salesbot.flow/1 → Kommo's Salesbot language (``salesbot flows export --to kommo``).

Only flows that say nothing Kommo cannot say are exported: every other use is listed with its
pointer ("Kommo has no …") in one ``KommoExportRefused``, so an operator fixes them all in one
pass. There is no approximation on the way out: a bot that behaves differently in Kommo is worse
than no bot.

The output is the array form (step 0 is the flow's ``start``, then the other steps in document
order), one Kommo step per step of ours, every way on an explicit ``goto``: a step of ours that
ends the run ends its Kommo step with ``goto`` to its own ``finish`` (Kommo's way to end a branch).
Names become Kommo ids through the map (``mapping.KommoMap``); a field without a name there may
be written ``cf_<id>``, a stage, pipeline or user as its numeric id.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from bot.builder import models as m
from bot.errors import Problem

from .actions_out import action
from .errors import KommoExportRefused
from .mapping import EMPTY, KommoMap, Table
from .placeholders import FieldNames, to_kommo
from .result import KommoImportError, pointer_join

Handler = dict[str, Any]
KommoStep = dict[str, list[Handler]]
#: Our comparison operators → Kommo's ``condition`` operations.
OPERATIONS = {"eq": "=", "ne": "!=", "in": "in", "not_in": "not_in", "between": "in_range"}


def export(flow: Any, kommo_map: KommoMap = EMPTY) -> list[KommoStep]:
    """The Kommo Salesbot code of a valid flow document; ``KommoExportRefused`` lists every problem."""
    try:
        model = m.Flow.model_validate(flow)
    except ValidationError:
        raise KommoImportError("", "not a valid flow: run salesbot flows validate") from None
    exporter = _Exporter(model, kommo_map)
    steps = exporter.run()
    if exporter.problems:
        raise KommoExportRefused.of(exporter.problems)
    return steps


def _goto(index: int, kind: str = "question") -> Handler:
    return {"handler": "goto", "params": {"type": kind, "step": index}}


class _Exporter:
    def __init__(self, flow: m.Flow, kommo_map: KommoMap) -> None:
        self.flow = flow
        self.map = kommo_map
        self.fields = FieldNames(dict(kommo_map.fields))
        self.problems: list[Problem] = []
        order = [flow.start, *(sid for sid in flow.steps if sid != flow.start)]
        self.index = {sid: i for i, sid in enumerate(order)}
        self.order = order

    # ------------------------------------------------------------------ helpers
    def refuse(self, pointer: str, message: str) -> None:
        self.problems.append(Problem(pointer, message))

    def text(self, template: str, pointer: str) -> str:
        """A template as Kommo text (placeholders only); problems recorded at ``pointer``."""
        rewritten = to_kommo(template, self.fields)
        for problem in rewritten.problems:
            self.refuse(pointer, problem)
        return rewritten.text

    def value(self, value: Any, pointer: str) -> Any:
        if isinstance(value, str):
            return self.text(value, pointer)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        self.refuse(pointer, f"Kommo has no value of this kind here ({type(value).__name__}): use text or a number")
        return ""

    def way_on(self, target: str | None, own: int) -> Handler:
        """``goto`` the step of ours named ``target``, or to this step's ``finish`` (the run ends)."""
        return _goto(self.index[target]) if target is not None else _goto(own, "finish")

    def kommo_id(self, table: Table, value: object, pointer: str, what: str, *,
                 computed: bool = False) -> int | str | None:
        """A Kommo id of a name (through the map) or of a number; a problem when there is none.
        With ``computed`` a template is Kommo text (``{{lead.cf.1}}``), else refused."""
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        name = str(value).strip()
        if re.fullmatch(r"[0-9]+", name):
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

    # ------------------------------------------------------------------ the document
    def run(self) -> list[KommoStep]:
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
        return [self.step(sid, f.steps[sid]) for sid in self.order]

    def step(self, sid: str, step: m.Step) -> KommoStep:
        at = pointer_join("/steps", sid)
        own = self.index[sid]
        match step:
            case m.MessageStep():
                return self.message(step, at, own)
            case m.ConditionStep():
                return self.condition(step, at, own)
            case m.ValidationStep():
                return self.validation(step, at, own)
            case m.PauseStep():
                return self.pause(step, at, own)
            case m.ActionStep():
                if step.failed is not None:
                    self.refuse(f"{at}/failed", "Kommo has no way on when a CRM action fails")
                handlers = [h for i, a in enumerate(step.actions) for h in action(self, a, f"{at}/actions/{i}")]
                return {"question": [*handlers, self.way_on(step.next, own)]}
            case m.InternalMessageStep():
                return {"question": [*self.internal(step, at), self.way_on(step.next, own)]}
            case m.GotoStep():
                return {"question": [_goto(self.index[step.step])]}
            case m.StartBotStep():
                return self.start_bot(step, at, own)
            case m.WidgetStep():
                return self.widget(step, at, own)
            case m.StopStep():
                finish = [{"handler": "stop", "params": {"action": "talk-close"}}] if step.close_chat else []
                return {"question": [_goto(own, "finish")], **({"finish": finish} if finish else {})}
            case _:
                self.refuse(f"{at}/type", f'Kommo has no "{step.type}" step')
                return {"question": []}

    # ------------------------------------------------------------------ sending
    def message(self, step: m.MessageStep, at: str, own: int) -> KommoStep:
        if step.template is not None:
            self.refuse(f"{at}/template", "Kommo has no message templates in a bot's code")
        if step.attachments:
            self.refuse(f"{at}/attachments", "Kommo has no attachments in a bot's code")
        if step.no_answer is not None:
            self.refuse(f"{at}/no_answer", "Kommo has no timer on waiting for an answer")
        if step.channels is not None or step.channel_mode is not None:
            where = "channels" if step.channels is not None else "channel_mode"
            self.refuse(f"{at}/{where}", "Kommo names channels by account-specific ids: leave the channels out")
        text = self.text(step.text or "", f"{at}/text")
        branches = [b for b in step.buttons if b.next is not None]
        links = [b for b in step.buttons if b.url is not None]
        if branches and links:
            self.refuse(f"{at}/buttons", "Kommo has no message with both link buttons and answer buttons")
        external = step.failed is not None or step.recipients != "chat"
        show = self.external(step, text, at) if external else self.show(step, text, bool(branches))
        if not branches:
            if step.other_answer is not None:  # no branching button: never waits, never reached
                self.refuse(f"{at}/other_answer", "Kommo has no other answer on a message that does not wait")
            return {"question": [show, self.way_on(step.next, own)]}
        if step.next is not None:
            self.refuse(f"{at}/next", "Kommo has no next on a message whose buttons branch")
        items: list[Handler] = []
        for i, b in enumerate(step.buttons):
            assert b.next is not None
            jump = [_goto(self.index[b.next])]
            items.append({"value": b.title, "params": jump})
            items += [{"value": s, "params": jump} for s in b.synonyms]
            if any(not s.strip() for s in b.synonyms):
                self.refuse(f"{at}/buttons/{i}/synonyms", "Kommo has no empty button value")
        # An answer that matches no button: other_answer, else wait for the next answer here.
        fallback = (_goto(self.index[step.other_answer]) if step.other_answer is not None
                    else {"handler": "wait_answer", "params": {"type": "answer", "step": own}})
        return {"question": [show], "answer": [{"handler": "buttons", "params": items}, fallback]}

    def show(self, step: m.MessageStep, text: str, branching: bool) -> Handler:
        if branching:
            return {"handler": "show", "params": {"type": "buttons", "value": text,
                                                  "buttons": [b.title for b in step.buttons]}}
        links = [{"text": b.title, "url": b.url} for b in step.buttons if b.url is not None]
        if links:
            return {"handler": "show", "params": {"type": "buttons_url", "value": text, "buttons": links}}
        return {"handler": "show", "params": {"type": "text", "value": text}}

    def external(self, step: m.MessageStep, text: str, at: str) -> Handler:
        """``send_external_message``: a message to the lead's contacts, or one with a way on when undelivered."""
        buttons = [{"type": "url", "text": b.title, "url": b.url} if b.url is not None
                   else {"type": "inline", "text": b.title} for b in step.buttons]
        message: dict[str, Any] = {"type": "external", "text": text}
        if buttons:
            message["buttons"] = buttons
        if step.recipients == "chat":
            self.refuse(f"{at}/failed", "Kommo has no way on when a message to this chat is not delivered "
                        "(send it to main_contact instead)")
        on_error = _goto(self.index[step.failed]) if step.failed is not None else None
        return {"handler": "send_external_message", "params": {
            "message": message, "recipient": {"type": step.recipients, "way_of_communication": "over_all"},
            "channels": [], "on_error": on_error}}

    def internal(self, step: m.InternalMessageStep, at: str) -> Iterator[Handler]:
        text = self.text(step.text, f"{at}/text")
        base: Handler = {"entity_id": "{{lead.id}}", "entity_type": 2, "message": text}
        if not step.to:
            yield {"handler": "send_internal", "params": base}
        for i, to in enumerate(step.to):
            kind, _, who = to.partition(":")
            if kind == "user":
                user = self.kommo_id("users", who, f"{at}/to/{i}", "user")
                yield {"handler": "send_internal", "params": {**base, "user_id": user}}
            elif re.fullmatch(r"[0-9]+", who):
                yield {"handler": "send_internal", "params": {**base, "group_id": int(who)}}
            else:
                self.refuse(f"{at}/to/{i}", f'Kommo names user groups by id: write "team:<id>", not "{to}"')

    # ------------------------------------------------------------------ branching
    def condition(self, step: m.ConditionStep, at: str, own: int) -> KommoStep:
        handlers = [self.branch(b.if_, [_goto(self.index[b.next])], f"{at}/branches/{i}/if")
                    for i, b in enumerate(step.branches)]
        return {"question": [*handlers, self.way_on(step.else_, own)]}

    def branch(self, p: m.Predicate, result: list[Handler], at: str) -> Handler:
        if isinstance(p, m.LeafPredicate):
            return {"handler": "condition", "params": {**self.term(p, at), "result": result}}
        if isinstance(p, (m.AllPredicate, m.AnyPredicate)):
            leaves = p.all if isinstance(p, m.AllPredicate) else p.any
            key = "all" if isinstance(p, m.AllPredicate) else "any"
            terms = []
            for i, leaf in enumerate(leaves):
                if isinstance(leaf, m.LeafPredicate):
                    terms.append(self.term(leaf, f"{at}/{key}/{i}"))
                else:
                    self.refuse(f"{at}/{key}/{i}", "Kommo has no nested conditions")
            logic = "and" if key == "all" else "or"
            return {"handler": "conditions", "params": {"logic": logic, "conditions": terms, "result": result}}
        kind = "not" if isinstance(p, m.NotPredicate) else "expr"
        self.refuse(f"{at}/{kind}", f'Kommo has no "{kind}" condition')
        return {"handler": "condition", "params": {}}

    def term(self, p: m.LeafPredicate, at: str) -> dict[str, Any]:
        operation = OPERATIONS.get(p.op)
        if operation is None:
            self.refuse(f"{at}/op", f'Kommo has no operator "{p.op}" in conditions '
                        "(it has eq, ne, in, not_in, between)")
        term1 = self.text("{{ " + p.field + " }}", f"{at}/field")
        term2: Any
        if p.op == "between":
            assert isinstance(p.value, list)
            term2 = {"from": self.value(p.value[0], f"{at}/value/0"), "to": self.value(p.value[1], f"{at}/value/1")}
        elif isinstance(p.value, list):
            term2 = [self.value(v, f"{at}/value/{i}") for i, v in enumerate(p.value)]
        else:
            term2 = self.value(p.value, f"{at}/value")
        return {"term1": term1, "term2": term2, "operation": operation or p.op}

    def validation(self, step: m.ValidationStep, at: str, own: int) -> KommoStep:
        if step.save_as is not None:
            self.refuse(f"{at}/save_as", "Kommo has no bot variables: read last_validation_result instead")
        value = self.text(step.value, f"{at}/value")
        rules = [self.rule(r, value, f"{at}/rules/{i}") for i, r in enumerate(step.rules)]
        check = {"handler": "validations", "params": {"logic": "and" if step.logic == "all" else "or",
                                                      "conditions": rules,
                                                      "result": [self.way_on(step.pass_, own)]}}
        return {"question": [check, self.way_on(step.fail, own)]}

    def rule(self, r: m.Rule, value: str, at: str) -> dict[str, Any]:
        def out(kind: str, condition: Any, operation: str) -> dict[str, Any]:
            return {"client_value": value, "type": kind, "condition_value": condition, "operation": operation}

        if r.check in ("contains", "not_contains"):
            if r.kind in ("phone", "email"):
                return out(r.kind, "", r.check)
            if r.kind == "range" and r.min is not None and r.max is not None:
                return out("range_numbers", {"from": _number(r.min), "to": _number(r.max)}, r.check)
            if r.kind == "text":
                return out("simple", self.value(r.value, f"{at}/value"), r.check)
            self.refuse(f"{at}/kind", f'Kommo has no "{r.kind}" check with both bounds missing'
                        if r.kind == "range" else f'Kommo has no "{r.kind}" check')
        elif r.check in ("equals", "not_equals"):
            return out("simple", self.value(r.value, f"{at}/value"), "equal" if r.check == "equals" else "not_equal")
        elif r.check == "regex" and r.pattern is not None:
            return out("regex", "/" + r.pattern.replace("/", "\\/") + "/", "contains")
        elif r.check == "length" and r.min is not None and r.min == r.max:
            return out("simple", _number(r.min), "length")
        else:
            self.refuse(f"{at}/check", "Kommo has no length range: its length check takes one number (min = max)")
        return {}

    def pause(self, step: m.PauseStep, at: str, own: int) -> KommoStep:
        waits: list[Handler] = []
        for i, event in enumerate(step.until):
            target = event.next or step.next
            if event.on != "message":
                self.refuse(f"{at}/until/{i}/on", f'Kommo has no published pause on "{event.on}" '
                            "(its wait_answer waits for a message only)")
            elif target is None:
                self.refuse(f"{at}/next", "Kommo's wait_answer needs a step to go on at")
            else:
                waits.append({"handler": "wait_answer", "params": {"type": "question", "step": self.index[target]}})
        return {"question": waits[:1]}

    # ------------------------------------------------------------------ the rest
    def start_bot(self, step: m.StartBotStep, at: str, own: int) -> KommoStep:
        if step.next is not None:
            self.refuse(f"{at}/next", "Kommo has no call of another bot that comes back: leave next out")
        if not re.fullmatch(r"[0-9]+", step.bot):
            self.refuse(f"{at}/bot", f'Kommo names bots by number: "{step.bot}" is not a Kommo bot id')
        start = {"handler": "stop", "params": {"action": "salesbot-start",
                                               "bot": int(step.bot) if step.bot.isdigit() else step.bot}}
        return {"question": [_goto(own, "finish")], "finish": [start]}

    def widget(self, step: m.WidgetStep, at: str, own: int) -> KommoStep:
        if step.widget != "http_request":
            self.refuse(f"{at}/widget", f'Kommo has no widget "{step.widget}" (only http_request, as widget_request)')
        if step.failed is not None:
            self.refuse(f"{at}/failed", "Kommo has no way on when a widget request fails")
        if step.wait is not None and step.wait.on_timeout is not None:
            self.refuse(f"{at}/wait/on_timeout", "Kommo has no timeout on a widget request")
        params: dict[str, Any] = {}
        for key, value in step.params.items():
            if key == "url":
                params["url"] = self.value(value, f"{at}/params/url")
            elif key == "data" and isinstance(value, dict):
                params["data"] = {k: self.value(v, f"{at}/params/data/{k}") for k, v in value.items()}
            else:
                self.refuse(f"{at}/params/{key}", f'Kommo\'s widget_request has no "{key}"')
        return {"question": [{"handler": "widget_request", "params": params}, self.way_on(step.next, own)]}


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value
