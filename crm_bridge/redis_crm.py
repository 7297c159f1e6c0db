"""The embedded CRM stored in Redis (the server's default backend).

Records are msgpack documents: contacts, leads, companies, each lead's tasks and notes. A
command loads the records it may touch into a ``MemoryCrm`` workspace, runs the very same
command code as ``salesbot test`` does, and writes back what changed, in two round trips (the
records read with the ids the command may use for new ones, then the write).
Commands of one conversation arrive one at a time (the conversation lock), so a lead is not
written concurrently by its own conversation.

Every write also emits its CRM events (``changes.py``): they are stored in the same MULTI/EXEC
as the records, on the lead queues of the ``sink`` the server wires in.

Every write also updates the indexes (``indexes.py``) the HTTP API lists and searches with, and
notes go to the note store (``notes.py``), which orders them by priority.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from bot.store import buckets, leadborn, recency
from bot.store.clusterclient import ClusterRespClient, is_cluster
from bot.store.resp import RespClient, RespPipeline, RespTransaction
from bot.store.scripts import Lua, send_commands

from . import idsets, joined, records
from .changes import Change, ChangeSink, contact_changes, contact_created, lead_changes, task_changes
from .codec import pack, pack_record, text, unpack, unpack_record
from .indexes import LEADS_OF, OLD_DEFAULT_STATUS_KEY, STAGE_COUNT, CrmIndexes, move_contact_stages, stamp_stage
from .interface import ChannelIdentity, CommandResult, CrmRef
from .memory import MemoryCrm
from .notes import NoteStore
from .recent import move_recent
from .versions import VERSIONS, SnapshotCache, Versions, bump, check

_P = "sb:crm"


def _identity_key(identity: ChannelIdentity) -> str:
    return f"{identity.channel}:{identity.account}:{identity.external_id}"


#: Each channel identity (``channel:account:external id``) -> its contact and lead
#: (``<contact id>:<lead id>``): a field of one of 1,024 bucket hashes chosen by the identity's
#: CRC-32 (``identity_hash``, ``bot/store/buckets.py``), named by the identity's digest
#: (``identity_field``): about 30 B an identity at 10,000 where the one big hash
#: ``sb:crm:identity`` of older versions (moved at start) cost 103 and the identity itself as the
#: field's name about 54 (issue 14, aim 3; ``move_identity_names`` renames such fields at start).
IDENTITY = f"{_P}:identity"
#: Set once the identity fields of older versions are renamed to their digests (its value: how many).
IDENTITY_DIGESTS_DONE = f"{_P}:layout:identity_digests"
#: A digest field's first byte (no identity starts with it: a channel's name is ASCII), then 11
#: bytes of the identity's SHA-1: 88 bits, two of 100 million identities collide with odds of
#: about 10^-11.
DIGEST_MARK = b"\xff"


def identity_hash(key: str) -> str:
    """The hash holding the identity ``key``'s field."""
    return buckets.bucket(IDENTITY, key)


def identity_field(key: str) -> bytes:
    """The identity ``key``'s field name in its hash (``IDENTITY``)."""
    return DIGEST_MARK + hashlib.sha1(key.encode(), usedforsecurity=False).digest()[:11]


#: Rename the fields of the identity bucket KEYS[1] that older versions named by the identity
#: itself to their digest (``identity_field``: the same bytes); a claim of this version wins.
#: Returns how many.
_RENAME = """
local all, moved = redis.call('HGETALL', KEYS[1]), 0
for i = 1, #all, 2 do
  local name = all[i]
  if string.byte(name, 1) ~= 255 then
    local hex = string.sub(redis.sha1hex(name), 1, 22)
    local digest = '\\255' .. string.gsub(hex, '..', function(h) return string.char(tonumber(h, 16)) end)
    redis.call('HSETNX', KEYS[1], digest, all[i + 1])
    redis.call('HDEL', KEYS[1], name)
    moved = moved + 1
  end
end
return moved
"""


#: Identity buckets renamed per round trip (``move_identity_names``).
RENAME_PAGE = 128


async def move_identity_names(redis: Redis) -> int:
    """At start, once (``IDENTITY_DIGESTS_DONE``): the identity fields older versions named by the
    identity renamed to their digests, one script per bucket (one key: one slot); interrupted,
    the next start goes on (a renamed field is left as it is). Returns the fields renamed."""
    if await redis.exists(IDENTITY_DIGESTS_DONE):
        return 0
    moved = 0
    for first in range(0, buckets.TEXT_BUCKETS, RENAME_PAGE):
        pipe = redis.pipeline(transaction=False)
        for n in range(first, min(first + RENAME_PAGE, buckets.TEXT_BUCKETS)):
            pipe.eval(_RENAME, 1, f"{IDENTITY}:t:{n}")
        moved += sum(int(n) for n in await pipe.execute())
    await redis.set(IDENTITY_DIGESTS_DONE, moved)
    return moved


