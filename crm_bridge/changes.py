"""The CRM events of a change to the embedded CRM: a pure diff of records before and after.

``RedisCrm.execute`` (a flow's or an automation's command) and ``CrmDirectory`` (the API, a
person in ``/live``) compute the changes of every write with these functions and hand them to
a ``ChangeSink`` (the lead queues, ``bot.runtime.leads.LeadService``): the sink's commands go
into the very MULTI/EXEC that writes the records, so a change is stored together with its
events or not at all; ``written`` then starts handling them (recovery does, if the process
dies first). Types and ``data`` are those of the spec (docs/automations.md, "Events").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Change:
    """One CRM event about lead ``lead_id`` (``contact_id``: its contact, when known).
    ``depth``: how many rule actions led to it (0 for a person or a flow)."""

    type: str
    lead_id: str
    data: dict[str, Any] = field(default_factory=dict)
    contact_id: str | None = None
    depth: int = 0


class ChangeSink(Protocol):
    """Where the embedded CRM's changes go (the lead queues)."""

    def commands(self, changes: Sequence[Change]) -> list[tuple[Any, ...]]:
        """Redis commands that store the changes' events, sent in the CRM write's MULTI/EXEC."""
        ...

    def written(self, changes: Sequence[Change]) -> None:
        """The write (and the events with it) is stored: start handling the events."""
        ...


def _position(lead: Mapping[str, Any]) -> dict[str, Any]:
    return {"pipeline": lead.get("pipeline"), "stage": lead.get("stage")}


def _main_contact(lead: Mapping[str, Any]) -> str | None:
    contacts = lead.get("contacts") or []
    return str(contacts[0]) if contacts else None


def lead_changes(before: Mapping[str, Any] | None, after: Mapping[str, Any], *,
                 depth: int = 0) -> list[Change]:
    """The events of one lead record's change (``before`` None: the lead is new)."""
    lid = str(after["id"])
    contact = _main_contact(after)

    def change(type_: str, data: dict[str, Any]) -> Change:
        return Change(type_, lid, data, contact, depth)

    if before is None:
        return [change("lead.created", _position(after))]
    out: list[Change] = []
    if _position(before) != _position(after):
        out.append(change("lead.stage_changed", {"from": _position(before), "to": _position(after)}))
    if before.get("responsible") != after.get("responsible"):
        out.append(change("lead.responsible_changed", {"from": before.get("responsible"),
                                                       "to": after.get("responsible")}))
    old_tags, new_tags = list(before.get("tags") or []), list(after.get("tags") or [])
    out += [change("lead.tag_added", {"tag": t}) for t in new_tags if t not in old_tags]
    out += [change("lead.tag_removed", {"tag": t}) for t in old_tags if t not in new_tags]
    old_fields: Mapping[str, Any] = before.get("fields") or {}
    new_fields: Mapping[str, Any] = after.get("fields") or {}
    for name in dict.fromkeys([*old_fields, *new_fields]):
        if old_fields.get(name) != new_fields.get(name):
            out.append(change("lead.field_changed", {"field": name, "from": old_fields.get(name),
                                                     "to": new_fields.get(name)}))
    for name in ("name", "price"):  # the lead's own fields, named as rules write them
        if before.get(name) != after.get(name):
            out.append(change("lead.field_changed", {"field": f"lead.{name}", "from": before.get(name),
                                                     "to": after.get(name)}))
    return out


#: A contact record's keys that are not attributes a rule watches (tags have their own events
#: on leads only; ``fields`` are watched one by one as ``contact.fields.<name>``).
_CONTACT_UNWATCHED = frozenset({"id", "fields", "tags"})


def contact_changes(before: Mapping[str, Any] | None, after: Mapping[str, Any], lead_ids: Sequence[str], *,
                    depth: int = 0) -> list[Change]:
    """``lead.field_changed`` for each changed attribute (``contact.email``, ``contact.score``)
    and custom field (``contact.fields.city``) of a contact that existed before, on each of
    ``lead_ids`` (a rule is a stage's, and a lead queue holds every event): the lead the change
    was made for (a flow's, a rule's), else the contact's newest open lead (a person, the API)
    — one lead, so a rule on a contact's field acts once, not once per lead."""
    if before is None or not lead_ids:
        return []
    cid = str(after["id"])
    moved: list[tuple[str, Any, Any]] = []
    for name in dict.fromkeys([*before, *after]):
        if name not in _CONTACT_UNWATCHED and before.get(name) != after.get(name):
            moved.append((f"contact.{name}", before.get(name), after.get(name)))
    old_fields: Mapping[str, Any] = before.get("fields") or {}
    new_fields: Mapping[str, Any] = after.get("fields") or {}
    for name in dict.fromkeys([*old_fields, *new_fields]):
        if old_fields.get(name) != new_fields.get(name):
            moved.append((f"contact.fields.{name}", old_fields.get(name), new_fields.get(name)))
    return [Change("lead.field_changed", str(lid), {"field": field, "from": old, "to": new}, cid, depth)
            for lid in lead_ids for field, old, new in moved]


def contact_created(contact_id: str, lead_id: str, *, depth: int = 0) -> Change:
    """A new contact, as an event of the lead it came with (a lead queue holds every event)."""
    return Change("contact.created", lead_id, {"contact": contact_id}, contact_id, depth)


def task_changes(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]], *,
                 contact_id: str | None = None, depth: int = 0) -> list[Change]:
    """``task.completed`` for every task that was open before and is completed after."""
    was_open = {str(t["id"]) for t in before if not t.get("completed")}
    return [Change("task.completed", str(t["lead_id"]), {"task": str(t["id"]), "text": t.get("text"),
                                                         "result": t.get("result")}, contact_id, depth)
            for t in after if t.get("completed") and str(t["id"]) in was_open]
