"""Which of a contact's leads is open, and the constants of ``CrmDirectory.open_lead``'s claim
(one new lead for callers at once)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bot.store import buckets

from . import joined, records
from .codec import unpack_record
from .indexes import LEADS_OF

#: Stages whose leads are closed: an order or an event goes to a newer, open lead.
CLOSED_STAGES = frozenset({"won", "lost", "closed - won", "closed - lost"})
#: Milliseconds a contact's lead claim (``open_lead``) lives. On one Redis the claim's SET itself
#: aborts the transactions of the callers that WATCH it, so any life would do; on a Redis Cluster
#: (SET NX, no WATCH) it must outlive any caller's read of the contact's leads before its SET NX and
#: the claimer's write of the lead after it.
LEAD_CLAIM_MS = 60_000
#: Milliseconds after which a cluster claim whose lead still does not exist is taken for a claimer
#: that failed or died between its SET NX and its write: a loser drops it and claims anew.
LEAD_CLAIM_STALE_MS = 5_000
#: Tries of ``open_lead`` when other callers made the contact's lead meanwhile (one retry reads it).
LEAD_CLAIM_TRIES = 8


def is_open(lead: Mapping[str, Any]) -> bool:
    return str(lead.get("stage", "")).casefold() not in CLOSED_STAGES


def newest_open(leads: Iterable[Mapping[str, Any]]) -> str | None:
    open_ids = [str(lead["id"]) for lead in leads if is_open(lead)]
    return max(open_ids, key=int) if open_ids else None


async def newest_open_watched(pipe: Any, cid: str) -> str | None:
    """``newest_open`` of the contact's leads read on a pipeline after its WATCH (which runs
    commands at once, on the pipeline's own connection: its caller needs no second one)."""
    lead_ids = joined.members((await buckets.fields(pipe, LEADS_OF, [cid]))[0], ",")
    raws = await records.get_many(pipe, "lead", lead_ids, watched=True)
    return newest_open(unpack_record(raw, lid) for lid, raw in zip(lead_ids, raws, strict=True) if raw)
