"""Indexes of the embedded CRM, kept in Redis next to the records, so that listing, filtering
and searching never scan every record.

Every write of a contact or a lead (by a flow's command, the HTTP API or a form) passes the
record as it was and as it is to ``CrmIndexes.update``, which queues the differences on the
caller's pipeline. All index keys share the hash tag ``{crm}`` so that the multi-key commands
below stay in one slot of a Redis Cluster.

======================================  =========================================================
key                                     holds
======================================  =========================================================
``sb:{crm}:recent:<kind>:b:<n>``        zset id -> time of the last write (newest first listing): ids
                                        ``128 n`` to ``128 n + 127``, with ``:max`` and ``:n`` (``recent.py``)
``sb:{crm}:by:contact:status:<v>``      set of contact ids (also ``temperature``, ``tag``, ``responsible``);
                                        none for the default status ``potential`` (``status_filter``)
``sb:{crm}:by:lead:stage:<p>/<s>``      set of lead ids (also ``tag``, ``responsible``)
``sb:{crm}:by:contact:in:<p>/<s>``      set of the contacts with a lead there, and
``sb:{crm}:more:contact:in:<p>/<s>``    hash contact id -> how many more (two leads: 1)
``sb:{crm}:tags:<kind>``                zset tag -> how many records carry it
``sb:{crm}:search:<kind>``              lexicographic zset of ``term NUL id`` (prefix search)
``sb:crm:leads_of:b:<id // 128>``        hash contact id -> its lead ids, comma-separated
``sb:{crm}:indexed``                    the index layout's version (``upgrade``)
======================================  =========================================================

Each set of ids (``by:…``) is kept in buckets of 512 ids, ``<key>:b:<id // 512>``, each a small
*intset* (``idsets.py``: about 2-4 B an id where one big set cost about 70).

Filtering intersects the sets bucket by bucket and scores the ids found in their recency buckets
server-side (``recent.py``: the cost follows the matches). Search takes the
longest word of the query, reads the terms starting with it (``ZRANGEBYLEX``, at most
``SEARCH_CANDIDATES``) and checks the other words on the few records found. Terms are case- and
accent-folded words of names, the e-mail (whole, local part, domain) and the phone's digits
(international and national).

A contact's leads were a set of their own, ``sb:crm:leads_of:<contact id>`` (``old_leads_of_key``),
before issue 14's memory work, then a field of one big hash ``sb:crm:leads_of``, now a field of
a bucket of 128 contacts (``joined.py``: about 10 B where the big hash's field cost 83).
``leads_of`` moves an old set into the bucket on first touch; the big hash is moved at start
(``redis_crm.move_old_layout``); a lead leaving a contact is removed from the set too.

Contacts gained the ``responsible`` set in issue 15 (the customers view filters by it). Contacts
written before that are not in it: ``upgrade`` adds them once, in the background after a
process's start, one process at a time (``upgrading.py``), walking the contacts' recency buckets
(``recency.pages``), and records ``LAYOUT`` in ``sb:{crm}:indexed`` so that no later start walks again.
It is idempotent: two processes upgrading at once add the same members.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from bot.store import recency

from . import idsets, joined, records
from .card import CARD_DEFAULTS, STATUSES
from .codec import unpack_record

T = "sb:{crm}"
SEARCH_CANDIDATES = 500
#: The index layout this code writes (``upgrade`` brings older data to it).
LAYOUT = 2
LAYOUT_KEY = f"{T}:indexed"
UPGRADE_BATCH = 500


def recent_key(kind: str) -> str:
    return f"{T}:recent:{kind}"


def by_key(kind: str, field: str, value: Any) -> str:
    return f"{T}:by:{kind}:{field}:{value}"


#: The status of every contact until one is set (``card.py``). It has no set of its own (about 58 B
#: a contact, issue 14): a contact has it when it is in none of the other statuses' sets.
DEFAULT_STATUS = CARD_DEFAULTS["status"]
#: The set of the default status that versions before issue 14's fifth wave kept: dropped at start
#: (``redis_crm.move_old_layout``).
OLD_DEFAULT_STATUS_KEY = f"{T}:by:contact:status:{DEFAULT_STATUS}"


def status_filter(status: str) -> tuple[list[str], list[str]]:
    """The sets a contact with ``status`` is in, and those it is in none of (the default status)."""
    if status != DEFAULT_STATUS:
        return [by_key("contact", "status", status)], []
    return [], [by_key("contact", "status", s) for s in STATUSES if s != DEFAULT_STATUS]


def stamp_stage(old: dict[str, Any] | None, new: dict[str, Any], now: float) -> None:
    """Set ``stage_since`` on a lead record that is new or changed stage (the pipeline view's
    "in this stage since"); call before the record is written."""
    if old is None or (old.get("pipeline"), old.get("stage")) != (new.get("pipeline"), new.get("stage")):
        new["stage_since"] = now


def stage_value(pipeline: Any, stage: Any) -> str:
    return f"{pipeline}/{stage}"


def tags_key(kind: str) -> str:
    return f"{T}:tags:{kind}"


def search_key(kind: str) -> str:
    return f"{T}:search:{kind}"


#: Each contact's lead ids, comma-separated: a list of ``joined.py`` (fields of its buckets).
LEADS_OF = "sb:crm:leads_of"


def old_leads_of_key(contact_id: str) -> str:
    """The old layout's set of a contact's lead ids (see the module docstring)."""
    return f"sb:crm:leads_of:{contact_id}"


async def leads_of(redis: Redis, contact_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each contact's lead ids, in the order they were linked."""
    return await joined.read(redis, LEADS_OF, contact_ids, old_leads_of_key, ",")