def identities_key(contact_id: str) -> str:
    """The *old* layout's set of a contact's channel identities (before issue 14's memory work):
    moved into ``IDENTITIES`` on first touch (``joined.py``)."""
    return f"{_P}:identities_of:{contact_id}"


#: The channel identities (``channel:account:external id``) each contact is known by, the reverse
#: of ``sb:crm:identity``, so the bot can write first on a channel the contact used: a field of a
#: bucket hash (``bot/store/buckets.py``: ``sb:crm:identities:b:<id // 128>``), contact id -> its
#: identities joined by ``\\x1f`` (a separator no input string holds, see ``bot/inputs.py``).
#: About 45 B a contact, a sixth of what a set of its own did (issue 14).
IDENTITIES = f"{_P}:identities"
_SEP = "\x1f"


async def move_old_layout(redis: Redis) -> int:
    """At start: what an older version kept in another layout: the identities, the contacts'
    identities and leads (one big hash each) moved into their buckets (``buckets.move_unbucketed``), the contacts'
    stage counts (sorted sets) into sets (``indexes.move_contact_stages``), the sets of ids into
    their buckets (``idsets.move_unbucketed_sets``, first: the stage counts' move writes buckets), the contacts' and
    leads' records (a string key each) into their buckets (``records.move_old_records``), the
    recency sorted sets into theirs (``recent.move_recent``), and the
    set of the contacts of the default status (``indexes.status_filter``) dropped, and the id sets'
    non-empty buckets listed in their indexes (``idsets.index_sets``, last); the number of fields,
    members and records moved."""
    await redis.unlink(OLD_DEFAULT_STATUS_KEY)
    moved = await records.move_old_records(redis)
    moved += (await buckets.move_unbucketed(redis, IDENTITY, "")  # a claim this version made wins
              + await buckets.move_unbucketed(redis, IDENTITIES, _SEP)
              + await buckets.move_unbucketed(redis, LEADS_OF, ",")
              + await idsets.move_unbucketed_sets(redis) + await move_contact_stages(redis)
              + await move_recent(redis))
    moved += await move_identity_names(redis)  # after the big hash's move: its fields too
    await idsets.index_sets(redis)
    return moved
#: Record ids a process takes at once (``sb:crm:ids``) for the contacts and leads of new
#: identities: the ids are at hand when the records are built, so the claim and the records go
#: in one script. Ids a process took and did not use are gaps, as any id taken and not used.
ID_BLOCK = 16

#: Identify or create, on one Redis: return ``{0, claim}`` when the identity field ARGV[1] of
#: KEYS[1] is claimed; else claim it (ARGV[2]) and run the new records' writes that follow in ARGV
#: (each a word count, then its words; the last one reads the records' versions) and return
#: ``{1, that read's reply}``. Atomic: another process finds the claim with the records written.
#: The writes touch the CRM's keys in many slots: a Redis Cluster claims with HSETNX, then writes.
CREATE = leadborn.BORN_FUNCTION + f"""
local found = redis.call('HGET', KEYS[1], ARGV[1])
if found then return {{0, found}} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local i, last = 3, false
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  if ARGV[i + 1] == '{leadborn.BORN_WORD}' then  -- a new lead's events recorded born (leadborn.py)
    last = born({{unpack(ARGV, i + 2, i + n)}})
  else
    last = redis.call(unpack(ARGV, i + 1, i + n))
  end
  i = i + n + 1
end
return {{1, last}}
"""


def _plain(command: tuple[Any, ...], contact_id: str) -> list[tuple[Any, ...]]:
    """``command`` as a script may run it: a new record's recency (``recency.add``) its plain
    writes, a new contact's first lead (``joined.edit``, a script of
    its own) is its field set, and its lead's stage (``indexes.stage_count``) its membership of the
    stage's set (with its bucket listed, ``idsets.add``). The contact's id is new: its field is
    empty, it has no other lead."""
    if command[0] != "EVAL":
        return [command]
    born = leadborn.inline(command)  # a new lead's events recorded born: the script's own form
    if born is not None:
        return [born]
    added = recency.plain_new(command)  # a new record's time in its kind's recency index
    if added is not None:
        return added
    if command[1] == STAGE_COUNT and command[6] == contact_id and command[7] == "1":
        listed = [] if command[8] == "" else [("SADD", command[5], command[8])]
        return [("SADD", command[3], contact_id), *listed]
    _, source, _, key, owner, member, add, _ = command
    if source != joined.EDIT or owner != contact_id or add != "1":
        raise AssertionError(f"no plain form for {command[:1]} of {key}")
    return [("HSET", key, owner, member)]


