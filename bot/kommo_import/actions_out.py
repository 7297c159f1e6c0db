"""Our actions → Kommo's CRM handlers: ``action`` (set_tag, set_custom_fields, change_status, …)
and the visual builder's ``trigger`` for tasks; the inverse of actions_in.py.

An action Kommo's code cannot express is refused through the exporter (convert_out.py), with its
pointer; what is emitted then is a placeholder that is never written out.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from bot.builder import models as m

from .mapping import Table
from .placeholders import FieldNames

Handler = dict[str, Any]
_WHOLE = re.compile(r"\{\{ (.*) \}\}", re.DOTALL)
_NUMBER = re.compile(r"\(([A-Za-z_][A-Za-z0-9_.\[\]\"-]*) \| float\)")
_ARITHMETIC = re.compile(r"[0-9.+\-*/() ]*")
#: Our entities → Kommo's ``type`` / ``element_type`` codes.
ENTITY_CODES = {"lead": 2, "contact": 1, "company": 3}
#: Kommo's system stages (won, lost): the same ids in every pipeline.
CLOSED_STAGES = frozenset({142, 143})
#: Our task types → Kommo's default task type ids.
TASK_TYPE_IDS = {"follow_up": "1", "meeting": "2"}
#: Named task deadlines Kommo can say (in days); end_of_day / end_of_week it cannot.
DUE_DAYS = {"in_1_day": 1, "in_3_days": 3}


class Exporter(Protocol):
    fields: FieldNames

    def refuse(self, pointer: str, message: str) -> None: ...
    def text(self, template: str, pointer: str) -> str: ...
    def value(self, value: Any, pointer: str) -> Any: ...
    def kommo_id(self, table: Table, value: object, pointer: str, what: str, *,
                 computed: bool = False) -> int | str | None: ...


def _act(name: str, params: dict[str, Any]) -> Handler:
    return {"handler": "action", "params": {"name": name, "params": params}}


def action(x: Exporter, a: m.Action, at: str) -> list[Handler]:
    """The handlers of one action of ours (tags and subscribers: one per name)."""
    match a:
        case m.Tags():
            code = ENTITY_CODES[a.entity]
            return ([_act("set_tag", {"type": code, "value": x.text(t, f"{at}/add/{i}")}) for i, t in enumerate(a.add)]
                    + [_act("unset_tag", {"type": code, "value": x.text(t, f"{at}/remove/{i}")})
                       for i, t in enumerate(a.remove)])
        case m.SetField():
            return _set_field(x, a, at)
        case m.ChangeStage():
            stage = x.kommo_id("stages", a.stage, f"{at}/stage", "stage", computed=True)
            if a.pipeline is not None and stage in CLOSED_STAGES:
                x.refuse(f"{at}/pipeline", "Kommo moves a lead to won or lost in its own pipeline only: "
                         "leave the pipeline out")
            return [_act("change_status", {"value": stage})]
        case m.ChangeResponsible():
            user = x.kommo_id("users", a.user, f"{at}/user", "user", computed=True)
            codes = {"lead": 2, "main_contact": 1, "company": 3}
            if len(a.entities) != 1 or a.entities[0] not in codes:
                x.refuse(f"{at}/entities", "Kommo changes the responsible user of one entity per action: "
                         "the lead, the main contact or the company")
            return [_act("change_responsible_user", {"value": user, "type": codes.get(a.entities[0], 2)})]
        case m.AddNote():
            return [_act("add_note", {"element_type": ENTITY_CODES[a.entity], "note_type": 4,
                                      "text": x.text(a.text, f"{at}/text")})]
        case m.Subscribers():
            def uid(u: str | int, where: str) -> int | str | None:
                return x.kommo_id("users", u, where, "user")
            return ([_act("subscribe", {"type": "user", "value": uid(u, f"{at}/add/{i}")})
                     for i, u in enumerate(a.add)]
                    + [_act("unsubscribe", {"type": "user", "value": uid(u, f"{at}/remove/{i}")})
                       for i, u in enumerate(a.remove)])
        case m.AddTask():
            return [_task(x, a, at)]
        case m.SetChatStatus() if a.status == "closed":  # convert_in: a talk-close with more to do
            return [{"handler": "stop", "params": {"action": "talk-close"}}]
        case m.SendWebhook():
            return [_webhook(x, a, at)]
        case _:
            x.refuse(f"{at}/do", f'Kommo has no action like "{a.do}" in a bot\'s code')
            return []


def _webhook(x: Exporter, a: m.SendWebhook, at: str) -> Handler:
    """The "Send webhook" action as builders report it (``url``, ``method``, ``data``): fire and forget."""
    if a.headers:
        x.refuse(f"{at}/headers", "Kommo's Send webhook has no headers")
    if a.save_as != "json":
        x.refuse(f"{at}/save_as", "Kommo keeps no webhook answer under another name")
    params: dict[str, Any] = {"url": x.text(a.url, f"{at}/url"), "method": a.method}
    if a.body is not None:
        params["data"] = x.value(a.body, f"{at}/body")
    return _act("webhook", params)


def _set_field(x: Exporter, a: m.SetField, at: str) -> list[Handler]:
    if a.from_ == "manual":
        x.refuse(f"{at}/from", "Kommo has no field value asked of the responsible user")
    computed = _formula(x, a.value, f"{at}/value") if isinstance(a.value, str) else None
    if computed is not None:
        value: Any = computed
    else:
        value = "{{message_text}}" if a.from_ == "message" else x.value(a.value, f"{at}/value")
    if a.entity == "lead" and a.field == "price":  # the lead's sale value: Kommo's own action for it
        return [_act("set_budget", {"value": value})]
    field_id = x.fields.id(a.field)
    if field_id is None:
        x.refuse(f"{at}/field", f'Kommo has no field named "{a.field}": add its id to [fields] in the map '
                 "(or name it cf_<id>)")
    params = {"type": ENTITY_CODES[a.entity], "value": value, "custom_fields_id": field_id}
    return [_act("set_custom_fields", {**params, "calculated": True} if computed is not None else params)]


def _formula(x: Exporter, value: str, at: str) -> str | None:
    """Kommo's arithmetic on placeholders (``{{lead.cf.1}}*{{lead.cf.2}}``) from the one expression
    convert_in makes of it (``{{ (lead.fields.a | float)*(lead.fields.b | float) }}``); None for any other value."""
    whole = _WHOLE.fullmatch(value)
    if whole is None:
        return None
    parts = _NUMBER.split(whole.group(1))  # literal, path, literal, path, …, literal
    literals, paths = parts[0::2], parts[1::2]
    if not paths or not all(_ARITHMETIC.fullmatch(lit) for lit in literals):
        return None
    out = literals[0]
    for path, literal in zip(paths, literals[1:], strict=True):
        out += x.text("{{ " + path + " }}", at) + literal
    return out


def _task(x: Exporter, a: m.AddTask, at: str) -> Handler:
    """The visual builder's ``trigger`` ``create_task`` (the only task handler Kommo exports)."""
    deadline = {"deadline-days": "", "deadline-hours": "", "deadline-minutes": ""}
    if isinstance(a.due, int):
        if a.due % 60:
            x.refuse(f"{at}/due", "Kommo has no task deadline in seconds: use whole minutes")
        days, rest = divmod(a.due, 86400)
        hours, minutes = divmod(rest // 60, 60)
        for key, amount in (("deadline-days", days), ("deadline-hours", hours), ("deadline-minutes", minutes)):
            deadline[key] = str(amount) if amount else ""
    elif a.due in DUE_DAYS:
        deadline["deadline-days"] = str(DUE_DAYS[a.due])
    elif a.due != "now":
        x.refuse(f"{at}/due", f'Kommo has no task deadline "{a.due}": use now or a duration such as "1d"')
    task_type = TASK_TYPE_IDS.get(a.task_type, a.task_type)
    if not task_type.isdigit():
        x.refuse(f"{at}/task_type",
                 f'Kommo names task types other than follow_up and meeting by id, not "{a.task_type}"')
    responsible = "" if a.responsible == "current" else x.kommo_id("users", a.responsible, f"{at}/responsible", "user")
    settings = {"task_text": x.text(a.text, f"{at}/text"), "task_type": task_type, **deadline,
                "within-deadline": "0", "responsible_user": str(responsible or "")}
    return {"handler": "trigger", "params": {"trigger": {
        "delay": 0, "action": "create_task", "segments": [""], "settings": settings, "date_exec": 0,
        "handler_code": "amocrm", "execution_condition": {"id": 45, "name": "execute_trigger"}},
        "element_type": "lead"}}
