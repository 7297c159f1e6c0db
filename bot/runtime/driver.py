"""The thin shell around the pure interpreter: answers its requests, collects its effects.

``Driver.turn`` runs one event to completion: it calls ``advance``; while the run is suspended
on a ``Request``, it asks the injected ``RequestHandler`` and feeds the ``RequestResult`` back.
The chat simulator, ``salesbot test`` and the server all use this one loop. All the template
renders of one ``advance`` share a CPU budget (``bot.builder.budget.TURN_CPU_SECONDS``).

A turn of a flow with *slow work* (regexes, phone or e-mail search on customer text, templates
with loops; see ``CompiledFlow.slow_work``) runs ``advance`` in a worker thread, so a message
crafted to make a regex backtrack for its whole time limit does not stall the other
conversations of the process: ``regex`` releases the GIL while it matches, and Python code
gives the loop its turn every few milliseconds. Other turns stay on the event loop, where
they cost no thread hand-off.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from ..builder.budget import within_turn_budget
from ..engine import events as ev
from ..engine.analytics import Switch
from ..engine.flows import FlowSource
from ..engine.state import ConversationState

if TYPE_CHECKING:
    from ..engine import effects as fx
    from ..engine.interpreter import Outcome

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
    #: The steps entered and the bot changes of every ``advance`` of the turn (``Outcome.steps``).
    steps: list[str | Switch]


class Driver:
    """``executor`` runs the turns of flows with slow work (None: the loop's default one)."""

    def __init__(self, flows: FlowSource, requests: RequestHandler, *,
                 executor: Executor | None = None) -> None:
        self.flows = flows
        self.requests = requests
        self.executor = executor

    async def turn(self, state: ConversationState, event: ev.Event, now: datetime,
                   snapshot: Mapping[str, Any]) -> TurnResult:
        slow = self.slow(state, event)
        outcome = await self._advance(slow, state, event, now, snapshot)
        effects = list(outcome.effects)
        steps = outcome.steps
        for _ in range(MAX_REQUESTS_PER_TURN):
            request = outcome.request
            if request is None:
                break
            effects.pop()
            result = await self.requests(request, outcome.state, snapshot)
            if result.snapshot is not None:
                snapshot = result.snapshot
            outcome = await self._advance(slow, outcome.state, result, now, snapshot)
            effects.extend(outcome.effects)
            steps += outcome.steps
        else:
            # A flow that keeps asking (a runaway loop through actions): stop the run rather
            # than leave it waiting on a request nobody will answer.
            effects.pop()
            state = outcome.state.clone()
            if state.run is not None:
                state.run.status, state.run.wait = "failed", None
                state.run.error = f"more than {MAX_REQUESTS_PER_TURN} requests in one event"
            from ..engine.effects import Trace  # a runaway flow: the interpreter loaded it already

            effects.append(Trace("turn.too_many_requests", "error",
                                 {"error": f"more than {MAX_REQUESTS_PER_TURN} requests in one event"}))
            return TurnResult(state, effects, snapshot, steps)
        return TurnResult(outcome.state, effects, snapshot, steps)

    async def _advance(self, slow: bool, state: ConversationState, event: ev.Event, now: datetime,
                       snapshot: Mapping[str, Any]) -> Outcome:
        advance = self._interpreter
        if not slow:
            return within_turn_budget(advance, self.flows, state, event, now, snapshot)
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(
            within_turn_budget, advance, self.flows, state, event, now, snapshot))

    @functools.cached_property
    def _interpreter(self) -> Callable[..., Outcome]:
        """``advance``, imported by the first turn: a server starts without the interpreter and
        its templates (issue 14: startup)."""
        from ..engine.interpreter import advance

        return advance

    def slow(self, state: ConversationState, event: ev.Event) -> bool:
        """Whether a flow this event may run (the current one, its callers, the one it starts,
        the ones they start) has slow work."""
        todo: list[tuple[str, int | None]] = []
        run = state.run
        if run is not None:
            todo.append((run.bot, run.version))
            if run.callers:  # (mostly none: no generator made for nothing, issue 14 aim 5)
                todo.extend((f.bot, f.version) for f in run.callers)
        if type(event) is not ev.TimerFired:  # a timer names no bot
            for name in (getattr(event, "greeting", None), getattr(event, "bot", None)):
                if name:
                    todo.append((name, None))
        seen: set[tuple[str, int | None]] = set()
        while todo:
            key = todo.pop()
            if key in seen:
                continue
            seen.add(key)
            flow = self.flows.get(*key)
            if flow is None:
                continue
            if flow.slow_work:
                return True
            todo.extend((callee, None) for callee in flow.called_bots)
        return False
