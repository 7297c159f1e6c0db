"""Kommo Salesbot document → salesbot.flow/1 (import).

How a Kommo bot runs, as we read it (docs/migrating-from-kommo.md says the same for operators):
a step's ``question`` handlers run in order; a step with an ``answer`` then waits for the reply
and runs the ``answer`` handlers; a step with a ``finish`` runs it and the bot ends; otherwise the
bot goes on with the next step of the document (or ends after the last). ``goto`` jumps to a
section (``question``, ``answer`` or ``finish``) of a step without waiting, ``wait_answer`` after
waiting for a reply. Branching handlers (``buttons``, ``condition``, ``validations``) run their
nested handlers, then go on with the handler after them.

Each section becomes a chain of our steps named ``q<n>``, ``a<n>``, ``f<n>`` (and ``q<n>_1``, … for
the rest), built from its last handler back so each step knows its successor. A ``show`` with
buttons followed by the wait becomes one message step whose buttons all lead to the answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..builder.validate import check_document
from ..errors import Problem
from . import actions_in, presets_in
from .build import Builder, Cont, params_of
from .document import Handler, KommoBot, check_handler, parse
from .mapping import EMPTY, KommoMap
from .result import Conversion, KommoImportError, pointer_join

MAX_BUTTONS = 13
WIDGET_TIMEOUT = "7d"
_QUIET = frozenset({"action", "meta", "send_internal", "trigger"})  # nothing the customer sees, no jump
_REGEX = re.compile(r"^/(.*)/([a-zA-Z]*)$", re.DOTALL)
_FIELD_PATH = re.compile(r"^\{\{ ([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_\-]+)*) \}\}$")
_OPS = {"=": "eq", "==": "eq", "!=": "ne", "in": "in", "not_in": "not_in", "in_range": "between",
        ">": "gt", ">=": "gte", "<": "lt", "<=": "lte", "contains": "contains", "not_contains": "not_contains"}


def convert(doc: Any, *, bot_id: str, kommo_map: KommoMap = EMPTY) -> Conversion:
    """The flow for a parsed Kommo document; ``KommoImportError`` (with the input's pointer) when malformed."""
    try:
        bot = parse(doc)
        result = Conversion(flow={})
        importer = _Importer(bot, Builder(kommo_map, result))
        result.flow = importer.run(bot_id)
    except RecursionError:  # handlers nested hundreds deep: an error with a pointer, not a traceback
        raise KommoImportError("", "the handlers are nested too deeply to convert") from None
    return result


class _Importer:
    def __init__(self, bot: KommoBot, b: Builder) -> None:
        self.bot = bot
        self.b = b
        self._todo: list[tuple[int, str]] = []
        self._done: set[tuple[int, str]] = set()

    # ---------------------------------------------------------------- sections
    def ref(self, number: Any, kind: Any, pointer: str) -> str:
        """The id of a section's first step (built later), checking that the step exists."""
        if not isinstance(number, int) or isinstance(number, bool):
            if isinstance(number, str) and number.isdigit():
                number = int(number)
            else:
                raise KommoImportError(pointer_join(pointer, "step"), "the step must be a step number")
        if kind not in ("question", "answer", "finish"):
            raise KommoImportError(pointer_join(pointer, "type"), "type must be question, answer or finish")
        if number not in self.bot.steps:
            raise KommoImportError(pointer_join(pointer, "step"), f"there is no step {number}")
        if (number, kind) not in self._done:
            self._done.add((number, kind))
            self._todo.append((number, kind))
        return self.b.reserve(f"{kind[0]}{number}")

    def _after(self, number: int, kind: str) -> Cont:
        step = self.bot.steps[number]
        if kind == "question" and step.answer is not None:
            return Cont(self.ref(number, "answer", step.pointer), wait=True)
        if kind != "finish" and step.finish is not None:
            return Cont(self.ref(number, "finish", step.pointer))
        following = self.bot.after(number)
        if kind == "finish" or following is None:
            return Cont(None)
        return Cont(self.ref(following, "question", step.pointer))

    def run(self, bot_id: str) -> dict[str, Any]:
        b = self.b
        error_id = None
        if self.bot.error is not None:
            error_id = b.reserve("on_error")
            self.chain(self.bot.error, self.bot.error_pointer, Cont(None), error_id, ensure=True)
        for number, step in self.bot.steps.items():  # every section the document has, in order
            for kind in ("question", "answer", "finish"):
                if step.section(kind) is not None:
                    self.ref(number, kind, step.pointer)
        start = self.ref(next(iter(self.bot.steps)), "question", "")
        while self._todo:
            number, kind = self._todo.pop(0)
            step = self.bot.steps[number]
            handlers = step.section(kind) or []
            self.chain(handlers, pointer_join(step.pointer, kind), self._after(number, kind), f"{kind[0]}{number}",
                       ensure=True)
        if error_id is not None:
            for sid, s in b.steps.items():
                if s["type"] in ("message", "list") and "failed" not in s and not sid.startswith(error_id):
                    s["failed"] = error_id
        b.finish()
        flow: dict[str, Any] = {"format": "salesbot.flow/1", "id": bot_id}
        if self.bot.name:
            flow["name"] = self.bot.name[:200]
        flow["start"] = start
        flow["steps"] = {sid: b.steps[sid] for sid in _ordered(b.steps, start)}
        self._check(flow)
        return flow

    def _check(self, flow: dict[str, Any]) -> None:
        """The flow must validate; an error there comes from the input (a bad regex, a loop that never
        waits, …), so it is reported at the pointer of the Kommo handler it came from."""
        problems, _ = check_document(flow)
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            first = errors[0]
            sid = first.pointer.split("/")[2] if first.pointer.startswith("/steps/") else ""
            raise KommoImportError(self.b.origin.get(sid, ""), f"{first.message} (in the imported flow at "
                                                               f"{first.pointer})")

    # ---------------------------------------------------------------- chains
    def chain(self, handlers: Sequence[Handler], pointer: str, cont: Cont, name: str, *, ensure: bool) -> Cont:
        """Our steps for ``handlers`` followed by ``cont``; the first step is named ``name`` (with
        ``ensure``, a goto, pause or stop step of that name when the handlers made none)."""
        order = _reordered(handlers, cont)
        jump = next((i for i, (_, h) in enumerate(order) if h["handler"] in ("goto", "wait_answer")), None)
        if jump is not None:
            for j, _ in order[jump + 1:]:
                self.b.result.warn(pointer_join(pointer, j), "never runs: it comes after a goto or wait_answer")
            order = order[:jump + 1]
        c = cont
        # numbered in the order they run; a jump after the first handler makes no step of its own
        ids = [name, *(self.b.new_id(name) if h["handler"] not in ("goto", "wait_answer") else ""
                       for _, h in order[1:])]
        for pos in range(len(order) - 1, -1, -1):
            i, h = order[pos]
            sid = ids[pos]
            self.b.begin()
            c = self.handler(h, pointer_join(pointer, i), c, sid)
            self.b.count()
        if ensure:
            self.b.ensure(name, c, pointer)
            return Cont(name)
        return c

    def branch(self, handlers: Any, pointer: str, cont: Cont, sid: str) -> str:
        if not isinstance(handlers, list):
            raise KommoImportError(pointer, "must be a list of handlers")
        for i, h in enumerate(handlers):
            check_handler(h, pointer_join(pointer, i))
        return self.b.required(self.chain(handlers, pointer, cont, self.b.new_id(sid), ensure=False))

    # ---------------------------------------------------------------- handlers
    def handler(self, h: Handler, pointer: str, c: Cont, sid: str) -> Cont:
        name = h["handler"]
        b = self.b
        if name == "goto":
            p = params_of(h, pointer)
            return Cont(self.ref(p.get("step"), p.get("type", "question"), pointer_join(pointer, "params")))
        if name == "wait_answer":
            p = params_of(h, pointer)
            return Cont(self.ref(p.get("step"), p.get("type", "question"), pointer_join(pointer, "params")), wait=True)
        if name in ("show", "send_message", "send_external_message"):
            return self.message(h, pointer, c, sid)
        if name in ("action", "trigger", "meta"):
            try:
                convert = {"action": actions_in.action, "trigger": actions_in.trigger, "meta": actions_in.meta}[name]
                actions = convert(b, h, pointer)
            except actions_in.NoEquivalent as exc:
                return b.custom(sid, h, pointer, c, exc.why, exc.kind)
            b.add(sid, {"type": "action", "actions": actions, "next": b.target(c)}, pointer)
            return Cont(sid)
        if name in ("condition", "conditions"):
            return self.condition(h, pointer, c, sid)
        if name == "buttons":
            return self.buttons(h, pointer, c, sid)
        if name == "validations":
            return self.validations(h, pointer, c, sid)
        if name == "preset":
            found = presets_in.preset(b, h, pointer, c, sid)
            if found is None:
                return b.custom(sid, h, pointer, c, f"the preset {params_of(h, pointer).get('name')!r} has no "
                                                    f"equivalent here", "preset")
            b.approximate(pointer, "the preset is rebuilt from validation steps (see docs/migrating-from-kommo.md)")
            return found
        if name == "waits":
            return self.waits(h, pointer, c, sid)
        if name == "stop":
            return self.stop(h, pointer, c, sid)
        if name == "send_internal":
            return self.internal(h, pointer, c, sid)
        if name == "widget_request":
            p = params_of(h, pointer)
            params = {"url": b.text(p.get("url"), pointer_join(pointer, "params", "url")),
                      "data": b.value(p.get("data", {}), pointer_join(pointer, "params", "data"))}
            b.add(sid, {"type": "widget", "widget": "http_request", "params": params,
                        "wait": {"timeout": WIDGET_TIMEOUT}, "next": b.target(c)}, pointer)
            return Cont(sid)
        what = {"find": "finding duplicates or list elements", "filter": "finding an entity by a field value",
                "exits": "a widget's exit codes"}[name]
        return b.custom(sid, h, pointer, c, f"{name} ({what}) has no equivalent here", name)

    # ---------------------------------------------------------------- sending
    def message(self, h: Handler, pointer: str, c: Cont, sid: str) -> Cont:
        b = self.b
        p = params_of(h, pointer)
        at = pointer_join(pointer, "params")
        name = h["handler"]
        buttons: list[Any] = []
        step: dict[str, Any] = {"type": "message"}
        if name == "show":
            kind = p.get("type", "text")
            if kind not in ("text", "buttons", "buttons_url"):
                raise KommoImportError(pointer_join(at, "type"), "show: type must be text, buttons or buttons_url")
            step["text"] = b.text(p.get("value"), pointer_join(at, "value"))
            raw = p.get("buttons", [])
            if kind != "text" and not isinstance(raw, list):
                raise KommoImportError(pointer_join(at, "buttons"), "show: buttons must be a list")
            for i, x in enumerate(raw if kind != "text" else []):
                bat = pointer_join(at, "buttons", i)
                if kind == "buttons_url":
                    if isinstance(x, str):
                        buttons.append({"title": x, "url": b.text(x, bat)})
                    elif isinstance(x, Mapping):
                        buttons.append({"title": x.get("text") or x.get("url"),
                                        "url": b.text(x.get("url"), pointer_join(bat, "url"))})
                    else:
                        raise KommoImportError(bat, "a link button is a URL or {text, url}")
                elif isinstance(x, str) and x:
                    buttons.append({"title": x})
                else:
                    raise KommoImportError(bat, "a button is its text")
            if p.get("quick_replies"):
                b.approximate(pointer_join(at, "quick_replies"), "quick replies (Facebook only) are not offered")
        elif name == "send_message":
            step["text"] = b.text(p.get("text", ""), pointer_join(at, "text"))
            if p.get("attachments"):
                b.approximate(pointer_join(at, "attachments"), "attachments are Kommo file ids: add them with a URL")
            if not step["text"]:
                return c
        else:
            msg = p.get("message")
            if not isinstance(msg, Mapping):
                raise KommoImportError(pointer_join(at, "message"), "send_external_message: message must be an object")
            step["text"] = b.text(msg.get("text"), pointer_join(at, "message", "text"))
            for i, x in enumerate(msg.get("buttons") or []):
                if not isinstance(x, Mapping) or not isinstance(x.get("text"), str):
                    raise KommoImportError(pointer_join(at, "message", "buttons", i), "a button is {type, text}")
                link = x.get("type") == "url"
                buttons.append({"title": x["text"], "url": x.get("url")} if link else {"title": x["text"]})
            self._recipients(p, at, step)
            if isinstance(p.get("on_error"), Mapping):
                step["failed"] = self.branch([p["on_error"]], pointer_join(at, "on_error"), c, sid)
        if len(buttons) > MAX_BUTTONS:
            b.approximate(pointer_join(at, "buttons"), f"only the first {MAX_BUTTONS} buttons are kept")
            buttons = buttons[:MAX_BUTTONS]
        branching = [x for x in buttons if "url" not in x]
        if branching and c.wait:
            for x in branching:
                x["next"] = c.target
            step["other_answer"] = c.target
            step["buttons"] = buttons
        else:
            if branching:
                b.approximate(pointer, "the bot does not wait for an answer here, so the buttons are listed "
                                       "in the text instead")
                step["text"] = "\n".join([step["text"], *(f"- {x['title']}" for x in branching)])
            step["buttons"] = [x for x in buttons if "url" in x] or None
            step["next"] = b.target(c)
        b.add(sid, step, pointer)
        return Cont(sid)

    def _recipients(self, p: Mapping[str, Any], at: str, step: dict[str, Any]) -> None:
        r = p.get("recipient") or {}
        kind = r.get("type", "main_contact") if isinstance(r, Mapping) else None
        if kind not in ("main_contact", "all_contacts", "filtered_contacts"):
            raise KommoImportError(pointer_join(at, "recipient", "type"),
                                   "recipient.type must be main_contact, all_contacts or filtered_contacts")
        if kind == "filtered_contacts":
            self.b.approximate(pointer_join(at, "recipient"), "filtered contacts: the message goes to all contacts")
            kind = "all_contacts"
        step["recipients"] = kind
        way = r.get("way_of_communication", "over_all")
        if way in ("any_first", "last_active"):
            step["channel_mode"] = "primary"
        if p.get("channels"):
            self.b.approximate(pointer_join(at, "channels"),
                               "Kommo channel ids are not kept: every channel may be used")

    # ---------------------------------------------------------------- branching
    def condition(self, h: Handler, pointer: str, c: Cont, sid: str) -> Cont:
        try:
            return self._condition(h, pointer, c, sid)
        except actions_in.NoEquivalent as exc:
            return self.b.custom(sid, h, pointer, c, exc.why, exc.kind)

    def _condition(self, h: Handler, pointer: str, c: Cont, sid: str) -> Cont:
        p = params_of(h, pointer)
        at = pointer_join(pointer, "params")
        if h["handler"] == "conditions":
            conds = p.get("conditions")
            if not isinstance(conds, list) or not conds:
                raise KommoImportError(pointer_join(at, "conditions"), "conditions: must be a non-empty list")
            leaves = [self.predicate(x, pointer_join(at, "conditions", i), "conditions") for i, x in enumerate(conds)]
            logic = p.get("logic", "and")
            if logic not in ("and", "or"):
                raise KommoImportError(pointer_join(at, "logic"), "logic must be and or or")
            pred = leaves[0] if len(leaves) == 1 else {"all" if logic == "and" else "any": leaves}
        else:
            pred = self.predicate(p, at)
        target = self.branch(p.get("result", []), pointer_join(at, "result"), c, sid)
        self.b.add(sid, {"type": "condition", "branches": [{"if": pred, "next": target}], "else": self.b.target(c)},
                   pointer)
        return Cont(sid)

    def predicate(self, x: Any, at: str, h_kind: str = "condition") -> dict[str, Any]:
        if not isinstance(x, Mapping):
            raise KommoImportError(at, "a condition is an object {term1, term2, operation}")
        term1 = x.get("term1")
        if not isinstance(term1, str) or not term1:
            raise KommoImportError(pointer_join(at, "term1"), "term1 must be a placeholder or a path")
        op_raw = x.get("operation", "=")
        op = _OPS.get(op_raw) if isinstance(op_raw, str) else None
        if op is None:
            raise KommoImportError(pointer_join(at, "operation"), f"unknown operation {op_raw!r}")
        if term1 in ("lead.tags", "contact.tags", "company.tags"):
            field = term1
        else:
            subject = self.b.text(term1 if "{{" in term1 else "{{" + term1 + "}}", pointer_join(at, "term1"))
            m = _FIELD_PATH.match(subject)
            if m is None:
                raise actions_in.NoEquivalent(h_kind, f"the condition on {term1!r} has no equivalent here")
            field = m.group(1)
        term2 = x.get("term2")
        value: Any
        if op == "between":
            if not isinstance(term2, Mapping) or "from" not in term2 or "to" not in term2:
                raise KommoImportError(pointer_join(at, "term2"), "in_range takes term2 {from, to}")
            value = [self.b.value(term2["from"], pointer_join(at, "term2", "from")),
                     self.b.value(term2["to"], pointer_join(at, "term2", "to"))]
        elif op in ("in", "not_in"):
            items = term2 if isinstance(term2, list) else str(term2).split(",")
            value = [self.b.value(v.strip() if isinstance(v, str) else v, pointer_join(at, "term2")) for v in items]
        else:
            if term2 is None or isinstance(term2, (Mapping, list)):
                raise KommoImportError(pointer_join(at, "term2"), "term2 must be a value")
            value = self.b.value(term2, pointer_join(at, "term2"))
        if field.endswith(".tags") and op in ("eq", "ne"):
            leaf = {"field": field, "op": "has", "value": value}
            return leaf if op == "eq" else {"not": leaf}
        return {"field": field, "op": op, "value": value}

    def buttons(self, h: Handler, pointer: str, c: Cont, sid: str) -> Cont:
        items = params_of(h, pointer, list)
        branches = []
        for i, x in enumerate(items):
            at = pointer_join(pointer, "params", i)
            if not isinstance(x, Mapping):
                raise KommoImportError(at, "a button route is {value or regex, params: [handlers]}")
            if isinstance(x.get("regex"), str):
                pred = {"field": "message.text", "op": "matches", "value": _pattern(x["regex"])}
            elif isinstance(x.get("value"), str):
                text = self.b.text(x["value"], pointer_join(at, "value"))
                pred = {"field": "message.text", "op": "eq", "value": text}
            else:
                raise KommoImportError(at, "a button route needs value or regex (text)")
            branches.append({"if": pred, "next": self.branch(x.get("params", []), pointer_join(at, "params"), c, sid)})
        if not branches:
            return c
        self.b.add(sid, {"type": "condition", "branches": branches, "else": self.b.target(c)}, pointer)
        return Cont(sid)

    def validations(self, h: Handler, pointer: str, c: Cont, sid: str) -> Cont:
        p = params_of(h, pointer)
        at = pointer_join(pointer, "params")
        conds = p.get("conditions")
        if not isinstance(conds, list) or not conds:
            raise KommoImportError(pointer_join(at, "conditions"), "validations: conditions must be a non-empty list")
        logic = {"and": "all", "or": "any"}.get(str(p.get("logic", "and")))
        if logic is None:
            raise KommoImportError(pointer_join(at, "logic"), "logic must be and or or")
        values, rules = [], []
        for i, x in enumerate(conds):
            cat = pointer_join(at, "conditions", i)
            if not isinstance(x, Mapping):
                raise KommoImportError(cat, "a validation is {client_value, type, condition_value, operation}")
            values.append(self.b.text(x.get("client_value", "{{message_text}}"), pointer_join(cat, "client_value")))
            rules.append(_rule(x, cat))
        target = self.branch(p.get("result", []), pointer_join(at, "result"), c, sid)
        if len(set(values)) > 1:
            self.b.approximate(at, "the conditions check different values: each is checked against the first's")
        self.b.add(sid, {"type": "validation", "value": values[0], "logic": logic, "rules": rules, "pass": target,
                         "fail": self.b.target(c)}, pointer)
        return Cont(sid)

    # ---------------------------------------------------------------- waiting and ending
    def waits(self, h: Handler, pointer: str, c: Cont, sid: str) -> Cont:
        p = params_of(h, pointer)
        conds = p.get("conditions")
        if not isinstance(conds, list) or not conds:
            raise KommoImportError(pointer_join(pointer, "params", "conditions"), "waits: conditions must be a list")
        until = []
        for i, x in enumerate(conds):
            at = pointer_join(pointer, "params", "conditions", i)
            event = x.get("event") if isinstance(x, Mapping) else None
            act = x.get("action") if isinstance(x, Mapping) else None
            if not isinstance(event, Mapping) or not isinstance(act, Mapping):
                raise KommoImportError(at, "a wait condition is {event: {source, action}, action: {type, step}}")
            if (event.get("source"), event.get("action")) != ("message", "received"):
                return self.b.custom(sid, h, pointer, c, "only the pause until a message arrives has a known shape",
                                     "waits")
            until.append({"on": "message", "next": self.ref(act.get("step"), act.get("type", "question"),
                                                            pointer_join(at, "action"))})
        if len(until) == 1:
            return Cont(until[0]["next"], wait=True)
        self.b.add(sid, {"type": "pause", "until": until[:1]}, pointer)
        self.b.approximate(pointer, "several message conditions: the first wins")
        return Cont(sid)

    def stop(self, h: Handler, pointer: str, c: Cont, sid: str) -> Cont:
        p = h.get("params") or {}
        if not isinstance(p, Mapping):
            raise KommoImportError(pointer_join(pointer, "params"), "stop: params must be an object")
        action = p.get("action")
        if action == "salesbot-start":
            bot = f"kommo-{p.get('bot')}"
            self.b.approximate(pointer, f'starts bot "{bot}": import that Kommo bot with --id {bot}')
            self.b.add(sid, {"type": "start_bot", "bot": bot}, pointer)
            return Cont(sid)
        if action == "talk-close":
            if c.target is not None:  # more handlers follow (say, a salesbot-start): close and go on
                self.b.add(sid, {"type": "action", "actions": [{"do": "set_chat_status", "status": "closed"}],
                                 "next": self.b.target(c)}, pointer)
                return Cont(sid)
            self.b.add(sid, {"type": "stop", "close_chat": True}, pointer)
            return Cont(sid)
        if action is not None:
            raise KommoImportError(pointer_join(pointer, "params", "action"), f"unknown stop action {action!r}")
        self.b.add(sid, {"type": "stop"}, pointer)
        return Cont(sid)

    def internal(self, h: Handler, pointer: str, c: Cont, sid: str) -> Cont:
        p = params_of(h, pointer)
        at = pointer_join(pointer, "params")
        to = []
        if p.get("group_id") is not None:
            to.append(f"team:{p['group_id']}")
        elif p.get("user_id") is not None:
            to.append(f"user:{self.b.named('users', p['user_id'], pointer_join(at, 'user_id'))}")
        if str(p.get("entity_id", "{{lead.id}}")).replace(" ", "") not in ("{{lead.id}}", "{{contact.id}}"):
            self.b.approximate(pointer_join(at, "entity_id"), "the internal message goes to this conversation's lead")
        self.b.add(sid, {"type": "internal_message", "text": self.b.text(p.get("message"), pointer_join(at, "message")),
                         "to": to, "next": self.b.target(c)}, pointer)
        return Cont(sid)


def _has_buttons(h: Handler) -> bool:
    p = h.get("params")
    if not isinstance(p, Mapping):
        return False
    if h["handler"] == "show":
        return p.get("type") == "buttons"
    msg = p.get("message")
    return h["handler"] == "send_external_message" and isinstance(msg, Mapping) and bool(msg.get("buttons"))


def _reordered(handlers: Sequence[Handler], cont: Cont) -> list[tuple[int, Handler]]:
    """The handlers with their indexes; a message with buttons followed only by quiet handlers
    (actions and the like) before the wait moves to just before it, so it can be the wait: the
    customer sees the same, the CRM changes a moment earlier."""
    order = list(enumerate(handlers))
    jump = next((i for i, h in order if h["handler"] in ("goto", "wait_answer")), None)
    if jump is not None and handlers[jump]["handler"] == "goto":
        return order
    if jump is None and not cont.wait:
        return order
    end = len(order) if jump is None else jump
    sending = [i for i, h in order[:end] if h["handler"] not in _QUIET]
    if not sending or sending[-1] == end - 1 or not _has_buttons(handlers[sending[-1]]):
        return order
    moved = order.pop(sending[-1])
    order.insert(end - 1, moved)
    return order


def _pattern(raw: str) -> str:
    """Kommo's ``/…/iu`` regex → a Python pattern with inline flags."""
    m = _REGEX.match(raw)
    if m is None:
        return raw
    flags = "".join(f for f in "ims" if f in m.group(2))
    return (f"(?{flags})" if flags else "") + m.group(1)


def _rule(x: Mapping[str, Any], at: str) -> dict[str, Any]:
    kind, op, cv = x.get("type"), x.get("operation", "contains"), x.get("condition_value")
    negate = op in ("not_contains", "not_equal")
    if kind == "regex":
        if not isinstance(cv, str):
            raise KommoImportError(pointer_join(at, "condition_value"), "a regex is text such as /[0-9]+/")
        pattern = _pattern(cv)
        return {"check": "regex", "pattern": f"^(?s)(?!.*(?:{pattern}))" if negate else pattern}
    if kind in ("email", "phone"):
        return {"check": "not_contains" if negate else "contains", "kind": kind}
    if kind == "range_numbers":
        if not isinstance(cv, Mapping):
            raise KommoImportError(pointer_join(at, "condition_value"), "range_numbers takes {from, to}")
        return {"check": "not_contains" if negate else "contains", "kind": "range", "min": cv.get("from"),
                "max": cv.get("to")}
    if kind == "simple":
        if op == "length":
            if not (isinstance(cv, int) or (isinstance(cv, str) and cv.isdigit())):
                raise KommoImportError(pointer_join(at, "condition_value"), "a length is a number")
            return {"check": "length", "min": int(cv), "max": int(cv)}
        if op in ("equal", "not_equal"):
            return {"check": "not_equals" if negate else "equals", "value": str(cv)}
        if op in ("contains", "not_contains"):
            return {"check": "not_contains" if negate else "contains", "kind": "text", "value": str(cv)}
        raise KommoImportError(pointer_join(at, "operation"), f"unknown operation {op!r}")
    raise KommoImportError(pointer_join(at, "type"), f"unknown validation type {kind!r} "
                                                     f"(simple, email, phone, regex, range_numbers)")


_SECTION_ID = re.compile(r"^(wait_)?([qaf])([0-9]+)(.*)$")


def _ordered(steps: Mapping[str, Any], start: str) -> list[str]:
    """Step ids in reading order: the start, then Kommo's steps by number (question, answer, finish,
    each section's steps as they run, a wait just before what it waits for), then the rest."""
    def key(sid: str) -> tuple[Any, ...]:
        m = _SECTION_ID.match(sid)
        if m is None:
            return (1, sid)
        rest = tuple(int(x) if x.isdigit() else 0 for x in m.group(4).split("_") if x)
        return (0, int(m.group(3)), "qaf".index(m.group(2)), 0 if m.group(1) else 1, rest)

    return [start, *sorted((sid for sid in steps if sid != start), key=key)]


def problems_of(exc: KommoImportError) -> list[Problem]:
    """The error as problems (one, or every one the error carries)."""
    found = getattr(exc, "problems", None)
    return list(found) if found else [Problem(exc.pointer, exc.message)]
