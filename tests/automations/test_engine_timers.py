"""The rule engine's durable waits: ``delay``, ``active`` windows, ``field_time``, ``idle``,
score decay, stale timers, a new version of the automations and ``apply_to_existing``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.automations import effects as fx
from bot.automations.engine import IDLE
from bot.automations.events import LeadEvent
from bot.automations.state import RECENT
from bot.engine.events import TimerFired

from .helpers import NOW, Lead, acted, compile_doc, event, later, of, outcomes

IST = ZoneInfo("Europe/Istanbul")
HOURS = {"working_hours": {"mon-fri": "09:00-18:00"}}


def rule(id_: str, on: str | list[str], stage: str = "Incoming", **kw: Any) -> dict[str, Any]:
    return {"id": id_, "stage": stage, "on": on, **kw}


# ---------------------------------------------------------------------- delay
def test_a_delay_sets_a_timer_and_acts_when_it_fires() -> None:
    lead = Lead(compile_doc([rule("d", "chat.message", delay="10m")]))
    effects = lead.send(event("chat.message", order="A-1"))
    assert acted(effects) == [] and outcomes(effects, "d") == ["fired", "delayed"]
    ((timer_id, at),) = lead.timers("delay").items()
    assert of(effects, fx.SetTimer) == [fx.SetTimer(timer_id, at)]
    assert at == later(minutes=10).timestamp()
    assert timer_id.startswith("lead:42:t")
    effects = lead.fire(timer_id)
    assert acted(effects) == ["d"]
    assert lead.state.pending == {}


def test_a_delayed_rule_checks_if_when_it_acts_and_sees_the_triggering_event() -> None:
    cond = {"all": [{"field": "lead.tags", "op": "has", "value": "hot"}]}
    do = {"actions": [{"do": "add_note", "text": "order {{ event.data.order }}"}]}
    lead = Lead(compile_doc([rule("d", "chat.message", delay="1h", do=do, **{"if": cond})]))
    lead.send(event("chat.message", order="A-1", depth=2))
    lead.lead["tags"] = ["hot"]  # true now, false when the event came
    effects = lead.fire_only("delay")
    (run,) = of(effects, fx.RunActions)
    assert run.actions[0]["text"] == "order A-1"
    assert run.depth == 3


def test_leaving_the_stage_cancels_its_delays() -> None:
    lead = Lead(compile_doc([rule("d", "chat.message", delay="10m")]))
    lead.send(event("chat.message"))
    (timer_id,) = lead.timers("delay")
    effects = lead.move("Qualified")
    assert fx.CancelTimer(timer_id) in effects
    assert outcomes(effects, "d") == ["cancelled"]
    assert lead.fire(timer_id) == ()  # the timer wheel delivered it anyway: stale


def test_a_delay_that_falls_due_when_the_snapshot_shows_another_stage_does_not_act() -> None:
    lead = Lead(compile_doc([rule("d", "chat.message", delay="10m")]))
    lead.send(event("chat.message"))
    (timer_id,) = lead.timers("delay")
    lead.lead["stage"] = "Lost"  # its stage_changed event has not come yet
    effects = lead.fire(timer_id)
    assert acted(effects) == [] and outcomes(effects, "d") == ["cancelled"]
    assert fx.CancelTimer(timer_id) in effects


def test_a_delay_is_set_once_per_rule_and_event() -> None:
    lead = Lead(compile_doc([rule("d", ["created", "chat.message"], delay="10m")]))
    lead.send(event("chat.message", id="x"))
    lead.send(event("chat.message", id="y"))
    assert len(lead.timers("delay")) == 2
    assert {p.event_id for p in lead.state.pending.values()} == {"x", "y"}


def test_a_stale_timer_is_ignored() -> None:
    lead = Lead(compile_doc([rule("d", "chat.message", delay="10m")]))
    lead.send(event("chat.message"))
    before = lead.state.to_dict()
    lead.lead["stage"] = "Lost"  # even what the snapshot says waits for a real event
    assert lead.send(TimerFired("lead:42:t999")) == ()
    assert lead.state.to_dict() == before


def test_a_delay_for_an_event_seen_long_ago_is_not_set_twice() -> None:
    lead = Lead(compile_doc([rule("d", "chat.message", delay="1d")]))
    lead.send(event("chat.message", id="evt-1"))
    for _ in range(RECENT):
        lead.send(event("email.sent"))  # evt-1 drops out of the recent ids
    effects = lead.send(event("chat.message", id="evt-1"))
    assert of(effects, fx.SetTimer) == []
    assert outcomes(effects, "d") == ["fired"]
    assert len(lead.timers("delay")) == 1


def test_a_delay_of_a_rule_moved_to_another_stage_without_notice_does_not_act() -> None:
    lead = Lead(compile_doc([rule("d", "chat.message", delay="1h")]))
    lead.send(event("chat.message"))
    lead.automations = compile_doc([rule("d", "chat.message", stage="Qualified", delay="1h")], version=2)
    effects = lead.fire_only("delay")
    assert acted(effects) == [] and outcomes(effects, "d") == ["not_in_stage"]


# ---------------------------------------------------------------------- active windows
def test_a_rule_due_outside_working_hours_waits_for_the_next_opening() -> None:
    monday_20 = datetime(2026, 12, 7, 20, 0, tzinfo=IST)
    lead = Lead(compile_doc([rule("w", "chat.message", active="working_hours")], **HOURS), now=monday_20)
    effects = lead.send(event("chat.message", at=monday_20))
    assert outcomes(effects, "w") == ["fired", "waiting_window"]
    ((timer_id, at),) = lead.timers("window").items()
    assert datetime.fromtimestamp(at, IST) == datetime(2026, 12, 8, 9, 0, tzinfo=IST)
    assert acted(lead.fire(timer_id)) == ["w"]


def test_friday_evening_waits_for_monday_and_a_delay_then_a_window_both_wait() -> None:
    friday_17 = datetime(2026, 12, 11, 17, 30, tzinfo=IST)
    lead = Lead(compile_doc([rule("w", "chat.message", delay="1h", active="working_hours")], **HOURS),
                now=friday_17)
    lead.send(event("chat.message", at=friday_17))
    effects = lead.fire_only("delay")  # 18:30 friday: closed
    assert outcomes(effects, "w") == ["waiting_window"]
    ((_, at),) = lead.timers("window").items()
    assert datetime.fromtimestamp(at, IST) == datetime(2026, 12, 14, 9, 0, tzinfo=IST)
    assert acted(lead.fire_only("window")) == ["w"]


def test_outside_working_hours_waits_for_the_close() -> None:
    lead = Lead(compile_doc([rule("o", "chat.message", active="outside_working_hours")], **HOURS))
    effects = lead.send(event("chat.message"))  # 13:00 monday in Istanbul: open
    assert outcomes(effects, "o") == ["fired", "waiting_window"]
    ((_, at),) = lead.timers("window").items()
    assert datetime.fromtimestamp(at, IST) == datetime(2026, 12, 7, 18, 0, tzinfo=IST)
    lead2 = Lead(compile_doc([rule("o", "chat.message", active="outside_working_hours")], **HOURS))
    sunday = datetime(2026, 12, 6, 12, 0, tzinfo=IST)
    assert acted(lead2.send(event("chat.message", at=sunday), now=sunday)) == ["o"]


def test_without_working_hours_every_time_is_active() -> None:
    lead = Lead(compile_doc([rule("w", "chat.message", active="working_hours"),
                             rule("o", "chat.message", active="outside_working_hours")]))
    assert acted(lead.send(event("chat.message"))) == ["w", "o"]


def test_a_window_wait_is_cancelled_when_the_lead_leaves() -> None:
    monday_20 = datetime(2026, 12, 7, 20, 0, tzinfo=IST)
    lead = Lead(compile_doc([rule("w", "chat.message", active="working_hours")], **HOURS), now=monday_20)
    lead.send(event("chat.message", at=monday_20))
    (timer_id,) = lead.timers("window")
    assert fx.CancelTimer(timer_id) in lead.move("Lost")


# ---------------------------------------------------------------------- field_time
MEETING = rule("remind", "field_time", stage="Meeting", at={"field": "lead.fields.meeting_at", "offset": "-1h"},
               do={"start_bot": "meeting_reminder"})


def test_field_time_is_scheduled_on_entering_the_stage_and_acts_at_the_time() -> None:
    lead = Lead(compile_doc([MEETING]), fields={"meeting_at": "2026-12-09T15:00:00+03:00"})
    lead.move("Meeting")
    ((timer_id, at),) = lead.timers("field_time").items()
    assert datetime.fromtimestamp(at, IST) == datetime(2026, 12, 9, 14, 0, tzinfo=IST)
    effects = lead.fire(timer_id)
    assert acted(effects) == ["remind"]
    assert of(effects, fx.StartBot)[0].depth == 1


def test_field_time_is_rescheduled_when_the_field_changes() -> None:
    lead = Lead(compile_doc([MEETING]), fields={"meeting_at": "2026-12-09T15:00:00+03:00"})
    lead.move("Meeting")
    (old,) = lead.timers("field_time")
    lead.lead["fields"]["meeting_at"] = "2026-12-10 10:00"  # no offset: the document's timezone
    effects = lead.send(event("lead.field_changed", field="meeting_at", to="2026-12-10 10:00"))
    assert fx.CancelTimer(old) in effects
    ((_, at),) = lead.timers("field_time").items()
    assert datetime.fromtimestamp(at, IST) == datetime(2026, 12, 10, 9, 0, tzinfo=IST)


def test_field_time_in_the_past_or_empty_is_not_scheduled() -> None:
    lead = Lead(compile_doc([MEETING]), fields={"meeting_at": "2026-12-07T10:30:00Z"})  # 1h before is past
    lead.move("Meeting")
    assert lead.timers("field_time") == {}
    lead.send(event("lead.field_changed", field="lead.fields.meeting_at", to=""))
    assert lead.timers("field_time") == {}
    epoch = (NOW + timedelta(days=2)).timestamp()
    lead.send(event("lead.field_changed", field="lead.fields.meeting_at", to=int(epoch * 1000)))  # milliseconds
    assert list(lead.timers("field_time").values()) == [epoch - 3600]


def test_field_time_that_fires_after_an_unreported_change_is_rescheduled_not_acted() -> None:
    lead = Lead(compile_doc([MEETING]), fields={"meeting_at": "2026-12-09T15:00:00+03:00"})
    lead.move("Meeting")
    (timer_id,) = lead.timers("field_time")
    lead.lead["fields"]["meeting_at"] = "2026-12-20T15:00:00+03:00"
    effects = lead.fire(timer_id)
    assert acted(effects) == []
    ((_, at),) = lead.timers("field_time").items()
    assert datetime.fromtimestamp(at, IST) == datetime(2026, 12, 20, 14, 0, tzinfo=IST)


def test_field_time_is_cancelled_when_the_lead_leaves_the_stage() -> None:
    lead = Lead(compile_doc([MEETING]), fields={"meeting_at": "2026-12-09T15:00:00+03:00"})
    lead.move("Meeting")
    (timer_id,) = lead.timers("field_time")
    assert fx.CancelTimer(timer_id) in lead.move("Paid")
    assert lead.state.pending == {}


# ---------------------------------------------------------------------- idle
def test_idle_acts_after_the_time_without_events_and_every_event_restarts_the_count() -> None:
    lead = Lead(compile_doc([rule("stale", "idle", stage="Proposal", after="3d")]))
    lead.move("Proposal")
    ((first, at),) = lead.timers("idle").items()
    assert at == later(days=3).timestamp()
    effects = lead.send(event("email.opened", at=later(days=1)), now=later(days=1))
    assert of(effects, fx.SetTimer) == [] and of(effects, fx.CancelTimer) == []  # no timer work per event
    effects = lead.fire(first)  # day 3: quiet for 2 days only
    assert acted(effects) == []
    ((second, at),) = lead.timers("idle").items()
    assert at == later(days=4).timestamp()
    effects = lead.fire(second)
    assert acted(effects) == ["stale"]
    assert outcomes(effects, "stale") == ["fired", "acted"]
    assert lead.timers("idle") == {}  # once, until the next event
    lead.send(event("email.opened", at=later(days=5)), now=later(days=5))
    assert list(lead.timers("idle").values()) == [later(days=8).timestamp()]


def test_idle_rules_of_a_stage_act_each_at_its_own_time_from_one_timer() -> None:
    lead = Lead(compile_doc([rule("one", "idle", after="1d"), rule("three", "idle", after="3d"),
                             rule("two", "idle", after="2d")]))
    lead.send(event("chat.message"))
    assert list(lead.timers("idle").values()) == [later(days=1).timestamp()]
    assert acted(lead.fire_only("idle")) == ["one"]
    assert list(lead.timers("idle").values()) == [later(days=2).timestamp()]
    assert acted(lead.fire_only("idle")) == ["two"]
    lead.send(event("chat.message", at=later(days=2, hours=1)), now=later(days=2, hours=1))
    assert list(lead.timers("idle").values()) == [later(days=3).timestamp()]  # earlier than needed: kept
    assert acted(lead.fire_only("idle")) == []
    assert list(lead.timers("idle").values()) == [later(days=3, hours=1).timestamp()]
    assert acted(lead.fire_only("idle")) == ["one"]


def test_an_idle_rule_applied_to_an_existing_lead_acts_if_it_is_quiet_long_enough() -> None:
    a = compile_doc([rule("stale", "idle", after="3d")])
    lead = Lead(a)
    lead.send(event("chat.message"))
    assert acted(lead.send(fx.ApplyRule("stale"), now=later(days=1))) == []
    lead2 = Lead(a)
    lead2.send(event("chat.message"))
    assert acted(lead2.send(fx.ApplyRule("stale"), now=later(days=4))) == []  # its timer is due: it acts
    assert acted(lead2.fire_only("idle")) == ["stale"]
    lead3 = Lead(compile_doc([]))
    lead3.send(event("chat.message"))
    lead3.automations = a
    lead3.send(fx.AutomationsChanged(2), now=later(days=4))  # a new rule: the quiet time so far is not its
    assert lead3.timers("idle") == {}
    assert acted(lead3.send(fx.ApplyRule("stale"), now=later(days=4))) == ["stale"]


def test_idle_is_cancelled_when_the_lead_leaves_and_set_for_a_lead_first_seen_in_the_stage() -> None:
    a = compile_doc([rule("stale", "idle", stage="Proposal", after="3d")])
    lead = Lead(a, stage="Proposal")
    lead.send(event("task.completed"))
    (timer_id,) = lead.timers("idle")
    assert fx.CancelTimer(timer_id) in lead.move("Paid")
    assert lead.timers() == {}


# ---------------------------------------------------------------------- scoring and decay
SCORING = [{"on": "email.opened", "add": 2}, {"on": "email.link_clicked", "add": 5, "match": {"url": "https://x"}},
           {"on": "order.cancelled", "add": -10}, {"decay": {"every": "30d", "subtract": 10}}]


def test_scoring_adds_on_matching_events_and_starts_decay() -> None:
    lead = Lead(compile_doc([], scoring=SCORING))
    effects = lead.send(event("email.opened", depth=1))
    assert of(effects, fx.AddScore) == [fx.AddScore(2, "email.opened", 2)]
    assert list(lead.timers("decay").values()) == [later(days=30).timestamp()]
    assert of(lead.send(event("email.link_clicked", url="https://other")), fx.AddScore) == []
    assert of(lead.send(event("email.link_clicked", url="HTTPS://X")), fx.AddScore) == [
        fx.AddScore(5, "email.link_clicked", 1)]
    assert len(lead.timers("decay")) == 1  # one decay timer, not one per event


def test_a_negative_score_never_goes_below_zero() -> None:
    lead = Lead(compile_doc([], scoring=SCORING))
    lead.contact["score"] = 4
    assert of(lead.send(event("order.cancelled")), fx.AddScore) == [fx.AddScore(-4, "order.cancelled", 1)]
    lead.contact["score"] = 0
    assert of(lead.send(event("order.cancelled")), fx.AddScore) == []


def test_decay_subtracts_every_period_while_the_score_is_above_zero() -> None:
    lead = Lead(compile_doc([], scoring=SCORING))
    lead.send(event("email.opened"))
    lead.contact["score"] = 15
    effects = lead.fire_only("decay")
    keep = 60 * 86400  # the shell remembers a period's key two periods
    assert of(effects, fx.AddScore) == [fx.AddScore(-10, "decay", 1, "decay:2592000:694", keep)]
    assert list(lead.timers("decay").values()) == [later(days=60).timestamp()]
    lead.contact["score"] = 5
    effects = lead.fire_only("decay")
    assert of(effects, fx.AddScore) == [fx.AddScore(-5, "decay", 1, "decay:2592000:695", keep)]
    assert lead.timers("decay") == {}  # zero: nothing left to decay
    assert lead.state.decayed_at == later(days=60).timestamp()


def test_the_decay_of_two_leads_of_one_contact_in_one_period_carries_one_key() -> None:
    """Each lead runs its own decay timer; the contact's score decays once per period because the
    effects of one period share their ``once`` key (the shell applies one per contact and key)."""
    automations = compile_doc([], scoring=SCORING)
    first, second = Lead(automations), Lead(automations, now=later(days=5))
    second.contact = first.contact  # one contact, two leads
    first.send(event("email.opened"))
    second.send(event("email.opened", at=later(days=5)))
    first.contact["score"] = 50
    # periods of 30 days from the epoch: 2027-01-02 … 2027-02-01 holds both timers (Jan 6 and Jan 11)
    (a,) = of(first.fire_only("decay"), fx.AddScore)
    (b,) = of(second.fire_only("decay"), fx.AddScore)
    assert a.delta == b.delta == -10 and a.once == b.once == "decay:2592000:694"
    (next_a,) = of(first.fire_only("decay"), fx.AddScore)  # Feb 5: the next period, a new key
    assert next_a.once == "decay:2592000:695"
    assert of(first.send(event("email.opened", at=later(days=61))), fx.AddScore)[0].once == ""  # scoring: every time


def test_no_decay_timer_without_a_score() -> None:
    lead = Lead(compile_doc([], scoring=SCORING))
    lead.send(event("chat.message"))
    assert lead.timers("decay") == {}
    lead.contact["score"] = 3  # scored elsewhere (a process's score action)
    lead.send(event("chat.message"))
    assert len(lead.timers("decay")) == 1


# ---------------------------------------------------------------------- new versions, apply_to_existing
def test_a_new_version_cancels_pending_work_of_rules_that_are_gone() -> None:
    old = compile_doc([rule("keep", "chat.message", delay="1h"), rule("gone", "chat.message", delay="1h")])
    lead = Lead(old)
    lead.send(event("chat.message"))
    by_rule = {p.rule: k for k, p in lead.state.pending.items()}
    lead.automations = compile_doc([rule("keep", "chat.message", delay="1h"),
                                    rule("stale", "idle", after="2d")], version=2)
    effects = lead.send(fx.AutomationsChanged(2))
    assert fx.CancelTimer(by_rule["gone"]) in effects
    assert outcomes(effects, "gone") == ["cancelled"]
    assert fx.CancelTimer(by_rule["keep"]) not in effects
    assert {p.rule for p in lead.state.pending.values()} == {"keep", IDLE}  # the new idle rule waits
    assert lead.timers("idle") == {next(iter(lead.timers("idle"))): later(days=2).timestamp()}
    assert acted(lead.fire(by_rule["keep"])) == ["keep"]


def test_a_timer_of_a_rule_removed_without_notice_does_not_act() -> None:
    lead = Lead(compile_doc([rule("gone", "chat.message", delay="1h")]))
    lead.send(event("chat.message"))
    lead.automations = compile_doc([], version=2)
    effects = lead.fire_only("delay")
    assert acted(effects) == [] and outcomes(effects, "gone") == ["cancelled"]


def test_apply_rule_acts_once_for_a_lead_in_the_stage() -> None:
    a = compile_doc([rule("call", "moved_in", stage="Qualified", apply_to_existing=True)])
    lead = Lead(a, stage="Qualified")
    effects = lead.send(fx.ApplyRule("call", job="j1"))
    assert acted(effects) == ["call"]
    assert of(effects, fx.RunActions)[0].depth == 1
    assert lead.send(fx.ApplyRule("call", job="j1")) == ()  # a redelivered page
    elsewhere = Lead(a, stage="Incoming")
    assert outcomes(elsewhere.send(fx.ApplyRule("call", job="j1")), "call") == ["not_in_stage"]
    assert acted(elsewhere.send(fx.ApplyRule("nope"))) == []


def test_apply_rule_to_a_timer_rule_sets_its_timer() -> None:
    lead = Lead(compile_doc([MEETING]), stage="Meeting", fields={"meeting_at": "2026-12-09T15:00:00+03:00"})
    effects = lead.send(fx.ApplyRule("remind"))
    assert acted(effects) == []
    assert len(lead.timers("field_time")) == 1


def test_timer_kinds_use_epoch_seconds_in_utc() -> None:
    lead = Lead(compile_doc([rule("d", "chat.message", delay=90)]))
    lead.send(event("chat.message"))
    ((_, at),) = lead.timers().items()
    assert datetime.fromtimestamp(at, UTC) == NOW + timedelta(seconds=90)


def test_an_event_time_that_is_no_date_still_sets_its_delay() -> None:
    lead = Lead(compile_doc([rule("d", "chat.message", delay="1h")]))
    effects = lead.send(LeadEvent("odd", "chat.message", 1e300, "42"))
    assert outcomes(effects, "d") == ["fired", "delayed"]
    assert list(lead.timers("delay").values()) == [1e300 + 3600]
