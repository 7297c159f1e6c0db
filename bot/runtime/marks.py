"""The system lines a batch adds to a transcript for the support dashboard: who handed back (and
what became of the customer's message that came meanwhile), where a run starts and ends, and
since when the customer has been waiting for an answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..engine import events as ev
from ..engine.process import PROCESS_CHANNEL
from ..engine.state import ConversationState, Run, held_message
from ..engine.transcript import system_entry
from ..store.conversations import SaveRequest

#: A run before a turn: (id, active, bot, version).
RunMark = tuple[str, bool, str, int] | None


def release_entry(event: ev.Release, state: ConversationState, now: float) -> dict[str, Any]:
    """"the bot is back" with who handed back, and whether the bot answers the held message
    (``state``: before the hand-back's turn). "no bot is running" when none goes on: the run has
    ended (finished, stopped) and no step takes it up again, so nobody answers the customer."""
    running = state.run is not None and state.run.active
    back = running or (event.step is not None and state.run is not None)
    text = "the bot is back" if back else "no bot is running"
    text += f", handed back by {event.user}" if event.user else ""
    held = held_message(state)
    data: dict[str, Any] = {"event": "release"}
    if event.user:
        data["user"] = event.user
    if held is not None:
        quoted = str(held.get("text") or held.get("payload") or "")[:80]
        if event.answer and event.step is None and running:
            text += f"; the bot answers the customer's message “{quoted}”"
        else:
            text += f"; the bot leaves the customer's message “{quoted}” unanswered"
    return system_entry(text, now, **data)


def run_mark(run: Run | None) -> RunMark:
    return None if run is None else (run.id, run.active, run.bot, run.version)


def run_boundaries(before: RunMark, state: ConversationState, req: SaveRequest, now: float) -> dict[str, Any] | None:
    """Marks where a run ends (returned, to be logged after the turn's messages) and where a new one
    starts after an earlier run (logged now, before its messages; a conversation's first run needs
    no mark, which keeps a plain conversation's transcript as small as before). A run replaced by
    another ends before the new one starts. A process's own conversation (no chat, nobody reads
    it) gets none."""
    run = state.run
    if run is None or state.channel == PROCESS_CHANNEL:
        return None
    new = before is None or before[0] != run.id
    if new and before is not None and before[1]:
        req.add_log(system_entry(f"run of {before[2]} v{before[3]} ended (replaced)", now, event="run_end",
                                 bot=before[2], version=before[3], status="replaced"))
    if new and before is not None:
        req.add_log(system_entry(f"run of {run.bot} v{run.version} started", now, event="run_start",
                                 bot=run.bot, version=run.version, step=run.step))
    if not run.active and (new or (before is not None and before[1])):
        why = f": {run.error}" if run.error else ""
        return system_entry(f"run of {run.bot} v{run.version} ended ({run.status}){why}", now, event="run_end",
                            bot=run.bot, version=run.version, status=run.status)
    return None


def waiting_since(state: ConversationState, meta: Mapping[str, str], new_meta: Mapping[str, str],
                  first_unanswered: float | None) -> str:
    """The time of the customer's oldest unanswered message ("" when answered): the list shows
    how long they have been waiting. Conversations from before the field: their last message."""
    if state.chat_status != "unanswered":
        return ""
    if first_unanswered is not None:
        return f"{first_unanswered:.3f}"
    return meta.get("waiting_since") or new_meta.get("last_at") or meta.get("last_at") or ""