def fold(text: str) -> str:
    """Lower case without accents (``Ayşe Yılmaz`` -> ``ayse yilmaz``)."""
    text = text.replace("ı", "i").replace("İ", "I").casefold()
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def phone_terms(phone: Any) -> set[str]:
    if not phone:
        return set()
    digits = _digits(str(phone))
    terms = {digits} if digits else set()
    if str(phone).strip().startswith("+"):  # also the national number: "5551112233" finds +90 555…
        import phonenumbers  # on first use: off the start path

        try:
            parsed = phonenumbers.parse(str(phone), None)
            terms.add(str(parsed.national_number))
            terms.add(f"{parsed.country_code}{parsed.national_number}")
        except phonenumbers.NumberParseException:
            pass
    return {t for t in terms if len(t) >= 3}


def default_lead_name(record: dict[str, Any]) -> bool:
    """Whether a lead carries the name it got for want of one (``Lead #<id>``)."""
    return record.get("name") == f"Lead #{record.get('id')}"


def search_terms(kind: str, record: dict[str, Any] | None, *, indexed: bool = True) -> set[str]:
    """The terms a record is found by. A lead's default name (``Lead #12``) is not indexed
    (``indexed``): its word ``lead`` would be a term of every unnamed lead, about 200 B a lead;
    such a lead is found by ``#12`` through its id (``id_words``) and still matches its name."""
    if not record:
        return set()
    terms: set[str] = set()
    if not (indexed and kind == "lead" and default_lead_name(record)):
        name = fold(str(record.get("name") or ""))
        terms.update(w for w in name.replace(",", " ").split() if w)
    if kind == "contact":
        email = fold(str(record.get("email") or "")).strip()
        if email:
            terms.add(email)
            local, _, domain = email.partition("@")
            terms.update(t for t in (local, domain) if t)
        terms |= phone_terms(record.get("phone"))
    return {t[:100] for t in terms}


def query_words(query: str) -> list[str]:
    """The words of a search query, as terms are folded; a phone number is one word of digits."""
    text = query.strip()
    if text and sum(c.isdigit() for c in text) >= 3 and all(c.isdigit() or c in "+-() ." for c in text):
        return [_digits(text)]
    return [w for w in fold(text).replace(",", " ").split() if w]


def id_words(words: list[str]) -> list[str]:
    """The record ids a query names as ``#12`` (how an unnamed lead is called)."""
    return [w[1:] for w in words if len(w) > 1 and w[0] == "#" and w[1:].isdigit()]


def matches(words: list[str], terms: set[str]) -> bool:
    return all(any(t.startswith(w) for t in terms) for w in words)


def _memberships(kind: str, record: dict[str, Any] | None) -> set[str]:
    """The set-index keys a record belongs to."""
    if not record:
        return set()
    keys = {by_key(kind, "tag", t) for t in record.get("tags") or []}
    if kind == "contact":
        if (record.get("status") or DEFAULT_STATUS) != DEFAULT_STATUS:  # the default's: no set (``status_filter``)
            keys.add(by_key(kind, "status", record["status"]))
        if record.get("temperature"):
            keys.add(by_key(kind, "temperature", record["temperature"]))
    else:
        keys.add(by_key(kind, "stage", stage_value(record.get("pipeline"), record.get("stage"))))
    if record.get("responsible") not in (None, ""):
        keys.add(by_key(kind, "responsible", record["responsible"]))
    return keys


