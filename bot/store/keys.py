"""Redis key names. Every key of one conversation shares the hash tag ``{<conversation id>}``
so multi-key scripts stay in one Redis Cluster slot; cross-conversation keys (timer shards,
recovery shards, outbound queues, indexes) are written in the same pipeline, never in a script.
"""

from __future__ import annotations

import functools
import hashlib
import re
import zlib
from dataclasses import dataclass
from urllib.parse import quote, unquote

PREFIX = "sb"


_PLAIN = re.compile(r"[A-Za-z0-9@._\-+=~]*")
#: Conversations whose ids are remembered: every message names its conversation two or three
#: times (the channel, the push, the metadata read back), each time with three regex matches.
_IDS_CACHED = 4096


@functools.lru_cache(maxsize=_IDS_CACHED, typed=True)
def conversation_id(channel: str, account: str, external_id: str) -> str:
    """A stable, readable id: ``livechat:demo:3f2a…``; braces are escaped (they delimit hash tags)."""
    return ":".join(part if _PLAIN.fullmatch(part) else quote(part, safe="@._-+=")
                    for part in (channel, account, str(external_id)))


#: The metadata fields a conversation id already holds (``conversation_id``'s parts, in order).
ID_FIELDS = ("channel", "account", "external_id")


def id_fields(cid: str) -> dict[str, str]:
    """``ID_FIELDS`` as ``conversation_id`` made ``cid`` of them ({} for another kind of id, such
    as a lead's queue ``lead:<id>``): not stored in the metadata hash, filled in when it is read."""
    fields = _id_fields(cid)
    return dict(fields) if fields is not None else {}  # a copy: callers add to it


def holds_fields(cid: str) -> bool:
    """Whether ``cid`` holds ``ID_FIELDS`` (``id_fields`` is not empty), without copying them."""
    return _id_fields(cid) is not None


#: An id of three plain parts: ``conversation_id`` made it of them as they are (nothing quoted).
_PLAIN_ID = re.compile(r"[A-Za-z0-9@._\-+=~]*:[A-Za-z0-9@._\-+=~]*:[A-Za-z0-9@._\-+=~]*")


@functools.lru_cache(maxsize=_IDS_CACHED)
def _id_fields(cid: str) -> dict[str, str] | None:
    # A worker meets most conversations' ids once (a timer's fire): one match for the common id
    # of plain parts, rather than three unquotes and ``conversation_id``'s three (issue 14 aim 5).
    parts = cid.split(":")
    if len(parts) != len(ID_FIELDS):
        return None
    if _PLAIN_ID.fullmatch(cid):
        return dict(zip(ID_FIELDS, parts, strict=True))
    values = [unquote(p) for p in parts]
    return dict(zip(ID_FIELDS, values, strict=True)) if conversation_id(*values) == cid else None


def dedupe_member(dedupe_id: str) -> bytes:
    """A dedupe id as its member of a conversation's dedupe set: the first 8 bytes of its SHA-1
    (the push script computes the same of an old set's ids with ``redis.sha1hex``). 64 bits: two
    ids of one conversation's 7-day window collide with odds of about n²/2^65 (n ids: 1e-11 for
    ten thousand); 8 bytes where a live chat id ``lc:<32 hex>`` took 35."""
    return hashlib.sha1(dedupe_id.encode(), usedforsecurity=False).digest()[:8]


#: The member that said the dedupe set ``d`` of issue 14's third wave held digests (scored ``+inf``):
#: dropped when the set is moved into the metadata (bot/store/dedupe.py).
SEEN_MARK = ""


def shard_of(cid: str, shards: int) -> int:
    return zlib.crc32(cid.encode()) % shards


