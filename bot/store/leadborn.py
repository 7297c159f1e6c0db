"""A new lead's first events kept without a queue of its own when nothing acts on them (issue 14, aim 3).

Every lead the embedded CRM creates has events (``lead.created``, and ``contact.created`` for a
new contact) that go onto the lead's queue (``sb:c:{lead:<id>}:meta``, ``bot/runtime/leads.py``)
to meet the rules. With no active automation document and no flow listening to them, handling
them only writes them to the lead's history: a queue key of about 200 B, plus Redis' ~85 B per
key, for every lead a live chat creates. So when the lead loop knows that nothing listens
(``LeadService.commands``: the rule engine found no active document under the generation token
``expected``, no flow listens to the events' types), the CRM's write records them *born*: a field
of a bucket hash (``bot/store/buckets.py``), ``sb:lead_born:b:<lead id // 128>`` field ``<lead
id>``, about 45 B in its compact encoding (``encode``), and no queue. The decision is the
script's (``BORN``, in the CRM's own MULTI/EXEC or its create script, one Redis only): when the
generation token is no longer ``expected`` (a document was stored or activated since), the
events go onto the queue as before (``RPUSH`` and the recovery entry), so a rule never misses
an event. On a Redis Cluster (the token, the bucket and the queue are in different slots) the
events always go onto the queue.

The lead's history (``LeadService.history``) is the born entries (numbered 1 … k, ``at`` and
``happened_at`` the time of the write, source ``crm``) for the store's TTL after they were
written (the bucket expires that long after its last write), as the queue would have kept them.
When the lead's queue is made later (its next event), its first batch takes them into its
transcript first (numbered 1 … k there, its own events from k + 1, trimmed as any transcript)
and deletes the field once saved; born entries older than the TTL are dropped then, as the
queue would have expired meanwhile. Their ids are made of one
12-byte random seed (``gen-`` and the URL-safe base64 of the seed with its last byte xored by the
entry's place: 96 bits, as ``LeadService.event`` generates one).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import buckets, codec

#: The bucketed map lead id -> its born events.
BORN_KEY = "sb:lead_born"
#: ``BORN_SCRIPT`` (an ``EVAL`` in a MULTI/EXEC) and the create script's inline form
#: (``crm_bridge.redis_crm.CREATE``: a command whose first word is ``BORN_WORD``) share this body:
#: ``born(gen, bucket, inbox, pending, expected, lid, value, score, member, ttl, entries...)``;
#: the bucket expires ``ttl`` after its last write (each field lives at least as long as the
#: queue would have: ``merged``), so the fields of leads that never had another event go.
BORN_FUNCTION = """
local function born(w)
  local gen = redis.call('GET', w[1]) or ''
  if gen == w[5] then
    redis.call('HSET', w[2], w[6], w[7])
    redis.call('EXPIRE', w[2], w[10])
    return 1
  end
  for i = 11, #w do redis.call('RPUSH', w[3], w[i]) end
  redis.call('ZADD', w[4], w[8], w[9])
  return 0
end
"""
BORN_SCRIPT = BORN_FUNCTION + """
local w = {}
for i = 1, 4 do w[i] = KEYS[i] end
for i = 1, #ARGV do w[i + 4] = ARGV[i] end
return born(w)
"""
#: The create script's inline form's first word (no Redis command has it).
BORN_WORD = "SB_BORN"
#: Entry codes of the compact form: ``lead.created`` with its position, ``contact.created`` of the
#: lead's contact (the common pair of a live chat's new lead); any other event is written out.
_LEAD_CREATED, _CONTACT_CREATED = 1, 2


def key(lead_id: str) -> str:
    """The bucket hash holding ``lead_id``'s born events."""
    return buckets.bucket(BORN_KEY, lead_id)


@dataclass(frozen=True, slots=True)
class Born:
    """A lead's born events as written: when, the ids' seed, the lead's contact, and each event's
    ``(type, data, contact id, depth)``."""

    at: float
    seed: bytes
    contact: str | None
    events: tuple[tuple[str, Mapping[str, Any], str | None, int], ...]

    def event_id(self, n: int) -> str:
        """The id of the ``n``-th event (0-based)."""
        return event_id(self.seed, n)

    def rows(self) -> list[dict[str, Any]]:
        """The history entries, as ``LeadService`` writes an event's (``_history_entry``)."""
        return [{"role": "event", "at": self.at, "id": self.event_id(n), "type": type_, "happened_at": self.at,
                 "source": "crm", "depth": depth, "data": dict(data)}
                for n, (type_, data, _, depth) in enumerate(self.events)]