class _ReadPipeline(Protocol):
    def execute_command(self, *args: Any, **options: Any) -> object: ...

    async def execute(self, raise_on_error: bool = True) -> list[Any]: ...


class RecordReader(Protocol):
    """What reads records for a conversation turn (and takes a command's new ids along): redis-py's
    ``pipeline()``, ``get()`` and ``execute_command()`` (raw bytes)."""

    def pipeline(self, transaction: bool = True) -> _ReadPipeline: ...

    def get(self, name: str) -> Awaitable[bytes | str | None]: ...

    def execute_command(self, *args: Any, **options: Any) -> Awaitable[Any]: ...


class RedisCrm:
    name = "embedded"

    def __init__(self, redis: Redis, *, pipelines: dict[str, list[str]] | None = None,
                 clock: Callable[[], float] = time.time, reader: RecordReader | None = None) -> None:
        self.redis = redis
        #: What reads records for a conversation turn: any client with redis-py's ``pipeline()``
        #: and ``get()`` returning raw bytes (the runtime passes its lean hot-path connection).
        self.reader: RecordReader = reader if reader is not None else redis
        self.pipelines = pipelines
        self.clock = clock
        self.notes = NoteStore(redis)
        #: Where the CRM events of every write go (the lead queues); None: nowhere.
        self.sink: ChangeSink | None = None
        #: Snapshots kept with their records' versions (``versions.py``); None on a Redis Cluster.
        self.kept: SnapshotCache | None = None if is_cluster(redis) else SnapshotCache()
        #: Ids taken for new identities' records and not used yet (``ID_BLOCK``).
        self._spare: list[str] = []
        self._create_script = Lua(redis, CREATE)

    def write_pipeline(self, changes: Sequence[Change]) -> Pipeline:
        """A pipeline for a write: a MULTI/EXEC carrying the changes' events when there is a sink.
        On a Redis Cluster a plain pipeline: the records, the indexes and each lead's queue are
        in different slots, which one MULTI/EXEC cannot span (docs/deployment.md). On one Redis
        it goes through the lean hot-path connection when there is one (a new session's records
        are written on the live chat path: redis-py's pipeline costs several times the CPU)."""
        lean = self._lean()
        if lean is not None:  # the same commands; RespPipeline has redis-py's command builders
            writes = RespTransaction(lean) if self.sink is not None and changes else lean.pipeline()
            for command in self.sink.commands(changes) if self.sink is not None and changes else ():
                writes.execute_command(*command)
            return cast(Pipeline, writes)
        if self.sink is None or not changes:
            return self.redis.pipeline(transaction=False)
        pipe = self.redis.pipeline(transaction=not is_cluster(self.redis))
        for command in self.sink.commands(changes):
            pipe.execute_command(*command)
        return pipe

    def written(self, changes: Sequence[Change]) -> None:
        if self.sink is not None and changes:
            self.sink.written(changes)

    def _lean(self) -> RespClient | None:
        """The lean connection for writes, on one Redis (None: redis-py)."""
        reader = self.reader
        return reader if isinstance(reader, RespClient) and not isinstance(reader, ClusterRespClient) else None

    async def _ids(self, n: int) -> list[str]:
        lean = self._lean()
        last = int(await (lean.execute_command("INCRBY", f"{_P}:ids", n) if lean is not None
                          else self.redis.incrby(f"{_P}:ids", n)))
        return [str(i) for i in range(last - n + 1, last + 1)]

    async def _new_ids(self, n: int) -> list[str]:
        """``n`` ids for a new identity's records, from the ones taken ahead (``ID_BLOCK``)."""
        if len(self._spare) < n:
            fresh = await self._ids(max(n, ID_BLOCK))  # others take and add ids meanwhile:
            self._spare.extend(fresh)  # the list is changed in place, never replaced
        taken = self._spare[:n]
        del self._spare[:n]
        return taken

    def _workspace(self, ids: list[str]) -> MemoryCrm:
        return MemoryCrm(pipelines=self.pipelines, ids=iter(ids).__next__)

    def identity_reads(self, identity: ChannelIdentity) -> list[tuple[Any, ...]]:
        """The read that finds an identity's records; the runtime sends it with its push. With it
        the ids for new records when this process has none left (no round trip of their own)."""
        key = _identity_key(identity)
        reads: list[tuple[Any, ...]] = [("HGET", identity_hash(key), identity_field(key))]
        if len(self._spare) < 2:
            reads.append(("INCRBY", f"{_P}:ids", ID_BLOCK))
        return reads

    async def identify_from(self, identity: ChannelIdentity, replies: list[Any], *,
                            link: Callable[[CrmRef], list[tuple[Any, ...]]] | None = None,
                            ) -> tuple[CrmRef, list[Any] | None]:
        """``identify`` with the reply to ``identity_reads`` at hand: no read when found; see
        ``PrefetchIdentity`` for what it returns and ``link``."""
        self.unused(replies)
        found = replies[0] if replies else None
        if found:
            contact_id, lead_id = text(found).split(":")
            return CrmRef(contact_id, lead_id), None
        return await self._create(identity, link)

    def unused(self, replies: list[Any]) -> None:
        """Keep the ids taken along with ``identity_reads`` (``PrefetchIdentity.unused``)."""
        if len(replies) > 1 and isinstance(replies[1], int):
            self._spare.extend(str(i) for i in range(replies[1] - ID_BLOCK + 1, replies[1] + 1))

    async def identify(self, identity: ChannelIdentity) -> CrmRef:
        key = _identity_key(identity)
        found = await self.redis.hget(identity_hash(key), identity_field(key))
        if found:
            contact_id, lead_id = text(found).split(":")
            return CrmRef(contact_id, lead_id)
        return (await self._create(identity))[0]

    async def _create(self, identity: ChannelIdentity, link: Callable[[CrmRef], list[tuple[Any, ...]]] | None = None,
                      ) -> tuple[CrmRef, list[Any] | None]:
        """A new identity's contact and lead, with their records packed as written (or the ones
        another process created meanwhile, without)."""
        key = _identity_key(identity)
        ws = self._workspace(await self._new_ids(2))
        contact_id = ws.create_contact(name=identity.name, phone=identity.phone, email=identity.email)
        lead_id = ws.create_lead(contact_id=contact_id, name=identity.name and f"{identity.name}")
        claim = f"{contact_id}:{lead_id}"
        changes = [*lead_changes(None, ws.leads[lead_id]), contact_created(contact_id, lead_id)]
        now = self.clock()
        stamp_stage(None, ws.leads[lead_id], now)
        contact, lead = pack_record(ws.contacts[contact_id], contact_id), pack_record(ws.leads[lead_id], lead_id)
        ref = CrmRef(contact_id, lead_id)

        def write_records(pipe: Any) -> None:
            pipe.hset(buckets.bucket(IDENTITIES, contact_id), contact_id, key)  # a new contact: its first identity
            pipe.execute_command(*records.write("contact", contact_id, contact))  # before the lead: see snapshot_from
            pipe.execute_command(*records.write("lead", lead_id, lead))
            CrmIndexes.update(pipe, "contact", contact_id, None, ws.contacts[contact_id], now)
            CrmIndexes.update(pipe, "lead", lead_id, None, ws.leads[lead_id], now)
            for command in link(ref) if link is not None else ():
                pipe.execute_command(*command)

        lean = self._lean()
        if lean is not None:  # one script: the claim, or the records with it (CREATE)
            writes = RespPipeline(lean)
            for command in self.sink.commands(changes) if self.sink is not None else ():
                writes.execute_command(*command)
            write_records(writes)
            writes.execute_command(*check(ref))
            args: list[Any] = [identity_field(key), claim]
            for command in writes.commands:
                for plain in _plain(command, contact_id):
                    args += [len(plain), *plain]
            ((created, reply),) = await send_commands(
                lean, [self._create_script.command([identity_hash(key), VERSIONS], args)], [self._create_script])
            if not created:  # another process created it first
                self._spare.extend((contact_id, lead_id))  # not used: the next new identity's
                found_contact, found_lead = text(reply).split(":")
                return CrmRef(found_contact, found_lead), None
            self.written(changes)
            return ref, [reply, contact, lead]  # the versions read in the script: the snapshot can be kept
        claimed = (identity_hash(key), identity_field(key), claim)
        if not int(await self.redis.hsetnx(*claimed)):
            self._spare.extend((contact_id, lead_id))
            return await self.identify(identity), None  # another process created it first
        pipe = self.write_pipeline(changes)
        write_records(pipe)
        await pipe.execute()
        self.written(changes)
        return ref, [contact, lead] if self.kept is None else [None, contact, lead]  # versions unknown

    async def attach(self, identity: ChannelIdentity, ref: CrmRef) -> CrmRef:
        """Record that ``identity`` is ``ref``'s contact (a conversation the bot opened for a known
        contact), unless the identity is known already: then its records are returned."""
        key = f"{identity.channel}:{identity.account}:{identity.external_id}"
        if await self.redis.hsetnx(identity_hash(key), identity_field(key),
                                   f"{ref.contact_id}:{ref.lead_id}"):
            await self.redis.eval(*joined.edit(IDENTITIES, ref.contact_id, key, add=True, sep=_SEP))
            return ref
        return await self.identify(identity)

    async def identities(self, contact_id: str) -> list[tuple[str, str, str]]:
        """``(channel, account, external id)`` of every identity the contact is known by."""
        found = (await joined.read(self.redis, IDENTITIES, [contact_id], identities_key, _SEP))[contact_id]
        out = []
        for raw in sorted(found):
            channel, account, external = raw.split(":", 2)
            out.append((channel, account, external))
        return out

    def snapshot_reads(self, ref: CrmRef, *, tasks_too: bool = False) -> list[tuple[Any, ...]]:
        """The reads a snapshot needs; the runtime sends them with its own (``snapshot_from``).
        With a snapshot kept, only its records' versions (``versions.py``); else the versions, then
        the records."""
        if tasks_too:  # commands need them; a snapshot does not
            return [records.read("contact", ref.contact_id), records.read("lead", ref.lead_id),
                    ("GET", f"{_P}:tasks:{ref.lead_id}")]
        kept = self.kept
        if kept is not None and ref in kept:  # a follow-up's: the records' reads not even built
            return [check(ref)]
        reads: list[tuple[Any, ...]] = [records.read("contact", ref.contact_id), records.read("lead", ref.lead_id)]
        return reads if kept is None else [check(ref), *reads]

    async def snapshot_from(self, ref: CrmRef, replies: list[Any]) -> dict[str, Any]:
        """The snapshot from the replies to ``snapshot_reads`` (plus the company, if any): the one
        kept when its versions are unchanged, else the records read along (or read now)."""
        if self.kept is not None:
            versions: Versions | None = tuple(replies[0]) if replies and replies[0] is not None else None
            if len(replies) == 1:  # the versions only
                kept = self.kept.get(ref, versions) if versions is not None else None
                return dict(kept) if kept is not None else await self.snapshot(ref)
            snapshot = await self._build(ref, replies[1:])
            # Not a stand-in for a lead not written yet (a new identity's contact is written first).
            if versions is not None and replies[2]:
                self.kept.put(ref, versions, snapshot)
            return dict(snapshot)
        return await self._build(ref, replies)

    async def _build(self, ref: CrmRef, replies: list[Any]) -> dict[str, Any]:
        ws = self._workspace([])
        await self._fill(ref, ws, replies)
        return ws.snapshot_now(ref, copy_records=False)

    async def _load(self, ref: CrmRef) -> MemoryCrm:
        """A command's workspace: its records, and two new ids for what it may create, taken in
        the same round trip (an id taken and not used is only a gap)."""
        pipe = self.reader.pipeline(transaction=False)
        pipe.execute_command("INCRBY", f"{_P}:ids", 2)
        for command in self.snapshot_reads(ref, tasks_too=True):
            pipe.execute_command(*command)
        last, *found = await pipe.execute()
        ws = self._workspace([str(int(last) - 1), str(int(last))])
        await self._fill(ref, ws, found)
        return ws

    async def _fill(self, ref: CrmRef, ws: MemoryCrm, replies: list[Any]) -> None:
        contact, lead, *rest = replies
        tasks = rest[0] if rest else None
        if contact:
            ws.contacts[ref.contact_id] = unpack_record(contact, ref.contact_id)
        if lead:
            ws.leads[ref.lead_id] = unpack_record(lead, ref.lead_id)
            company_id = ws.leads[ref.lead_id].get("company")
            if company_id:
                company = await self.reader.get(records.company_key(company_id))
                if company:
                    ws.companies[company_id] = unpack_record(company, company_id)
        ws.tasks = unpack(tasks) if tasks else []
        ws.notes = []  # commands only add notes: the new ones go to the note store
        if ref.lead_id not in ws.leads:  # a lead deleted behind our back: recreate it empty
            pipeline, stages = next(iter(ws.pipelines.items()))
            ws.leads[ref.lead_id] = {"id": ref.lead_id, "name": f"Lead #{ref.lead_id}", "price": 0,
                                     "pipeline": pipeline, "stage": stages[0],
                                     "responsible": None, "fields": {}, "tags": [], "contacts": [ref.contact_id],
                                     "company": None, "subscribers": []}
        if ref.contact_id not in ws.contacts:
            ws.contacts[ref.contact_id] = {"id": ref.contact_id, "name": "", "first_name": None, "phone": None,
                                           "email": None, "fields": {}, "tags": [], "responsible": None}

    async def snapshot(self, ref: CrmRef) -> dict[str, Any]:
        """The records read now (with their versions first, to keep the snapshot: ``versions.py``)."""
        pipe = self.reader.pipeline(transaction=False)
        reads = [records.read("contact", ref.contact_id), records.read("lead", ref.lead_id)]
        for command in reads if self.kept is None else [check(ref), *reads]:
            pipe.execute_command(*command)
        return await self.snapshot_from(ref, await pipe.execute())

    async def execute(self, ref: CrmRef, command: dict[str, Any]) -> CommandResult:
        ws = await self._load(ref)
        before_contacts, before_leads = copy.deepcopy(ws.contacts), copy.deepcopy(ws.leads)
        before_tasks = copy.deepcopy(ws.tasks)
        result = ws.execute_now(ref, command)
        now = self.clock()
        depth = int(command.get("depth") or 0)  # set by the automations' effects: loops stop at MAX_DEPTH
        changes = [c for lid, lead in ws.leads.items() for c in lead_changes(before_leads.get(lid), lead, depth=depth)]
        changes += [contact_created(cid, lid, depth=depth) for cid in ws.contacts if cid not in before_contacts
                    for lid, lead in ws.leads.items() if cid in (lead.get("contacts") or [])[:1]]
        changes += [c for cid, contact in ws.contacts.items() if contact != before_contacts.get(cid)
                    for c in contact_changes(before_contacts.get(cid), contact,
                                             [ref.lead_id] if cid == ref.contact_id else [], depth=depth)]
        changes += task_changes(before_tasks, ws.tasks, contact_id=ref.contact_id, depth=depth)
        pipe = self.write_pipeline(changes)
        for cid, contact in ws.contacts.items():
            pipe.execute_command(*records.write("contact", cid, pack_record(contact, cid)))
            CrmIndexes.update(pipe, "contact", cid, before_contacts.get(cid), contact, now)
        for lid, lead in ws.leads.items():
            stamp_stage(before_leads.get(lid), lead, now)
            pipe.execute_command(*records.write("lead", lid, pack_record(lead, lid)))
            CrmIndexes.update(pipe, "lead", lid, before_leads.get(lid), lead, now)
        for cid, company in ws.companies.items():
            pipe.execute_command(*records.write("company", cid, pack_record(company, cid)))
        by_lead: dict[str, list[dict[str, Any]]] = {}
        for task in ws.tasks:
            by_lead.setdefault(task["lead_id"], []).append(task)
        for lid, tasks in by_lead.items():
            pipe.set(f"{_P}:tasks:{lid}", pack(tasks))
        for note in ws.notes:
            NoteStore.queue_put(pipe, {**note, "priority": "none", "created_at": now, "updated_at": now,
                                       "author": None})
        # After the records (versions.py); a kept snapshot has no company, so companies need none.
        changed = [*(i for i, c in ws.contacts.items() if c != before_contacts.get(i)),
                   *(i for i, lead in ws.leads.items() if lead != before_leads.get(i))]
        bump(pipe, changed)
        await pipe.execute()
        self.written(changes)
        if changed and self.kept is not None:
            self.kept.drop(ref)  # the next push reads the records along, not only their versions
        return CommandResult(result.value, {"snapshot": ws.snapshot_now(ref)})

    async def lead_tasks(self, ref: CrmRef) -> list[dict[str, Any]]:
        raw = await self.redis.get(f"{_P}:tasks:{ref.lead_id}")
        return unpack(raw) if raw else []

    async def lead_notes(self, ref: CrmRef) -> list[dict[str, Any]]:
        """Notes of the lead and of its contact, oldest first."""
        return await self.notes.every([("lead", ref.lead_id), ("contact", ref.contact_id)])
