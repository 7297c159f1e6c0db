"""The in-memory CRM (``crm_bridge.memory.MemoryCrm``): records, identities, snapshots, commands."""

from __future__ import annotations

from typing import Any

import pytest

from bot.errors import CrmRejected
from crm_bridge import CRM_COMMANDS, ChannelIdentity, CrmBackend, CrmRef, MemoryCrm
from crm_bridge.memory import DEFAULT_PIPELINE, DEFAULT_STAGES


@pytest.fixture
def crm() -> MemoryCrm:
    return MemoryCrm()


@pytest.fixture
def ref(crm: MemoryCrm) -> CrmRef:
    cid = crm.create_contact(
        name="Ann Lee", phone="+905551112233", fields={"city": "Izmir"}, tags=["a"]
    )
    return CrmRef(cid, crm.create_lead(contact_id=cid, price=100, tags=["new"]))


def test_memory_crm_is_a_crm_backend(crm: MemoryCrm) -> None:
    assert isinstance(crm, CrmBackend) and crm.name == "memory"


def test_create_contact_and_lead_defaults(crm: MemoryCrm) -> None:
    cid = crm.create_contact(name="Ann Lee", budget=5)
    assert crm.contacts[cid] == {
        "id": cid,
        "name": "Ann Lee",
        "first_name": "Ann",
        "phone": None,
        "email": None,
        "fields": {"budget": 5},
        "tags": [],
        "responsible": None,
    }
    assert crm.create_contact()  # nameless
    lid = crm.create_lead(contact_id=cid)
    lead = crm.leads[lid]
    assert (lead["name"], lead["price"], lead["pipeline"], lead["stage"]) == (
        f"Lead #{lid}",
        0,
        DEFAULT_PIPELINE,
        DEFAULT_STAGES[0],
    )
    assert lead["contacts"] == [cid] and lead["company"] is None
    assert len({cid, lid}) == 2  # one id sequence for every record


def test_pipelines_strict_when_given(crm: MemoryCrm) -> None:
    strict = MemoryCrm(pipelines={"Sales": ["New", "Won"]})
    assert strict.leads[strict.create_lead()]["stage"] == "New"
    with pytest.raises(CrmRejected, match='unknown stage "Lost"'):
        strict.create_lead(stage="Lost")
    with pytest.raises(CrmRejected, match='unknown pipeline "Other"'):
        strict.create_lead(pipeline="Other")
    lid = crm.create_lead(pipeline="Other", stage="Any")  # not strict: learnt
    assert crm.pipelines["Other"] == ["Any"] and crm.leads[lid]["stage"] == "Any"


async def test_identify_creates_once_then_finds(crm: MemoryCrm) -> None:
    who = ChannelIdentity("telegram", "acc", "42", name="Bo Ek", phone="+1", email="bo@example.com")
    ref = await crm.identify(who)
    assert await crm.identify(ChannelIdentity("telegram", "acc", "42")) == ref
    assert await crm.identify(ChannelIdentity("telegram", "other", "42")) != ref
    contact = crm.contacts[ref.contact_id]
    assert (contact["name"], contact["first_name"], contact["phone"], contact["email"]) == (
        "Bo Ek",
        "Bo",
        "+1",
        "bo@example.com",
    )
    assert crm.leads[ref.lead_id]["contacts"] == [ref.contact_id]


async def test_snapshot_is_a_copy_without_internal_links(crm: MemoryCrm, ref: CrmRef) -> None:
    snap = await crm.snapshot(ref)
    assert set(snap) == {"contact", "lead", "company"}
    assert snap["company"] == {}
    assert "contacts" not in snap["lead"] and "company" not in snap["lead"]
    assert snap["contact"]["fields"] == {"city": "Izmir"} and snap["lead"]["tags"] == ["new"]
    snap["lead"]["tags"].append("changed")
    snap["contact"]["fields"]["city"] = "x"
    assert crm.snapshot_now(ref)["lead"]["tags"] == ["new"]
    assert crm.contacts[ref.contact_id]["fields"] == {"city": "Izmir"}


async def test_execute_logs_and_rejects_unknown_commands(crm: MemoryCrm, ref: CrmRef) -> None:
    await crm.execute(ref, {"do": "add_note", "text": "hi"})
    assert crm.log == [{"do": "add_note", "text": "hi"}]
    for do in ("send_email", "send_webhook", "set_variable"):
        with pytest.raises(CrmRejected):
            crm.execute_now(ref, {"do": do})
    assert all(hasattr(crm, f"_do_{do}") for do in CRM_COMMANDS)


