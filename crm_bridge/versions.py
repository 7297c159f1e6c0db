"""Record versions, so a process can keep a conversation's CRM snapshot and check it with one read.

Every change of a contact or lead record also increments a counter in ``sb:crm:versions`` (a
hash of ``BUCKETS`` fields: the record id's bucket -> its count), in the same MULTI/EXEC as the
record. A new record needs none: no process kept a snapshot of it (records are never deleted, and
a new identity's claim and records are written in one script); a company needs none: a snapshot
with a company is not kept. A process that built a snapshot keeps it with the counters of its records'
buckets as read *before* the records (``SnapshotCache``); the next turn sends one ``HMGET`` of
those counters with the push instead of the records' ``GET``\\ s, and uses the snapshot it kept
while they are unchanged. A write by any process (or the API) changes them: the records are read
again. A bucket shared with another record only costs a needless read, never a stale snapshot.

The check holds because a reader reads the counters before the records (one connection, in
order) and a writer changes both atomically: counters read before a write and records read after
it only look stale, so they are read again next time. On a Redis Cluster the records and the
counters are in different slots (no MULTI/EXEC spans them, a pipeline's order across nodes is not
kept): there snapshots are not kept and the records are read every time.
"""

from __future__ import annotations

import collections
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .interface import CrmRef

#: The hash of record version counters (field: the bucket of a record id).
VERSIONS = "sb:crm:versions"
#: Buckets: a bounded hash (about 85 KB at most, whatever the number of records); a change of one
#: record makes the kept snapshots of the other records of its bucket read again (1 in 1,024): a
#: CRM where flows change records R times a second has each kept snapshot read again (in a round
#: trip of its own) about 2R/1,024 times a second; its own conversation's changes cost no trip.
BUCKETS = 1024
#: Snapshots a process keeps (LRU): about 1-2 KB each.
CACHE_MAX = 10_000


def bucket(record_id: str) -> str:
    """The version field of a record (contact, lead and company ids are drawn from one counter)."""
    return str((int(record_id) if record_id.isdigit() else zlib.crc32(record_id.encode())) % BUCKETS)


class _Commands(Protocol):
    def execute_command(self, *args: Any, **options: Any) -> object: ...


def bump(pipe: _Commands, record_ids: Iterable[str]) -> None:
    """Queue the version increments for a write of these records (in the write's MULTI/EXEC)."""
    for field in sorted({bucket(rid) for rid in record_ids}):
        pipe.execute_command("HINCRBY", VERSIONS, field, 1)


def fields(ref: CrmRef) -> tuple[str, str]:
    """The version fields a snapshot of ``ref`` depends on (a lead with a company is not kept)."""
    return bucket(ref.contact_id), bucket(ref.lead_id)


def check(ref: CrmRef) -> tuple[Any, ...]:
    """The read of ``ref``'s record versions (send it before the records' reads)."""
    return ("HMGET", VERSIONS, *fields(ref))


Versions = tuple[bytes | None, ...]


class SnapshotCache:
    """Snapshots with the versions they were read at, per ``CrmRef`` (bounded, LRU).

    A kept snapshot is shared by the turns that use it: like every snapshot, read-only (templates
    run in an immutable sandbox; a custom request handler must not change it either)."""

    def __init__(self, limit: int = CACHE_MAX) -> None:
        self.limit = limit
        self._kept: collections.OrderedDict[CrmRef, tuple[Versions, Mapping[str, Any]]] = collections.OrderedDict()

    def __contains__(self, ref: CrmRef) -> bool:
        return ref in self._kept

    def get(self, ref: CrmRef, versions: Versions) -> Mapping[str, Any] | None:
        """The snapshot kept for ``ref`` if it was read at these versions (else None: read it)."""
        kept = self._kept.get(ref)
        if kept is None:
            return None
        if kept[0] != versions:
            del self._kept[ref]
            return None
        self._kept.move_to_end(ref)
        return kept[1]

    def put(self, ref: CrmRef, versions: Versions, snapshot: Mapping[str, Any]) -> None:
        """Keep ``snapshot``, read after ``versions`` were (not one with a company: its version
        is not checked)."""
        if snapshot.get("company"):
            self._kept.pop(ref, None)
            return
        self._kept[ref] = (versions, snapshot)
        self._kept.move_to_end(ref)
        if len(self._kept) > self.limit:
            self._kept.popitem(last=False)

    def drop(self, ref: CrmRef) -> None:
        """Forget ``ref``'s snapshot (this process wrote its records: read them with the next push
        rather than find the versions changed and read them in a round trip of their own)."""
        self._kept.pop(ref, None)