def event_id(seed: bytes, n: int) -> str:
    """``gen-`` and 16 URL-safe characters, as ``secrets.token_urlsafe(12)``."""
    raw = seed[:-1] + bytes([seed[-1] ^ n])
    return "gen-" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def encode(born: Born) -> bytes:
    """The compact form: msgpack ``[at, seed, contact, entries]``, an entry ``[1, pipeline,
    stage]`` (``lead.created``), ``[2]`` (``contact.created`` of ``contact``), or ``[type, data,
    contact, depth]``; the common pair of these two: ``[at, seed, contact, pipeline, stage]``."""
    entries: list[Any] = []
    for type_, data, contact, depth in born.events:
        if (type_ == "lead.created" and depth == 0 and contact == born.contact
                and list(data) == ["pipeline", "stage"]):
            entries.append([_LEAD_CREATED, data["pipeline"], data["stage"]])
        elif (type_ == "contact.created" and depth == 0 and contact == born.contact
              and dict(data) == {"contact": contact}):
            entries.append([_CONTACT_CREATED])
        else:
            entries.append([type_, dict(data), contact, depth])
    if len(entries) == 2 and entries[0][0] == _LEAD_CREATED and entries[1] == [_CONTACT_CREATED]:
        return codec.pack([born.at, born.seed, born.contact, *entries[0][1:]])  # the pair: 5 items
    return codec.pack([born.at, born.seed, born.contact, entries])


def decode(raw: bytes) -> Born:
    found = codec.unpack(raw)
    at, seed, contact = found[:3]
    entries = found[3] if len(found) == 4 else [[_LEAD_CREATED, *found[3:]], [_CONTACT_CREATED]]
    events: list[tuple[str, Mapping[str, Any], str | None, int]] = []
    for entry in entries:
        if entry[0] == _LEAD_CREATED:
            events.append(("lead.created", {"pipeline": entry[1], "stage": entry[2]}, contact, 0))
        elif entry[0] == _CONTACT_CREATED:
            events.append(("contact.created", {"contact": contact}, contact, 0))
        else:
            events.append((str(entry[0]), dict(entry[1]), entry[2], int(entry[3])))
    return Born(float(at), bytes(seed), contact, tuple(events))


def command(gen_key: str, expected: bytes, lead_id: str, value: bytes, inbox: str, pending: str,
            score: float, member: str, ttl: int, entries: Sequence[bytes]) -> tuple[Any, ...]:
    """The ``EVAL`` that records the born events, or queues ``entries`` when the generation
    token is no longer ``expected`` (see the module docstring)."""
    return ("EVAL", BORN_SCRIPT, 4, gen_key, key(lead_id), inbox, pending, expected, lead_id, value, score, member,
            ttl, *entries)


def dense(lead_id: str) -> bool:
    """Whether the lead's field is in a bucket of 128 consecutive ids (``buckets.bucket``), which
    stops being written, so its TTL ends: a text bucket may be written forever (no born there)."""
    return key(lead_id).startswith(f"{BORN_KEY}:b:")


def inline(command_: Sequence[Any]) -> tuple[Any, ...] | None:
    """``command``'s words for the create script (None: another command)."""
    if len(command_) < 2 or command_[0] != "EVAL" or command_[1] != BORN_SCRIPT:
        return None
    return (BORN_WORD, *command_[3:])


def alive(born: Born, now: float, ttl: float) -> bool:
    """Whether the born entries are still in the history: the queue would have kept them ``ttl``."""
    return born.at + ttl > now


def merged(born: Born | None, rows: Sequence[tuple[int, bytes]], *, now: float, ttl: float, cap: int,
           limit: int) -> list[dict[str, Any]]:
    """The lead's history: its queue's transcript (``rows``), which took the born entries in
    with its first batch (``LeadService._handle``: numbered 1 … k there, as the queue would
    have), else the born entries themselves (numbered 1 … k) within ``ttl`` of their writing,
    the newest ``cap`` (``transcript_max``); the newest ``limit``, oldest first."""
    if rows:  # (a born field still there after its fold, a crash between the save and its HDEL: not shown)
        out = [{"seq": seq, **codec.unpack(raw)} for seq, raw in rows]
    elif born is not None and alive(born, now, ttl):
        out = [{"seq": n + 1, **row} for n, row in enumerate(born.rows())][-cap:] if cap > 0 else []
    else:
        out = []
    return out[-limit:] if limit > 0 else []
