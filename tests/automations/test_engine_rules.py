"""The rule engine, rules that act at once: every event ``on`` kind, ``if``, what ``do`` becomes,
the loop guard, redelivered events and the lead's position."""

from __future__ import annotations

from typing import Any

import pytest

from bot.automations import effects as fx
from bot.automations.events import MAX_DEPTH

from .helpers import NOW, Lead, acted, compile_doc, event, moved, of, outcomes


def rule(id_: str, on: str | list[str], stage: str = "Incoming", **kw: Any) -> dict[str, Any]:
    return {"id": id_, "stage": stage, "on": on, **kw}


def test_created_acts_for_a_lead_created_in_the_stage_only() -> None:
    a = compile_doc([rule("new", "created"), rule("q", "created", stage="Qualified")])
    lead = Lead(a)
    effects = lead.send(event("lead.created"))
    assert acted(effects) == ["new"]
    (run,) = of(effects, fx.RunActions)
    assert run.rule == "new"
    assert run.actions == ({"do": "add_note", "text": "note for Deal", "entity": "lead",
                            "timezone": "Europe/Istanbul"},)
    assert run.depth == 1
    assert outcomes(effects, "new") == ["fired", "acted"]


def test_created_reads_the_stage_the_event_names_over_the_snapshot() -> None:
    lead = Lead(compile_doc([rule("new", "created")]), stage="Qualified")  # moved on since
    assert acted(lead.send(event("lead.created", stage="Incoming", pipeline="Sales"))) == ["new"]


def test_moved_in_acts_on_a_move_into_the_stage_not_on_a_move_within_it() -> None:
    lead = Lead(compile_doc([rule("q", "moved_in", stage="Qualified"), rule("i", "moved_in")]))
    assert acted(lead.move("Qualified")) == ["q"]
    assert acted(lead.send(moved("Qualified", "Qualified"))) == []
    assert acted(lead.move("Incoming")) == ["i"]


def test_moved_in_from_another_pipeline_acts() -> None:
    lead = Lead(compile_doc([rule("q", "moved_in", stage="Qualified")]), pipeline="Other", stage="New")
    lead.send(event("chat.message"))
    lead.lead.update(pipeline="Sales", stage="Qualified")
    e = event("lead.stage_changed", **{"from": {"pipeline": "Other", "stage": "Qualified"},
                                       "to": {"pipeline": "Sales", "stage": "Qualified"}})
    assert acted(lead.send(e)) == ["q"]


@pytest.mark.parametrize(("on", "etype", "data"), [
    ("responsible_changed", "lead.responsible_changed", {"from": 1, "to": 2}),
    ("chat.first_message", "chat.first_message", {}),
    ("chat.message", "chat.message", {"text": "hi"}),
])
def test_event_kinds_act_for_a_lead_in_the_stage(on: str, etype: str, data: dict[str, Any]) -> None:
    a = compile_doc([rule("r", on)])
    assert acted(Lead(a).send(event(etype, **data))) == ["r"]
    assert acted(Lead(a, stage="Qualified").send(event(etype, **data))) == []


def test_tag_added_acts_for_its_tag_only_without_regard_to_case() -> None:
    lead = Lead(compile_doc([rule("vip", "tag_added", tag="VIP")]))
    assert acted(lead.send(event("lead.tag_added", tag="other"))) == []
    assert acted(lead.send(event("lead.tag_added", tag="vip"))) == ["vip"]


def test_field_changed_acts_for_its_field_a_bare_name_being_a_lead_field() -> None:
    lead = Lead(compile_doc([rule("b", "field_changed", field="lead.fields.budget"),
                             rule("p", "field_changed", field="lead.price")]))
    assert acted(lead.send(event("lead.field_changed", field="lead.price", to=5))) == ["p"]
    assert acted(lead.send(event("lead.field_changed", field="budget", to=5))) == ["b"]
    assert acted(lead.send(event("lead.field_changed", field="lead.fields.other", to=5))) == []


def test_a_rule_on_two_kinds_acts_once_per_event() -> None:
    lead = Lead(compile_doc([rule("w", ["created", "moved_in"])]), stage="Qualified")
    assert acted(lead.send(event("lead.created", stage="Incoming"))) == ["w"]
    lead.move("Qualified")
    assert acted(lead.move("Incoming")) == ["w"]


def test_if_is_checked_over_lead_contact_and_event() -> None:
    cond = {"all": [{"field": "lead.tags", "op": "has", "value": "website"},
                    {"field": "event.data.amount", "op": "gt", "value": 100},
                    {"field": "contact.name", "op": "eq", "value": "ann"}]}
    lead = Lead(compile_doc([rule("r", "chat.message", **{"if": cond})]))
    effects = lead.send(event("chat.message", amount=500))
    assert outcomes(effects, "r") == ["fired", "skipped_if"]
    lead.lead["tags"] = ["website"]
    assert acted(lead.send(event("chat.message", amount=500))) == ["r"]
    assert outcomes(lead.send(event("chat.message", amount=5)), "r") == ["fired", "skipped_if"]


def test_if_with_a_failing_template_skips_and_says_why() -> None:
    cond = {"expr": "lead.price / 0 > 1"}
    effects = Lead(compile_doc([rule("r", "chat.message", **{"if": cond})]), price=3).send(event("chat.message"))
    (rec,) = [x for x in of(effects, fx.Record) if x.outcome == "skipped_if"]
    assert "template error" in rec.detail


