"""Steps that choose the next step, on the pure core: condition (predicates, expressions),
validation (rules, logic, saved results) and round_robin (a rotation kept outside)."""

from __future__ import annotations

import msgpack
import pytest
import regex

from bot.engine import effects as fx
from bot.engine import events as ev
from bot.engine import predicates
from bot.engine.interpreter import advance
from bot.engine.predicates import as_number
from bot.engine.state import ConversationState

from .helpers import NOW, Chat, library, make_flow, say, texts, trace_events

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