@pytest.mark.parametrize(
    ("command", "where", "expected"),
    [
        ({"entity": "lead", "field": "name", "value": "Big deal"}, ("lead", "name"), "Big deal"),
        ({"entity": "lead", "field": "price", "value": "1500"}, ("lead", "price"), 1500),
        ({"entity": "lead", "field": "price", "value": "12.5"}, ("lead", "price"), 12.5),
        ({"entity": "lead", "field": "price", "value": ""}, ("lead", "price"), 0),
        ({"entity": "lead", "field": "budget", "value": 7}, ("lead", "fields"), {"budget": 7}),
        (
            {"entity": "contact", "field": "email", "value": "a@example.com"},
            ("contact", "email"),
            "a@example.com",
        ),
        ({"entity": "contact", "field": "name", "value": "Bo Ek"}, ("contact", "first_name"), "Bo"),
        (
            {"entity": "contact", "field": "city", "value": "Ankara"},
            ("contact", "fields"),
            {"city": "Ankara"},
        ),
        ({"entity": "company", "field": "name", "value": "Acme"}, ("company", "name"), "Acme"),
    ],
)
def test_set_field(
    crm: MemoryCrm, ref: CrmRef, command: dict[str, Any], where: tuple[str, str], expected: Any
) -> None:
    crm.execute_now(ref, {"do": "set_field", **command})
    assert crm.snapshot_now(ref)[where[0]][where[1]] == expected


def test_set_field_rejections(crm: MemoryCrm, ref: CrmRef) -> None:
    with pytest.raises(CrmRejected, match="price must be a number"):
        crm.execute_now(
            ref, {"do": "set_field", "entity": "lead", "field": "price", "value": "a lot"}
        )
    with pytest.raises(CrmRejected, match="unknown entity"):
        crm.execute_now(ref, {"do": "set_field", "entity": "invoice", "field": "x", "value": 1})


def test_tags(crm: MemoryCrm, ref: CrmRef) -> None:
    crm.execute_now(ref, {"do": "tags", "add": ["vip", "new", "", 5], "remove": ["new"]})
    assert crm.leads[ref.lead_id]["tags"] == ["vip", "5"]
    crm.execute_now(ref, {"do": "tags", "entity": "contact", "add": ["b"]})
    assert crm.contacts[ref.contact_id]["tags"] == ["a", "b"]
    crm.execute_now(ref, {"do": "tags", "entity": "company", "add": ["c"]})
    assert crm.snapshot_now(ref)["company"]["tags"] == ["c"]


def test_notes(crm: MemoryCrm, ref: CrmRef) -> None:
    crm.execute_now(ref, {"do": "add_note", "text": "on lead"})
    crm.execute_now(ref, {"do": "add_note", "text": "on contact", "entity": "contact"})
    other = CrmRef(crm.create_contact(), crm.create_lead())
    crm.execute_now(other, {"do": "add_note", "text": "elsewhere"})
    assert [(n["entity"], n["text"]) for n in crm.lead_notes(ref)] == [
        ("lead", "on lead"),
        ("contact", "on contact"),
    ]


def test_tasks_and_completing_them_by_type_and_window(crm: MemoryCrm, ref: CrmRef) -> None:
    crm.leads[ref.lead_id]["responsible"] = 9
    for text, kind, due in [
        ("past", "follow_up", "2024-04-30T10:00:00+03:00"),
        ("today", "follow_up", "2024-05-01T18:00:00+03:00"),
        ("tomorrow", "meeting", "2024-05-02T09:00:00+03:00"),
        ("someday", "follow_up", None),
    ]:
        crm.execute_now(ref, {"do": "add_task", "text": text, "task_type": kind, "due_at": due})
    crm.execute_now(ref, {"do": "add_task", "text": "for 7", "responsible": 7, "due_at": None})
    tasks = crm.lead_tasks(ref)
    assert [t["responsible"] for t in tasks] == [9, 9, 9, 9, 7]
    assert all(t["completed"] is False for t in tasks)

    result = crm.execute_now(
        ref,
        {
            "do": "complete_tasks",
            "task_type": "all",
            "due_from": "2024-05-01T00:00:00+03:00",
            "due_to": "2024-05-02T00:00:00+03:00",
            "comment": "done today",
        },
    )
    assert result.value == 3  # "today" and the two without a due date
    done = {t["text"]: (t["completed"], t["result"]) for t in crm.lead_tasks(ref)}
    assert done == {
        "past": (False, None),
        "today": (True, "done today"),
        "tomorrow": (False, None),
        "someday": (True, "done today"),
        "for 7": (True, "done today"),
    }
    assert crm.execute_now(ref, {"do": "complete_tasks", "task_type": "meeting"}).value == 1
    assert (
        crm.execute_now(ref, {"do": "complete_tasks", "due_to": "2024-05-01T00:00:00+03:00"}).value
        == 1
    )
    assert crm.execute_now(ref, {"do": "complete_tasks"}).value == 0


