"""The CRM contract: pytest tests every ``CrmBackend`` must pass.

Use it from a test module::

    from crm_bridge.contract import CrmContract

    class TestMyCrmContract(CrmContract):
        @pytest_asyncio.fixture       # pytest_asyncio's: pytest's own runs no async fixture
        async def crm(self):
            yield MyCrm(...)   # knowing the pipelines ``PIPELINES``, the users ``USERS``, and
                               # the custom fields ``LEAD_FIELD`` (lead) and ``CONTACT_FIELD``
                               # (contact), both text fields

The tests are marked ``pytest.mark.asyncio`` and need ``pytest-asyncio`` (any mode).

Optional hooks a subclass overrides: ``unsupported`` (commands the CRM cannot do: they must be
rejected, permanently); ``fail_next(status)`` (make the CRM's next answer an HTTP ``status``,
to check the typed errors); ``tasks``/``notes`` (how to read a lead's tasks and notes, by
default the backend's ``lead_tasks``/``lead_notes``).

What it proves, for each command of ``CRM_COMMANDS``: the effect is visible in the next
snapshot (or in the lead's tasks and notes), other data is left alone (tags added without
replacing the others), and a command the CRM cannot carry out raises ``CrmRejected``.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from bot.errors import CrmRateLimited, CrmRejected, CrmUnavailable

from .interface import CRM_COMMANDS, ChannelIdentity, CrmBackend, CrmRef

#: Every test is marked, so the suite runs under pytest-asyncio's default (strict) mode too: a
#: package without ``asyncio_mode = "auto"`` got 17 errors ("async def functions are not natively
#: supported"), and an async ``crm`` fixture declared with ``@pytest.fixture`` none of it ran.
_asyncio = pytest.mark.asyncio

#: Pipelines every contract backend knows (the first is the default one).
PIPELINES: dict[str, list[str]] = {
    "Sales": ["New", "Contacted", "Qualified", "Won", "Lost"],
    "Partners": ["Applied", "Signed"],
}
#: Users (ids) leads and contacts may be assigned to.
USERS = ("7", "8")
LEAD_FIELD = "Budget"
CONTACT_FIELD = "City"


def _epoch(value: Any) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    dt = datetime.fromisoformat(str(value))
    return int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp())


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _who(**extra: Any) -> ChannelIdentity:
    return ChannelIdentity("telegram", "contract", uuid.uuid4().hex[:12], **extra)


class CrmContract:
    """Base class of the contract tests; subclasses provide the ``crm`` fixture."""

    pipelines = PIPELINES
    users = USERS
    lead_field = LEAD_FIELD
    contact_field = CONTACT_FIELD
    unsupported: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A backend without HTTP (memory, Redis) has no HTTP errors to type: that check is not
        # collected for it, rather than skipped (CI accepts no skips).
        super().__init_subclass__(**kwargs)
        cls.test_errors_are_typed = None if cls.fail_next is CrmContract.fail_next else CrmContract._errors_are_typed

    @pytest.fixture
    async def crm(self) -> Any:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError("a contract subclass provides the crm fixture")

    # ------------------------------------------------------------------ hooks
    async def fail_next(self, crm: Any, status: int) -> bool:
        """Make the CRM answer the next request with HTTP ``status``; False: not possible here."""
        return False

    async def tasks(self, crm: Any, ref: CrmRef) -> list[dict[str, Any]]:
        """The lead's tasks as ``{text, type, due (epoch), completed, result, responsible}``."""
        rows = await _maybe(crm.lead_tasks(ref))
        return [{"text": t.get("text"), "type": t.get("type"), "due": _epoch(t.get("due")),
                 "completed": bool(t.get("completed")), "result": t.get("result"),
                 "responsible": None if t.get("responsible") is None else str(t.get("responsible"))}
                for t in rows]

    async def notes(self, crm: Any, ref: CrmRef) -> list[tuple[str, str]]:
        """The notes of the lead and its contact as ``(entity, text)``."""
        return [(str(n.get("entity")), str(n.get("text"))) for n in await _maybe(crm.lead_notes(ref))]

    # ------------------------------------------------------------------ helpers
    async def new_ref(self, crm: CrmBackend, **extra: Any) -> CrmRef:
        return await crm.identify(_who(**extra))

    async def run(self, crm: CrmBackend, ref: CrmRef, do: str, **params: Any) -> Any:
        return (await crm.execute(ref, {"do": do, **params})).value

    # ------------------------------------------------------------------ identify and snapshot
    @_asyncio
    async def test_is_a_crm_backend(self, crm: Any) -> None:
        assert isinstance(crm, CrmBackend)
        assert isinstance(crm.name, str) and crm.name

    @_asyncio
    async def test_identify_creates_once_then_finds(self, crm: Any) -> None:
        who = _who(name="Bo Ek", phone="+905551112233", email="bo@example.com")
        ref = await crm.identify(who)
        assert ref.contact_id and ref.lead_id
        assert await crm.identify(ChannelIdentity(who.channel, who.account, who.external_id)) == ref
        other = await crm.identify(_who())
        assert other.contact_id != ref.contact_id and other.lead_id != ref.lead_id
        contact = (await crm.snapshot(ref))["contact"]
        assert (contact["name"], contact["first_name"], contact["email"]) == ("Bo Ek", "Bo", "bo@example.com")
        assert contact["phone"].replace(" ", "") == "+905551112233"

    @_asyncio
    async def test_a_new_lead_starts_in_the_first_stage_of_the_default_pipeline(self, crm: Any) -> None:
        lead = (await crm.snapshot(await self.new_ref(crm)))["lead"]
        first = next(iter(self.pipelines))
        assert (lead["pipeline"], lead["stage"]) == (first, self.pipelines[first][0])

    @_asyncio
    async def test_snapshot_shape(self, crm: Any) -> None:
        ref = await self.new_ref(crm, name="Ann Lee")
        snap = await crm.snapshot(ref)
        assert set(snap) >= {"contact", "lead", "company"}
        assert set(snap["contact"]) >= {"id", "name", "first_name", "phone", "email", "fields", "tags"}
        assert set(snap["lead"]) >= {"id", "name", "price", "pipeline", "stage", "responsible", "fields", "tags"}
        assert str(snap["contact"]["id"]) == ref.contact_id and str(snap["lead"]["id"]) == ref.lead_id
        assert isinstance(snap["lead"]["fields"], dict) and isinstance(snap["lead"]["tags"], list)
        assert isinstance(snap["contact"]["fields"], dict) and isinstance(snap["contact"]["tags"], list)
        assert snap["company"] == {} or set(snap["company"]) >= {"id", "name", "fields", "tags"}

    # ------------------------------------------------------------------ set_field
    @_asyncio
    async def test_set_field_standard_fields(self, crm: Any) -> None:
        ref = await self.new_ref(crm)
        await self.run(crm, ref, "set_field", entity="lead", field="name", value="Kitchen quote")
        await self.run(crm, ref, "set_field", entity="lead", field="price", value="1500")
        await self.run(crm, ref, "set_field", entity="contact", field="name", value="Ann Lee")
        await self.run(crm, ref, "set_field", entity="contact", field="email", value="ann@example.com")
        await self.run(crm, ref, "set_field", entity="contact", field="phone", value="+15550001111")
        snap = await crm.snapshot(ref)
        assert (snap["lead"]["name"], snap["lead"]["price"]) == ("Kitchen quote", 1500)
        c = snap["contact"]
        assert (c["name"], c["first_name"], c["email"], c["phone"]) == (
            "Ann Lee", "Ann", "ann@example.com", "+15550001111")

    @_asyncio
    async def test_set_field_custom_fields(self, crm: Any) -> None:
        ref = await self.new_ref(crm)
        await self.run(crm, ref, "set_field", entity="lead", field=self.lead_field, value="5000-10000")
        await self.run(crm, ref, "set_field", entity="contact", field=self.contact_field, value="Izmir")
        snap = await crm.snapshot(ref)
        assert snap["lead"]["fields"][self.lead_field] == "5000-10000"
        assert snap["contact"]["fields"][self.contact_field] == "Izmir"
        await self.run(crm, ref, "set_field", entity="lead", field=self.lead_field, value="more")
        assert (await crm.snapshot(ref))["lead"]["fields"][self.lead_field] == "more"

    @_asyncio
    async def test_a_price_that_is_not_a_number_is_rejected(self, crm: Any) -> None:
        ref = await self.new_ref(crm)
        with pytest.raises(CrmRejected):
            await self.run(crm, ref, "set_field", entity="lead", field="price", value="lots")

    # ------------------------------------------------------------------ tags
    @_asyncio
    async def test_tags_are_added_and_removed_without_replacing_the_others(self, crm: Any) -> None:
        ref = await self.new_ref(crm)
        await self.run(crm, ref, "tags", entity="lead", add=["a", "b"])
        await self.run(crm, ref, "tags", entity="lead", add=["c"], remove=["a"])
        await self.run(crm, ref, "tags", entity="lead", add=["b"])  # already there: no duplicate
        await self.run(crm, ref, "tags", entity="contact", add=["vip"])
        await self.run(crm, ref, "tags", entity="contact", add=["b2b"])  # the contact's too are kept
        snap = await crm.snapshot(ref)
        assert sorted(snap["lead"]["tags"]) == ["b", "c"]
        assert sorted(snap["contact"]["tags"]) == ["b2b", "vip"], "a contact's tags were replaced, not added to"
        await self.run(crm, ref, "tags", entity="lead", remove=["missing"])
        assert sorted((await crm.snapshot(ref))["lead"]["tags"]) == ["b", "c"]

    # ------------------------------------------------------------------ tasks
    def _due(self, hours: float) -> str:
        """A due time ``hours`` after a base two days ahead, fixed for the whole test."""
        base: datetime = self.__dict__.setdefault(
            "_due_base", datetime.now(UTC).replace(microsecond=0) + timedelta(days=2))
        return (base + timedelta(hours=hours)).isoformat()

    @_asyncio
    async def test_add_task_with_a_due_time(self, crm: Any) -> None:
        ref = await self.new_ref(crm)
        await self.run(crm, ref, "change_responsible", user=self.users[1], entities=["lead"])
        await self.run(crm, ref, "add_task", text="Call Ann", due_at=self._due(0), task_type="follow_up",
                       responsible="current")
        await self.run(crm, ref, "add_task", text="Show the kitchen", due_at=self._due(3), task_type="meeting",
                       responsible=self.users[0])
        tasks = sorted(await self.tasks(crm, ref), key=lambda t: t["due"])
        assert [(t["text"], t["type"], t["due"], t["completed"], t["responsible"]) for t in tasks] == [
            ("Call Ann", "follow_up", _epoch(self._due(0)), False, self.users[1]),
            ("Show the kitchen", "meeting", _epoch(self._due(3)), False, self.users[0]),
        ]

    @_asyncio
    async def test_complete_tasks_by_type_and_due_window(self, crm: Any) -> None:
        ref = await self.new_ref(crm)
        for text, kind, hours in (("t1", "follow_up", 1), ("t2", "meeting", 2), ("t3", "follow_up", 30)):
            await self.run(crm, ref, "add_task", text=text, due_at=self._due(hours), task_type=kind)
        other = await self.new_ref(crm)  # another lead's task is never touched
        await self.run(crm, other, "add_task", text="o1", due_at=self._due(1), task_type="meeting")
        assert await self.run(crm, ref, "complete_tasks", task_type="meeting", due_from=None, due_to=None,
                              comment="met") == 1
        assert await self.run(crm, ref, "complete_tasks", task_type="all", due_from=self._due(0),
                              due_to=self._due(24), comment=None) == 1
        state = {t["text"]: (t["completed"], t["result"]) for t in await self.tasks(crm, ref)}
        assert state == {"t1": (True, None), "t2": (True, "met"), "t3": (False, None)}
        assert [t["completed"] for t in await self.tasks(crm, other)] == [False]
        assert await self.run(crm, ref, "complete_tasks", task_type="meeting", due_from=None, due_to=None) == 0

    # ------------------------------------------------------------------ notes
    @_asyncio
    async def test_add_note_to_the_lead_and_the_contact(self, crm: Any) -> None:
        ref = await self.new_ref(crm)
        await self.run(crm, ref, "add_note", text="asked for a price", entity="lead")
        await self.run(crm, ref, "add_note", text="prefers calls", entity="contact")
        await self.run(crm, ref, "add_note", text="second lead note")
        notes = await self.notes(crm, ref)
        assert sorted(notes) == [("contact", "prefers calls"), ("lead", "asked for a price"),
                                 ("lead", "second lead note")]

    # ------------------------------------------------------------------ stages
    @_asyncio
    async def test_change_stage_within_and_across_pipelines(self, crm: Any) -> None:
        ref = await self.new_ref(crm)
        await self.run(crm, ref, "change_stage", pipeline=None, stage="Qualified")
        lead = (await crm.snapshot(ref))["lead"]
        assert (lead["pipeline"], lead["stage"]) == ("Sales", "Qualified")
        await self.run(crm, ref, "change_stage", pipeline="Partners", stage="Signed")
        lead = (await crm.snapshot(ref))["lead"]
        assert (lead["pipeline"], lead["stage"]) == ("Partners", "Signed")
        await self.run(crm, ref, "change_stage", pipeline="Sales", stage="Won")
        lead = (await crm.snapshot(ref))["lead"]
        assert (lead["pipeline"], lead["stage"]) == ("Sales", "Won")

    @_asyncio
    async def test_an_unknown_stage_or_pipeline_is_rejected(self, crm: Any) -> None:
        ref = await self.new_ref(crm)
        with pytest.raises(CrmRejected, match="Nowhere"):
            await self.run(crm, ref, "change_stage", pipeline="Sales", stage="Nowhere")
        with pytest.raises(CrmRejected, match="Atlantis"):
            await self.run(crm, ref, "change_stage", pipeline="Atlantis", stage="New")
        with pytest.raises(CrmRejected):  # a stage of another pipeline
            await self.run(crm, ref, "change_stage", pipeline="Partners", stage="Qualified")
        lead = (await crm.snapshot(ref))["lead"]
        assert (lead["pipeline"], lead["stage"]) == ("Sales", self.pipelines["Sales"][0])

    # ------------------------------------------------------------------ responsible
    @_asyncio
    async def test_change_responsible_of_the_lead_and_the_contact(self, crm: Any) -> None:
        ref = await self.new_ref(crm)
        await self.run(crm, ref, "change_responsible", user=self.users[0], entities=["lead", "main_contact"])
        snap = await crm.snapshot(ref)
        assert str(snap["lead"]["responsible"]) == self.users[0]
        assert str(snap["contact"]["responsible"]) == self.users[0]
        await self.run(crm, ref, "change_responsible", user=self.users[1], entities=["lead"])
        snap = await crm.snapshot(ref)
        assert str(snap["lead"]["responsible"]) == self.users[1]
        assert str(snap["contact"]["responsible"]) == self.users[0]

    # ------------------------------------------------------------------ create_lead
    @_asyncio
    async def test_create_lead_copies_what_it_is_told(self, crm: Any) -> None:
        ref = await self.new_ref(crm)
        await self.run(crm, ref, "set_field", entity="lead", field="price", value=700)
        await self.run(crm, ref, "set_field", entity="lead", field=self.lead_field, value="big")
        await self.run(crm, ref, "tags", entity="lead", add=["repeat"])
        value = await self.run(crm, ref, "create_lead", copy=["price", "tags", "fields", "contacts"],
                               pipeline="Partners", stage="Applied")
        assert isinstance(value, dict) and value["lead_id"] and str(value["lead_id"]) != ref.lead_id
        new = (await crm.snapshot(CrmRef(ref.contact_id, str(value["lead_id"]))))["lead"]
        assert (new["pipeline"], new["stage"], new["price"]) == ("Partners", "Applied", 700)
        assert new["tags"] == ["repeat"] and new["fields"][self.lead_field] == "big"
        bare = await self.run(crm, ref, "create_lead", copy=[], pipeline=None, stage=None)
        lead = (await crm.snapshot(CrmRef(ref.contact_id, str(bare["lead_id"]))))["lead"]
        assert (lead["pipeline"], lead["stage"], lead["price"], lead["tags"]) == ("Sales", "New", 0, [])
        old = (await crm.snapshot(ref))["lead"]
        assert (old["pipeline"], old["stage"], old["price"]) == ("Sales", "New", 700)

    # ------------------------------------------------------------------ subscribers
    @_asyncio
    async def test_subscribers(self, crm: Any) -> None:
        ref = await self.new_ref(crm)
        if "subscribers" in self.unsupported:
            with pytest.raises(CrmRejected):
                await self.run(crm, ref, "subscribers", add=[self.users[0]], remove=[])
            return
        await self.run(crm, ref, "subscribers", add=[self.users[0], self.users[1]], remove=[])
        await self.run(crm, ref, "subscribers", add=[self.users[0]], remove=[self.users[1]])
        assert [str(u) for u in (await crm.snapshot(ref))["lead"]["subscribers"]] == [self.users[0]]

    # ------------------------------------------------------------------ errors
    @_asyncio
    async def test_a_command_the_crm_does_not_know_is_rejected(self, crm: Any) -> None:
        ref = await self.new_ref(crm)
        assert "send_email" not in CRM_COMMANDS
        with pytest.raises(CrmRejected):
            await self.run(crm, ref, "send_email", template="x")

    @pytest.mark.parametrize(("status", "error"), [(503, CrmUnavailable), (500, CrmUnavailable),
                                                   (429, CrmRateLimited), (400, CrmRejected)])
    @_asyncio
    async def _errors_are_typed(self, crm: Any, status: int, error: type[Exception]) -> None:
        ref = await self.new_ref(crm)
        assert await self.fail_next(crm, status), "fail_next is overridden but could not fail"
        with pytest.raises(error) as caught:
            await self.run(crm, ref, "add_note", text="x")
        if isinstance(caught.value, CrmRateLimited):
            assert caught.value.retry_after > 0
            return  # a backend may hold back until retry_after has passed
        await self.run(crm, ref, "add_note", text="after the failure")  # the next one goes through
        assert ("lead", "after the failure") in await self.notes(crm, ref)

    #: The test above, collected only for a backend that overrides ``fail_next`` (``__init_subclass__``).
    test_errors_are_typed: ClassVar[Callable[..., Awaitable[None]] | None] = _errors_are_typed
