"""The lead state round-trips through ``to_dict``/``from_dict`` and msgpack; the compiled
document indexes what the engine looks up."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import msgpack
import pytest

from bot.automations.compiled import next_closing
from bot.automations.state import RECENT, LeadState, Pending
from bot.builder.working_hours import WorkingHours
from bot.errors import AutomationsInvalid

from .helpers import Lead, compile_doc, event

IST = ZoneInfo("Europe/Istanbul")


def test_a_lead_state_round_trips_through_msgpack() -> None:
    a = compile_doc([{"id": "d", "stage": "Incoming", "on": "chat.message", "delay": "1h"},
                     {"id": "i", "stage": "Incoming", "on": "idle", "after": "1d"}],
                    scoring=[{"on": "chat.message", "add": 1}, {"decay": {"every": "1d", "subtract": 1}}])
    lead = Lead(a)
    lead.send(event("chat.message", order={"id": "A-1", "items": [1, 2]}))
    state = lead.state
    assert {p.kind for p in state.pending.values()} == {"delay", "idle", "decay"}
    packed = msgpack.packb(state.to_dict())
    back = LeadState.from_dict(msgpack.unpackb(packed))
    assert back == state
    assert back.to_dict() == state.to_dict()
    assert len(packed) < 600  # small: loaded for every event of the lead


def test_pending_keeps_the_triggering_event() -> None:
    p = Pending("r", "delay", "Incoming", 1.5, "evt-1", "order.paid", {"amount": 5}, 3, 7)
    assert Pending.from_dict(msgpack.unpackb(msgpack.packb(p.to_dict()))) == p


def test_recent_ids_are_bounded() -> None:
    state = LeadState.for_lead("1")
    for i in range(RECENT + 5):
        assert state.remember(f"e{i}")
    assert len(state.recent) == RECENT
    assert not state.remember(f"e{RECENT + 4}")
    assert state.remember("e0")  # long forgotten: the queue's own dedupe covers older ids


def test_the_compiled_document_indexes_rules_by_stage_and_kind() -> None:
    a = compile_doc([{"id": "a", "stage": "Incoming", "on": ["created", "moved_in"]},
                     {"id": "b", "stage": "Incoming", "on": "moved_in"},
                     {"id": "c", "stage": "Paid", "on": "moved_in"}],
                    triggers=[{"id": "t", "stage": "Paid", "on": "order.paid"}])
    assert [r.id for r in a.stage_rules("Incoming", "moved_in")] == ["a", "b"]
    assert [r.id for r in a.stage_rules("Incoming", "created")] == ["a"]
    assert a.stage_rules("Lost", "moved_in") == ()
    assert [t.id for t in a.triggers["order.paid"]] == ["t"]
    assert a.is_backward("Paid", "Incoming") and not a.is_backward("Incoming", "Paid")
    assert not a.is_backward(None, "Incoming") and not a.is_backward("Gone", "Incoming")


def test_a_template_that_does_not_compile_is_refused_with_its_pointer() -> None:
    bad = {"actions": [{"do": "add_note", "text": "{{ oops"}]}
    with pytest.raises(AutomationsInvalid) as info:
        compile_doc([{"id": "a", "stage": "Incoming", "on": "created", "do": bad}])
    assert [p.pointer for p in info.value.problems] == ["/rules/0/do/actions/0/text"]


@pytest.mark.parametrize(("spec", "when", "closes"), [
    ({"mon-fri": "09:00-18:00"}, datetime(2026, 12, 7, 13, 0), datetime(2026, 12, 7, 18, 0)),
    ({"mon-fri": "09:00-12:00,12:00-18:00"}, datetime(2026, 12, 7, 10, 0), datetime(2026, 12, 7, 18, 0)),
    ({"mon": "20:00-24:00", "tue": "00:00-02:00"}, datetime(2026, 12, 7, 21, 0), datetime(2026, 12, 8, 2, 0)),
    ({"mon-fri": "09:00-18:00"}, datetime(2026, 12, 7, 19, 0), datetime(2026, 12, 7, 19, 0)),  # closed
])
def test_next_closing(spec: dict[str, str], when: datetime, closes: datetime) -> None:
    hours = WorkingHours.parse(spec, IST)
    assert next_closing(hours, when.replace(tzinfo=IST)) == closes.replace(tzinfo=IST)


def test_next_closing_of_hours_open_all_week_is_now() -> None:
    hours = WorkingHours.parse({"mon-sun": "00:00-24:00"}, IST)
    when = datetime(2026, 12, 7, 13, 0, tzinfo=IST)
    assert next_closing(hours, when) == when
