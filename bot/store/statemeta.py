"""The metadata fields a conversation's state already holds (issue 14 aim 3: bytes).

The dashboard, the API and the indexes read ``owner``, ``chat_status``, ``bot``, ``status``,
``last_text`` … from the metadata. While the state is in the metadata hash
(``statefields.py``) they are not stored beside it (about 130 B per conversation): a reader of the
hash has the state, and ``statefields.split`` fills them in from it (they win over stored copies,
which only an older version or a state once kept in its own key left). A state in its own key
(longer than ``statefields.INLINE_MAX``) has them stored, as before. The turn computes them with
``fields`` too, so what is stored and what is derived are the same values.

Only for a conversation whose id holds its channel (``keys.id_fields``): a lead's queue keeps
another kind of state (bot/runtime/leads.py). Not the CRM ids (``contact_id``, ``lead_id``,
``company_id``): the metadata's are the conversation's pointer to its records, which others move
(bot/runtime/outbound.py, a CRM's webhook); the state's ``crm`` is the turn's copy of them.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..engine.state import ConversationState
from . import preview
from .keys import holds_fields

#: ``last_text``: the customer's last message, as long as the metadata ever kept it.
TEXT_MAX = 200


def fields(state: ConversationState) -> dict[str, str]:
    """The metadata fields ``state`` holds, as the metadata has always written them."""
    run = state.run
    out = {
        "owner": state.owner, "owner_user": state.owner_user or "", "chat_status": state.chat_status,
        "bot": run.bot if run else "", "version": str(run.version) if run else "",
        "step": (run.step or "") if run else "", "run_status": run.status if run else "",
        "status": "human" if state.owner != "bot" else ("bot" if run is not None and run.active else "idle"),
    }
    last = state.last_message
    if isinstance(last, dict):
        text = last.get("text")
        if isinstance(text, str):
            out["last_text"] = text[:TEXT_MAX]
    return out


def unstored(cid: str, inline: bool, held: Mapping[str, str], stored: Mapping[str, str],
             writes: dict[str, str]) -> list[str]:
    """A save's metadata ``writes`` (the changed fields, against the metadata with ``held`` filled
    in) without the fields ``held`` while the state is in the hash (``inline``); returns
    the fields ``stored`` that are no longer kept, to delete: copies of those (an older
    version's, or a state's that was in its own key) and the list's preview an older version
    kept (bot/store/preview.py). With the state in its own key they are written as stored
    (compared with ``stored``: the state may have just left the hash)."""
    drop: list[str] = []
    if not stored.keys().isdisjoint(preview.DROPPED):
        drop += [name for name in preview.DROPPED if name in stored]
    if not inline or not holds_fields(cid):
        for name, value in held.items():
            if stored.get(name, "") != value:
                writes[name] = value
        return drop
    for name in writes.keys() & held.keys():  # (mostly one or two of them: not a pop of each held)
        del writes[name]
    if not stored.keys().isdisjoint(held):
        drop += [name for name in held if name in stored]
    return drop
