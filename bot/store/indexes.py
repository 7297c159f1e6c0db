"""Secondary indexes of conversations, for the support dashboard's list.

Written in the save pipeline (``ConversationService`` calls :func:`plan_save` before
``store.save``), read by ``GET /api/conversations``. Redis layout (every key shares the hash tag
``{conv}``, so the intersections below stay in one Redis Cluster slot):

* ``sb:idx:{conv}:act:<channel>:<bot>`` — the listed conversations of one channel and bot scored
  by their last activity, partitions of the activity index (bot/store/partitions.py; the
  registry ``sb:idx:{conv}:acts`` names them). The save writes a conversation's partition on
  every message with activity (one script: it also leaves the partition the previous save's
  metadata put it in, if another); a listing by channel and/or bot reads only the matching
  partitions, merged newest first in one script. Before the partitions one sorted set
  ``sb:idx:{conv}:activity`` held them all, beside plain sets of conversation ids per channel and
  per bot (``f:channel:<channel>``, ``f:bot:<bot>``, 84 B a member each): moved into the
  partitions once, at start (``bot/store/layout.py``).
* ``sb:idx:{conv}:f:status:<human|idle>``, ``sb:idx:{conv}:f:waiting`` — sets of conversation
  ids (the commonest status, ``bot``, has none: ``DERIVED_STATUS``, the listed conversations in
  neither other status's set). A save derives the sets the conversation belonged to from the
  metadata the previous save wrote (``batch.meta``), removes it from the ones it left and adds it
  to the ones it joined; a message that changes no set writes none (the order comes from the
  partitions, whose members a listing scores: ``ZMSCORE``). These are pipeline commands beside
  the save script, never inside it: the indexes are cross-conversation keys, in another slot
  than the conversation's own. (Before issue 14's third wave they were sorted sets without the
  ``f:``, moved into the sets once, at start.)
* ``sb:idx:{conv}:search`` — a lexicographic sorted set (all scores 0) of
  ``"<term>\\0<conversation id>"``: the normalised words of the contact's name, its e-mail
  address (whole, local part, domain) and the digits of its phone number (from the start with
  or without a 1-3 digit country code, and the last 7 and 4 digits: "0555 111 22 33",
  "555 111", "1112233" and "2233" find "+90 555 111 22 33"). A search token is a ``ZRANGEBYLEX``
  prefix scan (``[tok`` .. ``[tok\\xff``); several tokens intersect. What a conversation was
  indexed from is kept in its metadata (``ix_src``: name, phone, e-mail) so a renamed contact
  leaves its old terms.

"Waiting for a person": the customer's last message is unanswered (``chat_status`` is
``unanswered``) and no bot is handling the conversation (status ``human`` or ``idle``).

Entries of conversations whose keys have expired are dropped lazily, when a listing meets them;
so is an entry left in a partition its conversation is no longer in (a save that did not know
the previous one: an expired conversation back), which is listed once, from its partition.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from . import partitions, preview, replies, statefields
from .keys import EVENTS_CHANNEL, PREFIX, id_fields
from .partitions import TAG

STATUSES = ("bot", "human", "idle")
#: Metadata fields whose change the dashboard shows (a save changing only these still notifies).
WATCHED = ("status", "owner", "owner_user", "bot", "step", "run_status", "chat_status")
#: At most this many index entries are read per search token (the answer says it was cut).
SEARCH_CAP = 5000
_TERM_SEP = "\x1f"
_PHONE_QUERY = re.compile(r"^[+\d\s().\-]+$")
_ADDRESS_PART = re.compile(r"^[^\s@]*[^\W\d][^\s@]*\.[^\s@]+$")


#: Where the filter sets' names start (``OLD_FILTER``: the sorted sets of older versions).
FILTER = f"{PREFIX}:idx:{TAG}:f:"
OLD_FILTER = re.compile(rf"^{re.escape(PREFIX)}:idx:{re.escape(TAG)}:(?:(?:status|channel|bot):.+|waiting)$")


def status_key(status: str) -> str:
    return f"{FILTER}status:{status}"


def channel_key(channel: str) -> str:
    """The set of a channel's conversations older versions kept (moved at start: layout.py)."""
    return f"{FILTER}channel:{channel}"


