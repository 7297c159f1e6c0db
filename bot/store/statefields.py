"""A conversation's state blob kept in its metadata hash, in fields of at most 63 bytes.

Why: the push that takes the lock reads the metadata anyway (``HGETALL``) and the save writes
it anyway (``HSET``), so a state kept there costs no ``GET`` and no ``SET`` of its own, and the
conversation has one key fewer (its name, its entry in the main and expiry dictionaries). Fields
of at most 64 bytes keep the hash a compact ziplist/listpack under Redis' default
``hash-max-ziplist-value`` (64; ``hash-max-listpack-value`` from Redis 7): one longer value
would turn the whole hash into a hash table, several times its size.

Layout: ``~`` holds the number of chunks k, ``~0`` … ``~<k-1>`` the state's bytes in order. A state
longer than ``INLINE_MAX`` stays in its own key ``sb:c:{<cid>}:state`` and ``~`` is ``-`` (a hash
of a few hundred chunks would outgrow ``hash-max-ziplist-entries`` as well). Chunks beyond k,
left by a longer earlier state, are ignored (at most ``INLINE_MAX`` bytes, until the key expires).

The count is written with a leading ``SYNCED`` (``0``) by versions that keep the metadata's
earliest timer in step with the state (``pushscript.py``): every version reads it as a number.

A compact state (``codec``: ``0xc1 's'``, a map) whose first entries are ``v: 1`` and the id,
channel and account its conversation's id holds (``keys.id_fields``) is kept without them (53 B
for a live chat id: the state's copies of the id, issue 14 aim 3), as ``IMPLIED`` (``0xc1 'i'``),
its map's header, then the entries after them; ``split`` puts them back (``_id_prefix``: the
entries' indexes are codec's, which never change once written). Any other state is kept as it is.

Short names (issue 14 aim 3: bytes): fields the runtime writes on every save are stored under a
short name (``SHORT``: ``activity`` as ``a`` …; also the CRM pointers ``contact_id`` and ``lead_id``,
which every chat's and lead queue's metadata holds: 15 B); readers see the long one (``split``). A field
an older version stored under the long name reads as it is until this version writes the
short one, which then wins (the long one is left until the key expires: never read again).
``last_at`` and ``step_at`` equal to ``activity`` (the save of a customer's message) are stored as
``SAME`` (``tie``: 1 byte, not 14) and read as ``activity``'s value.

Every field whose name starts with ``~`` is data, not metadata (the state's chunks, the dedupe
records ``~d``…, a short transcript's ``~t``…: ``transcriptfields.py``): readers never see it;
``split_turn`` gives the turn the transcript's chunks as well.

Old layout (before issue 14's third wave): no ``~`` field, the state in ``sb:c:{<cid>}:state``.
The first script that takes the conversation's lock (push, acquire, load) moves it into the
hash (``MOVE``) and deletes the key, so the runtime never sees the difference.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from . import codec, replies, statemeta
from .keys import id_fields
from .transcriptfields import COUNT as T_COUNT
from .transcriptfields import UNREAD, Inline, inline_of

#: An ``HGETALL`` reply as redis-py types it (our clients never decode: bytes).
Raw = Mapping[bytes, bytes] | Mapping[bytes | str, bytes | str]

#: Bytes per chunk: one below Redis' default ``hash-max-ziplist-value`` (64), as the transcript's
#: (``transcriptfields.CHUNK``: a byte less a chunk); 64-byte chunks, as older versions cut them,
#: read alike.
CHUNK = 63
#: A state up to this long is kept in the hash (33 chunks); a longer one in its own key.
INLINE_MAX = 2048
#: The field holding the chunk count (``-``: the state is in its own key), and the chunks' prefix.
COUNT = "~"
IN_KEY = "-"
#: Leads the chunk count when the state was written by a version that keeps the metadata's
#: earliest timer (``pushscript.WAKE_FIELD``) in step with it: ``05``, read as 5 by every
#: version. An older version's save writes the count without it, so the push trusts that field
#: only behind this mark.
SYNCED = "0"
#: Set when the channel sent ``keys.ID_FIELDS`` as the conversation id holds them: they are not
#: stored, ``split`` fills them in from the id.
ID_IMPLIED = "~i"

#: ``st_move(meta, statekey, count)``: a conversation's state as the lock taker reads it (false:
#: none). ``count`` is its ``~`` field (false: absent, the old layout: the key's state, if any, is
#: moved into the hash and the key deleted; ``-``: read from the key). From the hash the state is
#: assembled in Python (the chunks come with the metadata), so this returns false then.
MOVE = f"""
local function st_move(meta, statekey, count)
  if count == '{IN_KEY}' then return redis.call('GET', statekey) end
  if count then return false end
  local s = redis.call('GET', statekey)
  if not s or #s > {INLINE_MAX} then return s end
  local kv, k = {{}}, 0
  for i = 1, #s, {CHUNK} do
    kv[#kv + 1] = '{COUNT}' .. k; kv[#kv + 1] = string.sub(s, i, i + {CHUNK} - 1); k = k + 1
  end
  kv[#kv + 1] = '{COUNT}'; kv[#kv + 1] = tostring(k)
  redis.call('HSET', meta, unpack(kv))
  redis.call('DEL', statekey)
  return s
end
local function st_count(flat)
  for i = 1, #flat, 2 do if flat[i] == '{COUNT}' then return flat[i + 1] end end
  return false
end
"""


#: The stored name of a metadata field written on every save (see the module docstring). ``ttl_at``
#: is written by the push script (``pushscript.py``), as ``r``, in seconds (it was ms).
SHORT = {"ttl_at": "r", "last_at": "l", "step_at": "s", "activity": "a", "waiting_since": "ws", "ix_src": "x",
         "contact_id": "c", "lead_id": "ld"}
_LONG = {short.encode(): name for name, short in SHORT.items() if name != "ttl_at"}
_RENAMED = frozenset({*_LONG, *(name.encode() for name in SHORT if name != "ttl_at"), b"r", b"ttl_at"})


#: A ``TIED`` field's stored value when it equals ``activity``'s.
SAME = "="
TIED = ("last_at", "step_at")


def _untie(meta: dict[str, str]) -> None:
    for name in TIED:
        if meta.get(name) == SAME:
            meta[name] = meta.get("activity", "")


def tie(old: Mapping[str, str], new: Mapping[str, str], writes: dict[str, str]) -> None:
    """A save's ``writes`` with the ``TIED`` fields as stored: ``SAME`` when equal to ``activity``
    (``old``: the metadata as read, ``new``: as computed). Written when the value or its stored
    form changes (``activity`` moved away from an unchanged ``last_at``: written out again)."""
    a_old = old.get("activity", "")
    a_new = new.get("activity", a_old)
    for name in TIED:
        v_old = old.get(name, "")
        v_new = new.get(name, v_old)
        e_new = SAME if v_new and v_new == a_new else v_new
        if v_new != v_old or e_new != (SAME if v_old and v_old == a_old else v_old):
            writes[name] = e_new


def _named(meta: dict[str, str], name: bytes, value: str) -> None:
    """A renamed field into ``meta`` (``SHORT``): this version's name wins over an older one's."""
    long = _LONG.get(name)
    if long is not None:
        meta[long] = value
    elif name == b"r":  # seconds: the push's refresh stamp, read as ``ttl_at`` was (ms)
        meta["ttl_at"] = value + "000"
    elif name == b"ttl_at":
        meta.setdefault("ttl_at", value)
    else:
        meta.setdefault(name.decode(), value)


#: A compact state kept without its id, channel and account (see the module docstring).
IMPLIED = b"\xc1i"
_COMPACT_STATE = b"\xc1s"
#: codec's indexes of ``v``, ``id``, ``channel``, ``account`` (fixed once written: checked at import).
_V, _ID, _CHANNEL, _ACCOUNT = 0x27, 0x16, 0x28, 0x29
if [codec._INDEX[n] for n in ("v", "id", "channel", "account")] != [_V, _ID, _CHANNEL, _ACCOUNT]:
    raise RuntimeError("bot.store.codec's indexes of v, id, channel, account moved: statefields.IMPLIED reads them")


@functools.lru_cache(maxsize=4096)
def _id_prefix(cid: str) -> bytes | None:
    """The entries a compact state of ``cid`` starts with after its map's header (``v: 1``, its
    id, channel and account) when ``cid`` holds them; None for another kind of id."""
    implied = id_fields(cid)
    if not implied:
        return None
    return (bytes((_V, 1, _ID)) + codec.pack(cid) + bytes((_CHANNEL,)) + codec.pack(implied["channel"])
            + bytes((_ACCOUNT,)) + codec.pack(implied["account"]))


def _stored(state: bytes, cid: str) -> bytes:
    """``state`` as the hash keeps it: without the entries ``_id_prefix`` gives, if it has them."""
    if state[:2] != _COMPACT_STATE or not cid:
        return state
    prefix = _id_prefix(cid)
    if prefix is None or not state.startswith(prefix, 3):
        return state
    return IMPLIED + state[2:3] + state[3 + len(prefix):]


def _whole(state: bytes, cid: str) -> bytes:
    """``_stored`` undone."""
    if state[:2] != IMPLIED:
        return state
    prefix = _id_prefix(cid) if cid else None
    if prefix is None:
        raise ValueError(f"a state kept without its id, read without it: {cid!r}")
    return _COMPACT_STATE + state[2:3] + prefix + state[3:]


#: The chunks' field names, built once.
_NAMES = tuple(f"{COUNT}{k}" for k in range(-(-INLINE_MAX // CHUNK)))
_RAW_NAMES = tuple(name.encode() for name in _NAMES)


def fields(state: bytes, cid: str = "") -> list[str | bytes] | None:
    """The hash fields (flat: name, value, …) that hold ``state`` (with ``cid``: without the id's
    entries, ``IMPLIED``); None if it is too long (then it goes to its own key and the fields
    are ``[COUNT, IN_KEY]``)."""
    if len(state) > INLINE_MAX:
        return None
    state = _stored(state, cid)
    out: list[str | bytes] = []
    k = 0
    for k, start in enumerate(range(0, len(state), CHUNK)):
        out += [_NAMES[k], state[start:start + CHUNK]]
    out += [COUNT, f"{SYNCED}{(k + 1) if state else 0}"]
    return out


def split(raw: Raw, cid: str = "", *, held: bool = True) -> tuple[dict[str, str], bytes | None]:
    """An ``HGETALL`` of a conversation's metadata: (the metadata as text, the state in the
    hash or None: absent, or in its own key). With ``cid`` and ``ID_IMPLIED`` set, the fields
    its id holds (``keys.id_fields``: the push did not store them); with ``cid`` of such an id and
    ``held``, the fields the state in the hash holds (``statemeta.py``: not stored beside it)."""
    meta: dict[str, str] = id_fields(cid) if cid and raw.get(ID_IMPLIED.encode()) else {}
    chunks: dict[bytes, bytes] = {}
    for name, value in raw.items():
        field = replies.raw(name)
        if field[:1] == b"~":
            chunks[field] = replies.raw(value)
        elif field in _RENAMED:
            _named(meta, field, replies.text(value))
        else:
            meta[field.decode()] = replies.text(value)
    _untie(meta)
    count = chunks.get(COUNT.encode())
    if count is None or count == IN_KEY.encode():
        return meta, None
    state = _whole(b"".join(chunks[f"{COUNT}{i}".encode()] for i in range(int(count))), cid)
    if held and state and cid and id_fields(cid):
        try:
            decoded = codec.decode_state(state)
        except Exception:  # not an engine's state (nothing to fill in from it): the metadata as stored
            return meta, state
        meta.update(statemeta.fields(decoded))
    return meta, state


def split_flat(flat: list[bytes], cid: str = "") -> tuple[dict[str, str], bytes | None]:
    """``split`` of a script's flat ``HGETALL`` reply (bytes, as the lean client gives them: read
    in one pass, without the map ``split`` takes; anything else goes through ``split``), the
    metadata as stored: the turn that reads it decodes the state itself (``statemeta.fields``)."""
    meta, state, _ = split_turn(flat, cid)
    return meta, state


def split_turn(flat: list[bytes], cid: str = "") -> tuple[dict[str, str], bytes | None, Inline | None]:
    """``split_flat``, and the transcript kept in the hash (``transcriptfields.py``; None: not
    there; ``UNREAD``: a reply ``split`` read, or not as this version writes it)."""
    names, values = flat[0::2], flat[1::2]
    if len(names) != len(values):
        raise ValueError("an HGETALL reply of an odd length")
    try:
        key = tuple(names)
        plan = _FLAT_PLANS.get(key)
        if plan is None:
            plan = _flat_plan(key)
        meta: dict[str, str] = {}
        for i, text in plan:  # the fields that are not chunks, in their order
            if text is None:
                _named(meta, names[i], values[i].decode())
            else:
                meta[text] = values[i].decode()
        chunks = dict(zip(names, values, strict=True))
        count = chunks.get(_COUNT)
        state = None if count is None or count == _IN_KEY else b"".join(
            [chunks[_RAW_NAMES[i] if i < len(_RAW_NAMES) else f"{COUNT}{i}".encode()] for i in range(int(count))])
    except (TypeError, AttributeError):  # not the lean client's reply (str, not bytes): read as a map
        it = iter(flat)
        return *split(dict(zip(it, it, strict=True)), cid, held=False), UNREAD
    _untie(meta)
    if cid and chunks.get(_ID_IMPLIED):
        meta = {**id_fields(cid), **meta}
    tcount = chunks.get(_T_COUNT)
    inline = None if tcount is None else inline_of(tcount, chunks)
    return meta, None if state is None else _whole(state, cid), inline


_COUNT, _IN_KEY, _ID_IMPLIED, _SYNCED = COUNT.encode(), IN_KEY.encode(), ID_IMPLIED.encode(), SYNCED.encode()
_T_COUNT = T_COUNT.encode()

#: How ``split_flat`` reads a reply with a given sequence of field names, worked out once per
#: sequence (a conversation's hash has a few: per message, one lookup instead of a slice, a set
#: lookup and the name's decoding for each of ~15 fields; issue 14 aims 1 and 5): the position of
#: each field that is not a state chunk, in order, with its name as text (None: a renamed one,
#: ``_named``); at most ``_FLAT_PLANS_MAX`` sequences (then forgotten).
_FLAT_PLANS: dict[tuple[bytes, ...], tuple[tuple[int, str | None], ...]] = {}
_FLAT_PLANS_MAX = 512


def _flat_plan(names: tuple[bytes, ...]) -> tuple[tuple[int, str | None], ...]:
    for name in names:
        if type(name) is not bytes:
            raise TypeError("a field name that is not bytes")
    plan = tuple((i, None if name in _RENAMED else name.decode())
                 for i, name in enumerate(names) if name[:1] != b"~")
    if len(_FLAT_PLANS) >= _FLAT_PLANS_MAX:
        _FLAT_PLANS.clear()
    _FLAT_PLANS[names] = plan
    return plan


def unmarked(flat: list[bytes]) -> str | None:
    """The chunk count of ``flat`` (a flat ``HGETALL`` of a state in the hash) with ``SYNCED`` when
    it lacks it (an older version's save): for the next save to write; None when it has it."""
    try:
        count = flat[2 * flat[0::2].index(_COUNT) + 1]
    except ValueError:
        return None
    if type(count) is not bytes or count[:1] == _SYNCED or count == _IN_KEY:
        return None
    return SYNCED + count.decode()


def in_key(raw: Raw) -> bool:
    """Whether the state is in its own key (too long for the hash, or the old layout)."""
    return raw.get(COUNT.encode(), IN_KEY.encode()) == IN_KEY.encode()
