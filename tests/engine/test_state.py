"""Conversation state: msgpack round trips, clones, and ``plain`` (what the store may keep)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

import msgpack
import pytest
from jinja2 import ChainableUndefined

from bot.builder.missing import MISSING
from bot.engine.state import ConversationState, Frame, Run, Wait, plain


def round_trip(state: ConversationState) -> ConversationState:
    return ConversationState.from_dict(msgpack.unpackb(msgpack.packb(state.to_dict())))


def full_state() -> ConversationState:
    return ConversationState(
        id="telegram:acc:42",
        channel="telegram",
        account="acc",
        origin="referral",
        owner="human",
        owner_user="user:7",
        chat_status="answered",
        run=Run(
            id="r3",
            bot="main",
            version=4,
            step="ask",
            status="waiting",
            vars={
                "n": 1,
                "f": 1.5,
                "s": "ü",
                "l": [1, "a", None],
                "d": {"k": [True, False]},
                "neg": -(2**63),
            },
            json={"score": 9, "nested": {"list": [1, 2]}},
            last_validation_result="+905551112233",
            wait=Wait(
                "pause",
                "ask",
                {"c:t1": "pause:1", "c:t2": "pause:2"},
                ("message", "timer"),
                "tok",
                None,
                1714975200.0,
            ),
            action_index=2,
            callers=[
                Frame("outer", 1, "after", {"x": 1}, {"j": 1}, "lvr"),
                Frame("inner", 2, "next", {}),
            ],
            error=None,
            splits=(("main", "offer", "b", 2, "purchased"), ("sub", "test", "x", 0, "")),
            goals=("purchased",),
        ),
        last_message={
            "text": "hi",
            "payload": None,
            "kind": "text",
            "id": "m1",
            "attachments": [{"kind": "image", "url": "https://x.test/a.png", "name": None}],
            "start_param": "ref1",
        },
        seq=17,
        turn_steps=3,
    )


@pytest.mark.parametrize(
    "state",
    [
        ConversationState("c1"),
        full_state(),
        ConversationState(
            "c2", run=Run("r1", "bot", 1, None, "failed", error="step budget of 5 exhausted")
        ),
        ConversationState(
            "c3",
            run=Run(
                "r1",
                "bot",
                1,
                "w",
                "waiting",
                wait=Wait("widget", "w", {"t": "widget_timeout"}, token="tok"),
            ),
        ),
    ],
)
def test_state_round_trips_through_msgpack(state: ConversationState) -> None:
    back = round_trip(state)
    assert back == state
    assert back.to_dict() == state.to_dict()
    assert isinstance(back.run.wait.on if back.run and back.run.wait else (), tuple)


def test_from_dict_fills_defaults_for_older_documents() -> None:
    state = ConversationState.from_dict({"id": "c1", "run": {"id": "r1", "bot": "b", "version": 1}})
    assert state == ConversationState("c1", run=Run("r1", "b", 1, None))


def test_clone_is_deep_where_the_interpreter_writes_in_place() -> None:
    state = full_state()
    packed = msgpack.packb(state.to_dict())
    clone = state.clone()
    assert clone == state
    run = clone.run
    assert run is not None and run.wait is not None
    assert run.wait is state.run.wait  # shared: the interpreter copies a wait before it changes it
    run.vars["new"] = 1
    run.callers[0].vars["inner"] = {"returned": True}  # what returning from a call does
    run.callers.pop()
    clone.seq += 1
    assert msgpack.packb(state.to_dict()) == packed


def test_run_active() -> None:
    assert [
        Run("r", "b", 1, None, s).active
        for s in ("running", "waiting", "finished", "stopped", "failed")
    ] == [True, True, False, False, False]


def test_next_id_counts_up() -> None:
    state = ConversationState("c")
    assert [state.next_id("r"), state.next_id("t"), state.next_id("m")] == ["r1", "t2", "m3"]
    assert state.seq == 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (3, 3),
        (2.5, 2.5),
        ("x", "x"),
        (2**64 - 1, 2**64 - 1),
        (2**64, str(2**64)),
        (-(2**63), -(2**63)),
        (-(2**63) - 1, str(-(2**63) - 1)),
        ((1, 2), [1, 2]),
        ({3}, [3]),
        (frozenset(), []),
        (range(3), [0, 1, 2]),
        ({"a": (1,), 2: "b"}, {"a": [1], "2": "b"}),
        (datetime(2024, 5, 1, 15, 0, tzinfo=UTC), "2024-05-01T15:00:00+00:00"),
        (date(2024, 5, 1), "2024-05-01"),
        (time(9, 30), "09:30:00"),
        (ChainableUndefined(), ""),
        (MISSING, ""),
        ([MISSING, 1], ["", 1]),
        (object, "<class 'object'>"),
    ],
)
def test_plain(value: Any, expected: Any) -> None:
    out = plain(value)
    assert out == expected and type(out) is type(expected)
    assert msgpack.unpackb(msgpack.packb(out)) == out


def test_plain_copies_containers() -> None:
    inner = {"a": [1]}
    out = plain(inner)
    out["a"].append(2)
    assert inner == {"a": [1]}