def bot_key(bot: str) -> str:
    """The set of a bot's conversations older versions kept (moved at start: layout.py)."""
    return f"{FILTER}bot:{bot}"


WAITING_KEY = f"{FILTER}waiting"


def new_filter_key(old: str) -> str:
    """The set an older version's sorted set ``old`` (``OLD_FILTER``) moves into."""
    return FILTER + old.removeprefix(f"{PREFIX}:idx:{TAG}:")
SEARCH_KEY = f"{PREFIX}:idx:{TAG}:search"


def claim_key(cid: str) -> str:
    """Who has taken the conversation over (``SET NX`` by the takeover route, deleted on release)."""
    return f"{PREFIX}:c:{{{cid}}}:claim"


# ---------------------------------------------------------------------- what a conversation is in
def is_waiting(meta: Mapping[str, str]) -> bool:
    return meta.get("chat_status") == "unanswered" and meta.get("status") in ("human", "idle")


#: The commonest status (a bot's run under way or waiting for an answer that may never come: 55 %
#: of the dashboard bench's mix, every idle conversation of the memory bench) has no filter set
#: (about 72 B a conversation, issue 14): a listed conversation has it when it is in neither of the
#: other statuses' sets (``Filters.excluded``). The set older versions kept is dropped at start
#: (``layout.drop_derived_sets``).
DERIVED_STATUS = "bot"


def filter_keys(meta: Mapping[str, str]) -> set[str]:
    """The filter indexes a conversation with this metadata belongs to."""
    keys: set[str] = set()
    if meta.get("status") and meta["status"] != DERIVED_STATUS:
        keys.add(status_key(meta["status"]))
    if is_waiting(meta):
        keys.add(WAITING_KEY)
    return keys


def normalise(text: str) -> str:
    """Lower case without accents: "Ayşe YILMAZ" -> "ayse yilmaz" (Turkish dotless i folds to i)."""
    text = unicodedata.normalize("NFKD", text.replace("ı", "i").casefold())
    return "".join(c for c in text if not unicodedata.combining(c))


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^\w]+", normalise(text)) if w]


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def terms(name: str | None, phone: str | None, email: str | None) -> set[str]:
    """The search terms of a contact."""
    out: set[str] = set()
    if name:
        out.update(w[:64] for w in _words(name))
    if email:
        mail = normalise(email.strip())[:128]
        if mail:
            out.add(mail)
            local, _, domain = mail.partition("@")
            out.update(t for t in (local, domain) if t)
    digits = _digits(phone or "")
    if len(digits) >= 4:
        # From its start, with a 1-3 digit country code or not ("90555…", "555…"), and its last
        # 7 and 4 digits: what people type. Not every suffix: the index stays ~6 entries a phone.
        out.update(digits[i:] for i in range(min(4, len(digits) - 3)))
        out.update((digits[-7:], digits[-4:]))
    return out


def query_tokens(query: str) -> list[str]:
    """Prefixes to look up for a search box text (each must match; empty: nothing to search)."""
    query = query.strip()
    if not query:
        return []
    if "@" in query or _ADDRESS_PART.match(query):  # an e-mail address, or its local part or domain
        return [normalise(query)[:128]]
    if _PHONE_QUERY.match(query) and len(_digits(query)) >= 3:
        return [_digits(query).lstrip("0") or "0"]  # "0555 …" (national) finds "90555…" (its suffix)
    return _words(query)[:5]


