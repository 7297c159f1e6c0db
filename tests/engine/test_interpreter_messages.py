"""Message-like steps on the pure core: message (buttons, replies, no_answer), list, subscribe,
comment, internal_message, goto, stop; chat status; delivery failures."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from bot.engine import effects as fx
from bot.engine import events as ev
from bot.engine.interpreter import advance
from bot.engine.state import ConversationState, Wait

from .helpers import NOW, Chat, library, make_flow, of_type, texts, trace_events, without_traces

MENU = {
    "ask": {
        "type": "message",
        "text": "What do you need?",
        "buttons": [
            {"title": "Katalóg", "synonyms": ["catalogue", "list"], "next": "catalog"},
            {"title": "Our website", "url": "https://example.com"},
            {"title": "Talk to a person", "synonyms": ["human"], "next": "human"},
        ],
        "other_answer": "fallback",
        "no_answer": {"after": "2h", "next": "reminder"},
    },
    "catalog": {"type": "message", "text": "Here is the catalog"},
    "human": {"type": "message", "text": "A person will answer"},
    "fallback": {"type": "message", "text": "Sorry?"},
    "reminder": {"type": "message", "text": "Still there?"},
}


def menu_flow(**changes: object) -> object:
    steps = {k: dict(v) for k, v in MENU.items()}
    steps["ask"].update(changes)
    steps["ask"] = {k: v for k, v in steps["ask"].items() if v is not None}
    return make_flow(steps)


def started(flow: object, text: str = "hello") -> tuple[object, ConversationState]:
    lib = library(flow)  # type: ignore[arg-type]
    out = advance(lib, ConversationState("c1"), ev.InboundMessage(text, greeting="bot"), NOW)
    return lib, out.state


# ---------------------------------------------------------------- message with buttons
def test_first_message_is_sent_and_the_run_waits_with_a_no_answer_timer() -> None:
    flow = menu_flow()
    p0, _, p2 = (b.payload for b in flow.steps["ask"].buttons)
    out = advance(
        library(flow), ConversationState("c1"), ev.InboundMessage("hello", greeting="bot"), NOW
    )
    assert out.effects == [
        fx.Trace("run.started", "info", {"version": 1, "bot": "bot", "step": None}),
        fx.SendMessage(
            "r1:ask:m2",
            "ask",
            "message",
            "What do you need?",
            (
                fx.OutButton("Katalóg", p0, None, 1),
                fx.OutButton("Our website", None, "https://example.com"),
                fx.OutButton("Talk to a person", p2, None, 2),
            ),
        ),
        fx.ChatStatus("answered"),
        fx.SetTimer("c1:t3", NOW.timestamp() + 7200, "no_answer"),
    ]
    run = out.state.run
    assert (run.bot, run.version, run.step, run.status) == ("bot", 1, "ask", "waiting")
    assert run.wait == Wait("reply", "ask", {"c1:t3": "no_answer"}, until=NOW.timestamp() + 7200)
    assert out.state.last_message is not None and out.state.last_message["text"] == "hello"
    assert out.state.origin == "message"


@pytest.mark.parametrize(
    "text", ["Katalog", "Katalóg", "katalog ", "KATALOG", "  KATALÓG  ", "katalóg"]
)
def test_the_start_message_is_not_an_answer_to_the_first_question(text: str) -> None:
    _, state = started(menu_flow(), text)
    assert state.run is not None and (state.run.step, state.run.status) == ("ask", "waiting")


@pytest.mark.parametrize(
    ("reply", "target"),
    [
        ("Katalog", "catalog"),
        ("katalog ", "catalog"),
        ("KATALOG", "catalog"),
        ("Katalóg", "catalog"),
        ("  kAtAlÓg", "catalog"),
        ("catalogue", "catalog"),
        ("CATALOGUE", "catalog"),
        ("List", "catalog"),
        ("talk to a PERSON", "human"),
        ("Human", "human"),
        ("1", "catalog"),
        (" 2 ", "human"),  # the 2nd reply button: the URL button is not counted
        ("3", "fallback"),
        ("0", "fallback"),
        ("Our website", "fallback"),  # URL buttons do not branch
        ("I want pizza", "fallback"),
        ("፩", "fallback"),  # an Ethiopic digit one: isdigit() but not a number to int()
    ],
)
def test_a_reply_matches_title_synonym_or_number_case_and_accent_insensitively(
    reply: str, target: str
) -> None:
    lib, state = started(menu_flow())
    out = advance(lib, state, ev.InboundMessage(reply), NOW + timedelta(minutes=1))
    want = {
        "catalog": "Here is the catalog",
        "human": "A person will answer",
        "fallback": "Sorry?",
    }[target]
    assert texts(out.effects) == [want]
    assert out.state.run is not None and out.state.run.step == target
    assert out.state.run.status == "finished"


def test_a_reply_cancels_the_no_answer_timer_and_marks_the_chat() -> None:
    lib, state = started(menu_flow())
    out = advance(lib, state, ev.InboundMessage("Katalog"), NOW)
    assert without_traces(out.effects) == [
        fx.ChatStatus("unanswered"),
        fx.CancelTimer("c1:t3"),
        fx.SendMessage("r1:catalog:m4", "catalog", "message", "Here is the catalog"),
        fx.ChatStatus("answered"),
    ]
    assert out.state.run is not None and out.state.run.wait is None


def test_a_click_matches_by_payload_whatever_its_text() -> None:
    flow = menu_flow()
    lib, state = started(flow)
    payload = flow.steps["ask"].buttons[2].payload
    out = advance(lib, state, ev.InboundMessage("Katalog", payload=payload, kind="button"), NOW)
    assert texts(out.effects) == ["A person will answer"]


def test_a_stale_payload_falls_back_to_the_text() -> None:
    lib, state = started(menu_flow())
    out = advance(
        lib, state, ev.InboundMessage("Katalog", payload="deadbeef.0", kind="button"), NOW
    )
    assert texts(out.effects) == ["Here is the catalog"]


def test_without_other_answer_the_bot_keeps_waiting() -> None:
    lib, state = started(menu_flow(other_answer=None))
    out = advance(lib, state, ev.InboundMessage("pizza?"), NOW)
    assert without_traces(out.effects) == [fx.ChatStatus("unanswered")]
    assert trace_events(out.effects) == ["reply.unmatched"]
    assert out.state.run == state.run  # same step, same timer
    again = advance(lib, out.state, ev.InboundMessage("catalogue"), NOW)
    assert texts(again.effects) == ["Here is the catalog"]


def test_no_answer_fires_once() -> None:
    lib, state = started(menu_flow())
    later = NOW + timedelta(hours=2)
    out = advance(lib, state, ev.TimerFired("c1:t3"), later)
    assert without_traces(out.effects) == [
        fx.SendMessage("r1:reminder:m4", "reminder", "message", "Still there?"),
    ]
    assert out.state.run is not None and out.state.run.status == "finished"
    again = advance(lib, out.state, ev.TimerFired("c1:t3"), later)
    assert without_traces(again.effects) == []
    assert again.state == out.state


def test_no_answer_back_to_the_question_sets_a_new_timer_each_visit() -> None:
    steps = {k: dict(v) for k, v in MENU.items()}
    steps["reminder"] = {"type": "message", "text": "Still there?", "next": "ask"}
    chat = Chat(make_flow(steps))
    chat.start()
    first = chat.state.run.wait.timers
    chat.fire_only_timer()
    assert texts(chat.last) == ["Still there?", "What do you need?"]
    second = chat.state.run.wait.timers
    assert list(second.values()) == ["no_answer"] and set(second) != set(first)
    assert chat.feed(ev.TimerFired(next(iter(first)))) == [
        fx.Trace("timer.stale", "debug", {"timer": next(iter(first)), "bot": "bot", "step": "ask"})
    ]


def test_a_message_without_branching_buttons_continues_at_next() -> None:
    flow = make_flow(
        {
            "hi": {
                "type": "message",
                "text": "Hi",
                "buttons": [{"title": "Site", "url": "https://x.test/{{ contact.id }}"}],
                "next": "bye",
            },
            "bye": {"type": "message", "text": "Bye {{ contact.name }}"},
        }
    )
    out = advance(
        library(flow),
        ConversationState("c1"),
        ev.InboundMessage("x", greeting="bot"),
        NOW,
        {"contact": {"id": 7, "name": "Ann"}},
    )
    sent = of_type(out.effects, fx.SendMessage)
    assert [m.text for m in sent] == ["Hi", "Bye Ann"]
    assert sent[0].buttons == (fx.OutButton("Site", None, "https://x.test/7"),)
    assert out.state.run is not None and out.state.run.status == "finished"
    assert trace_events(out.effects)[-1] == "run.finished"


def test_template_titles_attachments_templates_recipients_and_channels_are_rendered() -> None:
    flow = make_flow(
        {
            "hi": {
                "type": "message",
                "text": "Hello {{ contact.first_name | default('there') }}",
                "attachments": [
                    {
                        "kind": "document",
                        "url": "https://x.test/{{ lead.id }}.pdf",
                        "name": "Offer {{ lead.id }}",
                    },
                    {"kind": "image", "url": "https://x.test/a.png"},
                ],
                "buttons": [{"title": "Yes {{ contact.first_name }}", "next": "yes"}],
                "recipients": "main_contact",
                "channel_mode": "primary",
                "channels": ["whatsapp"],
                "other_answer": "hi",
            },
            "yes": {
                "type": "message",
                "template": "order_update",
                "params": {"name": "{{ contact.name }}", "n": 2},
            },
        }
    )
    snap = {"contact": {"name": "Ann Lee", "first_name": "Ann"}, "lead": {"id": 42}}
    lib = library(flow)
    out = advance(lib, ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW, snap)
    (msg,) = of_type(out.effects, fx.SendMessage)
    assert msg.text == "Hello Ann"
    assert msg.attachments == (
        fx.OutAttachment("document", "https://x.test/42.pdf", "Offer 42"),
        fx.OutAttachment("image", "https://x.test/a.png", None),
    )
    assert msg.buttons == (fx.OutButton("Yes Ann", flow.steps["hi"].buttons[0].payload, None, 1),)
    assert (msg.recipients, msg.channel_mode, msg.channels) == (
        "main_contact",
        "primary",
        ("whatsapp",),
    )
    # The title is a template: the reply matches its rendered text.
    out = advance(lib, out.state, ev.InboundMessage("yes ann"), NOW, snap)
    (msg,) = of_type(out.effects, fx.SendMessage)
    assert (msg.template, msg.params, msg.text) == ("order_update", {"name": "Ann Lee", "n": 2}, "")


def test_a_missing_value_renders_as_an_empty_string() -> None:
    flow = make_flow(
        {
            "hi": {
                "type": "message",
                "text": "Hi {{ contact.name }}{{ lead.fields.nothing.deeper }}!",
            }
        }
    )
    out = advance(
        library(flow), ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW
    )
    assert texts(out.effects) == ["Hi !"]


def test_a_template_that_fails_renders_empty_and_is_logged() -> None:
    flow = make_flow({"hi": {"type": "message", "text": "{{ vars.n + 1 }} items", "next": "bye"},
                      "bye": {"type": "message", "text": "Bye"}})
    out = advance(
        library(flow), ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW
    )
    # the message had nothing else to show: not sent (no empty bubble), and the flow goes on
    assert texts(out.effects) == ["Bye"]
    events = trace_events(out.effects)
    assert events.index("template.error") + 1 == events.index("message.empty"), events


def test_a_message_that_renders_empty_is_not_sent_unless_it_has_more_to_show() -> None:
    """A missing value alone renders empty: a channel refuses an empty text (Telegram's 400
    "message text is empty"), the live chat would show an empty bubble. With buttons or an
    attachment the message still goes."""
    flow = make_flow({"hi": {"type": "message", "text": " {{ vars.missing }} ", "next": "pic"},
                      "pic": {"type": "message", "text": "{{ vars.missing }}", "next": "ask",
                              "attachments": [{"kind": "image", "url": "https://x.test/a.png"}]},
                      "ask": {"type": "message", "text": "{{ vars.missing }}",
                              "buttons": [{"title": "Yes", "next": "hi"}]}})
    out = advance(library(flow), ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW)
    sent = [e for e in out.effects if isinstance(e, fx.SendMessage)]
    assert [(m.step, m.text, len(m.attachments), [b.title for b in m.buttons]) for m in sent] == [
        ("pic", "", 1, []), ("ask", "", 0, ["Yes"])]
    assert trace_events(out.effects).count("message.empty") == 1


def test_an_empty_message_alone_marks_nothing_answered() -> None:
    flow = make_flow({"hi": {"type": "message", "text": "{{ vars.missing }}"}})
    state = ConversationState("c1")
    state.chat_status = "unanswered"
    out = advance(library(flow), state, ev.InboundMessage("x", greeting="bot"), NOW)
    assert not [e for e in out.effects if isinstance(e, (fx.SendMessage, fx.ChatStatus))]
    assert out.state.chat_status == "unanswered"


# ---------------------------------------------------------------- list
LIST = {
    "menu": {
        "type": "list",
        "header": "Menu",
        "text": "Pick a drink",
        "footer": "VAT incl.",
        "button": "Open menu",
        "sections": [
            {
                "title": "Hot",
                "rows": [
                    {"id": "tea", "title": "Tea", "description": "Black or green", "next": "tea"},
                    {"id": "coffee", "title": "Coffee", "next": "coffee"},
                ],
            },
            {"title": "Cold", "rows": [{"title": "Limonata", "next": "lemon"}]},
        ],
        "other_answer": "fallback",
        "no_answer": {"after": "1h", "next": "fallback"},
    },
    "tea": {"type": "message", "text": "tea"},
    "coffee": {"type": "message", "text": "coffee"},
    "lemon": {"type": "message", "text": "lemonade"},
    "fallback": {"type": "message", "text": "fallback"},
}


def test_a_list_is_sent_with_numbered_rows_and_waits() -> None:
    flow = make_flow(LIST)
    out = advance(
        library(flow), ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW
    )
    third_id = flow.steps["menu"].rows[2].id
    assert without_traces(out.effects) == [
        fx.SendMessage(
            "r1:menu:m2",
            "menu",
            "list",
            "Pick a drink",
            list=fx.OutList(
                "Open menu",
                "Menu",
                "VAT incl.",
                (
                    (
                        "Hot",
                        (
                            fx.OutRow("tea", "Tea", "Black or green", 1),
                            fx.OutRow("coffee", "Coffee", None, 2),
                        ),
                    ),
                    ("Cold", (fx.OutRow(third_id, "Limonata", None, 3),)),
                ),
            ),
        ),
        fx.ChatStatus("answered"),
        fx.SetTimer("c1:t3", NOW.timestamp() + 3600, "no_answer"),
    ]
    assert out.state.run is not None and out.state.run.wait is not None
    assert out.state.run.wait.kind == "reply"


@pytest.mark.parametrize(
    ("text", "payload", "answer"),
    [
        ("", "coffee", "coffee"),
        ("Tea", "coffee", "coffee"),  # the payload (row id) wins over the text
        ("tea", None, "tea"),
        ("COFFEE ", None, "coffee"),
        ("limonata", None, "lemonade"),
        ("1", None, "tea"),
        ("3", None, "lemonade"),  # numbers run across sections
        ("4", None, "fallback"),
        ("Hot", None, "fallback"),
        ("Black or green", None, "fallback"),
    ],
)
def test_a_list_reply_matches_row_payload_title_or_number(
    text: str, payload: str | None, answer: str
) -> None:
    lib = library(make_flow(LIST))
    state = advance(lib, ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW).state
    out = advance(lib, state, ev.InboundMessage(text, payload=payload), NOW)
    assert texts(out.effects) == [answer]


def test_list_no_answer() -> None:
    chat = Chat(make_flow(LIST))
    chat.start()
    chat.fire_only_timer()
    assert texts(chat.last) == ["fallback"]


# ---------------------------------------------------------------- other sending steps
def test_subscribe_comment_internal_message_goto_and_stop() -> None:
    flow = make_flow(
        {
            "sub": {"type": "subscribe", "tag": "weekly", "title": "Weekly offers", "next": "com"},
            "com": {
                "type": "comment",
                "text": "Thanks {{ contact.name }}! See DM.",
                "next": "note",
            },
            "note": {
                "type": "internal_message",
                "text": "Lead {{ lead.name }} wants a call",
                "to": ["user:7", "team:sales"],
                "next": "jump",
            },
            "jump": {"type": "goto", "step": "end"},
            "skipped": {"type": "message", "text": "never"},
            "end": {"type": "stop", "close_chat": True},
        }
    )
    out = advance(
        library(flow),
        ConversationState("c1"),
        ev.InboundMessage("x", kind="comment", greeting="bot"),
        NOW,
        {"contact": {"name": "Ann"}, "lead": {"name": "Deal"}},
    )
    assert without_traces(out.effects) == [
        fx.SendMessage("r1:sub:m2", "sub", "subscribe", "Weekly offers", tag="weekly"),
        fx.ChatStatus("answered"),
        fx.SendMessage("r1:com:m3", "com", "comment", "Thanks Ann! See DM."),
        fx.InternalMessage("Lead Deal wants a call", ("user:7", "team:sales")),
        fx.ChatStatus("closed"),
    ]
    run = out.state.run
    assert run is not None and (run.step, run.status) == ("end", "finished")
    assert out.state.chat_status == "closed"
    assert out.state.origin == "comment"


def test_stop_without_close_chat_leaves_the_chat_answered() -> None:
    flow = make_flow(
        {"hi": {"type": "message", "text": "hi", "next": "end"}, "end": {"type": "stop"}}
    )
    out = advance(
        library(flow), ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW
    )
    assert out.state.chat_status == "answered"
    assert out.state.run is not None and out.state.run.status == "finished"


# ---------------------------------------------------------------- chat status
def test_chat_status_inbound_unanswered_reply_answered_close_closed() -> None:
    flow = make_flow(
        {
            "ask": {
                "type": "message",
                "text": "Close?",
                "buttons": [{"title": "yes", "next": "end"}],
                "other_answer": "ask",
            },
            "end": {"type": "stop", "close_chat": True},
        }
    )
    chat = Chat(flow)
    assert chat.state.chat_status == "unanswered"
    chat.start()
    assert chat.state.chat_status == "answered"
    assert of_type(chat.say("no"), fx.ChatStatus) == [
        fx.ChatStatus("unanswered"),
        fx.ChatStatus("answered"),
    ]
    assert of_type(chat.say("yes"), fx.ChatStatus) == [
        fx.ChatStatus("unanswered"),
        fx.ChatStatus("closed"),
    ]
    assert chat.state.chat_status == "closed"
    chat.say("hello again")  # a new run starts: the chat is unanswered, then answered
    assert chat.state.chat_status == "answered"
    assert of_type(chat.last, fx.ChatStatus)[0] == fx.ChatStatus("unanswered")


def test_leave_unanswered_keeps_the_chat_unanswered() -> None:
    flow = make_flow(
        {"hi": {"type": "message", "text": "We'll be right with you"}}, leave_unanswered=True
    )
    out = advance(
        library(flow), ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW
    )
    (msg,) = of_type(out.effects, fx.SendMessage)
    assert msg.marks_answered is False
    assert of_type(out.effects, fx.ChatStatus) == []
    assert out.state.chat_status == "unanswered"


# ---------------------------------------------------------------- delivery failures
DELIVERY = {
    "hi": {"type": "message", "text": "Hi", "failed": "sorry", "next": "wait"},
    "wait": {"type": "pause", "until": [{"on": "timer", "after": "1d", "next": "later"}]},
    "later": {"type": "message", "text": "Later"},
    "sorry": {"type": "internal_message", "text": "could not reach the customer"},
}


def test_delivery_failure_goes_to_failed_and_cancels_the_wait() -> None:
    chat = Chat(make_flow(DELIVERY))
    chat.start()
    ref = chat.sent()[0].ref
    timer = next(iter(chat.state.run.wait.timers))
    out = chat.feed(ev.DeliveryFailed(ref, "blocked"))
    assert without_traces(out) == [
        fx.CancelTimer(timer),
        fx.InternalMessage("could not reach the customer"),
    ]
    assert "delivery.failed" in trace_events(out)
    assert (chat.step, chat.status) == ("sorry", "finished")


def test_delivery_failure_without_failed_fails_the_run() -> None:
    steps = dict(DELIVERY)
    steps["hi"] = {"type": "message", "text": "Hi", "next": "wait"}
    chat = Chat(make_flow(steps))
    chat.start()
    out = chat.feed(ev.DeliveryFailed(chat.sent()[0].ref, "24h window closed"))
    assert chat.status == "failed"
    assert chat.run.error is not None and "24h window closed" in chat.run.error
    assert chat.run.wait is None and chat.timers == {}
    assert [t.level for t in of_type(out, fx.Trace) if t.event == "run.failed"] == ["error"]


def test_delivery_failure_of_an_old_run_is_ignored() -> None:
    chat = Chat(
        make_flow(
            {
                "hi": {"type": "message", "text": "Hi", "failed": "hi", "next": "wait"},
                "wait": {"type": "pause", "next": "end"},
                "end": {"type": "stop"},
            }
        )
    )
    chat.start()
    old_ref = chat.sent()[0].ref
    chat.say("done")  # the first run finishes
    chat.say("again")  # a new one starts and waits
    assert chat.status == "waiting" and chat.run.id != old_ref.split(":")[0]
    before = chat.state
    out = chat.feed(ev.DeliveryFailed(old_ref, "blocked"))
    assert without_traces(out) == []
    assert trace_events(out) == ["delivery.failed_stale"]
    assert chat.state == before


@pytest.mark.parametrize("attack", [
    "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
    "{{ (9**999)**999 }}",
    "{{ '%0200000000d' % 1 }}",
    ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
     "{{ ns.s }}"),
])
def test_a_template_over_its_budget_is_logged_and_the_conversation_goes_on(attack: str) -> None:
    flow = make_flow({
        "hi": {"type": "message", "text": "Hello " + attack, "next": "ask"},
        "ask": {"type": "message", "text": "Go on?", "buttons": [{"title": "Yes", "next": "done"}]},
        "done": {"type": "message", "text": "Done"},
    })
    chat = Chat(flow)
    started = time.process_time()
    effects = chat.feed(ev.InboundMessage("hi", greeting="bot"))
    assert time.process_time() - started < 2.0  # milliseconds, in fact; minutes without the budget
    assert texts(effects) == ["Go on?"]  # the failed template renders empty, as any failure: not sent
    errors = [t for t in of_type(effects, fx.Trace) if t.event == "template.error"]
    assert len(errors) == 1 and any(
        word in str(errors[0]) for word in ("iterations", "10**100", "width", "longer than"))
    assert texts(chat.feed(ev.InboundMessage("Yes"))) == ["Done"]
    assert chat.status == "finished"
