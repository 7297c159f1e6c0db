"""What happens to the bot's pending work while a person has the conversation."""

from __future__ import annotations

from datetime import timedelta

from bot.engine import effects as fx
from bot.engine import events as ev

from .helpers import NOW, Chat, make_flow, of_type, texts

FLOW = {
    "ask": {"type": "message", "text": "Question?", "buttons": [{"title": "Yes", "next": "yes"}],
            "other_answer": "yes", "no_answer": {"after": "1h", "next": "remind"}},
    "remind": {"type": "message", "text": "Still there?"},
    "yes": {"type": "message", "text": "Good."},
}


def test_a_timer_held_during_a_takeover_counts_again_from_the_hand_back() -> None:
    chat = Chat(make_flow(FLOW, start="ask"))
    chat.start()
    (timer,) = chat.timers
    chat.feed(ev.Takeover("agent"))
    chat.now = NOW + timedelta(hours=2)
    assert texts(chat.fire(timer)) == []  # silent while the person talks
    out = chat.feed(ev.Release())
    assert texts(out) == []  # not "Still there?" right after the person's reply ...
    (rearmed,) = of_type(out, fx.SetTimer)
    assert rearmed.at == (chat.now + timedelta(hours=1)).timestamp()  # ... but an hour from now
    assert texts(chat.fire(rearmed.timer_id)) == ["Still there?"]


def test_a_delivery_failure_during_a_takeover_does_not_move_the_bot() -> None:
    flow = make_flow({**FLOW, "ask": {**FLOW["ask"], "failed": "yes"}}, start="ask")
    chat = Chat(flow)
    out = chat.start()
    ref = of_type(out, fx.SendMessage)[0].ref
    chat.feed(ev.Takeover("agent"))
    assert texts(chat.feed(ev.DeliveryFailed(ref, "blocked"))) == []
    assert chat.step == "ask" and chat.status == "waiting"


def test_a_widget_answer_during_a_takeover_is_kept_for_the_hand_back() -> None:
    steps = {
        "call": {"type": "widget", "widget": "http_request", "params": {"x": 1},
                 "wait": {"timeout": "10m", "on_timeout": "late"}, "next": "done"},
        "done": {"type": "message", "text": "Score {{ json.score }}"},
        "late": {"type": "message", "text": "No score"},
    }
    chat = Chat(make_flow(steps, start="call"),
                answer=lambda r: ev.RequestResult(r.id, value={"token": "tok", "json": None}))
    chat.start()
    chat.feed(ev.Takeover("agent"))
    out = chat.feed(ev.WidgetCallback("tok", {"score": 7}))
    assert texts(out) == [] and chat.timers == {}  # the timeout is cancelled, nothing sent
    assert texts(chat.feed(ev.Release())) == ["Score 7"]


def test_a_failure_reported_after_the_run_ended_still_takes_the_failed_branch() -> None:
    steps = {
        "bye": {"type": "message", "text": "Bye!", "failed": "sorry", "next": "end"},
        "end": {"type": "stop"},
        "sorry": {"type": "internal_message", "text": "the goodbye did not arrive"},
    }
    chat = Chat(make_flow(steps, start="bye"))
    out = chat.start()
    assert chat.status == "finished"
    ref = of_type(out, fx.SendMessage)[0].ref
    out = chat.feed(ev.DeliveryFailed(ref, "blocked"))
    assert [m.text for m in of_type(out, fx.InternalMessage)] == ["the goodbye did not arrive"]
    assert chat.step == "sorry" and chat.status == "finished"


def test_a_failure_after_the_run_ended_without_a_failed_branch_changes_nothing() -> None:
    chat = Chat(make_flow({"bye": {"type": "message", "text": "Bye!"}}, start="bye"))
    ref = of_type(chat.start(), fx.SendMessage)[0].ref
    chat.feed(ev.DeliveryFailed(ref, "blocked"))
    assert chat.status == "finished" and chat.run.error is None


def test_a_message_that_came_during_a_takeover_is_answered_by_the_bot_when_the_person_says_so() -> None:
    chat = Chat(make_flow(FLOW, start="ask"))
    chat.start()
    chat.feed(ev.Takeover("agent"))
    assert texts(chat.feed(ev.InboundMessage(text="Yes"))) == []  # the person has it: the bot is silent
    assert chat.state.last_message is not None and chat.state.last_message["held"] is True
    assert texts(chat.feed(ev.Release(user="agent", answer=True))) == ["Good."]  # not dropped
    assert chat.state.last_message == {**chat.state.last_message, "text": "Yes"}
    assert "held" not in chat.state.last_message


def test_a_held_message_the_person_keeps_is_not_answered_and_no_longer_held() -> None:
    chat = Chat(make_flow(FLOW, start="ask"))
    chat.start()
    chat.feed(ev.Takeover("agent"))
    chat.feed(ev.InboundMessage(text="Yes"))
    assert texts(chat.feed(ev.Release(user="agent"))) == []
    assert chat.step == "ask" and chat.state.last_message is not None and "held" not in chat.state.last_message
    assert texts(chat.feed(ev.Takeover("agent")) + chat.feed(ev.Release(answer=True))) == []  # nothing held now


def test_a_held_message_the_person_answers_is_no_longer_offered_to_the_bot() -> None:
    chat = Chat(make_flow(FLOW, start="ask"))
    chat.start()
    chat.feed(ev.Takeover("agent"))
    chat.feed(ev.InboundMessage(text="Yes"))
    chat.feed(ev.HumanMessage("Yes, done for you", user="agent"))  # the person answered it
    assert chat.state.last_message is not None and "held" not in chat.state.last_message
    assert texts(chat.feed(ev.Release(user="agent", answer=True))) == []  # answered once, by the person
    assert chat.step == "ask"


def test_a_message_before_the_takeover_is_not_held() -> None:
    chat = Chat(make_flow({**FLOW, "ask": {**FLOW["ask"], "other_answer": None}}, start="ask"))
    chat.start()
    chat.feed(ev.InboundMessage(text="what?"))  # unmatched: the bot waits on
    chat.feed(ev.Takeover("agent"))
    assert texts(chat.feed(ev.Release(answer=True))) == [] and chat.step == "ask"
