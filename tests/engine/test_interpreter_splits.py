"""Split steps, flow goals and pauses on an event or a condition, on the pure core."""

from __future__ import annotations

from typing import Any

from bot.engine import effects as fx
from bot.engine import events as ev
from bot.engine.splits import draw, pick
from bot.engine.state import ConversationState

from .helpers import SNAPSHOT, Chat, make_doc, of_type, say, texts, trace_events

STEPS: dict[str, Any] = {
    "hello": {"type": "message", "text": "hello", "next": "wait"},
    "wait": {"type": "pause", "until": [{"on": "event", "event": "custom.cart", "next": "offer"}]},
    "offer": {"type": "split", "goal": "purchased",
              "paths": [{"id": "a", "weight": 1, "next": "say_a"}, {"id": "b", "weight": 1, "next": "say_b"}]},
    "say_a": {"type": "message", "text": "offer A", "next": "hold"},
    "say_b": {"type": "message", "text": "offer B", "next": "hold"},
    "hold": {"type": "pause", "until": [{"on": "timer", "after": "30d"}]},
    "thanks": say("thanks"),
}
GOALS = {"purchased": {"on": "order.paid", "next": "thanks"}}


def _flow(steps: dict[str, Any] | None = None, goals: dict[str, Any] | None = None) -> Any:
    from bot.builder.validate import compile_document

    doc = make_doc(steps or STEPS)
    doc["goals"] = GOALS if goals is None else goals
    return compile_document(doc, version=1)


def _answer(path: int | None = None, generation: int = 4) -> Any:
    """A shell answering split requests: the interpreter's own pick, or ``path``."""
    def answer(request: fx.Request) -> ev.RequestResult:
        assert request.kind == "split"
        index = request.payload["pick"] if path is None else path
        return ev.RequestResult(request.id, value={"path": index, "generation": generation, "winner": False})
    return answer


def _counts(effects: list[fx.Effect]) -> list[tuple[str, str, int, str, str]]:
    return [(e.bot, e.step, e.generation, e.path, e.kind) for e in of_type(effects, fx.SplitCount)]


def test_a_split_asks_the_shell_with_the_contacts_own_pick_and_counts_the_entry() -> None:
    chat = Chat(_flow(), snapshot=SNAPSHOT, answer=_answer())
    chat.state.crm = {"contact_id": "77", "lead_id": "5"}
    chat.start()
    effects = chat.feed(ev.CrmEvent("custom.cart"))
    (request,) = chat.requests
    assert request.payload == {"bot": "bot", "step": "offer", "paths": ["a", "b"], "weights": [1, 1],
                               "pick": pick([1, 1], draw("contact:77", "bot", "offer")),
                               "after_entries": None, "or_after": None}
    path = "ab"[request.payload["pick"]]
    assert texts(effects) == [f"offer {path.upper()}"]
    assert _counts(effects) == [("bot", "offer", 4, path, "entry")]
    assert chat.run.splits == (("bot", "offer", path, 4, "purchased"),)


def test_the_path_the_shell_answers_is_taken_and_the_pause_ignores_other_events() -> None:
    chat = Chat(_flow(), answer=_answer(path=1))
    chat.start()
    assert texts(chat.feed(ev.CrmEvent("custom.other"))) == []
    assert chat.step == "wait"
    assert texts(chat.feed(ev.CrmEvent("custom.cart"))) == ["offer B"]


def test_the_same_contact_takes_the_same_path_in_any_conversation() -> None:
    paths = set()
    for conversation in ("c1", "c2", "c3"):
        chat = Chat(_flow(), answer=_answer(), conversation=conversation)
        chat.state.crm = {"contact_id": "contact-9", "lead_id": "1"}
        chat.start()
        paths.add(tuple(texts(chat.feed(ev.CrmEvent("custom.cart")))))
    assert len(paths) == 1


def test_a_run_that_passes_a_split_again_keeps_its_path_and_is_not_counted_twice() -> None:
    steps = {**STEPS, "say_a": {"type": "message", "text": "offer A", "next": "wait"},
             "say_b": {"type": "message", "text": "offer B", "next": "wait"}}
    chat = Chat(_flow(steps), answer=_answer(path=0))
    chat.start()
    first = chat.feed(ev.CrmEvent("custom.cart"))
    again = chat.feed(ev.CrmEvent("custom.cart"))
    assert texts(first) == texts(again) == ["offer A"]
    assert len(chat.requests) == 1 and _counts(again) == []


def test_without_an_answer_the_split_takes_the_contacts_path_uncounted() -> None:
    chat = Chat(_flow(), answer=lambda r: ev.RequestResult(r.id, ok=False, error="redis down"))
    chat.start()
    effects = chat.feed(ev.CrmEvent("custom.cart"))
    assert len(texts(effects)) == 1 and _counts(effects) == []
    assert "split.uncounted" in trace_events(effects)


def test_a_goal_jumps_the_run_and_counts_once_for_the_split_it_passed() -> None:
    chat = Chat(_flow(), answer=_answer(path=0))
    chat.start()
    chat.feed(ev.CrmEvent("custom.cart"))
    timer = next(iter(chat.timers))
    effects = chat.feed(ev.CrmEvent("order.paid", {"order": "A-1"}))
    assert texts(effects) == ["thanks"]
    assert fx.CancelTimer(timer) in effects  # the hold's timer is left behind
    assert _counts(effects) == [("bot", "offer", 4, "a", "goal")]
    assert chat.run.goals == ("purchased",) and chat.status == "finished"
    assert _counts(chat.feed(ev.CrmEvent("order.paid", {"order": "A-2"}))) == []  # reached once