def test_change_stage(crm: MemoryCrm, ref: CrmRef) -> None:
    crm.execute_now(ref, {"do": "change_stage", "stage": "Won"})
    assert (crm.leads[ref.lead_id]["pipeline"], crm.leads[ref.lead_id]["stage"]) == (
        DEFAULT_PIPELINE,
        "Won",
    )
    crm.execute_now(ref, {"do": "change_stage", "pipeline": "Support", "stage": "Open"})
    assert (crm.leads[ref.lead_id]["pipeline"], crm.leads[ref.lead_id]["stage"]) == (
        "Support",
        "Open",
    )
    strict = MemoryCrm(pipelines={"Sales": ["New", "Won"]})
    sref = CrmRef(strict.create_contact(), strict.create_lead())
    with pytest.raises(CrmRejected):
        strict.execute_now(sref, {"do": "change_stage", "stage": "Lost"})
    assert strict.leads[sref.lead_id]["stage"] == "New"


def test_change_responsible(crm: MemoryCrm, ref: CrmRef) -> None:
    second = crm.create_contact(name="Bo")
    crm.leads[ref.lead_id]["contacts"].append(second)
    crm.execute_now(ref, {"do": "change_responsible", "user": 5, "entities": ["lead", "company"]})
    assert crm.leads[ref.lead_id]["responsible"] == 5
    assert crm.snapshot_now(ref)["company"]["responsible"] == 5
    assert crm.contacts[ref.contact_id]["responsible"] is None
    crm.execute_now(ref, {"do": "change_responsible", "user": 6, "entities": ["main_contact"]})
    assert (crm.contacts[ref.contact_id]["responsible"], crm.contacts[second]["responsible"]) == (
        6,
        None,
    )
    crm.execute_now(ref, {"do": "change_responsible", "user": 8, "entities": ["all_contacts"]})
    assert (crm.contacts[ref.contact_id]["responsible"], crm.contacts[second]["responsible"]) == (
        8,
        8,
    )


def test_create_lead_copies_what_is_asked(crm: MemoryCrm, ref: CrmRef) -> None:
    crm.leads[ref.lead_id]["fields"] = {"budget": 5}
    crm.leads[ref.lead_id]["responsible"] = 9
    lid = crm.execute_now(
        ref,
        {
            "do": "create_lead",
            "copy": ["price", "tags", "contacts", "fields"],
            "name": "Second",
            "stage": "Won",
        },
    ).value["lead_id"]
    new = crm.leads[lid]
    assert (
        new["name"],
        new["price"],
        new["tags"],
        new["contacts"],
        new["fields"],
        new["stage"],
        new["responsible"],
    ) == ("Second", 100, ["new"], [ref.contact_id], {"budget": 5}, "Won", 9)
    new["tags"].append("x")
    assert crm.leads[ref.lead_id]["tags"] == ["new"]
    bare = crm.leads[crm.execute_now(ref, {"do": "create_lead", "responsible": 3}).value["lead_id"]]
    assert (bare["price"], bare["tags"], bare["contacts"], bare["stage"], bare["responsible"]) == (
        0,
        [],
        [],
        DEFAULT_STAGES[0],
        3,
    )


def test_subscribers(crm: MemoryCrm, ref: CrmRef) -> None:
    crm.execute_now(ref, {"do": "subscribers", "add": [1, 2, 2]})
    crm.execute_now(ref, {"do": "subscribers", "add": [3], "remove": [1]})
    assert crm.leads[ref.lead_id]["subscribers"] == [2, 3]