def test_actions_are_rendered_like_a_flow_action_step() -> None:
    do = {"actions": [
        {"do": "add_task", "text": "Call {{ contact.name }} about {{ event.data.order }}", "due": "end_of_day"},
        {"do": "tags", "add": ["paid-{{ event.data.order }}"]},
        {"do": "complete_tasks", "due": "today"},
    ]}
    effects = Lead(compile_doc([rule("r", "chat.message", do=do)])).send(event("chat.message", order="A-1"))
    (run,) = of(effects, fx.RunActions)
    task, tags, complete = run.actions
    assert task["text"] == "Call Ann about A-1"
    assert task["due_at"] == "2026-12-07T23:59:00+03:00"  # end of the day in the document's timezone
    assert tags["add"] == ["paid-A-1"]
    assert (complete["due_from"], complete["due_to"]) == ("2026-12-07T00:00:00+03:00", "2026-12-08T00:00:00+03:00")


def test_start_bot_and_start_process_carry_rendered_variables() -> None:
    a = compile_doc([
        rule("b", "chat.message", do={"start_bot": "welcome", "channel": ["wa_shop", "tg"],
                                      "variables": {"who": "{{ contact.name }}", "n": 2}},
             leave_unanswered=True),
        rule("p", "chat.message", do={"start_process": "nurture", "variables": {"lead": "{{ lead.id }}"}}),
    ])
    effects = Lead(a).send(event("chat.message", depth=3))
    assert of(effects, fx.StartBot) == [fx.StartBot("b", "welcome", ("wa_shop", "tg"), {"who": "Ann", "n": 2}, 4,
                                                    leave_unanswered=True)]
    assert of(effects, fx.StartProcess) == [fx.StartProcess("p", "nurture", {"lead": 42}, 4)]


def test_start_bot_channel_defaults_to_last() -> None:
    a = compile_doc([rule("b", "chat.message", do={"start_bot": "welcome"})])
    (start,) = of(Lead(a).send(event("chat.message")), fx.StartBot)
    assert start.channels == ("last",)


def test_loop_guard_at_max_depth_acts_nothing_and_records_loop() -> None:
    a = compile_doc([rule("r", "chat.message")], triggers=[{"id": "t", "stage": "Paid", "on": "chat.message"}],
                    scoring=[{"on": "chat.message", "add": 1}])
    lead = Lead(a)
    effects = lead.send(event("chat.message", depth=MAX_DEPTH))
    assert of(effects, fx.RunActions) == [] and of(effects, fx.MoveStage) == [] and of(effects, fx.AddScore) == []
    assert "loop" in outcomes(effects, "r") and "loop" in outcomes(effects, "t")
    effects = lead.send(event("chat.message", depth=MAX_DEPTH - 1))
    assert [x.depth for x in of(effects, fx.RunActions)] == [MAX_DEPTH]
    assert [x.depth for x in of(effects, fx.MoveStage)] == [MAX_DEPTH]
    assert [x.depth for x in of(effects, fx.AddScore)] == [MAX_DEPTH]


def test_a_redelivered_event_does_nothing() -> None:
    lead = Lead(compile_doc([rule("r", "chat.message", delay="10m")]))
    first = lead.send(event("chat.message", id="evt-1"))
    assert outcomes(first, "r") == ["fired", "delayed"]
    assert lead.send(event("chat.message", id="evt-1")) == ()
    assert len(lead.timers("delay")) == 1


def test_an_event_for_a_lead_of_another_pipeline_is_ignored() -> None:
    a = compile_doc([rule("r", "chat.message"), rule("i", "idle", after="1d")],
                    triggers=[{"id": "t", "stage": "Paid", "on": "order.paid"}],
                    scoring=[{"on": "order.paid", "add": 5}])
    lead = Lead(a, pipeline="Other", stage="Incoming")
    assert lead.send(event("chat.message")) == ()
    assert lead.send(event("order.paid")) == ()
    assert lead.state.pending == {}
    assert (lead.state.pipeline, lead.state.stage) == ("Other", "Incoming")


def test_the_state_remembers_where_and_since_when() -> None:
    lead = Lead(compile_doc([]))
    lead.send(event("chat.message"))
    assert (lead.state.pipeline, lead.state.stage, lead.state.since) == ("Sales", "Incoming", NOW.timestamp())
    assert lead.state.last_event_at == NOW.timestamp()


def test_a_lead_moved_to_a_pipeline_of_another_document_drops_the_old_document_s_timers() -> None:
    sales = compile_doc([rule("d", "chat.message", delay="1h")],
                        scoring=[{"on": "email.opened", "add": 1}, {"decay": {"every": "1d", "subtract": 1}}])
    lead = Lead(sales)
    lead.send(event("chat.message"))
    lead.send(event("email.opened"))
    old = set(lead.timers())
    assert len(old) == 2
    lead.automations = compile_doc([rule("hello", "moved_in", stage="New")], pipeline="Support",
                                   stages=("New", "Done"))
    lead.lead.update(pipeline="Support", stage="New")
    effects = lead.send(event("lead.stage_changed", **{"from": {"pipeline": "Sales", "stage": "Incoming"},
                                                       "to": {"pipeline": "Support", "stage": "New"}}))
    assert {x.timer_id for x in of(effects, fx.CancelTimer)} == old
    assert acted(effects) == ["hello"]
    assert lead.state.automations == "support"


def test_the_scores_own_change_never_scores_but_a_rule_on_it_acts() -> None:
    a = compile_doc([rule("hot", "field_changed", field="contact.score")],
                    scoring=[{"on": "lead.field_changed", "add": 5}])
    lead = Lead(a)
    first = lead.send(event("lead.field_changed", field="budget", to=100))
    assert [x.delta for x in of(first, fx.AddScore)] == [5]  # any field change scores
    own = lead.send(event("lead.field_changed", field="contact.score", to=5, depth=1))
    assert of(own, fx.AddScore) == []  # not its own change: no chain of ten
    assert acted(own) == ["hot"]