def term_source(meta: Mapping[str, str]) -> str:
    """The name, phone and e-mail the search terms were made of, as one string (``ix_src``);
    a separator inside a value (a visitor may send anything) is read as a space; "" without any
    (no field stored for it: issue 14, bytes)."""
    get = meta.get
    if not (get("name") or get("phone") or get("email")):  # (most chats: no list built, issue 14 aim 5)
        return ""
    return _TERM_SEP.join([(get(f) or "").replace(_TERM_SEP, " ") for f in ("name", "phone", "email")])


def _split_source(src: str) -> tuple[str, str, str]:
    name, phone, email = (src.split(_TERM_SEP, 2) + ["", ""])[:3]
    return name, phone, email


def plan_save(cid: str, old: Mapping[str, str], new: dict[str, str], *, activity: float | None,
              logged: bool, commands: list[Any], state_changed: bool = True) -> tuple[str, str | None]:
    """Index updates for a save: fields added to ``new`` (the metadata the save writes) and
    raw Redis commands appended to ``commands`` (the save request's ``extra_commands``).
    Returns the label of the activity partition the conversation is in and that of the one it
    leaves, which the save writes (``SaveRequest.partition``, ``.left``): None if the previous
    save put it in the same one (a follow-up: a plain ``ZADD``), "" if not known to be in any (a
    new conversation, or one back after it expired).

    ``logged``: whether the save adds any transcript entry (the list's preview is read from the
    transcript: bot/store/preview.py). The save script publishes on ``sb:events`` only with
    transcript entries; a save without any
    that changed the state (a stop, a held timer, a step reached silently) publishes here, so
    dashboards hear of it too."""
    merged = {**old, **new}
    listed = activity is not None or bool(old.get("activity"))  # in an activity partition (the list)
    part = partitions.of(merged)
    was_in = partitions.of(old) if old.get("activity") else ""
    moved = (part, None if was_in == part else was_in)
    removed: list[str] = []
    added: list[str] = []
    get, was = merged.get, old.get  # absent reads as "" (an empty value is not stored anew)
    if not (listed and was("status") and get("status", "") == was("status", "")
            and get("chat_status", "") == was("chat_status", "")):  # else the sets ``filter_keys`` reads stay
        # what the previous save indexed; none known (a new or expired-and-back conversation): the other
        # statuses' sets, whose stale member would hide it from the derived status (``Filters.excluded``)
        known = filter_keys(old) if was("status") else set()
        old_keys = known if was("status") else set(Filters(status=DERIVED_STATUS).excluded())
        new_keys = filter_keys(merged) if listed else set()
        removed = sorted(old_keys - new_keys)
        added = sorted(new_keys - known)  # (unknown: a first save as human or idle joins its set)
    old_src = old.get("ix_src", "")
    new_src = term_source(merged)
    gone: list[str] = []
    fresh: list[str] = []
    if new_src != old_src:  # the name, phone or e-mail changed: re-index the search terms
        old_terms = terms(*_split_source(old_src)) if old_src else set()
        new_terms = terms(*_split_source(new_src))
        new["ix_src"] = new_src
        gone = sorted(old_terms - new_terms)
        fresh = sorted(new_terms - old_terms)
    notify = not logged and (state_changed or any(old.get(f, "") != merged.get(f, "") for f in WATCHED))
    if not (removed or added or gone or fresh or notify):
        return moved

    for key in removed:
        commands.append(("SREM", key, cid))
    for key in added:  # the order is the activity index's
        commands.append(("SADD", key, cid))
    if gone:
        commands.append(("ZREM", SEARCH_KEY, *(f"{t}\0{cid}" for t in gone)))
    if fresh:
        commands.append(("ZADD", SEARCH_KEY, *(v for t in fresh for v in (0, f"{t}\0{cid}"))))
    if notify:
        commands.append(("PUBLISH", EVENTS_CHANNEL, f"{cid} 0"))
    return moved


