"""Triggers: an event moves the lead to the trigger's stage (``match``, ``allow_backward``, only
leads of the document's pipeline)."""

from __future__ import annotations

from bot.automations import effects as fx

from .helpers import Lead, compile_doc, event, of, outcomes

TRIGGERS = [
    {"id": "paid", "stage": "Paid", "on": "order.paid"},
    {"id": "offer_click", "stage": "Qualified", "on": "email.link_clicked",
     "match": {"url": "https://shop.example.com/offer", "campaign": 7}},
    {"id": "reopen", "stage": "Incoming", "on": "email.received", "allow_backward": True},
    {"id": "back", "stage": "Incoming", "on": "form.submitted"},
]


def test_a_trigger_moves_the_lead() -> None:
    lead = Lead(compile_doc([], triggers=TRIGGERS))
    effects = lead.send(event("order.paid", depth=2))
    assert of(effects, fx.MoveStage) == [fx.MoveStage("paid", "Paid", 3, "Sales")]
    assert outcomes(effects, "paid") == ["fired", "acted"]


def test_a_trigger_moves_only_when_every_match_key_is_equal() -> None:
    lead = Lead(compile_doc([], triggers=TRIGGERS))
    assert of(lead.send(event("email.link_clicked", url="https://shop.example.com/offer")), fx.MoveStage) == []
    assert of(lead.send(event("email.link_clicked", url="https://other", campaign=7)), fx.MoveStage) == []
    effects = lead.send(event("email.link_clicked", url="https://shop.example.com/offer", campaign="7", x=1))
    assert of(effects, fx.MoveStage) == [fx.MoveStage("offer_click", "Qualified", 1, "Sales")]


def test_a_trigger_never_moves_backwards_unless_allowed() -> None:
    lead = Lead(compile_doc([], triggers=TRIGGERS), stage="Proposal")
    effects = lead.send(event("form.submitted"))
    assert of(effects, fx.MoveStage) == []
    assert outcomes(effects, "back") == ["fired", "skipped_if"]
    assert of(lead.send(event("email.received")), fx.MoveStage) == [fx.MoveStage("reopen", "Incoming", 1, "Sales")]


def test_a_trigger_to_the_lead_s_own_stage_does_nothing() -> None:
    lead = Lead(compile_doc([], triggers=TRIGGERS), stage="Paid")
    effects = lead.send(event("order.paid"))
    assert of(effects, fx.MoveStage) == []
    assert outcomes(effects, "paid") == ["fired", "skipped_if"]


def test_the_first_trigger_that_may_move_the_lead_wins() -> None:
    triggers = [{"id": "a", "stage": "Paid", "on": "order.paid"}, {"id": "b", "stage": "Lost", "on": "order.paid"}]
    effects = Lead(compile_doc([], triggers=triggers)).send(event("order.paid"))
    assert [m.trigger for m in of(effects, fx.MoveStage)] == ["a"]
    effects = Lead(compile_doc([], triggers=triggers), stage="Paid").send(event("order.paid"))
    assert [m.trigger for m in of(effects, fx.MoveStage)] == ["b"]


def test_a_trigger_ignores_a_lead_of_another_pipeline() -> None:
    lead = Lead(compile_doc([], triggers=TRIGGERS), pipeline="Support", stage="Incoming")
    assert lead.send(event("order.paid")) == ()


def test_a_trigger_with_a_template_in_match_compares_the_rendered_value() -> None:
    triggers = [{"id": "own", "stage": "Paid", "on": "order.paid", "match": {"lead": "{{ lead.id }}"}}]
    lead = Lead(compile_doc([], triggers=triggers))
    assert of(lead.send(event("order.paid", lead=41)), fx.MoveStage) == []
    assert len(of(lead.send(event("order.paid", lead=42)), fx.MoveStage)) == 1


def test_the_moved_in_rules_run_when_the_move_comes_back_as_an_event() -> None:
    a = compile_doc([{"id": "thanks", "stage": "Paid", "on": "moved_in", "do": {"start_bot": "thanks"}}],
                    triggers=TRIGGERS)
    lead = Lead(a)
    (move,) = of(lead.send(event("order.paid")), fx.MoveStage)
    assert of(lead.history, fx.StartBot) == []  # not yet: the CRM emits lead.stage_changed for it
    effects = lead.move(move.stage, depth=move.depth)
    assert [(s.rule, s.depth) for s in of(effects, fx.StartBot)] == [("thanks", 2)]
