"""The thin shell around the pure interpreter: answers its requests, collects its effects.

``Driver.turn`` runs one event to completion: it calls ``advance``; while the run is suspended
on a ``Request``, it asks the injected ``RequestHandler`` and feeds the ``RequestResult`` back.
The chat simulator, ``salesbot test`` and the server all use this one loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from . import effects as fx
from . import events as ev
from .flows import FlowSource
from .interpreter import advance
from .state import ConversationState

#: Requests one event may make before the turn is cut (a flow's step budget also applies).
MAX_REQUESTS_PER_TURN = 500


class RequestHandler(Protocol):
    async def __call__(self, request: fx.Request, state: ConversationState,
                       snapshot: Mapping[str, Any]) -> ev.RequestResult: ...


@dataclass(slots=True)
class TurnResult:
    state: ConversationState
    effects: list[fx.Effect]  # requests already answered are left out
    snapshot: Mapping[str, Any]


class Driver:
    def __init__(self, flows: FlowSource, requests: RequestHandler) -> None:
        self.flows = flows
        self.requests = requests

    async def turn(self, state: ConversationState, event: ev.Event, now: datetime,
                   snapshot: Mapping[str, Any]) -> TurnResult:
        outcome = advance(self.flows, state, event, now, snapshot)
        effects = list(outcome.effects)
        for _ in range(MAX_REQUESTS_PER_TURN):
            request = outcome.request
            if request is None:
                break
            effects.pop()
            result = await self.requests(request, outcome.state, snapshot)
            if result.snapshot is not None:
                snapshot = result.snapshot
            outcome = advance(self.flows, outcome.state, result, now, snapshot)
            effects.extend(outcome.effects)
        else:
            # A flow that keeps asking (a runaway loop through actions): stop the run rather
            # than leave it waiting on a request nobody will answer.
            effects.pop()
            state = outcome.state.clone()
            if state.run is not None:
                state.run.status, state.run.wait = "failed", None
                state.run.error = f"more than {MAX_REQUESTS_PER_TURN} requests in one event"
            effects.append(fx.Trace("turn.too_many_requests", "error",
                                    {"error": f"more than {MAX_REQUESTS_PER_TURN} requests in one event"}))
            return TurnResult(state, effects, snapshot)
        return TurnResult(outcome.state, effects, snapshot)
