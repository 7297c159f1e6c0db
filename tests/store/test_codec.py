"""The compact form of states and transcript entries (bot/store/codec.py): everything reads back
as written, the engine's names shrink to one byte, maps the engine does not build (variables,
event data) keep their keys, and blobs written plain (before issue 14) read as before."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.engine import effects as fx
from bot.engine import events as ev
from bot.engine.state import ConversationState, Frame, Run, Wait
from bot.engine.transcript import inbound_entry, outbound_entry
from bot.store import codec
from tests.engine.test_state import full_state

SCALAR = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text()
#: Keys of every kind: the engine's names (some with a shape below them), others, and integers.
KEYS = st.sampled_from(["role", "text", "buttons", "list", "sections", "rows", "attachments", "data",
                        "message_id", "client_msg_id", "x"]) | st.text(max_size=6) | st.integers(0, 100)
JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
                    max_leaves=25)


@given(st.dictionaries(KEYS, JSON, max_size=8))
def test_any_entry_reads_back_as_written(entry: dict[Any, Any]) -> None:
    assert codec.unpack(codec.pack_entry(entry)) == entry


@pytest.mark.parametrize("state", [ConversationState("c1"), full_state()])
def test_a_state_reads_back_and_is_smaller(state: ConversationState) -> None:
    blob = codec.encode_state(state)
    assert blob[:1] == codec.COMPACT
    assert codec.decode_state(blob) == state
    assert len(blob) <= len(codec.pack(state.to_dict())) * 0.75
    assert codec.decode_state(codec.pack(state.to_dict())) == state  # a state written before


def test_variables_keep_their_names_and_odd_keys() -> None:
    state = full_state()
    assert state.run is not None
    state.run.vars = {"role": 1, "text": {"kind": 2}, 3: "int key"}
    blob = codec.encode_state(state)
    assert codec.decode_state(blob) == state
    assert b"\xa4role" in blob and b"\xa4kind" in blob  # stored by name, not by the engine's index


def test_a_customer_message_is_smaller_and_its_repeated_id_written_once() -> None:
    msg = ev.InboundMessage(text="do you deliver to Ankara?", message_id="c85624dc7f754560b240514457ad052c")
    entry = inbound_entry(msg, 1796525422.5, client_msg_id=msg.message_id)
    compact, plain = codec.pack_entry(entry), codec.pack(entry)
    assert codec.unpack(compact) == entry == codec.unpack(plain)  # plain (old) blobs read as before
    assert compact.count(bytes.fromhex("c85624dc7f754560b240514457ad052c")) == 1  # once, as its 16 bytes
    assert len(compact) <= len(plain) - 80  # 60 with the id as text


@pytest.mark.parametrize(("message_id", "client_msg_id"), [
    (0, False), (1, True), (1, 1.0), (0.0, -0.0), (True, 1), ("1", 1),
])
def test_a_client_id_equal_to_the_message_id_but_not_the_same_keeps_its_type(message_id: Any,
                                                                             client_msg_id: Any) -> None:
    """A ``client_msg_id`` written once as "the message's id" (``_SAME_ID``) reads back as the
    ``message_id``: only when both are that id's text (``0 == False``, ``1 == 1.0``, ``-0.0 == 0.0``
    must not read back as the other). Compact maps: an entry with other keys, or with a form's
    keys and a value its form cannot write (a token's number as its role)."""
    for entry in ({"role": "user", "text": "hi", "at": 1796582945.5, "message_id": message_id,
                   "client_msg_id": client_msg_id},
                  {"role": -1, "text": "hi", "at": 1796582945.5, "kind": "text", "message_id": message_id,
                   "client_msg_id": client_msg_id}):
        for blob in (codec.pack_entry(entry), codec._pack_entry_map(entry, tuple(entry))):
            back = codec.unpack(blob)
            assert back == entry and repr(back) == repr(entry)
            assert [type(v) for v in back.values()] == [type(v) for v in entry.values()]


def test_a_hex_message_id_is_kept_as_its_bytes_and_an_older_compact_entry_still_reads() -> None:
    hex_id = "7ad3db4a99ee433b8904c4816a07618e"
    entry = inbound_entry(ev.InboundMessage(text="ok thanks", message_id=hex_id), 1796582945.931,
                          client_msg_id=hex_id)
    compact = codec.pack_entry(entry)
    assert bytes.fromhex(hex_id) in compact and hex_id.encode() not in compact
    assert b"user" not in compact and b"text" not in compact  # "user", "text": a one-byte token each
    assert len(compact) == 40  # in its form; 49 as a compact map, 57 with the role and kind as text, 73 with the id too
    assert list(codec.unpack(compact).items()) == list(entry.items())  # the same entry, in its order
    as_map = codec._pack_entry_map(entry, tuple(entry))  # as the compact form wrote it before its forms
    assert len(as_map) == 49 and list(codec.unpack(as_map).items()) == list(entry.items())
    # as the compact form wrote it before: the id as text, "client_msg_id is message_id" (key 71)
    older = codec.COMPACT + b"e" + codec.pack({0: "user", 1: "ok thanks", 2: 1796582945.931, 3: "text",
                                               12: hex_id, 71: None})
    assert codec.unpack(older) == entry
    for other in ("7AD3DB4A99EE433B8904C4816A07618E", hex_id[:31], "lc:" + hex_id):  # not 32 lower-case hex
        kept = dict(entry, message_id=other)
        assert list(codec.unpack(codec.pack_entry(kept)).items()) == list(kept.items())
    both = dict(entry, client_msg_id="0" * 32)  # two different ids: each as its bytes
    assert codec.unpack(codec.pack_entry(both)) == both
    for role in ("user", "bot", "event", "system", "human", "automation", 3, None):  # common or not
        for kind in ("text", "message", "image", b"text"):
            odd = {"role": role, "text": "t", "kind": kind}
            assert list(codec.unpack(codec.pack_entry(odd)).items()) == list(odd.items())
    # values a token or an id's bytes would be read as: the entry is written plain, read as it is
    for odd in ({"role": -1, "text": "t"}, {"kind": -7}, {"step": -32, "ref": "r1:a:m2"},
                {"message_id": bytes(16)}, {"client_msg_id": b"x", "message_id": "m"}):
        blob = codec.pack_entry(odd)
        assert blob[:1] != codec.COMPACT and codec.unpack(blob) == odd


def test_a_crm_event_entry_keeps_its_type_and_source_as_a_token() -> None:
    entry = {"role": "event", "at": 1796583914.797, "id": "gen-zRE9DhF0tczX0Q3f", "type": "lead.created",
             "happened_at": 1796583914.5, "source": "crm", "depth": 0, "data": {"pipeline": "Sales", "type": "x"}}
    compact = codec.pack_entry(entry)
    assert list(codec.unpack(compact).items()) == list(entry.items())
    assert b"lead.created" not in compact and b"crm" not in compact and len(compact) == 46  # 77 as a map, 97 before
    older = codec.COMPACT + b"e" + codec.pack({codec._INDEX.get(k, k): v for k, v in entry.items()})
    assert codec.unpack(older) == entry  # as the compact form wrote it before
    assert codec.unpack(codec._pack_entry_map(entry, tuple(entry))) == entry


@pytest.mark.parametrize("entry", [
    {"ref": "r1:ask:m2", "step": -32.0},  # a float equal to the step token: not the token
    {"step": -32.0},
    {"role": "user", "step": -32, "ref": "r1:ask:m2"},  # the token's number itself: written plain
    {"message_id": bytearray(b"xy")},  # bytes of any type: not an id's 16 bytes
    {"message_id": memoryview(b"xy"), "client_msg_id": "ab"},
    {"role": "user", "message_id": "0123456789abcdef0123456789ABCDEF"},  # upper case: kept as text
])
def test_an_entry_holding_a_tokens_kind_of_value_itself_reads_back_as_written(entry: dict[str, Any]) -> None:
    assert codec.unpack(codec.pack_entry(entry)) == entry


def test_names_appended_to_the_table_skip_the_same_id_key() -> None:
    """``_SAME_ID`` (71) was ``len(_NAMES)`` when it was chosen: a name added later must not be
    written as 71, which every reader takes for "client_msg_id is message_id"."""
    assert codec._SAME_ID not in codec._NAME_OF
    assert sorted(codec._INDEX.values()) == [i + (i >= codec._SAME_ID) for i in range(len(codec._NAMES))]


def test_a_bot_message_with_buttons_is_smaller() -> None:
    button = fx.OutButton(title="Opening hours", payload="fda8c6e0.0", number=1)
    entry = outbound_entry(fx.SendMessage(text="Thanks there, you said: ok", ref="r1:reply:m4", step="reply",
                                          buttons=(button,)), 1796525422.5, bot="demo")
    compact = codec.pack_entry(entry)
    assert list(codec.unpack(compact).items()) == list(entry.items())
    assert compact.count(b"reply") == 1 and b"message" not in compact  # the step: the ref's; the kind: a key
    assert len(compact) <= len(codec.pack(entry)) - 65  # 50 with the step and kind as text
    for ref, step in (("h:m3", ""), ("r1:a:b:m4", "a:b"), ("r1:x:m2", "y"), ("r1:reply:m4", None)):
        odd = {**entry, "ref": ref, "step": step}  # a step the ref does not name is kept as it is
        assert list(codec.unpack(codec.pack_entry(odd)).items()) == list(odd.items())


WAITS = st.none() | st.builds(
    Wait, kind=st.sampled_from(["reply", "pause"]), step=st.text(max_size=4),
    timers=st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
    on=st.lists(st.text(max_size=3), max_size=2).map(tuple), token=st.none() | st.text(max_size=3),
    until=st.none() | st.floats(allow_nan=False), held=st.lists(st.text(max_size=3), max_size=2).map(tuple),
    widget_json=JSON)
FRAMES = st.builds(Frame, bot=st.text(max_size=3), version=st.integers(0, 9), next=st.text(max_size=3),
                   vars=st.dictionaries(KEYS, JSON, max_size=3), json=JSON, last_validation_result=JSON)
RUNS = st.none() | st.builds(
    Run, id=st.text(max_size=3), bot=st.text(max_size=3), version=st.integers(0, 9),
    step=st.none() | st.text(max_size=3), status=st.sampled_from(["running", "waiting", "failed"]),
    vars=st.dictionaries(KEYS, JSON, max_size=3), json=JSON, last_validation_result=JSON, wait=WAITS,
    action_index=st.integers(0, 5), callers=st.lists(FRAMES, max_size=2), error=st.none() | st.text(max_size=5),
    splits=st.lists(st.tuples(st.text(max_size=3), st.text(max_size=3), st.text(max_size=3), st.integers(0, 9),
                              st.text(max_size=3)), max_size=2).map(tuple),
    goals=st.lists(st.text(max_size=3), max_size=2).map(tuple))
#: The engine's maps, and odd ones (integer keys: the whole state is then written plain).
MAPS = st.none() | st.dictionaries(KEYS, JSON, max_size=5) | st.fixed_dictionaries(
    {"text": st.text(max_size=5), "attachments": st.lists(st.dictionaries(KEYS, JSON, max_size=3), max_size=2)})


@given(st.builds(ConversationState, id=st.text(max_size=5), origin=st.none() | st.text(max_size=3),
                 owner_user=st.none() | st.text(max_size=3), run=RUNS, last_message=MAPS,
                 seq=st.integers(0, 99), turn_steps=st.integers(0, 9), crm=MAPS))
def test_a_state_is_written_smaller_than_its_dict_would_be_and_both_read_back(state: ConversationState) -> None:
    """``encode_state`` builds the compact maps straight from the state, smaller than its
    ``to_dict`` shrunk by name (``_pack_compact``, as versions before issue 14 aim 3's state wave
    wrote it): both read back as the state."""
    blob, older = codec.encode_state(state), codec._pack_compact(state.to_dict(), codec._STATE)
    assert len(blob) <= len(older) or blob[:1] != codec.COMPACT  # (plain: a timer id without ``:``)
    assert codec.decode_state(blob).to_dict() == state.to_dict()
    assert codec.decode_state(older).to_dict() == state.to_dict()


SID = "livechat:demo:c1"
#: Timer ids of the conversation's (``<id>:t<n>``) and others: with a ``:``, without, odd ones.
TIMER_IDS = st.sampled_from([f"{SID}:t1", f"{SID}:t22", f"{SID}:x:y", "other:t3", "t4", "", f"{SID}:"])


@given(st.dictionaries(TIMER_IDS, st.text(max_size=3), max_size=3), st.none() | st.floats(allow_nan=False),
       st.dictionaries(TIMER_IDS, st.floats(allow_nan=False) | st.integers(0, 9), max_size=3),
       st.none() | st.sampled_from(["9a88710d17b5433e9922f9fd57c21ccb", "9A88710D17B5433E9922F9FD57C21CCB",
                                    "9a88710d17b5433e9922f9fd57c21cc", "", "x" * 32]) | st.binary(max_size=16))
def test_a_waiting_states_timers_due_times_and_message_id_read_back_as_they_were(
        timers: dict[str, str], until: float | None, due: dict[str, float], message_id: Any) -> None:
    """What the state wave writes shorter (its own timer ids, a due time equal to ``until``, a
    hex id) reads back as it was; what it cannot read back so (an id without ``:``) is written
    plain. Compared by ``to_dict``: timer ids ``tm`` keeps the same way read back alike."""
    run = Run("r1", "demo", 1, "ask", "waiting", wait=Wait("reply", "ask", timers, until=until))
    last = None if message_id is None else {"text": "ok", "id": message_id, "attachments": []}
    state = ConversationState(SID, "livechat", "demo", run=run, last_message=last,
                              timers={t: float(at) for t, at in due.items() if ":" in t})
    back = codec.decode_state(codec.encode_state(state))
    assert back.run == state.run and back.last_message == state.last_message
    assert back.to_dict() == state.to_dict()
    assert codec.unpack(codec.encode_state(state)) == state.to_dict()


def test_an_idle_chats_state_keeps_its_id_once_and_its_message_id_as_bytes() -> None:
    """The bench's idle chat (bench/memory.py --show): a run waiting for a reply with its
    ``no_answer`` timer: the conversation's id is written once (not again in the wait's timer id),
    the timer's due time once, the message id as 16 bytes, no field at its default."""
    until = 1796617811.252618
    hex_id = "49f2acc37e3a491888ff1703d00e14a7"
    state = ConversationState(
        SID, "livechat", "demo", "message", chat_status="answered",
        run=Run("r1", "demo", 1, "reply", "waiting",
                wait=Wait("reply", "reply", {f"{SID}:t7": "no_answer"}, until=until)),
        last_message={"text": "ok thanks", "payload": None, "kind": "text", "id": hex_id, "attachments": [],
                      "start_param": None},
        seq=7, turn_steps=1, crm={"contact_id": "19", "lead_id": "20", "company_id": ""},
        timers={f"{SID}:t7": until})
    blob = codec.encode_state(state)
    assert codec.decode_state(blob) == state
    assert codec.unpack(blob) == state.to_dict() and list(codec.decode_state(blob).last_message or ()) == [
        "text", "payload", "kind", "id", "attachments", "start_param"]
    assert blob.count(SID.encode()) == 1 and hex_id.encode() not in blob and bytes.fromhex(hex_id) in blob
    assert blob.count(codec.pack(until)) == 1
    for value in ("message", "answered", "waiting", "no_answer", "text"):  # tokens (codec.STATE_TOKENS)
        assert value.encode() not in blob
    older = codec._pack_compact(state.to_dict(), codec._STATE)
    assert codec.decode_state(older) == state
    # 267 B -> 131 B (the bench's id: 93 B less); the version before the state's tokens and
    # ``last_message``'s, ``crm``'s and ``tm``'s short forms wrote 190 B, read as it was
    assert len(older) - len(blob) == 136, (len(older), len(blob))
    assert blob.hex() == (
        "c1738c270116b06c697665636861743a64656d6f3a633128a86c6976656368617429a464656d6f2aff2dfc2e8616a2723106a464"
        "656d6f2f0105a57265706c791cf8338303f5ff81a27437f138cb41dac58d94d02ae5fe93a96f6b207468616e6b73eec41049f2ac"
        "c37e3a491888ff1703d00e14a740074101fc92a23139a23230fd01")
    assert codec.decode_state(bytes.fromhex(
        "c1738c270116b06c697665636861743a64656d6f3a633128a86c6976656368617429a464656d6f2aa76d6573736167652da8616e"
        "7377657265642e8616a2723106a464656d6f2f0105a57265706c791ca777616974696e67338303a57265706c79ff81a27437a96e"
        "6f5f616e7377657238cb41dac58d94d02ae53e8601a96f6b207468616e6b7309c003a474657874ffc41049f2acc37e3a491888ff"
        "1703d00e14a70e903fc040074101428343a2313944a2323045a0a2746d81a27437c0")) == state
    other = dataclasses.replace(state, last_message={**(state.last_message or {}), "payload": "x"})
    assert codec.decode_state(codec.encode_state(other)) == other  # not the customer message's form: a map


@pytest.mark.parametrize(("crm", "timers"), [
    ({"contact_id": "19", "lead_id": "20", "company_id": "7"}, {f"{SID}:t7": 5.0}),  # [contact, lead, company]
    ({"lead_id": "20", "contact_id": "19", "company_id": ""}, {f"{SID}:t7": 5.0, f"{SID}:t8": 5.0}),  # a map
    ({"contact_id": 19, "lead_id": "20", "company_id": ""}, {f"{SID}:t7": 6.0}),  # a due time of its own
    ({"contact_id": "19", "lead_id": "20"}, {}),  # no timers
    ({"contact_id": "19", "lead_id": "20", "company_id": None}, {"other:t7": 5.0}),  # another's timer
])
def test_a_states_crm_and_timers_in_or_out_of_their_short_forms_read_back(crm: dict[str, Any],
                                                                          timers: dict[str, float]) -> None:
    """``crm`` as the turn makes it is written as a list, the timers that are the wait's own, due
    at its ``until``, not at all; anything else as before, all reading back as it was."""
    wait = Wait("reply", "ask", {f"{SID}:t7": "no_answer"}, until=5.0)
    state = ConversationState(SID, "livechat", "demo", run=Run("r1", "demo", 1, "ask", "waiting", wait=wait),
                              crm=crm, timers=timers)
    back = codec.decode_state(codec.encode_state(state))
    assert back == state and list(back.crm or ()) == list(crm) and list(back.timers) == list(timers)
    assert codec.unpack(codec.encode_state(state)) == state.to_dict()


@pytest.mark.parametrize("field", ["origin", "chat_status", "status", "kind", "purpose", "last_kind"])
def test_a_state_holding_a_number_a_token_reads_as_is_written_plain(field: str) -> None:
    """At a token's place (``codec.STATE_TOKENS``) a state holding such a number itself is written
    plain (it would read back as the token's value); other numbers are written as they are
    (``last_message``'s kind: not its list form, then a map as before the tokens)."""
    for value, plain in ((-1, True), (-32, True), (0, False), (-33, False), (True, False)):
        wait = Wait(value if field == "kind" else "reply", "ask",  # type: ignore[arg-type]
                    {f"{SID}:t1": value if field == "purpose" else "no_answer"}, until=5.0)
        run = Run("r1", "demo", 1, "ask", value if field == "status" else "waiting", wait=wait)  # type: ignore[arg-type]
        state = ConversationState(
            SID, "livechat", "demo", value if field == "origin" else None,  # type: ignore[arg-type]
            chat_status=value if field == "chat_status" else "answered", run=run,  # type: ignore[arg-type]
            last_message={"text": "hi", "payload": None, "kind": value if field == "last_kind" else "text",
                          "id": None, "attachments": [], "start_param": None})
        blob = codec.encode_state(state)
        assert (blob[:2] != b"\xc1s") is (plain and field != "last_kind"), (field, value)  # (there: a map)
        assert codec.decode_state(blob).to_dict() == state.to_dict()


@given(st.builds(ConversationState, id=st.text(max_size=5), origin=st.none() | st.text(max_size=3),
                 owner_user=st.none() | st.text(max_size=3), run=RUNS, last_message=MAPS,
                 seq=st.integers(0, 99), turn_steps=st.integers(0, 9), crm=MAPS))
def test_a_compact_state_is_read_as_its_dict_would_be(state: ConversationState) -> None:
    """``decode_state`` builds a compact state straight from its maps: the state ``from_dict``
    makes of the blob's maps renamed (``unpack``), field for field."""
    blob = codec.encode_state(state)
    assert codec.decode_state(blob) == ConversationState.from_dict(codec.unpack(blob))


def test_a_field_the_encoder_does_not_know_stops_the_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """A field added to the state and not to ``_compact_state`` would go unsaved: refused at import."""
    monkeypatch.setitem(codec._STATE_FIELDS, Wait, ("kind", "step"))
    with pytest.raises(RuntimeError, match="encodes Wait"):
        codec._check_fields()


@given(JSON)
def test_pack_writes_what_packb_writes_after_a_failure_and_in_other_threads(value: Any) -> None:
    """``pack`` keeps a packer per thread (issue 14: CPU): its bytes are ``packb``'s, a value that
    failed half-way leaves nothing behind, and another thread's packer is its own."""
    import threading

    import msgpack

    expected = msgpack.packb(value, use_bin_type=True)
    with pytest.raises(TypeError):
        codec.pack(["half", "way", object()])
    assert codec.pack(value) == expected
    seen: list[bytes] = []
    thread = threading.Thread(target=lambda: seen.append(codec.pack(value)))
    thread.start()
    thread.join()
    assert seen == [expected]


def test_the_key_sets_remembered_are_bounded_and_change_no_byte() -> None:
    """``_shrink`` and ``pack_entry`` remember each set of keys' indexes (issue 14: CPU), the reader
    each set's names, at most ``_KEY_SETS_MAX`` each: an entry writes the same bytes and reads the
    same the first time, from memory, and once the memory was emptied."""
    entry = {"role": "bot", "text": "hi", "buttons": [{"title": "a", "payload": "p"}], "x": 1}
    first = codec.pack_entry(entry)
    assert codec.pack_entry(entry) == first
    assert list(codec.unpack(first).items()) == list(entry.items())
    for i in range(codec._KEY_SETS_MAX + 1):
        assert codec.unpack(codec.pack_entry({"role": "bot", f"k{i}": i, "buttons": [{f"b{i}": i}]})) == {
            "role": "bot", f"k{i}": i, "buttons": [{f"b{i}": i}]}
    for remembered in (codec._KEY_INDEXES, codec._ENTRY_PLANS, codec._READ_PLANS):
        assert 0 < len(remembered) <= codec._KEY_SETS_MAX
    assert codec.pack_entry(entry) == first
    assert list(codec.unpack(first).items()) == list(entry.items())
    assert codec.unpack(codec.pack_entry({"role": "bot", 1: "one"})) == {"role": "bot", 1: "one"}  # written plain


def test_the_state_codec_imported_first_is_whole_and_so_is_codec() -> None:
    """``statecodec`` and ``codec`` (which re-exports its names) import either first in a fresh
    interpreter (no import cycle: both stand on ``compactmaps``; ``tests/test_architecture.py``)."""
    import subprocess
    import sys

    script = ("from bot.store import statecodec\nfrom bot.store import codec\n"
              "from bot.engine.state import ConversationState\n"
              "assert codec.encode_state is statecodec.encode_state and codec.STATE_TOKENS is statecodec.STATE_TOKENS\n"
              "blob = codec.encode_state(ConversationState('c1'))\n"
              "assert codec.unpack(blob) == ConversationState('c1').to_dict() == codec.decode_state(blob).to_dict()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
