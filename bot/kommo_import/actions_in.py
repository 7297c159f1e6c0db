"""Kommo's CRM handlers → our action-step actions: ``action`` (set_tag, change_status, …), the
builder's ``trigger`` (create_task) and ``meta`` (deep-link data).

Each function returns our actions, or raises ``NoEquivalent`` when the handler has none (the caller
keeps it as a custom step). Malformed params raise ``KommoImportError`` with their pointer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .build import Builder, params_of
from .result import KommoImportError, pointer_join

Action = dict[str, Any]
Convert = Callable[[Builder, Mapping[str, Any], str], list[Action]]

_ENTITY = {1: "contact", 2: "lead", 3: "company", "contact": "contact", "lead": "lead", "company": "company",
           "contacts": "contact", "leads": "lead", "companies": "company"}
_FIELD_PLACEHOLDER = re.compile(r"^\{\{\s*(lead|contact|company)\.cf\.([0-9]+)\s*\}\}$")
_FORMULA = re.compile(r"^[0-9.+\-*/() ]*$")
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s][^{}]*?)\s*\}\}")


class NoEquivalent(Exception):
    """The handler has no equivalent here: ``kind`` names the custom step, ``why`` the warning."""

    def __init__(self, kind: str, why: str) -> None:
        super().__init__(why)
        self.kind = kind
        self.why = why


def entity(raw: Any, pointer: str, default: str = "lead") -> str:
    if raw is None:
        return default
    key = int(raw) if isinstance(raw, str) and raw.isdigit() else raw
    found = _ENTITY.get(key) if isinstance(key, (int, str)) else None
    if found is None:
        raise KommoImportError(pointer, f"unknown entity type {raw!r} (1 contact, 2 lead, 3 company)")
    return found


def action(b: Builder, h: Mapping[str, Any], pointer: str) -> list[Action]:
    """``{"handler": "action", "params": {"name": …, "params": {…}}}`` → our actions."""
    p = params_of(h, pointer)
    name = p.get("name")
    if not isinstance(name, str):
        raise KommoImportError(pointer_join(pointer, "params", "name"), "action: name must be text")
    at = pointer_join(pointer, "params", "params")
    q = p.get("params", {})
    if not isinstance(q, Mapping):
        raise KommoImportError(at, f"action {name}: params must be an object")
    convert: Convert | None = _ACTIONS.get(name)
    if convert is None:
        raise NoEquivalent(f"action.{name}", f'Kommo action "{name}" has no equivalent here')
    return convert(b, q, at)


def _required(q: Mapping[str, Any], key: str, at: str) -> Any:
    if key not in q or q[key] is None:
        raise KommoImportError(pointer_join(at, key), "required")
    return q[key]


def _tags(add: bool) -> Convert:
    def convert(b: Builder, q: Mapping[str, Any], at: str) -> list[Action]:
        tag = b.text(_required(q, "value", at), pointer_join(at, "value"))
        return [{"do": "tags", "entity": entity(q.get("type"), pointer_join(at, "type")),
                 "add" if add else "remove": [tag]}]
    return convert


def _change_status(b: Builder, q: Mapping[str, Any], at: str) -> list[Action]:
    raw = _required(q, "value", at)
    if q.get("entity") == "double":
        raise NoEquivalent("action.change_status", "change_status of the duplicate lead has no equivalent here")
    if isinstance(raw, str) and "{{" in raw:
        return [{"do": "change_stage", "stage": b.text(raw, pointer_join(at, "value"))}]
    return [{"do": "change_stage", "stage": b.named("stages", raw, pointer_join(at, "value"))}]


def formula(b: Builder, raw: Any, at: str) -> Any:
    """Kommo computes ``{{lead.cf.1}}*{{lead.cf.2}}``; we render one typed expression of the same sum."""
    if not isinstance(raw, str):
        return raw
    parts: list[str] = []
    rest = raw
    for m in _PLACEHOLDER.finditer(raw):
        expr = b.text(m.group(0), at)[3:-3]
        parts.append(f"({expr} | float)")
        rest = rest.replace(m.group(0), "\0", 1)
    literal = rest.replace("\0", "")
    if not parts or not _FORMULA.match(literal):
        return b.text(raw, at)
    pieces = rest.split("\0")
    expr = pieces[0] + "".join(part + piece for part, piece in zip(parts, pieces[1:], strict=True))
    return "{{ " + expr.strip() + " }}"


def _set_custom_fields(b: Builder, q: Mapping[str, Any], at: str) -> list[Action]:
    kind = entity(q.get("type"), pointer_join(at, "type"))
    if "custom_fields_id" in q:
        name = b.field(q["custom_fields_id"], pointer_join(at, "custom_fields_id"))
    elif isinstance(q.get("custom_field"), str) and (m := _FIELD_PLACEHOLDER.match(q["custom_field"])):
        kind, name = m.group(1), b.field(m.group(2), pointer_join(at, "custom_field"))
    elif "custom_field" in q:
        raise NoEquivalent("action.set_custom_fields", f"the field {q['custom_field']!r} has no equivalent here")
    else:
        raise KommoImportError(pointer_join(at, "custom_fields_id"), "set_custom_fields needs custom_fields_id")
    raw = _required(q, "value", at)
    vat = pointer_join(at, "value")
    value = formula(b, raw, vat) if q.get("calculated") else b.value(raw, vat)
    if q.get("option") == "add":
        b.approximate(pointer_join(at, "option"), 'option "add" (append to the field) sets the field instead')
    return [{"do": "set_field", "entity": kind, "field": name, "value": value}]


def _set_budget(b: Builder, q: Mapping[str, Any], at: str) -> list[Action]:
    return [{"do": "set_field", "entity": "lead", "field": "price",
             "value": formula(b, _required(q, "value", at), pointer_join(at, "value"))}]


def _add_note(b: Builder, q: Mapping[str, Any], at: str) -> list[Action]:
    kind = entity(q.get("element_type"), pointer_join(at, "element_type"))
    if kind == "company":
        b.approximate(pointer_join(at, "element_type"), "a note on the company is added to the lead")
        kind = "lead"
    if str(q.get("note_type", 4)) not in ("4", "common"):
        b.approximate(pointer_join(at, "note_type"), "the note is added as a common (text) note")
    return [{"do": "add_note", "entity": kind, "text": b.text(_required(q, "text", at), pointer_join(at, "text"))}]


def _responsible(b: Builder, q: Mapping[str, Any], at: str) -> list[Action]:
    raw = _required(q, "value", at)
    kind = entity(q.get("type"), pointer_join(at, "type"))
    user: Any = (b.text(raw, pointer_join(at, "value")) if isinstance(raw, str) and "{{" in raw
                 else b.named("users", raw, pointer_join(at, "value")))
    return [{"do": "change_responsible", "user": user,
             "entities": ["main_contact" if kind == "contact" else kind]}]


def _subscribers(add: bool) -> Convert:
    def convert(b: Builder, q: Mapping[str, Any], at: str) -> list[Action]:
        raw = _required(q, "value", at)
        if q.get("type", "user") != "user" or (isinstance(raw, str) and "{{" in raw):
            raise NoEquivalent("action.subscribe" if add else "action.unsubscribe",
                               "subscribing a group or a computed user has no equivalent here")
        return [{"do": "subscribers", "add" if add else "remove": [b.named("users", raw, pointer_join(at, "value"))]}]
    return convert


def _webhook(b: Builder, q: Mapping[str, Any], at: str) -> list[Action]:
    """The "Send webhook" action (not in Kommo's code docs; shape as builders report it)."""
    method = str(q.get("method", "POST")).upper()
    if method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        raise KommoImportError(pointer_join(at, "method"), f"unknown HTTP method {method!r}")
    body = q.get("data", q.get("body"))
    return [{"do": "send_webhook", "url": b.text(_required(q, "url", at), pointer_join(at, "url")),
             "method": method, "body": None if body is None else b.value(body, pointer_join(at, "data"))}]


def _add_task(b: Builder, q: Mapping[str, Any], at: str) -> list[Action]:
    """``add_task`` (as builders report it): text, task_type_id, responsible_user_id."""
    task: Action = {"do": "add_task", "text": b.text(_required(q, "text", at), pointer_join(at, "text"))}
    task_type = q.get("task_type_id", q.get("task_type"))
    if task_type is not None:
        task["task_type"] = TASK_TYPES.get(str(task_type), str(task_type))
    if q.get("responsible_user_id") is not None:
        task["responsible"] = b.named("users", q["responsible_user_id"], pointer_join(at, "responsible_user_id"))
    return [task]


def _send_email(b: Builder, q: Mapping[str, Any], at: str) -> list[Action]:
    """``send_email`` (as builders report it): a template id, or a subject and a text."""
    email: Action = {"do": "send_email"}
    if q.get("template_id") is not None or q.get("template") is not None:
        raw = q.get("template_id", q.get("template"))
        if not isinstance(raw, (str, int)) or isinstance(raw, bool):
            raise KommoImportError(pointer_join(at, "template_id"), "send_email: a template is named by its id")
        email["template"] = str(raw)
    elif "subject" in q:
        body = q.get("text", q.get("body"))
        email["template"] = {"subject": b.text(q["subject"], pointer_join(at, "subject")),
                             "body": b.text(body, pointer_join(at, "text"))}
    else:
        raise NoEquivalent("action.send_email", "send_email without a template or a subject has no equivalent here")
    if q.get("to") == "all_contacts":
        email["to"] = "all_contacts"
    b.approximate(at, "send_email's shape is not in Kommo's code docs: check the template and the sender")
    return [email]


TASK_TYPES = {"1": "follow_up", "2": "meeting"}


def trigger(b: Builder, h: Mapping[str, Any], pointer: str) -> list[Action]:
    """The builder's ``trigger`` handler: ``create_task`` becomes add_task; other triggers have no equivalent."""
    p = params_of(h, pointer)
    t = p.get("trigger")
    at = pointer_join(pointer, "params", "trigger")
    if not isinstance(t, Mapping):
        raise KommoImportError(at, "trigger: params.trigger must be an object")
    if t.get("action") != "create_task":
        raise NoEquivalent(f"trigger.{t.get('action')}", f"the builder trigger {t.get('action')!r} has no equivalent")
    s = t.get("settings")
    if not isinstance(s, Mapping):
        raise KommoImportError(pointer_join(at, "settings"), "create_task: settings must be an object")
    sat = pointer_join(at, "settings")
    task: Action = {"do": "add_task", "text": b.text(_required(s, "task_text", sat), pointer_join(sat, "task_text")),
                    "task_type": TASK_TYPES.get(str(s.get("task_type", "1")), s.get("task_type_name") or "follow_up")}
    if s.get("responsible_user"):
        task["responsible"] = b.named("users", s["responsible_user"], pointer_join(sat, "responsible_user"))
    due = "".join(f"{int(v)}{unit}" for key, unit in (("deadline-days", "d"), ("deadline-hours", "h"),
                                                        ("deadline-minutes", "m"))
                  if str(v := s.get(key) or "").strip().isdigit() and int(v))
    task["due"] = due or "now"
    if t.get("delay"):
        b.approximate(pointer_join(at, "delay"), "the task is created at once, not after the trigger's delay")
    return [task]


def meta(b: Builder, h: Mapping[str, Any], pointer: str) -> list[Action]:
    """``meta``: the chat's start data split by ``delimiter`` into lead tags and custom fields, in order.

    We read it from the starting message's payload (deep-link data), else its text."""
    p = params_of(h, pointer)
    delimiter = p.get("delimiter", "-")
    values = p.get("values")
    if not isinstance(delimiter, str) or not delimiter or not isinstance(values, list):
        raise KommoImportError(pointer_join(pointer, "params"), "meta: needs delimiter (text) and values (a list)")
    source = f"((message.payload or message.text) ~ '').split({delimiter!r})"
    actions: list[Action] = []
    for i, target in enumerate(values):
        at = pointer_join(pointer, "params", "values", i)
        part = "{{ " + f"{source}[{i}] | default('')" + " }}"
        parts = target.split(".") if isinstance(target, str) else []
        if parts == ["lead", "tags"]:
            actions.append({"do": "tags", "entity": "lead", "add": [part]})
        elif len(parts) == 3 and parts[1] == "custom_fields" and parts[0] in ("lead", "contact", "company"):
            actions.append({"do": "set_field", "entity": parts[0], "field": b.field(parts[2], at), "value": part})
        else:
            raise KommoImportError(at, f"meta: unknown target {target!r} (lead.tags or <entity>.custom_fields.<id>)")
    b.approximate(pointer, "meta reads the start data from the first message's payload (deep link), else its text")
    return actions


_ACTIONS: dict[str, Convert] = {
    "set_tag": _tags(True), "unset_tag": _tags(False), "change_status": _change_status,
    "set_custom_fields": _set_custom_fields, "set_budget": _set_budget, "add_note": _add_note,
    "change_responsible_user": _responsible, "subscribe": _subscribers(True), "unsubscribe": _subscribers(False),
    "webhook": _webhook, "send_webhook": _webhook, "add_task": _add_task, "send_email": _send_email,
}