def seed(pipe: Any, cid: str, meta: Mapping[str, str], *, ttl: int | None = None) -> None:
    """Write a conversation's metadata and every index entry at once (benchmarks, imports)."""
    meta = dict(meta)
    found = terms(meta.get("name"), meta.get("phone"), meta.get("email"))
    meta["ix_src"] = term_source(meta)
    key = f"{PREFIX}:c:{{{cid}}}:meta"
    pipe.hset(key, mapping=meta)
    if ttl:
        pipe.expire(key, ttl)
    score = float(meta.get("activity") or time.time())
    part = partitions.of(meta)
    pipe.zadd(partitions.key(part), {cid: score})
    pipe.sadd(partitions.REGISTRY, part)
    for k in filter_keys(meta):
        pipe.sadd(k, cid)
    if found:
        pipe.zadd(SEARCH_KEY, {f"{t}\0{cid}": 0 for t in found})


# ---------------------------------------------------------------------- reading
@dataclass(slots=True)
class Filters:
    status: str | None = None
    channel: str | None = None
    bot: str | None = None
    waiting: bool = False

    def keys(self) -> list[str]:
        """The sets the listed conversations are in (the channel and bot: their partitions)."""
        out = []
        if self.status and self.status != DERIVED_STATUS:
            out.append(status_key(self.status))
        if self.waiting:
            out.append(WAITING_KEY)
        return out

    def excluded(self) -> list[str]:
        """The sets the listed conversations are in none of (``DERIVED_STATUS``)."""
        if self.status != DERIVED_STATUS:
            return []
        return [status_key(s) for s in STATUSES if s != DERIVED_STATUS]

    def match(self, meta: Mapping[str, str]) -> bool:
        return ((not self.status or (meta.get("status") or "idle") == self.status)
                and (not self.channel or meta.get("channel") == self.channel)
                and (not self.bot or meta.get("bot") == self.bot)
                and (not self.waiting or is_waiting(meta)))


@dataclass(slots=True)
class Page:
    rows: list[tuple[str, float, dict[str, str]]] = field(default_factory=list)
    next_before: float | None = None  # with next_before_id: the last row, the next page starts after it
    next_before_id: str | None = None
    truncated: bool = False  # a search token matched more than SEARCH_CAP index entries



#: Members a listing's script looks at, at most, before it hands back where to go on (a page
#: of the derived status walks past the other statuses' members); pages read at most ``_ROUNDS``
#: times (a short page then says where the next one starts: ``Page.next_before``).
_BUDGET = 2000
_ROUNDS = 50