def contact_stage_key(stage: str) -> str:
    """The set of the contacts with a lead in ``stage`` (``<pipeline>/<stage>``)."""
    return f"{T}:by:contact:in:{stage}"


def contact_stage_more_key(stage: str) -> str:
    """The hash contact id -> how many *more* of its leads are in ``stage`` (only those with two or more)."""
    return f"{T}:more:contact:in:{stage}"


def old_contact_stage_key(stage: str) -> str:
    """The sorted set contact id -> how many of its leads are in ``stage`` of versions before issue
    14's fifth wave (moved at start: ``move_contact_stages``)."""
    return by_key("contact", "stage", stage)


#: One more (ARGV[2] = '1') or one fewer ('-1') lead of contact ARGV[1] in a stage: the set
#: KEYS[1] (the contact's bucket, ``idsets.py``) holds the contacts with one or more, the hash
#: KEYS[2] how many more than one (a contact with one lead there, nearly every contact, costs a set
#: member: about 58 B, where a sorted set's member with its count cost 107; issue 14, aim 3);
#: KEYS[3] lists the set's non-empty buckets (``idsets.index``), ARGV[3] the bucket's number ('' for ``:x``).
STAGE_COUNT = """
if ARGV[2] == '1' then
  if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then redis.call('HINCRBY', KEYS[2], ARGV[1], 1) end
  if ARGV[3] ~= '' then redis.call('SADD', KEYS[3], ARGV[3]) end
  return 1
end
local more = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if more > 1 then redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
elseif more == 1 then redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('SREM', KEYS[1], ARGV[1])
  if ARGV[3] ~= '' and redis.call('SCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[3]) end
end
return 1
"""


def stage_count(contact: str, stage: str, by: int) -> tuple[Any, ...]:
    """The ``EVAL`` arguments of one more (``by`` 1) or one fewer (-1) lead of ``contact`` in ``stage``."""
    key, n = contact_stage_key(stage), idsets.number(contact)
    return (STAGE_COUNT, 3, idsets.bucket(key, contact), contact_stage_more_key(stage), idsets.index(key), contact,
            str(by), "" if n is None else n)


#: Move the members ARGV (each with its count and its bucket's number, '' for ``:x``: member,
#: count, number, …) of the old sorted set KEYS[1] into the set of the contacts in the stage
#: (KEYS[4..]: each member's bucket, ``idsets.py``; KEYS[3] its index) and the hash of the counts
#: above one KEYS[2]; returns the members moved.
MOVE_STAGE_PAGE = """
for i = 1, #ARGV, 3 do
  local n = tonumber(ARGV[i + 1])
  -- a contact the set has already (a lead this version counted): all n are more than that one
  local more = n >= 1 and n - redis.call('SADD', KEYS[3 + (i + 2) / 3], ARGV[i]) or 0
  if n >= 1 and ARGV[i + 2] ~= '' then redis.call('SADD', KEYS[3], ARGV[i + 2]) end
  if more > 0 then redis.call('HINCRBY', KEYS[2], ARGV[i], more) end
  redis.call('ZREM', KEYS[1], ARGV[i])
end
return #ARGV / 3
"""


#: Set once the contacts' stage counts of older versions are moved (its value: how many members).
CONTACT_STAGES_DONE = f"{T}:layout:contact_stages"


async def move_contact_stages(redis: Redis) -> int:
    """At the first start of this version: the contacts' stage counts of older versions
    (``old_contact_stage_key``) moved into the sets and hashes (a ``SCAN`` of the keys, then a
    read and one script per 500 members, all keys in the ``{crm}`` slot, also on a Redis Cluster);
    the number of members moved. ``CONTACT_STAGES_DONE`` then records it: later starts read one key."""
    if await redis.exists(CONTACT_STAGES_DONE):
        return 0
    moved = 0
    prefix = old_contact_stage_key("")
    async for raw in redis.scan_iter(match=prefix + "*", count=1000):  # (no glob character in it)
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        stage = key[len(prefix):]
        while page := cast("list[tuple[bytes, float]]", await redis.zrange(key, 0, UPGRADE_BATCH - 1, withscores=True)):
            members = [m.decode() for m, _ in page]
            buckets = [idsets.bucket(contact_stage_key(stage), m) for m in members]
            numbers = ["" if b is None else b for b in map(idsets.number, members)]
            args = [v for m, (_, n), b in zip(members, page, numbers, strict=True) for v in (m, int(n), b)]
            moved += int(await redis.eval(MOVE_STAGE_PAGE, 3 + len(buckets), key, contact_stage_more_key(stage),
                                          idsets.index(contact_stage_key(stage)), *buckets, *args))
    await redis.set(CONTACT_STAGES_DONE, moved)
    return moved