@dataclass(frozen=True, slots=True)
class ConversationKey:
    cid: str

    def _k(self, name: str) -> str:
        """``<PREFIX>:c:{<cid>}:<name>``. The properties below spell theirs out instead: a call per
        key was ~1 k instructions, and a push and a save name 14 keys (issue 14 aim 5)."""
        return f"{PREFIX}:c:{{{self.cid}}}:{name}"

    @property
    def state(self) -> str:
        return f"{PREFIX}:c:{{{self.cid}}}:state"

    @property
    def inbox(self) -> str:
        return f"{PREFIX}:c:{{{self.cid}}}:inbox"

    @property
    def seen(self) -> str:
        """The dedupe ids beyond those the metadata keeps (bot/store/dedupe.py): ``dedupe_member`` of
        each, scored by when (ms); before issue 14's fifth wave all of them, and ``SEEN_MARK``."""
        return f"{PREFIX}:c:{{{self.cid}}}:d"

    @property
    def old_seen(self) -> str:
        """The oldest layout's dedupe set (the ids themselves): moved by the first push (dedupe.py)."""
        return f"{PREFIX}:c:{{{self.cid}}}:seen"

    @property
    def transcript(self) -> str:
        """The transcript list, once too long for ``meta`` (``bot/store/transcript.py``); its newest
        number is ``meta``'s ``n``."""
        return f"{PREFIX}:c:{{{self.cid}}}:t"

    @property
    def log(self) -> str:
        """The old layout's transcript stream (read once, then moved into ``transcript``)."""
        return f"{PREFIX}:c:{{{self.cid}}}:log"

    @property
    def counter(self) -> str:
        """The old layout's transcript counter (deleted when its stream is moved)."""
        return f"{PREFIX}:c:{{{self.cid}}}:n"

    @property
    def meta(self) -> str:
        return f"{PREFIX}:c:{{{self.cid}}}:meta"

    @property
    def out(self) -> str:
        return f"{PREFIX}:c:{{{self.cid}}}:out"


def push_keys(cid: str) -> list[str]:
    """The keys of a push, in its script's order: ``ConversationKey``'s ``inbox``, ``seen``,
    ``state``, ``meta`` and ``old_seen``, built from one prefix (a key object and a property per
    name cost ~1.4 µs of every message; issue 14 aims 1 and 5)."""
    base = f"{PREFIX}:c:{{{cid}}}:"
    return [base + "inbox", base + "d", base + "state", base + "meta", base + "seen"]


def save_keys(cid: str) -> list[str]:
    """The keys of a save, in its script's order: ``ConversationKey``'s ``state``, ``inbox``,
    ``transcript``, ``log``, ``meta``, ``out`` and ``counter`` (as ``push_keys``)."""
    base = f"{PREFIX}:c:{{{cid}}}:"
    return [base + "state", base + "inbox", base + "t", base + "log", base + "meta", base + "out", base + "n"]


def timer_shard_key(shard: int) -> str:
    """A shard's timers before they were split into buckets (issue 14): moved into the buckets at
    start (bot/store/layout.py), drained by the claim script meanwhile."""
    return f"{PREFIX}:timers:{{{shard}}}"


#: Buckets per timer shard: a shard's members are spread over this many sorted sets, so each stays
#: small enough for Redis' compact encoding (<= 128 members: ~45 B a member where a shard of
#: hundreds was a skiplist of ~130 B a member; still compact up to ~128 * 64 * shards members).
TIMER_BUCKETS = 64


