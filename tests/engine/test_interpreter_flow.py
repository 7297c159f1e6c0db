"""Steps that decide and wait, on the pure core: condition, validation, pause and timers, the
step budget, start_bot, round_robin, pinned versions, takeover/release/stop/start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgpack
import pytest
import regex

from bot.engine import effects as fx
from bot.engine import events as ev
from bot.engine import predicates
from bot.engine.flows import FlowLibrary
from bot.engine.interpreter import advance
from bot.engine.predicates import as_number
from bot.engine.state import ConversationState, Frame, Run, Wait
from bot.engine.steps.control import MAX_CALL_DEPTH

from .helpers import NOW, Chat, library, make_flow, of_type, texts, trace_events, without_traces

IST = ZoneInfo("Europe/Istanbul")


def say(text: str) -> dict[str, str]:
    return {"type": "message", "text": text}


# ---------------------------------------------------------------- condition
CONDITION = {
    "check": {
        "type": "condition",
        "branches": [
            {"if": {"field": "message.text", "op": "contains", "value": "price"}, "next": "prices"},
            {
                "if": {
                    "all": [
                        {"field": "lead.tags", "op": "has", "value": "vip"},
                        {"expr": "lead.price > 1000"},
                    ]
                },
                "next": "vip",
            },
            {
                "if": {
                    "any": [
                        {"field": "contact.phone", "op": "empty"},
                        {"not": {"field": "vars.n", "op": "gt", "value": 1}},
                    ]
                },
                "next": "ask_phone",
            },
        ],
        "else": "menu",
    },
    "prices": say("prices"),
    "vip": say("vip"),
    "ask_phone": say("phone?"),
    "menu": say("menu"),
}


@pytest.mark.parametrize(
    ("text", "snapshot", "variables", "answer"),
    [
        ("What's the PRICE?", {}, {}, "prices"),
        ("hi", {"lead": {"tags": ["VIP"], "price": 1500}, "contact": {"phone": "1"}}, {}, "vip"),
        (
            "hi",
            {"lead": {"tags": ["vip"], "price": 900}, "contact": {"phone": "1"}},
            {"n": 5},
            "menu",
        ),
        (
            "hi",
            {"lead": {"tags": ["vip"], "price": 900}, "contact": {"phone": ""}},
            {"n": 5},
            "phone?",
        ),
        ("hi", {"contact": {"phone": "1"}}, {"n": 1}, "phone?"),
    ],
)
def test_condition_first_branch_that_holds_wins(
    text: str, snapshot: dict, variables: dict, answer: str
) -> None:
    flow = make_flow(CONDITION, variables=variables or None)
    out = advance(
        library(flow),
        ConversationState("c1"),
        ev.InboundMessage(text, greeting="bot"),
        NOW,
        snapshot,
    )
    assert texts(out.effects) == [answer]


def test_condition_without_else_ends_the_run_and_a_failing_expr_is_logged_and_skipped() -> None:
    flow = make_flow(
        {
            "check": {
                "type": "condition",
                "branches": [
                    {"if": {"expr": "vars.missing + 1 > 0"}, "next": "yes"},
                ],
            },
            "yes": say("yes"),
        }
    )
    out = advance(
        library(flow), ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW
    )
    assert texts(out.effects) == []
    assert "condition.error" in trace_events(out.effects)
    assert out.state.run is not None and out.state.run.status == "finished"


# ---------------------------------------------------------------- validation
def validation_flow(
    rules: list[dict],
    logic: str = "all",
    timezone_: str = "Europe/Istanbul",
    value: str | None = None,
) -> object:
    step = {
        "type": "validation",
        "rules": rules,
        "logic": logic,
        "save_as": "found",
        "pass": "ok",
        "fail": "bad",
    }
    if value is not None:
        step["value"] = value
    return make_flow(
        {
            "ask": {"type": "pause", "next": "check"},
            "check": step,
            "ok": say("ok {{ last_validation_result }} / {{ vars.found }}"),
            "bad": say("bad [{{ last_validation_result }}]"),
        },
        timezone=timezone_,
    )


def validate(flow: object, text: str) -> Chat:
    chat = Chat(flow)  # type: ignore[arg-type]
    chat.start()
    chat.say(text)
    return chat


def test_validation_finds_a_local_phone_number_in_the_flow_timezone_and_saves_it() -> None:
    chat = validate(
        validation_flow([{"check": "contains", "kind": "phone"}]), "my number is 0555 111 22 33"
    )
    assert texts(chat.last) == ["ok +905551112233 / +905551112233"]
    assert chat.run.last_validation_result == "+905551112233"
    assert chat.vars["found"] == "+905551112233"


def test_validation_fail_clears_the_last_result_and_saves_nothing() -> None:
    chat = validate(validation_flow([{"check": "contains", "kind": "phone"}]), "no number, sorry")
    assert texts(chat.last) == ["bad []"]
    assert chat.run.last_validation_result is None
    assert "found" not in chat.vars


@pytest.mark.parametrize(
    ("logic", "text", "answer"),
    [
        ("all", "mail a@example.com or call +44 7911 123456", "ok a@example.com / a@example.com"),
        ("all", "mail a@example.com", "bad []"),
        ("any", "call +44 7911 123456", "ok +447911123456 / +447911123456"),
        ("any", "nothing", "bad []"),
    ],
)
def test_validation_logic_all_and_any(logic: str, text: str, answer: str) -> None:
    flow = validation_flow(
        [{"check": "contains", "kind": "email"}, {"check": "contains", "kind": "phone"}], logic
    )
    assert texts(validate(flow, text).last) == [answer]


def test_validation_value_defaults_to_the_last_message_but_can_be_any_template() -> None:
    flow = validation_flow(
        [{"check": "equals", "value": "{{ vars.code }}"}], value="{{ message.text | upper }}"
    )
    chat = Chat(flow)  # type: ignore[arg-type]
    chat.start()
    chat.run.vars["code"] = "ABC"  # as if set before
    chat.say("abc")
    assert texts(chat.last) == ["ok ABC / ABC"]


def test_validation_catastrophic_regex_times_out_and_counts_as_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(predicates, "REGEX_TIMEOUT", 0.01)
    text = "a" * 36 + "!"
    evil = regex.compile(r"(a|aa)+$")
    with pytest.raises(TimeoutError):  # it really is catastrophic: without the limit it would hang
        evil.search(text, timeout=0.01)
    for pattern in (r"(a+)+$", r"(a|aa)+$"):
        chat = validate(validation_flow([{"check": "regex", "pattern": pattern}]), text)
        assert texts(chat.last) == ["bad []"]
        assert chat.status == "finished"


def test_validation_rule_whose_template_fails_counts_as_fail() -> None:
    # Regression: TemplateFailed escaped advance() from a rule's value.
    flow = validation_flow([{"check": "equals", "value": "{{ vars.n + 1 }}"}])
    chat = validate(flow, "1")
    assert texts(chat.last) == ["bad []"]
    assert "template.error" in trace_events(chat.last)


def test_validation_result_too_big_for_msgpack_is_kept_as_digits() -> None:
    # Regression: a customer's 23-digit "number" became an int msgpack cannot pack.
    chat = validate(
        validation_flow([{"check": "contains", "kind": "number"}]), "99999999999999999999999"
    )
    found = chat.vars["found"]
    assert isinstance(found, str) and as_number(found) == pytest.approx(1e23)
    msgpack.packb(chat.state.to_dict())


# ---------------------------------------------------------------- pause
PAUSE = {
    "wait": {
        "type": "pause",
        "until": [
            {"on": "message", "next": "got"},
            {"on": "timer", "after": "1d", "next": "nudge"},
            {"on": "working_hours", "next": "open"},
            {"on": "video_opened", "next": "watched"},
        ],
    },
    "got": say("got"),
    "nudge": say("nudge"),
    "open": say("open"),
    "watched": say("watched"),
}
FRIDAY_EVENING = datetime(2024, 5, 3, 20, 0, tzinfo=IST)
MONDAY_OPENING = datetime(2024, 5, 6, 9, 0, tzinfo=IST).timestamp()


def pause_flow() -> object:
    return make_flow(PAUSE, timezone="Europe/Istanbul", working_hours={"mon-fri": "09:00-18:00"})


def test_pause_outside_working_hours_sets_one_timer_per_timed_event() -> None:
    assert MONDAY_OPENING == 1714975200.0
    out = advance(
        library(pause_flow()),
        ConversationState("c1"),
        ev.InboundMessage("x", greeting="bot"),
        FRIDAY_EVENING,
    )
    now = FRIDAY_EVENING.timestamp()
    assert without_traces(out.effects) == [
        fx.SetTimer("c1:t2", now + 86400, "pause"),
        fx.SetTimer("c1:t3", MONDAY_OPENING, "pause"),
    ]
    assert out.state.run is not None
    assert out.state.run.wait == Wait(
        "pause",
        "wait",
        {"c1:t2": "pause:1", "c1:t3": "pause:2"},
        ("message", "timer", "working_hours", "video_opened"),
        until=now + 86400,
    )


@pytest.mark.parametrize(
    ("event", "answer", "cancelled"),
    [
        (ev.InboundMessage("hi"), "got", ["c1:t2", "c1:t3"]),
        (ev.TimerFired("c1:t2"), "nudge", ["c1:t3"]),
        (ev.TimerFired("c1:t3"), "open", ["c1:t2"]),
        (ev.VideoEvent("video_opened"), "watched", ["c1:t2", "c1:t3"]),
    ],
)
def test_pause_the_first_event_wins_and_the_others_are_cancelled(
    event: ev.Event, answer: str, cancelled: list[str]
) -> None:
    lib = library(pause_flow())
    state = advance(
        lib, ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), FRIDAY_EVENING
    ).state
    out = advance(lib, state, event, FRIDAY_EVENING + timedelta(hours=1))
    assert of_type(out.effects, fx.CancelTimer) == [fx.CancelTimer(t) for t in cancelled]
    assert texts(out.effects) == [answer]
    later = advance(lib, out.state, ev.TimerFired(cancelled[0]), FRIDAY_EVENING + timedelta(days=3))
    assert later.state == out.state and without_traces(later.effects) == []


def test_pause_working_hours_fires_at_once_when_open() -> None:
    monday_10 = datetime(2024, 5, 6, 10, 0, tzinfo=IST)
    out = advance(
        library(pause_flow()),
        ConversationState("c1"),
        ev.InboundMessage("x", greeting="bot"),
        monday_10,
    )
    assert without_traces(out.effects) == [
        fx.SendMessage("r1:open:m2", "open", "message", "open"),
        fx.ChatStatus("answered"),
    ]


def test_pause_video_closed_and_unrelated_video_events() -> None:
    flow = make_flow(
        {
            "wait": {"type": "pause", "until": [{"on": "video_closed", "next": "closed"}]},
            "closed": say("closed"),
        }
    )
    chat = Chat(flow)
    chat.start()
    before = chat.state
    assert without_traces(chat.feed(ev.VideoEvent("video_opened"))) == []
    assert chat.state == before
    assert texts(chat.feed(ev.VideoEvent("video_closed"))) == ["closed"]


def test_pause_defaults_to_the_next_message() -> None:
    chat = Chat(make_flow({"wait": {"type": "pause", "next": "done"}, "done": say("done")}))
    assert texts(chat.start()) == []
    assert (chat.step, chat.status) == ("wait", "waiting")
    assert texts(chat.say("hi")) == ["done"]


def test_a_timer_for_a_step_that_is_no_longer_current_does_nothing() -> None:
    flow = make_flow(
        {
            "p1": {
                "type": "pause",
                "until": [
                    {"on": "message", "next": "p2"},
                    {"on": "timer", "after": "1h", "next": "x"},
                ],
            },
            "p2": {"type": "pause", "until": [{"on": "timer", "after": "2h", "next": "y"}]},
            "x": say("x"),
            "y": say("y"),
        }
    )
    chat = Chat(flow)
    chat.start()
    old_timer = next(iter(chat.state.run.wait.timers))
    chat.say("go")
    assert chat.step == "p2"
    before = chat.state
    out = chat.feed(ev.TimerFired(old_timer))
    assert out == [
        fx.Trace("timer.stale", "debug", {"timer": old_timer, "bot": "bot", "step": "p2"})
    ]
    assert chat.state == before


def test_a_timer_of_an_old_run_does_nothing() -> None:
    flow = make_flow(
        {
            "p": {
                "type": "pause",
                "until": [
                    {"on": "message", "next": "s"},
                    {"on": "timer", "after": "1h", "next": "s"},
                ],
            },
            "s": {"type": "stop"},
        }
    )
    chat = Chat(flow)
    chat.start()
    old_timer = next(iter(chat.state.run.wait.timers))
    chat.say("done")  # run 1 ends
    chat.say("again")  # run 2 waits at p with its own timer
    assert old_timer not in chat.state.run.wait.timers
    before = chat.state
    assert without_traces(chat.feed(ev.TimerFired(old_timer))) == []
    assert chat.state == before


# ---------------------------------------------------------------- step budget
def test_step_budget_stops_a_start_bot_loop_with_an_error() -> None:
    flow = make_flow(
        {
            "hi": {"type": "message", "text": "hi", "next": "again"},
            "again": {"type": "start_bot", "bot": "bot"},
        },
        step_budget=5,
    )
    out = advance(
        library(flow), ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW
    )
    assert texts(out.effects) == ["hi", "hi", "hi"]
    run = out.state.run
    assert run is not None and run.status == "failed"
    assert run.error == "step budget of 5 exhausted at step 'again'"
    assert [t for t in of_type(out.effects, fx.Trace) if t.level == "error"] == [
        fx.Trace("run.failed", "error", {"error": run.error, "bot": "bot", "step": "hi"})
    ]


def test_step_budget_counts_per_outside_event_across_requests() -> None:
    chain = {
        f"a{i}": {
            "type": "action",
            "actions": [{"do": "add_note", "text": f"n{i}"}],
            "next": f"a{i + 1}",
        }
        for i in range(1, 4)
    }
    chain["a4"] = {"type": "pause", "next": "a1"}
    chat = Chat(make_flow(chain, step_budget=4))
    chat.start()
    assert chat.status == "waiting" and len(chat.requests) == 3
    chat.say("again")  # a fresh budget: a1..a3 and the pause again
    assert chat.status == "waiting" and len(chat.requests) == 6
    chat2 = Chat(make_flow(chain, step_budget=3))
    chat2.start()
    assert chat2.status == "failed" and chat2.run.error == "step budget of 3 exhausted at step 'a4'"


# ---------------------------------------------------------------- start_bot
QUALIFY = make_flow(
    {
        "q_ask": {"type": "pause", "next": "q_score"},
        "q_score": {
            "type": "action",
            "actions": [{"do": "set_variable", "name": "score", "value": "{{ vars.base + 5 }}"}],
            "next": "q_end",
        },
        "q_end": {"type": "stop"},
    },
    id="qualify",
    variables={"base": 10},
)


def test_start_bot_with_next_is_a_call_that_returns_with_the_callee_vars() -> None:
    main = make_flow(
        {
            "set": {
                "type": "action",
                "actions": [{"do": "set_variable", "name": "mine", "value": "kept"}],
                "next": "call",
            },
            "call": {"type": "start_bot", "bot": "qualify", "next": "after"},
            "after": say("score {{ vars.qualify.score }}, mine {{ vars.mine }}"),
        },
        id="main",
    )
    chat = Chat(QUALIFY, main, greeting="main")
    chat.start()
    run = chat.run
    assert (run.bot, run.step, run.vars) == ("qualify", "q_ask", {"base": 10})
    assert run.callers == [Frame("main", 1, "after", {"mine": "kept"})]
    chat.say("answer")
    assert texts(chat.last) == ["score 15, mine kept"]
    assert chat.run.bot == "main" and chat.run.status == "finished"
    assert chat.vars == {"mine": "kept", "qualify": {"base": 10, "score": 15}}
    assert trace_events(chat.last).count("run.returned") == 1


def test_returning_from_a_call_does_not_change_the_state_it_was_given() -> None:
    # Regression: the clone shared the caller frame's vars, and returning wrote into them.
    main = make_flow(
        {"call": {"type": "start_bot", "bot": "qualify", "next": "after"}, "after": say("back")},
        id="main",
    )
    lib = library(QUALIFY, main)
    state = advance(
        lib, ConversationState("c1"), ev.InboundMessage("x", greeting="main"), NOW
    ).state
    snapshot = msgpack.packb(state.to_dict())
    out = advance(lib, state, ev.InboundMessage("answer"), NOW)
    assert texts(out.effects) == ["back"]
    assert msgpack.packb(state.to_dict()) == snapshot


def test_start_bot_without_next_replaces_the_bot() -> None:
    main = make_flow(
        {
            "hi": {"type": "message", "text": "hi", "next": "go"},
            "go": {"type": "start_bot", "bot": "qualify"},
        },
        id="main",
        variables={"mine": 1},
    )
    chat = Chat(QUALIFY, main, greeting="main")
    chat.start()
    assert (chat.run.bot, chat.run.callers, chat.vars) == ("qualify", [], {"base": 10})
    chat.say("answer")
    assert chat.run.bot == "qualify" and chat.status == "finished" and texts(chat.last) == []


def test_start_bot_of_an_unknown_bot_fails_the_run() -> None:
    flow = make_flow(
        {"go": {"type": "start_bot", "bot": "nobody", "next": "after"}, "after": say("after")}
    )
    out = advance(
        library(flow), ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW
    )
    assert texts(out.effects) == []
    assert out.state.run is not None and out.state.run.status == "failed"
    assert out.state.run.error == "start_bot: unknown bot 'nobody'"


def test_start_bot_recursion_stops_at_the_call_depth() -> None:
    flow = make_flow(
        {"go": {"type": "start_bot", "bot": "bot", "next": "after"}, "after": say("after")}
    )
    out = advance(
        library(flow), ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW
    )
    run = out.state.run
    assert run is not None and run.status == "failed" and run.callers == []
    assert run.error == f"start_bot: more than {MAX_CALL_DEPTH} nested bot calls"


# ---------------------------------------------------------------- round robin
def counting_rotation() -> tuple[dict, object]:
    counters: dict = {}

    def answer(request: fx.Request) -> ev.RequestResult:
        if request.kind != "round_robin":
            return ev.RequestResult(request.id, value={"ok": True})
        key = (request.payload["bot"], request.payload["rotation"])
        n = counters.get(key, 0)
        counters[key] = n + 1
        return ev.RequestResult(request.id, value=n % request.payload["options"])

    return counters, answer


def rr_flow(options: list[str], version: int = 1) -> object:
    steps = {"rr": {"type": "round_robin", "options": options}}
    steps.update({o: say(o) for o in ("a", "b", "c", "d")})
    return make_flow(steps, version=version)


def test_round_robin_requests_the_rotation_and_takes_the_option_in_turn() -> None:
    counters, answer = counting_rotation()
    flow = rr_flow(["a", "b", "c"])
    chat = Chat(flow, answer=answer)
    seen = []
    for _ in range(4):
        chat.say("hi")  # each message starts a new run: the previous one finished
        seen += texts(chat.last)
    assert seen == ["a", "b", "c", "a"]
    rotation = flow.steps["rr"].rotation
    assert chat.requests[0] == fx.Request(
        "q2", "round_robin", {"bot": "bot", "rotation": rotation, "options": 3}
    )
    assert counters == {("bot", rotation): 4}


def test_round_robin_rotation_restarts_when_the_options_change() -> None:
    v1, same, other = (
        rr_flow(["a", "b", "c"]),
        rr_flow(["a", "b", "c"], 2),
        rr_flow(["a", "b", "d"], 3),
    )
    assert v1.steps["rr"].rotation == same.steps["rr"].rotation
    assert v1.steps["rr"].rotation != other.steps["rr"].rotation
    _, answer = counting_rotation()
    chat = Chat(v1, answer=answer)
    chat.say("1")
    chat.lib.add(other)
    chat.say("2")
    assert texts(chat.last) == ["a"]  # a new rotation starts at option 1


def test_round_robin_failure_takes_the_first_option() -> None:
    chat = Chat(
        rr_flow(["a", "b"]), answer=lambda r: ev.RequestResult(r.id, ok=False, error="redis down")
    )
    assert texts(chat.start()) == ["a"]


# ---------------------------------------------------------------- versions
def test_a_run_stays_on_its_version_and_new_runs_take_the_active_one() -> None:
    def version(n: int) -> object:
        return make_flow(
            {"ask": {"type": "pause", "next": "reply"}, "reply": say(f"v{n}")}, version=n
        )

    lib = FlowLibrary()
    lib.add(version(1))  # type: ignore[arg-type]
    old = advance(lib, ConversationState("old"), ev.InboundMessage("x", greeting="bot"), NOW).state
    lib.add(version(2))  # type: ignore[arg-type]
    new = advance(lib, ConversationState("new"), ev.InboundMessage("x", greeting="bot"), NOW).state
    assert old.run is not None and new.run is not None
    assert (old.run.version, new.run.version) == (1, 2)
    assert texts(advance(lib, old, ev.InboundMessage("y"), NOW).effects) == ["v1"]
    assert texts(advance(lib, new, ev.InboundMessage("y"), NOW).effects) == ["v2"]
    finished = advance(lib, old, ev.InboundMessage("y"), NOW).state
    again = advance(lib, finished, ev.InboundMessage("z", greeting="bot"), NOW).state
    assert again.run is not None and again.run.version == 2


def test_flow_library_versions() -> None:
    lib = FlowLibrary()
    v1 = make_flow({"a": say("1")}, version=1)
    v2 = make_flow({"a": say("2")}, version=2)
    lib.add(v1)
    lib.add(v2, activate=False)
    assert lib.get("bot") is v1 and lib.get("bot", 2) is v2 and lib.get("bot", 3) is None
    lib.activate("bot", 2)
    assert lib.get("bot") is v2 and lib.bots() == ["bot"] and lib.get("other") is None
    with pytest.raises(KeyError):
        lib.activate("bot", 3)


# ---------------------------------------------------------------- takeover, release, stop, start
TAKEOVER = {
    "ask": {
        "type": "message",
        "text": "Yes or no?",
        "buttons": [{"title": "yes", "next": "yes"}],
        "other_answer": "ask",
        "no_answer": {"after": "1h", "next": "nudge"},
    },
    "yes": say("great"),
    "nudge": say("nudge"),
    "menu": say("menu"),
}


def test_while_a_person_has_the_conversation_the_bot_neither_answers_nor_fires_timers() -> None:
    chat = Chat(make_flow(TAKEOVER))
    chat.start()
    timer = next(iter(chat.state.run.wait.timers))
    assert without_traces(chat.feed(ev.Takeover("user:7"))) == []
    assert (chat.state.owner, chat.state.owner_user) == ("human", "user:7")
    assert without_traces(chat.say("yes")) == [fx.ChatStatus("unanswered")]
    assert chat.step == "ask" and chat.status == "waiting"
    out = chat.fire(timer)
    assert without_traces(out) == [] and trace_events(out) == ["timer.held"]
    assert chat.state.run.wait.timers == {}
    chat.feed(ev.Release())
    assert chat.state.owner == "bot" and chat.step == "ask"
    assert texts(chat.say("yes")) == ["great"]  # continues where it was


def test_while_a_person_has_the_conversation_no_run_starts() -> None:
    chat = Chat(make_flow(TAKEOVER))
    chat.feed(ev.Takeover("user:7"))
    out = chat.say("hello")
    assert without_traces(out) == [] and chat.state.run is None
    assert chat.state.last_message is not None and chat.state.last_message["text"] == "hello"


def test_release_at_a_chosen_step_cancels_the_wait() -> None:
    chat = Chat(make_flow(TAKEOVER))
    chat.start()
    timer = next(iter(chat.state.run.wait.timers))
    chat.feed(ev.Takeover("user:7"))
    out = chat.feed(ev.Release("menu"))
    assert without_traces(out) == [
        fx.CancelTimer(timer),
        fx.SendMessage("r1:menu:m4", "menu", "message", "menu"),
    ]
    assert chat.status == "finished" and chat.state.owner == "bot"


def test_release_at_an_unknown_step_only_gives_the_conversation_back() -> None:
    chat = Chat(make_flow(TAKEOVER))
    chat.start()
    chat.feed(ev.Takeover("user:7"))
    out = chat.feed(ev.Release("nope"))
    assert without_traces(out) == [] and "release.unknown_step" in trace_events(out)
    assert chat.state.owner == "bot" and chat.step == "ask" and chat.status == "waiting"


def test_release_at_a_step_revives_a_finished_run() -> None:
    chat = Chat(make_flow(TAKEOVER))
    chat.start()
    chat.say("yes")
    assert chat.status == "finished"
    chat.feed(ev.Takeover("user:7"))
    assert texts(chat.feed(ev.Release("ask"))) == ["Yes or no?"]
    assert chat.status == "waiting" and chat.run.id == "r1"


def test_release_at_a_step_revives_a_failed_run_and_clears_its_error() -> None:
    chat = Chat(make_flow({**TAKEOVER, "boom": {"type": "start_bot", "bot": "ghost"}}))
    chat.start()
    chat.feed(ev.Release("boom"))
    assert chat.status == "failed" and chat.run.error
    chat.feed(ev.Release("menu"))
    assert chat.status == "finished" and chat.run.error is None and texts(chat.last) == ["menu"]


def test_release_without_a_run() -> None:
    chat = Chat(make_flow(TAKEOVER))
    chat.feed(ev.Takeover("user:7"))
    out = chat.feed(ev.Release("ask"))
    assert (
        without_traces(out) == []
        and "release.no_run" in trace_events(out)
        and chat.state.owner == "bot"
    )


def test_video_events_are_ignored_while_a_person_has_the_conversation() -> None:
    chat = Chat(
        make_flow(
            {"w": {"type": "pause", "until": [{"on": "video_opened", "next": "v"}]}, "v": say("v")}
        )
    )
    chat.start()
    chat.feed(ev.Takeover("user:7"))
    assert texts(chat.feed(ev.VideoEvent("video_opened"))) == []
    assert chat.step == "w"


def test_stop_ends_the_run_and_cancels_its_timers() -> None:
    chat = Chat(make_flow(TAKEOVER))
    chat.start()
    timer = next(iter(chat.state.run.wait.timers))
    out = chat.feed(ev.StopBot("operator"))
    assert without_traces(out) == [fx.CancelTimer(timer)]
    assert chat.status == "stopped" and chat.run.wait is None
    assert without_traces(chat.feed(ev.StopBot())) == []  # stopping twice does nothing
    chat.say("hello")
    assert chat.status == "waiting" and chat.run.id != "r1"  # a new run


def test_start_replaces_the_running_bot_at_a_step_with_variables() -> None:
    other = make_flow(
        {"a": say("a"), "b": say("b {{ vars.x }} {{ vars.y }}")}, id="other", variables={"y": "Y"}
    )
    chat = Chat(other, make_flow(TAKEOVER), greeting="bot")
    chat.start()
    timer = next(iter(chat.state.run.wait.timers))
    out = chat.feed(ev.StartBot("other", "b", {"x": 1}))
    assert of_type(out, fx.CancelTimer) == [fx.CancelTimer(timer)]
    assert texts(out) == ["b 1 Y"]
    assert chat.run.bot == "other" and chat.status == "finished"
    out = chat.feed(ev.StartBot("ghost"))
    assert trace_events(out) == ["run.unknown_bot"]


def test_a_result_for_a_flow_no_longer_loaded_fails_the_run() -> None:
    # Regression: a RequestResult raised KeyError when the run's version had gone.
    flow = make_flow(
        {
            "a": {"type": "action", "actions": [{"do": "add_note", "text": "x"}], "next": "s"},
            "s": {"type": "stop"},
        }
    )
    lib = library(flow)
    out = advance(lib, ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW)
    assert out.request is not None
    out2 = advance(FlowLibrary(), out.state, ev.RequestResult(out.request.id), NOW)
    assert out2.state.run is not None and out2.state.run.status == "failed"
    assert out2.state.run.error == "bot bot v1 is no longer loaded"


def test_a_stale_request_result_is_ignored() -> None:
    chat = Chat(make_flow(TAKEOVER))
    chat.start()
    before = chat.state
    assert without_traces(chat.feed(ev.RequestResult("q999"))) == []
    assert chat.state == before


def test_crm_events_are_only_recorded() -> None:
    chat = Chat(make_flow(TAKEOVER))
    chat.start()
    before = chat.state
    assert chat.feed(ev.CrmEvent("lead.stage_changed", {"stage": "Won"})) == [
        fx.Trace("crm.event", "info", {"type": "lead.stage_changed", "bot": "bot", "step": "ask"})
    ]
    assert chat.state == before


def test_the_state_given_to_advance_is_never_changed() -> None:
    flow = make_flow(TAKEOVER)
    lib = library(flow)
    state = ConversationState(
        "c1",
        run=Run(
            "r9",
            "bot",
            1,
            "ask",
            "waiting",
            {"a": [1]},
            wait=Wait("reply", "ask", {"c1:t1": "no_answer"}),
        ),
    )
    packed = msgpack.packb(state.to_dict())
    for event in (
        ev.InboundMessage("yes"),
        ev.TimerFired("c1:t1"),
        ev.StopBot(),
        ev.Takeover("u"),
        ev.Release("menu"),
        ev.StartBot("bot"),
    ):
        advance(lib, state, event, NOW)
        assert msgpack.packb(state.to_dict()) == packed


def test_now_in_templates_is_in_the_flow_timezone() -> None:
    flow = make_flow(
        {"hi": say("{{ now.hour }}:{{ now.minute }} {{ bot.id }} v{{ bot.version }}")},
        timezone="Europe/Istanbul",
    )
    out = advance(
        library(flow),
        ConversationState("c1"),
        ev.InboundMessage("x", greeting="bot"),
        datetime(2024, 5, 1, 12, 5, tzinfo=UTC),
    )
    assert texts(out.effects) == ["15:5 bot v1"]