def test_a_goal_after_a_restart_counts_once() -> None:
    chat = Chat(_flow(), answer=_answer(path=1))
    chat.start()
    chat.feed(ev.CrmEvent("custom.cart"))
    # A restart: the state as stored, read back by another process.
    chat.state = ConversationState.from_dict(chat.state.to_dict())
    assert _counts(chat.feed(ev.CrmEvent("order.paid"))) == [("bot", "offer", 4, "b", "goal")]
    chat.state = ConversationState.from_dict(chat.state.to_dict())
    assert _counts(chat.feed(ev.CrmEvent("order.paid"))) == []


def test_a_goal_before_any_split_jumps_without_counting() -> None:
    chat = Chat(_flow(), answer=_answer())
    chat.start()
    effects = chat.feed(ev.CrmEvent("order.paid"))
    assert texts(effects) == ["thanks"] and _counts(effects) == []


def test_a_goal_with_a_match_needs_the_data_to_match() -> None:
    chat = Chat(_flow(goals={"purchased": {"on": "order.paid", "match": {"currency": "TRY"}, "next": "thanks"}}),
                answer=_answer())
    chat.start()
    assert texts(chat.feed(ev.CrmEvent("order.paid", {"currency": "EUR"}))) == []
    assert texts(chat.feed(ev.CrmEvent("order.paid", {"currency": "try"}))) == ["thanks"]


def test_while_a_person_has_the_conversation_a_goal_counts_but_the_bot_stays() -> None:
    chat = Chat(_flow(), answer=_answer(path=0))
    chat.start()
    chat.feed(ev.CrmEvent("custom.cart"))
    chat.feed(ev.Takeover("ayse"))
    effects = chat.feed(ev.CrmEvent("order.paid"))
    assert texts(effects) == [] and chat.step == "hold"
    assert _counts(effects) == [("bot", "offer", 4, "a", "goal")]


def test_a_run_that_ended_still_counts_its_goal() -> None:
    steps = {**STEPS, "say_a": say("offer A"), "say_b": say("offer B")}
    chat = Chat(_flow(steps), answer=_answer(path=0))
    chat.start()
    chat.feed(ev.CrmEvent("custom.cart"))
    assert chat.status == "finished"
    effects = chat.feed(ev.CrmEvent("order.paid"))
    assert texts(effects) == [] and chat.status == "finished"
    assert _counts(effects) == [("bot", "offer", 4, "a", "goal")]


def test_a_pause_on_an_event_matches_its_data_without_regard_to_case() -> None:
    steps = {"wait": {"type": "pause", "until": [
        {"on": "event", "event": "email.opened", "match": {"campaign": "Cart"}, "next": "opened"}]},
        "opened": say("opened")}
    chat = Chat(_flow(steps, {}))
    chat.start()
    assert texts(chat.feed(ev.CrmEvent("email.opened", {"campaign": "news"}))) == []
    assert texts(chat.feed(ev.CrmEvent("email.opened", {}))) == []
    assert texts(chat.feed(ev.CrmEvent("email.opened", {"campaign": "CART"}))) == ["opened"]


CONDITION = {
    "wait": {"type": "pause", "until": [
        {"on": "condition", "if": {"field": "lead.tags", "op": "has", "value": "cart"}, "next": "tagged"},
        {"on": "timer", "after": "2h", "next": "late"}]},
    "tagged": say("tagged"), "late": say("late"),
}


def test_a_pause_on_a_condition_is_checked_at_each_event_with_a_timer_as_deadline() -> None:
    chat = Chat(_flow(CONDITION, {}), snapshot={"lead": {"tags": []}})
    chat.start()
    assert chat.step == "wait" and len(chat.timers) == 1
    assert texts(chat.feed(ev.CrmEvent("lead.tag_added", {"tag": "x"}))) == []
    chat.snapshot = {"lead": {"tags": ["cart"]}}
    effects = chat.feed(ev.CrmEvent("lead.tag_added", {"tag": "cart"}))
    assert texts(effects) == ["tagged"] and chat.timers == {}


def test_a_pause_on_a_condition_that_already_holds_does_not_wait() -> None:
    chat = Chat(_flow(CONDITION, {}), snapshot={"lead": {"tags": ["cart"]}})
    assert texts(chat.start()) == ["tagged"]


def test_the_deadline_of_a_condition_pause_moves_on_when_nothing_happened() -> None:
    chat = Chat(_flow(CONDITION, {}), snapshot={"lead": {"tags": []}})
    chat.start()
    assert texts(chat.fire_only_timer()) == ["late"]


def test_a_condition_can_read_the_event() -> None:
    steps = {"wait": {"type": "pause", "until": [
        {"on": "condition", "if": {"field": "event.data.amount", "op": "gte", "value": 1000}, "next": "big"}]},
        "big": say("big")}
    chat = Chat(_flow(steps, {}))
    chat.start()
    assert texts(chat.feed(ev.CrmEvent("order.created", {"amount": 10}))) == []
    assert texts(chat.feed(ev.CrmEvent("order.created", {"amount": 1200}))) == ["big"]