class ConversationIndex:
    def __init__(self, redis: Redis, *, plan: str = "") -> None:
        self.redis = redis
        self._page = redis.register_script(partitions.PAGE)
        self._score = redis.register_script(partitions.SCORE)
        self._drop = redis.register_script(partitions.DROP_IF)
        self._plan = plan  # the page script's plan: chosen by the sets' sizes ("merge", "score": tests)

    async def metas(self, cids: Iterable[str]) -> list[dict[str, str]]:
        cids = list(cids)
        pipe = self.redis.pipeline(transaction=False)
        for cid in cids:
            pipe.hgetall(f"{PREFIX}:c:{{{cid}}}:meta")
            preview.read(pipe, cid)
        found = await pipe.execute()
        # without the state's chunks, with the fields the id and the state hold, the preview
        metas = [statefields.split(raw, cid)[0] for cid, raw in zip(cids, found[0::2], strict=True)]
        tails = [preview.tail_of(raw, listed) for raw, listed in zip(found[0::2], found[1::2], strict=True)]
        await preview.fill_all(self.redis, list(zip(cids, metas, strict=True)), tails)
        return metas

    async def _forget(self, entries: list[tuple[str, str, float]], keys: Iterable[str]) -> None:
        """Drop ``(conversation, partition label, score met)`` entries of expired conversations a
        listing met (from the filter sets ``keys`` too, if any; one back since stays in them)."""
        if not entries:
            return
        await self._drop_if(entries)
        cids = [cid for cid, _, _ in entries]
        keys = set(keys)
        if not keys:
            return
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.srem(key, *cids)
        await pipe.execute()
        # A conversation back meanwhile (its save's SADD before the SREM) is put back in its sets.
        pipe = self.redis.pipeline(transaction=False)
        for cid, meta in zip(cids, await self.metas(cids), strict=True):
            if meta:
                for key in keys.intersection(filter_keys(meta)):
                    pipe.sadd(key, cid)
        if len(pipe):
            await pipe.execute()

    async def _drop_if(self, entries: list[tuple[str, str, float]]) -> None:
        """``ZREM`` each entry from its partition if its score is still the one met (``DROP_IF``)."""
        if entries:
            await self._drop(keys=[partitions.key(part) for _, part, _ in entries],
                             args=[v for cid, _, score in entries for v in (cid, repr(score))])

    async def _repair(self, stale: list[tuple[str, str, float, dict[str, str]]],
                      newer: list[tuple[str, str, float, dict[str, str]]]) -> None:
        """Move ``stale`` entries met in a partition their metadata does not name into the one it
        names (``ZADD GT``: a newer entry there stays): an expired conversation back left its
        earlier entry, a start's move may have guessed wrong from stale sets. A save moving it
        meanwhile leaves at worst another such entry, repaired by the next listing that meets it.
        ``newer`` entries (newer than the metadata's activity) stay where they are (a save whose
        metadata is still on its way, on a cluster) but the conversation is put in the partition
        its metadata names if it is in none there (``ZADD NX``): a save refused after losing its
        lock still ran its activity script, which may have moved it out of that partition."""
        if not stale and not newer:
            return
        pipe = self.redis.pipeline(transaction=False)
        for cid, _, _, meta in stale:
            right = partitions.of(meta)
            pipe.zadd(partitions.key(right), {cid: float(meta.get("activity") or 0)}, gt=True)
            pipe.sadd(partitions.REGISTRY, right)
        for cid, _, _, meta in newer:
            right = partitions.of(meta)
            pipe.zadd(partitions.key(right), {cid: float(meta["activity"])}, nx=True)
            pipe.sadd(partitions.REGISTRY, right)
        await pipe.execute()
        await self._drop_if([(cid, part, score) for cid, part, score, _ in stale])  # (unless moved back)

    async def _scored(self, every: list[str], chosen: set[str], cids: list[str]) -> list[tuple[Any, int, int]]:
        """Per candidate: its newest score in a partition the search reads ('' if none), that
        partition's number in ``every`` (0: none), 1 if any partition holds it (0: expired, its
        terms go). A candidate whose id holds its channel is looked up in that channel's
        partitions first (one script a channel), in the others only if in none of those: a
        broad search's thousands of candidates looked up in every partition held Redis for
        tens of ms (45 partitions, 5,000 candidates: 70-80 ms in one script, now 5 ms a script)."""
        out: list[tuple[Any, int, int]] = [(b"", 0, 0)] * len(cids)

        async def look(parts: list[int], members: list[int]) -> None:
            flat = await self._score(keys=[partitions.key(every[n]) for n in parts], args=[
                len(parts), *(int(every[n] in chosen) for n in parts), *(cids[i] for i in members)])
            for j, i in enumerate(members):
                raw, part, listed = flat[3 * j:3 * j + 3]
                out[i] = (raw, parts[int(part) - 1] + 1 if int(part) else 0, int(listed))

        groups: dict[str | None, list[int]] = {}
        for i, cid in enumerate(cids):
            groups.setdefault(id_fields(cid).get("channel"), []).append(i)
        for channel, members in groups.items():
            parts = [n for n, p in enumerate(every) if channel is None or partitions.split(p)[0] == channel]
            if parts:
                await look(parts, members)
        again = [i for channel, members in groups.items() if channel is not None for i in members if not out[i][2]]
        if again and every:  # in none of its channel's partitions: expired, or in another channel's
            await look(list(range(len(every))), again)
        return out

    async def _drop_terms(self, cids: list[str], found: Mapping[str, list[bytes]]) -> None:
        members = [m for c in cids for m in found.get(c, ())]
        if members:
            await self.redis.zrem(SEARCH_KEY, *members)

    async def page(self, filters: Filters, *, search: str | None = None, before: float | None = None,
                   before_id: str | None = None, limit: int = 50) -> Page:
        """A page after the row (``before``, ``before_id``): score descending, then id descending
        (Redis' order). ``before`` alone (an older client's cursor) starts below that score."""
        every = await partitions.labels(self.redis)
        if before is None:
            before_id = None
        if search and search.strip():
            return await self._search(filters, every, query_tokens(search), before, before_id, limit)
        labels = partitions.chosen(every, filters.channel, filters.bot)
        out = Page()
        if not labels:
            return out
        keys, excluded = filters.keys(), filters.excluded()
        script_keys = [*map(partitions.key, labels), *keys, *excluded, partitions.REGISTRY]
        listed: set[str] = set()
        start = "+inf" if before is None else repr(before) if before_id is not None else f"({before!r}"
        after = before_id or ""
        for _ in range(_ROUNDS):  # more than one when entries were dropped or the budget ran out
            want = limit - len(out.rows)
            found, go_on, go_on_id = await self._page(keys=script_keys, args=[
                len(labels), len(keys), len(excluded), start, want, _BUDGET, self._plan, after, *labels])
            rows = [(replies.text(found[i]), float(found[i + 1]), labels[int(found[i + 2]) - 1])
                    for i in range(0, len(found), 3)]
            expired: list[tuple[str, str, float]] = []
            stale: list[tuple[str, str, float, dict[str, str]]] = []
            newer: list[tuple[str, str, float, dict[str, str]]] = []
            metas = await self.metas(c for c, _, _ in rows)
            for (cid, score, part), meta in zip(rows, metas, strict=True):
                if not meta:
                    expired.append((cid, part, score))
                elif partitions.of(meta) != part:  # not its partition: stale if older than its activity
                    # (to the millisecond the metadata keeps it: an index score has full precision)
                    if float(f"{score:.3f}") <= float(meta.get("activity") or 0):
                        stale.append((cid, part, score, meta))
                    elif meta.get("activity"):
                        newer.append((cid, part, score, meta))
                elif cid not in listed and filters.match(meta):  # an index a lost lock left is not trusted
                    listed.add(cid)
                    out.rows.append((cid, score, meta))
            await self._forget(expired, keys)
            await self._repair(stale, newer)
            if len(out.rows) >= limit:
                break
            if replies.text(go_on):  # the budget ran out: go on after the last member it met
                start, after = repr(float(go_on)), replies.text(go_on_id)
            elif len(rows) < want:
                break
            else:  # rows dropped (expired, stale, filtered): go on after the last one met
                start, after = repr(rows[-1][1]), rows[-1][0]
            last = rows[-1] if rows else None
            if last and (after, float(start)) == last[:2] and await self._twin(last, metas[-1], listed, filters):
                out.rows.append((rows[-1][0], rows[-1][1], metas[-1]))
                if len(out.rows) >= limit:
                    break
        else:  # rounds spent on entries not listed: the client reads on from where they ended
            out.next_before, out.next_before_id = float(start), after
        if len(out.rows) >= limit:
            out.next_before, out.next_before_id = out.rows[-1][1], out.rows[-1][0]
        return out

    async def _twin(self, row: tuple[str, float, str], meta: dict[str, str], listed: set[str],
                    filters: Filters) -> bool:
        """Whether the round's last row, met in a partition its metadata does not name, is at the
        very same score in the one it names, not listed yet: the cursor (score, id) passes both
        entries, so that one is listed now (the rounds' boundary fell between the two)."""
        cid, score, part = row
        if not meta or cid in listed or partitions.of(meta) == part or not filters.match(meta):
            return False
        if await self.redis.zscore(partitions.key(partitions.of(meta)), cid) != score:
            return False
        listed.add(cid)
        return True

    async def _search(self, filters: Filters, every: list[str], tokens: list[str], before: float | None,
                      before_id: str | None, limit: int) -> Page:
        out = Page()
        if not tokens:
            return out
        pipe = self.redis.pipeline(transaction=False)
        for token in tokens:
            t = token.encode()
            pipe.zrangebylex(SEARCH_KEY, b"[" + t, b"[" + t + b"\xff", start=0, num=SEARCH_CAP)
        found: dict[str, list[bytes]] = {}  # cid -> its matched entries (to drop if expired)
        candidates: set[str] | None = None
        for members in await pipe.execute():
            out.truncated |= len(members) >= SEARCH_CAP
            these: set[str] = set()
            for member in members:
                _, _, cid_b = member.partition(b"\0")
                cid = cid_b.decode()
                these.add(cid)
                found.setdefault(cid, []).append(member)
            candidates = these if candidates is None else candidates & these
        cids = sorted(candidates or ())
        if not cids:
            return out
        keys, excluded = filters.keys(), filters.excluded()
        chosen = set(partitions.chosen(every, filters.channel, filters.bot))
        scored = await self._scored(every, chosen, cids)
        pipe = self.redis.pipeline(transaction=False)
        for key in [*keys, *excluded]:
            pipe.smismember(key, cids)
        checks = await pipe.execute()
        memberships, outside = checks[:len(keys)], checks[len(keys):]
        ranked = []
        unscored = []
        where: dict[str, str] = {}  # cid -> the partition its score is from
        at: dict[str, float] = {}  # cid -> that score
        for i, cid in enumerate(cids):
            raw, part, listed = scored[i]
            if not int(listed):
                unscored.append(cid)
                continue
            if not int(part):
                continue
            score = float(raw)
            where[cid], at[cid] = every[int(part) - 1], score
            if any(not m[i] for m in memberships) or any(m[i] for m in outside):
                continue
            if before is not None and (score > before or (score == before and (before_id is None or cid >= before_id))):
                continue  # (ids compare as Redis orders them: UTF-8's bytes order as its code points)
            ranked.append((float(score), cid))
        if unscored:  # out of the activity index: expired conversations, whose terms go too
            oldest = unscored[:200]
            metas = await self.metas(oldest)
            await self._drop_terms([c for c, meta in zip(oldest, metas, strict=True) if not meta], found)
        ranked.sort(reverse=True)
        for start in range(0, len(ranked), limit):
            chunk = ranked[start:start + limit]
            expired = []
            for (score, cid), meta in zip(chunk, await self.metas(c for _, c in chunk), strict=True):
                if len(out.rows) >= limit:
                    break
                if not meta:
                    expired.append(cid)
                elif filters.match(meta):
                    out.rows.append((cid, score, meta))
            if expired:
                await self._forget([(c, where[c], at[c]) for c in expired], keys)
                await self._drop_terms(expired, found)
            if len(out.rows) >= limit:
                break
        if len(out.rows) >= limit:
            out.next_before, out.next_before_id = out.rows[-1][1], out.rows[-1][0]
        return out


def summary_fields(meta: Mapping[str, str]) -> dict[str, Any]:
    """What the list shows beyond the stored fields: the waiting and unanswered flags, the preview."""
    return {
        "unanswered": meta.get("chat_status") == "unanswered",
        "waiting": is_waiting(meta),
        "preview": ({"role": meta["preview_role"], "text": meta.get("preview", "")}
                    if meta.get("preview_role") else None),
    }


__all__ = [
    "STATUSES",
    "ConversationIndex",
    "Filters",
    "Page",
    "claim_key",
    "filter_keys",
    "is_waiting",
    "normalise",
    "plan_save",
    "query_tokens",
    "seed",
    "summary_fields",
    "terms",
]