def timer_bucket(cid: str, shards: int) -> tuple[int, int]:
    """``(shard, bucket)`` of a conversation's (or a lead queue's) timer members: the shard is
    ``shard_of``'s, the bucket from the hash's other bits."""
    h = zlib.crc32(cid.encode())
    return h % shards, (h // shards) % TIMER_BUCKETS


def timer_bucket_key(shard: int, bucket: int) -> str:
    """A bucket of a shard's timers (in the shard's hash tag: the claim script reads it)."""
    return f"{PREFIX}:timers:{{{shard}}}:w:{bucket}"


def timer_bucket_prefix(shard: int) -> str:
    """``timer_bucket_key`` without its number (the claim script appends a bucket's number)."""
    return f"{PREFIX}:timers:{{{shard}}}:w:"


def timer_tops_key(shard: int) -> str:
    """A shard's buckets (member: the bucket's number) scored by a lower bound of their earliest
    due time: written ``ZADD LT`` beside every timer write, made exact by the claim script."""
    return f"{PREFIX}:timers:{{{shard}}}:tops"


def timer_keys(cid: str, shards: int) -> tuple[str, str, int]:
    """``(bucket key, tops key, bucket)`` a timer member of ``cid`` is written to."""
    shard, bucket = timer_bucket(cid, shards)
    return f"{PREFIX}:timers:{{{shard}}}:w:{bucket}", f"{PREFIX}:timers:{{{shard}}}:tops", bucket


def timer_claimed_key(shard: int) -> str:
    return f"{PREFIX}:timers:{{{shard}}}:claimed"


#: Keys renamed for Redis Cluster (one slot per script): ``(old, new)`` pairs, merged into the
#: new names once at start (bot/store/layout.py).
def renamed_timer_keys(shards: int) -> list[tuple[str, str]]:
    return [(f"{PREFIX}:timers:{s}", timer_shard_key(s)) for s in range(shards)] + \
        [(f"{PREFIX}:timers:{s}:claimed", timer_claimed_key(s)) for s in range(shards)]


def timer_worker_claims_key(shard: int, worker: str) -> str:
    """One worker's claims of a shard: in the shard's slot (the claim script moves timers between them)."""
    return f"{timer_claimed_key(shard)}:{worker}"


def timer_workers_key() -> str:
    """The workers firing timers, scored by their last heartbeat (who is dead, whose claims to take)."""
    return f"{PREFIX}:workers:timers"


def pending_key(shard: int) -> str:
    return f"{PREFIX}:pending:{shard}"


#: Marks a recovery entry that wants the conversation looked at sooner than its pushes' entry
#: (bot/store/pending.py); conversation ids never start with it.
RETRY_MARK = "!"


def retry_member(cid: str) -> str:
    """The recovery set's second member of ``cid``: due sooner, forgotten on its own."""
    return RETRY_MARK + cid


def member_cid(member: str) -> str:
    """The conversation a recovery set member stands for."""
    return member.removeprefix(RETRY_MARK)


def pending_of(member: str, shards: int) -> str:
    """The recovery set that holds ``member`` (a conversation id or its ``retry_member``)."""
    return pending_key(shard_of(member_cid(member), shards))


def parked_key() -> str:
    """Conversations set aside after repeated processing failures (score: when)."""
    return f"{PREFIX}:parked"


#: How long a sent message's platform id is remembered, for the delivery statuses that name it.
PLATFORM_ID_TTL = 14 * 86400


def platform_id_key(account: str, platform_id: str) -> str:
    """``<conversation id>|<transcript ref>`` of a message we sent, by the platform's id for it."""
    return f"{PREFIX}:pmid:{{{account}}}:{platform_id}"


def outbox_queue_key(account: str) -> str:
    return f"{PREFIX}:outq:{{{account}}}"


def contact_processes_key(contact_id: str) -> str:
    """Hash process id -> epoch seconds of its last start for the contact (bot/runtime/processes.py)."""
    return f"{PREFIX}:processes:{{contact:{contact_id}}}"


#: Every listed conversation by last activity, before the index was partitioned by channel and
#: bot (bot/store/partitions.py): moved into the partitions at start (bot/store/layout.py).
FLAT_ACTIVITY_INDEX = f"{PREFIX}:idx:{{conv}}:activity"
#: Where ``FLAT_ACTIVITY_INDEX`` was before it joined the ``{conv}`` slot (bot/store/layout.py).
OLD_ACTIVITY_INDEX = f"{PREFIX}:idx:activity"


EVENTS_CHANNEL = f"{PREFIX}:events"
