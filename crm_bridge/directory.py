"""The embedded CRM as people see it: list, search, filter and edit contacts and leads, notes
with priority, pipelines, users and teams. The HTTP API (``bot/server/crm_api.py``), hosted
forms and unsubscribe links use it; flows go through ``RedisCrm`` and the same records.

Writes are read-modify-write of one msgpack record plus its index changes, in one pipeline.
Like the flows' own commands they are not transactions: two people saving the same record in
the same millisecond keep the last save (the embedded CRM is for small teams; a shop that needs
more runs Kommo).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from redis.exceptions import WatchError

from bot.errors import CrmRejected
from bot.store import recency
from bot.store.clusterclient import is_cluster
from bot.store.scripts import DROP_IF_HELD

from . import idsets, recent, records
from .card import CARD_FIELDS, card_of, card_value
from .changes import Change, contact_changes, contact_created, lead_changes
from .codec import pack_record, text, unpack, unpack_record
from .indexes import (
    SEARCH_CANDIDATES,
    CrmIndexes,
    by_key,
    contact_stage_key,
    id_words,
    leads_of,
    matches,
    query_words,
    search_key,
    search_terms,
    stage_value,
    stamp_stage,
    status_filter,
    tags_key,
)
from .memory import DEFAULT_PIPELINE, DEFAULT_STAGES, MemoryCrm
from .notes import make_note
from .open_leads import (
    LEAD_CLAIM_MS,
    LEAD_CLAIM_STALE_MS,
    LEAD_CLAIM_TRIES,
    is_open,
    newest_open,
    newest_open_watched,
)
from .redis_crm import RedisCrm
from .upgrading import IndexUpgrade
from .values import clean_email, clean_phone, score_value, tags_value, text_value
from .versions import bump

log = logging.getLogger("salesbot.crm.directory")
MAX_PAGE = 200
#: The deepest offset a listing pages to inside its records (past its end it is an empty page):
#: a page reads every bucket newer than it (``bot/store/recency.py``), so a deeper one would hold
#: Redis for a time that grows with the offset. Narrow the listing (``q``, filters) instead.
MAX_OFFSET = 10_000
CONTACT_KEYS = frozenset({"name", "first_name", "phone", "email", "responsible", "fields", "tags",
                          "tags_add", "tags_remove", "score"}) | CARD_FIELDS
#: The largest lead price: exact as a float and an integer, and far beyond any real deal.
MAX_PRICE = 10**15
LEAD_KEYS = frozenset({"name", "price", "pipeline", "stage", "responsible", "fields", "tags",
                       "tags_add", "tags_remove", "contacts"})




class CrmDirectory:
    def __init__(self, crm: RedisCrm, *, users: Iterable[Mapping[str, Any]] = (),
                 teams: Iterable[Mapping[str, Any]] = ()) -> None:
        self.crm = crm
        self.redis = crm.redis
        self._users = [dict(u) for u in users]
        self._teams = [dict(t) for t in teams]
        #: An older version's contacts lack their ``responsible`` sets: the services start the
        #: walk after start-up; a filter by responsible waits until it is done.
        self.indexes = IndexUpgrade(self.redis)

    # ------------------------------------------------------------------ configuration
    def pipelines(self) -> list[dict[str, Any]]:
        configured = self.crm.pipelines or {DEFAULT_PIPELINE: list(DEFAULT_STAGES)}
        return [{"name": name, "stages": list(stages)} for name, stages in configured.items()]

    def users(self) -> list[dict[str, Any]]:
        return [{"id": str(u["id"]), "name": u.get("name") or str(u["id"]), "email": u.get("email"),
                 "teams": list(u.get("teams") or [])} for u in self._users]

    def teams(self) -> list[dict[str, Any]]:
        named = {str(t["id"]): t.get("name") or str(t["id"]) for t in self._teams}
        for u in self._users:
            for team in u.get("teams") or []:
                named.setdefault(str(team), str(team))
        return [{"id": tid, "name": name, "members": [str(u["id"]) for u in self._users
                                                      if tid in (u.get("teams") or [])]}
                for tid, name in named.items()]

    def user(self, uid: Any) -> dict[str, Any] | None:
        return next((u for u in self.users() if u["id"] == str(uid)), None)

    def _responsible(self, value: Any) -> str | None:
        if value in (None, ""):
            return None
        uid = str(value)
        if self._users and self.user(uid) is None:
            raise CrmRejected(f"responsible: unknown user {uid!r} (known: {', '.join(u['id'] for u in self.users())})")
        return uid

    # ------------------------------------------------------------------ records
    async def get(self, kind: str, rid: str) -> dict[str, Any] | None:
        raw = await records.get(self.redis, kind, rid)
        if raw is None:
            return None
        return unpack_record(raw, rid)

    async def exists(self, kind: str, rid: str) -> bool:
        """Whether a record exists, through the CRM's per-turn reader (the runtime's lean
        connection): ``POST /api/events`` asks it for every event, and redis-py's per-call CPU
        was a tenth of an event's in bench/automations.py."""
        return await self.crm.reader.execute_command(*records.read(kind, rid)) is not None

    async def get_many(self, kind: str, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        raws = await records.get_many(self.redis, kind, ids)
        return [unpack_record(raw, rid) for rid, raw in zip(ids, raws, strict=True) if raw]

    async def _save(self, kind: str, rid: str, old: dict[str, Any] | None, new: dict[str, Any],
                    changes: list[Change] | None = None) -> None:
        """Write one record, its index changes and its CRM events (``changes``, by default a
        lead's diff, or a contact's on its newest open lead) in one MULTI/EXEC."""
        if changes is None and kind == "lead":
            changes = lead_changes(old, new)
        elif changes is None and kind == "contact":  # concerns its newest open lead (as an event naming it)
            newest = (await self._newest_open_lead(rid))[0] if old is not None else None
            changes = contact_changes(old, new, [newest] if newest is not None else [])
        changes = changes or []
        pipe = self.crm.write_pipeline(changes)  # carries the changes' events
        self._write(pipe, kind, rid, old, new)
        await pipe.execute()
        self.crm.written(changes)

    def _write(self, pipe: Any, kind: str, rid: str, old: dict[str, Any] | None, new: dict[str, Any],
               changes: Sequence[Change] = ()) -> None:
        """Queue a record's write, its index changes and the events of ``changes`` on ``pipe``."""
        if kind == "lead":
            stamp_stage(old, new, self.crm.clock())
        for command in self.crm.sink.commands(changes) if self.crm.sink is not None and changes else ():
            pipe.execute_command(*command)
        pipe.execute_command(*records.write(kind, rid, pack_record(new, rid)))
        CrmIndexes.update(pipe, kind, rid, old, new, self.crm.clock())
        if old is not None:  # processes that keep a snapshot of the record read it again (versions.py)
            bump(pipe, (rid,))

    async def _updated_at(self, kind: str, ids: list[str]) -> list[float | None]:
        return await recent.updated_at(self.redis, kind, ids)

    async def _present(self, kind: str, records: list[dict[str, Any]],
                       known: Mapping[str, float | None] | None = None) -> list[dict[str, Any]]:
        """The records as the API shows them; ``known``: their times when the listing read them."""
        ids = [r["id"] for r in records]
        times = [known.get(i) for i in ids] if known is not None else await self._updated_at(kind, ids)
        out = []
        for record, at in zip(records, times, strict=True):
            item = {**record, "updated_at": at}
            if kind == "contact":
                item.update(card_of(record))
            out.append(item)
        return out

    # ------------------------------------------------------------------ listing
    async def search(self, kind: str, *, q: str | None = None, filters: Mapping[str, Any] | None = None,
                     limit: int = 50, offset: int = 0, before: float | None = None,
                     before_id: str | None = None) -> tuple[list[dict[str, Any]], int]:
        """Records newest first, those of one time by id (``bot.store.recency.order``; ``before``
        and ``before_id``, the previous page's last time and id: only the records after it, a
        cursor that stays put while records change; ``before`` alone: those last written earlier);
        ``q`` searches names, e-mails and phones (a record no recency index knows comes last, as if
        written at 0); ``filters``: contacts ``status``, ``temperature``, ``tag`` (list),
        ``responsible``, ``stage`` (+ ``pipeline``); leads ``stage`` (+ ``pipeline``), ``tag``
        (list), ``responsible``."""
        limit = max(1, min(int(limit), MAX_PAGE))
        offset = max(0, int(offset))
        keys, excluded = self._filter_keys(kind, filters or {})
        if kind == "contact" and (filters or {}).get("responsible"):
            await self.indexes.current()  # a set the upgrade may still be filling: never a short list
        if q and q.strip():
            found = await self._search_ids(kind, q, keys, excluded)
            listed = [(i, at) for i, at in found if recency.after(i, at or 0.0, before, before_id)]
            page = listed[offset:offset + limit]
            return await self._present(kind, await self.get_many(kind, [i for i, _ in page]), dict(page)), len(found)
        if offset > MAX_OFFSET:  # past the end: an empty page (its script visits no bucket); else refused
            _, total = await recent.listing(self.redis, kind, keys, excluded, offset=0, limit=0, before=None)
            if offset < total:
                raise CrmRejected(f"offset is at most {MAX_OFFSET} inside a listing ({total} records): "
                                  "narrow it with q or filters")
            return [], total
        rows, total = await recent.listing(self.redis, kind, keys, excluded, offset=offset, limit=limit,
                                           before=before, before_id=before_id)
        return await self._present(kind, await self.get_many(kind, [i for i, _ in rows]), dict(rows)), total

    def _filter_keys(self, kind: str, filters: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """The sets the listed records are in, and the sets they are in none of."""
        keys: list[str] = []
        excluded: list[str] = []
        allowed = {"contact": ("status", "temperature", "tag", "responsible", "stage", "pipeline"),
                   "lead": ("stage", "tag", "responsible", "pipeline")}[kind]
        unknown = [k for k, v in filters.items() if v not in (None, "", []) and k not in allowed]
        if unknown:
            raise CrmRejected(f"unknown filter {unknown[0]!r} (filters: {', '.join(allowed)})")
        if filters.get("status"):
            within, excluded = status_filter(card_value("status", filters["status"]))
            keys += within
        if filters.get("temperature"):
            keys.append(by_key(kind, "temperature", card_value("temperature", filters["temperature"])))
        tags = filters.get("tag") or []
        for tag in [tags] if isinstance(tags, str) else tags:
            keys.append(by_key(kind, "tag", tag))
        if filters.get("responsible"):
            keys.append(by_key(kind, "responsible", filters["responsible"]))
        if filters.get("stage"):
            pipeline = filters.get("pipeline") or self.pipelines()[0]["name"]
            stage = stage_value(pipeline, filters["stage"])
            keys.append(contact_stage_key(stage) if kind == "contact" else by_key(kind, "stage", stage))
        elif filters.get("pipeline"):
            raise CrmRejected("pipeline filters together with stage")
        return keys, excluded

    async def _search_ids(self, kind: str, q: str, keys: list[str],
                          excluded: list[str]) -> list[tuple[str, float | None]]:
        """The ids of the records ``q`` finds in every set ``keys`` and none ``excluded``, with
        their times, in the listings' order (``recency.order``; no time: as if written at 0)."""
        words = query_words(q)
        if not words:
            return []
        word = max(words, key=len)
        lo, hi = b"[" + word.encode(), b"[" + word.encode() + b"\xff"
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrangebylex(search_key(kind), lo, hi, start=0, num=SEARCH_CANDIDATES)
        if kind == "lead":
            pipe.zrangebylex(search_key("contact"), lo, hi, start=0, num=SEARCH_CANDIDATES)
        found = await pipe.execute()
        ids = list(dict.fromkeys([*(m.rsplit(b"\x00", 1)[1].decode() for m in found[0]),
                                  *(id_words(words) if kind == "lead" else [])]))
        records = [r for r in await self.get_many(kind, ids)
                   if matches(words, search_terms(kind, r, indexed=False))]
        if kind == "lead" and len(found) > 1:  # leads whose contact matches (by phone, e-mail, name)
            cids = list(dict.fromkeys(m.rsplit(b"\x00", 1)[1].decode() for m in found[1]))
            contacts = [c for c in await self.get_many("contact", cids) if matches(words, search_terms("contact", c))]
            linked = await leads_of(self.redis, [c["id"] for c in contacts[:SEARCH_CANDIDATES]])
            more = {i for ids in linked.values() for i in ids} - {r["id"] for r in records}
            records += await self.get_many("lead", sorted(more))
        ids = [r["id"] for r in records]
        if (keys or excluded) and ids:
            pipe = self.redis.pipeline(transaction=False)
            takes = [idsets.queue_checks(pipe, key, ids) for key in [*keys, *excluded]]
            replies = await pipe.execute()
            checks = [take(replies) for take in takes]
            within, outside = checks[:len(keys)], checks[len(keys):]
            ids = [i for n, i in enumerate(ids) if all(c[n] for c in within) and not any(c[n] for c in outside)]
        times = await self._updated_at(kind, ids)
        return sorted(zip(ids, times, strict=True), key=lambda p: recency.order(p[0], p[1] or 0.0), reverse=True)

    async def tags(self, kind: str) -> list[dict[str, Any]]:
        rows = await self.redis.zrevrange(tags_key(kind), 0, 999, withscores=True)
        scored = cast("list[tuple[bytes, float]]", rows)  # redis-py's overloads do not follow withscores=True
        return [{"tag": text(t), "count": int(n)} for t, n in scored]

    # ------------------------------------------------------------------ contacts
    async def contact(self, cid: str) -> dict[str, Any] | None:
        record = await self.get("contact", cid)
        if record is None:
            return None
        item = (await self._present("contact", [record]))[0]
        lead_ids = sorted((await leads_of(self.redis, [cid]))[cid], key=int)
        item["leads"] = [{k: lead[k] for k in ("id", "name", "price", "pipeline", "stage", "tags")}
                         for lead in await self.get_many("lead", lead_ids)]
        return item

    async def create_contact(self, data: Mapping[str, Any]) -> dict[str, Any]:
        self._check_keys("contact", data, CONTACT_KEYS)
        (cid,) = await self.crm._ids(1)
        ws = MemoryCrm(ids=lambda: cid)
        ws.create_contact(name=text_value("name", data.get("name"), required=True))
        record = self._edit_contact(ws.contacts[cid], data)
        await self._save("contact", cid, None, record)
        return (await self._present("contact", [record]))[0]

    async def update_contact(self, cid: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        self._check_keys("contact", patch, CONTACT_KEYS)
        old = await self.get("contact", cid)
        if old is None:
            return None
        new = self._edit_contact(copy.deepcopy(old), patch)
        await self._save("contact", cid, old, new)
        return (await self._present("contact", [new]))[0]

    def _edit_contact(self, record: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
        if "name" in patch:
            record["name"] = text_value("name", patch["name"], required=True)
            if "first_name" not in patch:
                record["first_name"] = str(record["name"]).split()[0]
        if "first_name" in patch:
            record["first_name"] = text_value("first_name", patch["first_name"])
        if "phone" in patch:
            record["phone"] = clean_phone(patch["phone"])
        if "email" in patch:
            record["email"] = clean_email(patch["email"])
        if "responsible" in patch:
            record["responsible"] = self._responsible(patch["responsible"])
        if "score" in patch:
            record["score"] = score_value(patch["score"])
        for name in CARD_FIELDS & set(patch):
            record[name] = card_value(name, patch[name])
        self._edit_common(record, patch)
        return record

    @staticmethod
    def _check_keys(kind: str, data: Mapping[str, Any], allowed: frozenset[str]) -> None:
        if not isinstance(data, Mapping):
            raise CrmRejected(f"the body is an object of {kind} fields")
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise CrmRejected(f"unknown {kind} field {unknown[0]!r} (fields: {', '.join(sorted(allowed))})")

    @staticmethod
    def _edit_common(record: dict[str, Any], patch: Mapping[str, Any]) -> None:
        if "fields" in patch:
            fields = patch["fields"]
            if not isinstance(fields, Mapping):
                raise CrmRejected("fields is an object of custom field values (null removes one)")
            for name, value in fields.items():
                if not str(name).strip() or len(str(name)) > 128:
                    raise CrmRejected("a custom field's name is 1 to 128 characters")
                if value is None:
                    record["fields"].pop(name, None)
                elif isinstance(value, (str, int, float, bool)):
                    record["fields"][name] = value
                else:
                    raise CrmRejected(f"custom field {name!r}: a value is text, a number or true/false")
        if "tags" in patch:
            record["tags"] = tags_value(patch["tags"])
        if "tags_add" in patch:
            record["tags"] += [t for t in tags_value(patch["tags_add"], "tags_add") if t not in record["tags"]]
        if "tags_remove" in patch:
            gone = set(tags_value(patch["tags_remove"], "tags_remove"))
            record["tags"] = [t for t in record["tags"] if t not in gone]

    async def lead_contacts(self, lid: str) -> list[dict[str, Any]]:
        lead = await self.get("lead", lid)
        return await self.get_many("contact", [str(c) for c in (lead or {}).get("contacts") or []])

    async def set_unsubscribed(self, cid: str) -> bool:
        old = await self.get("contact", cid)
        if old is None:
            return False
        if not old.get("unsubscribed"):
            await self._save("contact", cid, old, {**old, "unsubscribed": True})
        return True

    # ------------------------------------------------------------------ leads
    async def lead(self, lid: str) -> dict[str, Any] | None:
        record = await self.get("lead", lid)
        if record is None:
            return None
        item = (await self._present("lead", [record]))[0]
        contacts = await self.get_many("contact", [str(c) for c in record.get("contacts") or []])
        item["contacts"] = await self._present("contact", contacts)
        item["company"] = await self.get("company", record["company"]) if record.get("company") else None
        raw = await self.redis.get(f"sb:crm:tasks:{lid}")
        item["tasks"] = unpack(raw) if raw else []
        return item

    async def create_lead(self, data: Mapping[str, Any], *, contact_id: str | None = None) -> dict[str, Any]:
        first = contact_id is not None and not (await leads_of(self.redis, [contact_id]))[contact_id]
        record = await self._new_lead(data, contact_id)
        await self._save("lead", record["id"], None, record, self._born(record, contact_id if first else None))
        return (await self._present("lead", [record]))[0]

    async def _new_lead(self, data: Mapping[str, Any], contact_id: str | None) -> dict[str, Any]:
        self._check_keys("lead", data, LEAD_KEYS - {"contacts"})
        (lid,) = await self.crm._ids(1)
        ws = MemoryCrm(pipelines=self.crm.pipelines, ids=lambda: lid)
        ws.create_lead(contact_id=contact_id, pipeline=text_value("pipeline", data.get("pipeline")),
                       stage=text_value("stage", data.get("stage")))
        return self._edit_lead(ws, ws.leads[lid], {k: v for k, v in data.items() if k not in ("pipeline", "stage")})

    async def open_lead(self, cid: str) -> str:
        """The contact's newest open lead (not in a won/lost stage), else a new one in the first
        stage. The common case (an open lead) is one read without WATCH. Callers at once (two first
        orders of a customer) get one new lead: it is written in one MULTI/EXEC with the contact's
        claim key, which every caller WATCHes and then reads the leads again on that same watched
        connection (one pooled connection per caller: callers at once never wait on each other
        for a second one); a caller whose claim changed meanwhile reads again and finds that lead.
        A Redis Cluster (no WATCH across slots) claims with SET NX first, then writes: a caller
        that loses reads the claim's lead id, whose record may be a moment behind (a claim whose
        lead has closed since, or whose lead is still missing after ``LEAD_CLAIM_STALE_MS``, is
        dropped and claimed anew)."""
        claim = f"sb:crm:lead_claim:{cid}"
        if is_cluster(self.redis):
            return await self._open_lead_cluster(cid, claim)
        for _ in range(LEAD_CLAIM_TRIES):
            newest, first = await self._newest_open_lead(cid)
            if newest is not None:
                return newest
            record = await self._new_lead({}, cid)  # its id is taken before the watch: one connection
            async with self.redis.pipeline(transaction=True) as pipe:
                await pipe.watch(claim)
                newest = await newest_open_watched(pipe, cid)
                if newest is not None:
                    return newest
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.set(claim, record["id"], px=LEAD_CLAIM_MS)
                changes = self._born(record, cid if first else None)
                self._write(pipe, "lead", record["id"], None, record, changes)
                try:
                    await pipe.execute()
                except WatchError:  # another caller made the contact's lead: read it
                    continue
                self.crm.written(changes)
                return str(record["id"])
        raise CrmRejected(f"the leads of contact {cid} are being changed by others right now; try again")

    async def _open_lead_cluster(self, cid: str, claim: str) -> str:
        for _ in range(LEAD_CLAIM_TRIES):
            newest, first = await self._newest_open_lead(cid)
            if newest is not None:
                return newest
            record = await self._new_lead({}, cid)
            lid = str(record["id"])
            if await self.redis.set(claim, lid, nx=True, px=LEAD_CLAIM_MS):
                try:
                    await self._save("lead", lid, None, record, self._born(record, cid if first else None))
                except BaseException:  # the claim must not name a lead that never comes
                    await self.redis.eval(DROP_IF_HELD, 1, claim, lid)
                    raise
                return lid
            claimed = await self.redis.get(claim)
            if claimed is None:  # it ended meanwhile: claim again
                continue
            lid = text(claimed)
            lead = await self.get("lead", lid)
            if lead is not None and is_open(lead):
                return lid
            if lead is None and await self.redis.pttl(claim) > LEAD_CLAIM_MS - LEAD_CLAIM_STALE_MS:
                return lid  # being written by the claimer
            # Its lead closed since, or its claimer failed before writing it: claim anew.
            await self.redis.eval(DROP_IF_HELD, 1, claim, lid)
        raise CrmRejected(f"the leads of contact {cid} are being changed by others right now; try again")

    async def _newest_open_lead(self, cid: str) -> tuple[str | None, bool]:
        """The contact's newest open lead, and whether it has no lead at all yet."""
        lead_ids = (await leads_of(self.redis, [cid]))[cid]
        return newest_open(await self.get_many("lead", lead_ids)), not lead_ids

    @staticmethod
    def _born(lead: Mapping[str, Any], contact_id: str | None) -> list[Change]:
        """A new lead's events; with ``contact_id``, its contact's first lead: ``contact.created``
        too (an event concerns a lead: a contact made alone is announced with its first one)."""
        born = lead_changes(None, lead)
        return born if contact_id is None else [*born, contact_created(contact_id, str(lead["id"]))]

    async def update_lead(self, lid: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        self._check_keys("lead", patch, LEAD_KEYS)
        old = await self.get("lead", lid)
        if old is None:
            return None
        new = self._edit_lead(MemoryCrm(pipelines=self.crm.pipelines), copy.deepcopy(old), patch)
        if "contacts" in patch:
            cids = patch["contacts"]
            if not isinstance(cids, list):
                raise CrmRejected("contacts is the list of the lead's contact ids (the first is the main contact)")
            cids = [str(c) for c in dict.fromkeys(cids)]
            missing = set(cids) - {c["id"] for c in await self.get_many("contact", cids)}
            if missing:
                raise CrmRejected(f"no contact {min(missing)!r}")
            new["contacts"] = cids
        await self._save("lead", lid, old, new)
        return (await self._present("lead", [new]))[0]

    def _edit_lead(self, ws: MemoryCrm, record: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
        if "name" in patch:
            record["name"] = text_value("name", patch["name"], required=True)
        if "price" in patch:
            price = patch["price"]
            if price is None or isinstance(price, bool) or not isinstance(price, (int, float, str)):
                raise CrmRejected("price is a number")
            try:
                number = float(price)
            except ValueError:
                raise CrmRejected(f"price is a number, not {price!r}") from None
            if not 0 <= number <= MAX_PRICE:  # NaN fails both comparisons
                raise CrmRejected(f"price is a number from 0 to {MAX_PRICE:.0e}")
            record["price"] = int(number) if number.is_integer() else number
        if "stage" in patch or "pipeline" in patch:
            pipeline = text_value("pipeline", patch.get("pipeline")) or record["pipeline"]
            stage = text_value("stage", patch.get("stage"))
            if stage is None:
                stages = ws.pipelines.get(pipeline) or []
                stage = record["stage"] if pipeline == record["pipeline"] else (stages[0] if stages else None)
            if stage is None:
                raise CrmRejected(f"stage is required for pipeline {pipeline!r}")
            ws.check_stage(pipeline, stage)
            record["pipeline"], record["stage"] = pipeline, stage
        if "responsible" in patch:
            record["responsible"] = self._responsible(patch["responsible"])
        self._edit_common(record, patch)
        return record

    # ------------------------------------------------------------------ notes
    async def add_note(self, entity: str, eid: str, text: Any, priority: Any = None,
                       author: str | None = None) -> dict[str, Any] | None:
        if await self.get(entity, eid) is None:
            return None
        (nid,) = await self.crm._ids(1)
        note = make_note(nid, entity, eid, text, priority, self.crm.clock(), author)
        await self.crm.notes.put(note)
        return note

    async def notes(self, entity: str, eid: str, *, offset: int = 0,
                    limit: int = 50) -> tuple[list[dict[str, Any]], int]:
        return await self.crm.notes.page(entity, eid, offset=max(0, offset), limit=max(1, min(limit, MAX_PAGE)))

    async def update_note(self, entity: str, eid: str, nid: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        if not isinstance(patch, Mapping) or set(patch) - {"text", "priority"}:
            raise CrmRejected('the body is {"text"?, "priority"?}')
        note = await self.crm.notes.get(entity, eid, nid)
        if note is None:
            return None
        updated = make_note(nid, entity, eid, patch.get("text", "-"),
                            patch.get("priority", note["priority"]), note["created_at"], note.get("author"))
        if "text" not in patch:  # a priority change keeps the text as it is (an older note's too)
            updated["text"] = note["text"]
        updated["updated_at"] = self.crm.clock()
        await self.crm.notes.put(updated)
        return updated

    async def delete_note(self, entity: str, eid: str, nid: str) -> bool:
        return await self.crm.notes.delete(entity, eid, nid)