def _contact_stages(lead: dict[str, Any] | None) -> set[tuple[str, str]]:
    if not lead:
        return set()
    stage = stage_value(lead.get("pipeline"), lead.get("stage"))
    return {(str(c), stage) for c in lead.get("contacts") or []}


class CrmIndexes:
    """Queues index changes for one record write on a pipeline (no round trip of its own)."""

    @staticmethod
    def update(pipe: Pipeline, kind: str, rid: str, old: dict[str, Any] | None, new: dict[str, Any] | None,
               now: float) -> None:
        old_keys, new_keys = _memberships(kind, old), _memberships(kind, new)
        for key in old_keys - new_keys:
            idsets.remove(pipe, key, rid)
        for key in new_keys - old_keys:
            idsets.add(pipe, key, rid)
        old_tags = set((old or {}).get("tags") or [])
        new_tags = set((new or {}).get("tags") or [])
        for tag in old_tags - new_tags:
            pipe.zincrby(tags_key(kind), -1, tag)
        for tag in new_tags - old_tags:
            pipe.zincrby(tags_key(kind), 1, tag)
        if old_tags - new_tags:
            pipe.zremrangebyscore(tags_key(kind), "-inf", 0)
        old_terms, new_terms = search_terms(kind, old), search_terms(kind, new)
        if kind == "lead" and old and default_lead_name(old):  # as an older version indexed it, if it did
            old_terms |= search_terms(kind, old, indexed=False) - new_terms
        if old_terms - new_terms:
            pipe.zrem(search_key(kind), *[f"{t}\x00{rid}" for t in old_terms - new_terms])
        if new_terms - old_terms:
            pipe.zadd(search_key(kind), {f"{t}\x00{rid}": 0 for t in new_terms - old_terms})
        if kind == "lead":
            old_pairs, new_pairs = _contact_stages(old), _contact_stages(new)
            for contact, stage in old_pairs - new_pairs:
                pipe.eval(*stage_count(contact, stage, -1))
            for contact, stage in new_pairs - old_pairs:
                pipe.eval(*stage_count(contact, stage, 1))
            old_contacts = {str(c) for c in (old or {}).get("contacts") or []}
            new_contacts = {str(c) for c in (new or {}).get("contacts") or []}
            for contact in old_contacts - new_contacts:
                pipe.eval(*joined.edit(LEADS_OF, contact, rid, add=False, sep=","))
                pipe.srem(old_leads_of_key(contact), rid)  # an older version's set, if any
            for contact in new_contacts - old_contacts:
                pipe.eval(*joined.edit(LEADS_OF, contact, rid, add=True, sep=","))
        if new is None:
            recency.remove(pipe, recent_key(kind), rid)
        elif old != new:
            recency.add(pipe, recent_key(kind), rid, now)


async def upgrade(redis: Redis) -> int:
    """Bring indexes written by an older version to ``LAYOUT``; the number of contacts added to
    a ``responsible`` set (0 when the layout is current: one ``GET``)."""
    if int(await redis.get(LAYOUT_KEY) or 0) >= LAYOUT:
        return 0
    added = 0
    async for rows in recency.pages(redis, recent_key("contact")):
        ids = [rid for rid, _ in rows]
        raws = await records.get_many(redis, "contact", ids)
        pipe = redis.pipeline(transaction=False)
        for rid, raw in zip(ids, raws, strict=True):
            responsible = unpack_record(raw, rid).get("responsible") if raw else None
            if responsible not in (None, ""):
                idsets.add(pipe, by_key("contact", "responsible", responsible), rid)
                added += 1
        await pipe.execute()
    await redis.set(LAYOUT_KEY, LAYOUT)
    return added
