"""The shell loop: ``Driver.turn`` answers requests and feeds the results back in the same turn."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.runtime import effects as fx
from bot.runtime import events as ev
from bot.runtime.driver import MAX_REQUESTS_PER_TURN, Driver
from bot.runtime.state import ConversationState

from .helpers import NOW, library, make_flow, of_type, texts


class Recorder:
    """A ``RequestHandler`` that answers from a function and records what it was asked."""

    def __init__(self, value: Any = None, snapshot: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple[fx.Request, ConversationState, Mapping[str, Any]]] = []
        self.value = value
        self.snapshot = snapshot

    async def __call__(
        self, request: fx.Request, state: ConversationState, snapshot: Mapping[str, Any]
    ) -> ev.RequestResult:
        self.calls.append((request, state, snapshot))
        return ev.RequestResult(request.id, value=self.value, snapshot=self.snapshot)


FLOW = make_flow(
    {
        "act": {
            "type": "action",
            "actions": [{"do": "add_note", "text": "one"}, {"do": "change_stage", "stage": "Won"}],
            "next": "hook",
        },
        "hook": {
            "type": "action",
            "actions": [{"do": "send_webhook", "url": "https://hook.test"}],
            "next": "say",
        },
        "say": {"type": "message", "text": "{{ json.n }} {{ lead.stage }}"},
    }
)


async def test_a_turn_answers_every_request_and_leaves_them_out_of_the_effects() -> None:
    handler = Recorder(value={"n": 5}, snapshot={"lead": {"stage": "Won"}})
    result = await Driver(library(FLOW), handler).turn(
        ConversationState("c1"),
        ev.InboundMessage("x", greeting="bot"),
        NOW,
        {"lead": {"stage": "Incoming"}},
    )
    assert [r.payload["do"] for r, _, _ in handler.calls] == [
        "add_note",
        "change_stage",
        "send_webhook",
    ]
    assert of_type(result.effects, fx.Request) == []
    assert texts(result.effects) == ["5 Won"]
    assert result.state.run is not None and result.state.run.status == "finished"
    assert result.snapshot == {"lead": {"stage": "Won"}}
    # The handler sees the state suspended on its request, and the snapshot of the turn so far.
    request, state, snapshot = handler.calls[0]
    assert (
        state.run is not None
        and state.run.wait is not None
        and state.run.wait.request == request.id
    )
    assert snapshot == {"lead": {"stage": "Incoming"}}
    assert handler.calls[1][2] == {"lead": {"stage": "Won"}}


async def test_a_turn_without_requests_is_one_advance() -> None:
    handler = Recorder()
    flow = make_flow({"hi": {"type": "message", "text": "hi"}})
    result = await Driver(library(flow), handler).turn(
        ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW, {}
    )
    assert handler.calls == [] and texts(result.effects) == ["hi"]
    assert result.snapshot == {}


async def test_a_turn_is_cut_after_too_many_requests() -> None:
    flow = make_flow(
        {
            "act": {
                "type": "action",
                "actions": [
                    {"do": "add_note", "text": str(i)} for i in range(MAX_REQUESTS_PER_TURN + 2)
                ],
            }
        }
    )
    handler = Recorder()
    result = await Driver(library(flow), handler).turn(
        ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW, {}
    )
    assert len(handler.calls) == MAX_REQUESTS_PER_TURN
    error = f"more than {MAX_REQUESTS_PER_TURN} requests in one event"
    assert result.effects[-1] == fx.Trace("turn.too_many_requests", "error", {"error": error})
    assert not any(isinstance(e, fx.Request) for e in result.effects)
    run = result.state.run
    assert run is not None and (run.status, run.wait, run.error) == ("failed", None, error)
