"""How a conversation is shown by the API and the dashboard's live stream (one shape for both)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..engine.state import ConversationState, Run, held_message
from ..store import codec
from ..store.indexes import is_waiting, summary_fields


def summary(cid: str, meta: Mapping[str, str]) -> dict[str, Any]:
    """A conversation as the list shows it, from its metadata hash."""
    def num(key: str) -> float | None:
        try:
            return float(meta[key]) if meta.get(key) else None
        except ValueError:
            return None

    return {
        "id": cid, "channel": meta.get("channel"), "account": meta.get("account"),
        "contact": {"name": meta.get("name") or None, "external_id": meta.get("external_id"),
                    "contact_id": meta.get("contact_id") or None, "phone": meta.get("phone") or None,
                    "email": meta.get("email") or None},
        "lead_id": meta.get("lead_id") or None,
        "status": meta.get("status") or "idle", "owner": meta.get("owner") or "bot",
        "owner_user": meta.get("owner_user") or None,
        "bot": meta.get("bot") or None, "step": meta.get("step") or None,
        "run_status": meta.get("run_status") or None, "chat_status": meta.get("chat_status") or None,
        "last_message": meta.get("last_text"), "last_activity": num("activity"),
        "waiting_since": (num("waiting_since") or num("last_at")) if is_waiting(meta) else None,
        **summary_fields(meta),
        **failure_fields(meta),
    }


def failure_fields(meta: Mapping[str, str]) -> dict[str, Any]:
    """Processing failures: how many in a row, the last error, and whether it is parked (set
    aside until a person retries: ``POST /api/conversations/{cid}/retry``)."""
    try:
        failures = int(meta.get("failures") or 0)
    except ValueError:
        failures = 0
    parked = meta.get("parked")
    return {"failures": failures, "parked": bool(parked),
            "error": meta.get("error") or None if failures or parked else None}


def run_view(run: Run | None) -> dict[str, Any] | None:
    """The run: bot, version, step, status, variables, and what it waits for until when."""
    if run is None:
        return None
    wait = run.wait
    return {
        "bot": run.bot, "version": run.version, "step": run.step, "status": run.status,
        "variables": run.vars, "error": run.error,
        "waiting_for": None if wait is None else {
            "kind": wait.kind, "step": wait.step, "events": list(wait.on), "until": wait.until,
            "held": list(wait.held)},
        "callers": [{"bot": f.bot, "version": f.version, "next": f.next} for f in run.callers],
    }


def held_view(state: ConversationState | None) -> dict[str, Any] | None:
    """The customer's message that came while a person had the conversation, for the hand-back
    choice (the bot answers it, or not), or None."""
    held = held_message(state) if state is not None else None
    if held is None:
        return None
    return {"text": held.get("text") or "", "payload": held.get("payload"), "kind": held.get("kind") or "text"}


def state_of(state_blob: bytes | None) -> ConversationState | None:
    """The decoded state, or None when there is none or it cannot be read (a conversation whose
    state is damaged is still shown: it is parked with the error, see ``failure_fields``)."""
    if not state_blob:
        return None
    try:
        return codec.decode_state(state_blob)
    except Exception:
        return None


def run_of(state_blob: bytes | None) -> Run | None:
    state = state_of(state_blob)
    return state.run if state else None
