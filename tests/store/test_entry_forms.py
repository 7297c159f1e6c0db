"""Transcript entries in their forms (bot/store/entryforms.py, issue 14 aim 3): every entry
reads back as exactly the dict it was written from (same keys in the same order, same types, floats
bit for bit), whether its values fit its form's ways or not; entries written before the forms
(compact maps, plain msgpack) read as they did."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.engine import effects as fx
from bot.engine import events as ev
from bot.engine.transcript import inbound_entry, outbound_entry
from bot.store import codec, entryforms


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types (``True`` is not ``1``, ``1.0`` not ``1``), floats bit for bit,
    maps in the same order."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return struct.pack("<d", a) == struct.pack("<d", b)
    if type(a) is dict:
        return len(a) == len(b) and all(same(ka, kb) and same(va, vb)
                                        for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True))
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


NOW = 1796616698.0005367
#: Times near now (the ways' common case), odd floats, and other types.
TIMES = (st.floats(NOW - 100, NOW + 100) | st.floats(allow_nan=True, allow_infinity=True)
         | st.sampled_from([0.0, -0.0, NOW, NOW - 0.0134, 1e300, 5e-324]) | st.integers(-5, 2**40)
         | st.none() | st.booleans())
HEX_IDS = st.binary(min_size=16, max_size=16).map(bytes.hex)
GEN_IDS = st.binary(min_size=12, max_size=12).map(lambda b: "gen-" + base64.urlsafe_b64encode(b).decode())
ODD = (st.none() | st.booleans() | st.integers(-40, 40) | st.floats() | st.text(max_size=6)
       | st.binary(max_size=17) | st.lists(st.integers(0, 3), max_size=2))
IDS = HEX_IDS | HEX_IDS.map(str.upper) | GEN_IDS | st.just("gen-" + "A" * 15 + "=") | ODD
TOKENS = st.sampled_from(sorted(entryforms.TOKEN_OF)) | ODD
PAYLOADS = (st.tuples(st.binary(min_size=4, max_size=4), st.integers(0, 300)).map(lambda t: f"{t[0].hex()}.{t[1]}")
            | st.sampled_from(["fda8c6e0.0", "fda8c6e0.01", "FDA8C6E0.1", "fda8c6e0.", "fda8c6e0x1", "zzzzzzzz.1",
                               "fda8c6e0.²"]) | ODD)
BUTTON = st.fixed_dictionaries({"title": st.text(max_size=5) | ODD, "payload": PAYLOADS,
                                "url": st.none() | st.just("https://x"), "number": st.integers(0, 3) | ODD})
BUTTONS = (st.lists(BUTTON, max_size=3) | st.lists(st.dictionaries(st.text(max_size=3), ODD, max_size=2), max_size=2)
           | ODD)
DATA = st.dictionaries(st.sampled_from(entryforms.DATA_NAMES) | st.text(max_size=4) | st.integers(0, 12), ODD,
                       max_size=4) | ODD
REFS = st.sampled_from(["r1:reply:m4", "r1:a:b:m4", "h:m3", ""]) | ODD
#: Values for each key: the kinds the ways make smaller and everything they must leave as it is.
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "role": TOKENS, "kind": TOKENS, "type": TOKENS, "source": TOKENS, "text": ODD, "at": TIMES,
    "happened_at": TIMES, "message_id": IDS, "client_msg_id": IDS, "id": IDS, "ref": REFS,
    "step": st.sampled_from(["reply", "a", "", None]) | ODD, "bot": ODD, "buttons": BUTTONS, "depth": ODD,
    "data": DATA, "event": ODD, "status": ODD}


@st.composite
def form_entries(draw: st.DrawFn) -> dict[str, Any]:
    names, fixed = draw(st.sampled_from(entryforms.FORMS))
    entry = {name: draw(st.just(fixed[name]) | VALUES[name] if name in fixed else VALUES[name]) for name in names}
    if "client_msg_id" in entry and draw(st.booleans()):
        entry["client_msg_id"] = entry["message_id"]
    if "step" in entry and type(entry["ref"]) is str and draw(st.booleans()):
        entry["step"] = entryforms.ref_step(entry["ref"])
    if "step" in entry and type(entry["step"]) is str and draw(st.booleans()):
        entry["ref"] = draw(st.sampled_from(["r{}:{}:m{}", "r0{}:{}:m{}", "r{}:{}:m0{}", "r{}:{}:m{}:m1"])).format(
            draw(st.integers(0, 10**10)), entry["step"], draw(st.integers(0, 10**10)))
    return entry


@given(form_entries())
def test_an_entry_with_a_forms_keys_reads_back_exactly(entry: dict[str, Any]) -> None:
    blob = codec.pack_entry(entry)
    assert same(codec.unpack(blob), entry)
    assert same(codec.unpack(codec._pack_entry_map(entry, tuple(entry))), codec.unpack(codec.pack(entry)))


@given(form_entries())
def test_an_entry_as_written_before_the_forms_still_reads(entry: dict[str, Any]) -> None:
    """A compact map (written before the forms) and plain msgpack (before the compact maps) read
    as they did: as the plain one reads (msgpack's own types)."""
    plain = codec.pack(entry)
    assert same(codec.unpack(codec._pack_entry_map(entry, tuple(entry))), codec.unpack(plain))


def bench_entries() -> list[dict[str, Any]]:
    """bench/memory.py's idle conversation: a customer's message, the bot's reply, the lead's events."""
    hex_id = "7f1d216a9a604f5a9e55d13927f9b855"
    button = fx.OutButton(title="Opening hours", payload="fda8c6e0.0", number=1)
    return [
        inbound_entry(ev.InboundMessage(text="hello there, I have a question", message_id=hex_id), NOW,
                      client_msg_id=hex_id),
        outbound_entry(fx.SendMessage(text="Thanks there, you said: do you deliver to Ankara?", ref="r1:reply:m4",
                                      step="reply", buttons=(button,)), NOW, bot="demo"),
        {"role": "event", "at": 1796616933.7905285, "id": "gen-KP4gUE74Ls5THX0q", "type": "lead.created",
         "happened_at": 1796616933.7770815, "source": "crm", "depth": 0,
         "data": {"pipeline": "Sales", "stage": "Incoming"}},
        {"role": "event", "at": 1796616933.7905524, "id": "gen-u6Vt6s-HmuVoI85d", "type": "contact.created",
         "happened_at": 1796616933.777101, "source": "crm", "depth": 0, "data": {"contact": "119"}},
    ]


def test_the_common_entries_are_written_in_their_forms_and_smaller() -> None:
    sizes = []
    for entry in bench_entries():
        blob = codec.pack_entry(entry)
        assert blob[:1] == codec.COMPACT and 0 < blob[1] < entryforms.FORMS_END
        assert same(codec.unpack(blob), entry)
        sizes.append((len(blob), len(codec._pack_entry_map(entry, tuple(entry)))))
    assert sizes == [(61, 70), (93, 124), (47, 85), (35, 67)]  # (in its form, as a compact map)


def test_a_buttons_payload_the_flow_gave_it_is_written_as_no_bytes_and_older_ones_read() -> None:
    """A button's payload that the flow compiler gives that button of the entry's step
    (``<crc32 of the step>.<index>``) is written as 0 bytes and read back from the step; the
    5 bytes written before (and another step's payload) read as they did."""
    reply = bench_entries()[1]
    blob = codec.pack_entry(reply)
    assert blob.endswith(bytes.fromhex("92ad") + b"Opening hours" + entryforms.FLOW_PAYLOAD.join([b"\xc4", b"\x00"]))
    assert same(codec.unpack(blob), reply)
    before = bytes.fromhex(blob[:-2].hex() + "c405fda8c6e000")  # the version before: the payload's 5 bytes
    assert same(codec.unpack(before), reply)
    for step, payload, number in (("ask", "fda8c6e0.0", 1), ("reply", "fda8c6e0.1", 1), ("reply", "fda8c6e0.1", 2)):
        entry = {**reply, "ref": f"r1:{step}:m4", "step": step,
                 "buttons": [{"title": "a", "payload": "fda8c6e0.0", "url": None, "number": 1},
                             {"title": "b", "payload": payload, "url": None, "number": 2}][:number]}
        blob = codec.pack_entry(entry)
        assert same(codec.unpack(blob), entry)
        assert blob.count(b"\xc4\x00") == (step == "reply") + (step == "reply" and number == 2)


@pytest.mark.parametrize("change", [
    {"client_msg_id": "other"},  # not the message's id: as its own value
    {"happened_at": 1796616933},  # an integer where a tick count is read: written as a map
    {"happened_at": 1.5},  # too far before ``at``: as it is
    {"id": b"\x00" * 12},  # bytes where an id's are read: written as a map
    {"step": None, "ref": "r1:reply:m4"},  # nil where the ref's step is read: written as a map
    {"buttons": [{"title": "a", "payload": "p", "url": "https://x", "number": 1}]},  # a link: written as a map
    {"buttons": [{"title": "a", "payload": "00000000.1", "url": None, "number": 2}]},  # numbered otherwise
    {"data": {1: "x"}},  # a key that is not a string
    {"role": -2},  # a token's number itself
])
def test_a_value_a_way_cannot_write_leaves_the_entry_as_written(change: dict[str, Any]) -> None:
    for entry in bench_entries():
        odd = {**entry, **{k: v for k, v in change.items() if k in entry}}
        assert same(codec.unpack(codec.pack_entry(odd)), odd)


@given(st.text(max_size=12) | PAYLOADS, st.sampled_from(["fda8c6e0.", "0123abcd.", ""]),
       st.sampled_from(["²", "١", "٣٤", "01", "256", "255", "9", " 1", "1 "]) | st.text(max_size=4))
def test_a_buttons_payload_of_any_text_reads_back(payload: Any, head: str, tail: str) -> None:
    """Payloads the runtime's buttons hold (url None, numbered by place): any text, hex heads with
    any tail (other digits than ASCII's, leading zeros, numbers past a byte)."""
    for p in (payload, head + tail):
        entry = {**bench_entries()[1], "buttons": [{"title": "a", "payload": p, "url": None, "number": 1}]}
        assert same(codec.unpack(codec.pack_entry(entry)), entry)


def test_a_form_is_never_renumbered() -> None:
    """The forms' numbers are written in every entry: the first ones stay where they are."""
    assert entryforms.FORMS[0] == (("role", "text", "at", "kind", "message_id", "client_msg_id"),
                               {"role": "user", "kind": "text"})
    assert entryforms.FORMS[7] == (("role", "at", "id", "type", "happened_at", "source", "depth", "data"),
                               {"role": "event", "source": "crm", "depth": 0})
    assert entryforms.DATA_NAMES[:3] == ("pipeline", "stage", "contact")
    assert len(entryforms.FORMS) < entryforms.FORMS_END
    assert min(codec._SHAPES)[0] >= entryforms.FORMS_END  # below every other compact kind's byte (b"e", b"s")
    assert min(b"i"[0], b"r"[0]) >= entryforms.FORMS_END  # the metadata's state, the CRM's records


#: ``bench_entries()`` as the code before the forms wrote them (compact maps, 029c6eb's
#: ``pack_entry``, hex): what an idle conversation's transcript holds when this version starts.
BEFORE_FORMS = (
    ("c1658600ff01be68656c6c6f2074686572652c204920686176652061207175657374696f6e02cb41dac58c7e8008cb03fa0cc410"
     "7f1d216a9a604f5a9e55d13927f9b85547c0"),
    ("c1658800fe01d9315468616e6b732074686572652c20796f7520736169643a20646f20796f752064656c6976657220746f20416e"
     "6b6172613f02cb41dac58c7e8008cb03f904ab72313a7265706c793a6d3405e006a464656d6f07918408ad4f70656e696e672068"
     "6f75727309aa66646138633665302e300ac00b01"),
    ("c1658800fd02cb41dac58cb972980516b467656e2d4b503467554537344c733554485830711df71ecb41dac58cb971bbb41ff820"
     "002182a8706970656c696e65a553616c6573a57374616765a8496e636f6d696e67"),
    ("c1658800fd02cb41dac58cb972986916b467656e2d7536567436732d486d75566f493835641df61ecb41dac58cb971bc061ff820"
     "002181a7636f6e74616374a3313139"),
)


def test_entries_written_before_the_forms_read_as_they_did() -> None:
    for blob, entry in zip(BEFORE_FORMS, bench_entries(), strict=True):
        assert same(codec.unpack(bytes.fromhex(blob)), entry)
        assert same(codec.unpack(codec.pack(entry)), entry)  # plain msgpack (before the compact maps)


#: The tables as first written (fifth wave of issue 14): every blob in a form names them by number.
_USER = ("role", "text", "at", "kind")
_BOT = ("role", "text", "at", "kind", "ref", "step")
_EVENT = ("role", "at", "id", "type", "happened_at", "source", "depth", "data")
_RECEIPT = ("role", "event", "status", "ref", "text", "at")
PINNED_FORMS: tuple[entryforms.Form, ...] = (
    ((*_USER, "message_id", "client_msg_id"), {"role": "user", "kind": "text"}),  # 1
    ((*_USER, "message_id"), {"role": "user", "kind": "text"}),
    (_USER, {"role": "user", "kind": "text"}),
    ((*_BOT, "bot", "buttons"), {"role": "bot", "kind": "message"}),  # 4
    ((*_BOT, "bot"), {"role": "bot", "kind": "message"}),
    ((*_BOT, "buttons"), {"role": "bot", "kind": "message"}),
    (_BOT, {"role": "bot", "kind": "message"}),
    (_EVENT, {"role": "event", "source": "crm", "depth": 0}),  # 8
    (_RECEIPT, {"role": "system", "event": "delivery"}),  # 9
    ((*_USER, "message_id", "client_msg_id"), {}),  # 10
    ((*_USER, "message_id"), {}),
    (_USER, {}),
    ((*_BOT, "bot", "buttons"), {}),  # 13
    ((*_BOT, "bot"), {}),
    ((*_BOT, "buttons"), {}),
    (_BOT, {}),
    (_EVENT, {}),  # 17
    (_RECEIPT, {}),
    (("role", "text", "at"), {}),  # 19
)
PINNED_TOKENS = ("user", "bot", "event", "system", "human", "text", "message", "crm", "lead.created", "contact.created",
                 "lead.stage_changed", "lead.field_changed")
PINNED_DATA_NAMES = ("pipeline", "stage", "contact", "from", "to", "field", "tag", "task", "text", "responsible",
                     "lead")


def test_the_tables_only_grow_at_their_end() -> None:
    """``FORMS``, ``TOKENS`` and ``DATA_NAMES`` as first written stay where they are, whole (a
    form, a token or a data key moved or changed would read every stored blob that names it
    wrong); new ones go after them."""
    assert entryforms.FORMS[:len(PINNED_FORMS)] == PINNED_FORMS
    assert [type(v) for _, fixed in entryforms.FORMS[:len(PINNED_FORMS)] for v in fixed.values()] == [
        type(v) for _, fixed in PINNED_FORMS for v in fixed.values()]  # depth 0, not False or 0.0
    assert [entryforms.TOKENS[-1 - i] for i in range(len(PINNED_TOKENS))] == list(PINNED_TOKENS)
    assert entryforms.DATA_NAMES[:len(PINNED_DATA_NAMES)] == PINNED_DATA_NAMES


H = "7f1d216a9a604f5a9e55d13927f9b855"
B2 = [{"title": "Opening hours", "payload": "fda8c6e0.0", "url": None, "number": 1},
      {"title": "Other", "payload": "other", "url": None, "number": 2}]
#: One entry in each form, and its blob as the forms first wrote it (every way at work: tokens, hex
#: and gen- ids, a repeated client id, happened_at in ticks, a ref as [run, seq] or naming its step,
#: buttons, data keys as numbers): what stored transcripts hold, to be read as they are for ever.
FORM_BLOBS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("c101a568656c6c6fcb41dac58c7e8008cbc4107f1d216a9a604f5a9e55d13927f9b855c0",
     {"role": "user", "text": "hello", "at": NOW, "kind": "text", "message_id": H, "client_msg_id": H}),
    ("c102a568656c6c6fcb41dac58c7e8008cba777616d69642e31",
     {"role": "user", "text": "hello", "at": NOW, "kind": "text", "message_id": "wamid.1"}),
    ("c103a568656c6c6fcb41dac58c7e8008cb", {"role": "user", "text": "hello", "at": NOW, "kind": "text"}),
    (("c104a26869cb41dac58c7e8008cb920104a57265706c79a464656d6f94ad4f70656e696e6720686f757273c400a54f74"
      "686572a56f74686572"),
     {"role": "bot", "text": "hi", "at": NOW, "kind": "message", "ref": "r1:reply:m4", "step": "reply", "bot": "demo",
      "buttons": B2}),
    ("c105a26869cb41dac58c7e8008cbaa683a7265706c793a6d32c0a464656d6f",
     {"role": "bot", "text": "hi", "at": NOW, "kind": "message", "ref": "h:reply:m2", "step": "reply", "bot": "demo"}),
    ("c106a26869cb41dac58c7e8008cb920c00a3613a6290",
     {"role": "bot", "text": "hi", "at": NOW, "kind": "message", "ref": "r12:a:b:m0", "step": "a:b", "buttons": []}),
    ("c107a26869cb41dac58c7e8008cba178a173",
     {"role": "bot", "text": "hi", "at": NOW, "kind": "message", "ref": "x", "step": "s"}),
    ("c108cb41dac58c7e8008cbc40c28fe20504ef82ece531d7d2af7cc9a8300a553616c657301a8496e636f6d696e67a6637573746f6d01",
     {"role": "event", "at": NOW, "id": "gen-KP4gUE74Ls5THX0q", "type": "lead.created", "happened_at": 1796616698.0005,
      "source": "crm", "depth": 0, "data": {"pipeline": "Sales", "stage": "Incoming", "custom": 1}}),
    ("c109a472656164a463317c33c0cb41dac58c7e8008cb",
     {"role": "system", "event": "delivery", "status": "read", "ref": "c1|3", "text": None, "at": NOW}),
    ("c10afba568656c6c6fcb41dac58c7e8008cba466696c65c4107f1d216a9a604f5a9e55d13927f9b855a26331",
     {"role": "human", "text": "hello", "at": NOW, "kind": "file", "message_id": H, "client_msg_id": "c1"}),
    ("c10bffa568656c6c6fcb41dac58c7e8008cba5696d616765c4107f1d216a9a604f5a9e55d13927f9b855",
     {"role": "user", "text": "hello", "at": NOW, "kind": "image", "message_id": H}),
    ("c10cfba568656c6c6fcb41dac58c7e8008cbfa", {"role": "human", "text": "hello", "at": NOW, "kind": "text"}),
    ("c10dfba26869cb41dac58c7e8008cbf9920104a57265706c79a464656d6f92ad4f70656e696e6720686f757273c400",
     {"role": "human", "text": "hi", "at": NOW, "kind": "message", "ref": "r1:reply:m4", "step": "reply", "bot": "demo",
      "buttons": B2[:1]}),
    ("c10efea26869cb41dac58c7e8008cba8696e7465726e616cab72313a6f746865723a6d34a57265706c79a464656d6f",
     {"role": "bot", "text": "hi", "at": NOW, "kind": "internal", "ref": "r1:other:m4", "step": "reply",
      "bot": "demo"}),
    ("c10ffea26869cb41dac58c7e8008cba6776964676574920104a57265706c7990",
     {"role": "bot", "text": "hi", "at": NOW, "kind": "widget", "ref": "r1:reply:m4", "step": "reply", "buttons": []}),
    ("c110fea26869cb41dac58c7e8008cbc0920104a57265706c79",
     {"role": "bot", "text": "hi", "at": NOW, "kind": None, "ref": "r1:reply:m4", "step": "reply"}),
    ("c111fdcb41dac58c7e8008cba3652d31f6ce00400000aa6175746f6d6174696f6e018102a3313139",
     {"role": "event", "at": NOW, "id": "e-1", "type": "contact.created", "happened_at": NOW - 1.0,
      "source": "automation", "depth": 1, "data": {"contact": "119"}}),
    ("c112fca46e6f7465a26f6ba0a178cb41dac58c7e8008cb",
     {"role": "system", "event": "note", "status": "ok", "ref": "", "text": "x", "at": NOW}),
    ("c113fcaa74616b656e206f766572cb41dac58c7e8008cb", {"role": "system", "text": "taken over", "at": NOW}),
)


@pytest.mark.parametrize(("blob", "entry"), FORM_BLOBS, ids=[f"form{i}" for i in range(1, len(FORM_BLOBS) + 1)])
def test_an_entry_in_its_form_as_first_written_reads_back(blob: str, entry: dict[str, Any]) -> None:
    """Each form's blob as first written reads as its entry whatever the code becomes (a way or a
    table changed fails here); the code writes it so still (a new way of writing it needs a new form)."""
    assert same(codec.unpack(bytes.fromhex(blob)), entry)
    assert codec.pack_entry(entry).hex() == blob


@pytest.mark.parametrize("form", [4, 13])
def test_a_forms_blob_with_its_flow_payload_as_written_before_reads_back(form: int) -> None:
    """Forms 4 and 13 as first written, with the flow's button payload as its 5 bytes (before it
    was written as none: ``entryforms.FLOW_PAYLOAD``), read as they did."""
    blob, entry = FORM_BLOBS[form - 1]
    older = blob.replace("c400", "c405fda8c6e000")
    assert older != blob and same(codec.unpack(bytes.fromhex(older)), entry)


#: Text with any code point (lone surrogates too: msgpack refuses them, in a form or not), and
#: digits of other scripts, signs and spaces where a ref or a payload has its numbers.
ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=6)
NUMBERS = st.sampled_from(["0", "00", "01", "9", "255", "256", "999999999", "1000000000", "٣", "1٣", "9²", "1１", "",
                           "-1", " 1", "1\n"]) | st.integers(0, 10**12).map(str)
ODDER = ODD | ANY_TEXT | st.integers(-2**63, 2**64 - 1) | st.tuples(st.integers(0, 3)) | st.just(bytearray(b"ab"))


@st.composite
def odd_refs(draw: st.DrawFn, step: Any) -> Any:
    """``r<run>:<step>:m<seq>`` with its parts changed: other numbers, other letters, other steps."""
    s = step if type(step) is str and draw(st.integers(0, 3)) else draw(ANY_TEXT | st.sampled_from(["a:b", ":", "\n"]))
    return (draw(st.sampled_from(["r", "r", "r", "R", "", "r-"])) + draw(NUMBERS) + ":" + s + ":"
            + draw(st.sampled_from(["m", "m", "m", "M", ""])) + draw(NUMBERS)
            + draw(st.sampled_from(["", "", "", "\n", ":m1"])))


@st.composite
def odd_buttons(draw: st.DrawFn) -> Any:
    """Buttons nearly as the runtime makes them: a number that is ``True`` or ``1.0``, a url ``""``,
    keys in another order, a payload with other digits, a tuple of buttons."""
    buttons = []
    for number in range(1, draw(st.integers(0, 4)) + 1):
        button = {"title": draw(ANY_TEXT | ODD), "payload": draw(
            st.tuples(st.binary(min_size=4, max_size=4).map(bytes.hex), st.sampled_from([".", ""]), NUMBERS).map(
                "".join) | ODDER), "url": draw(st.sampled_from([None, None, "", "https://x"])),
            "number": draw(st.sampled_from([number, number, True, float(number), number + 1]))}
        if draw(st.integers(0, 9)) == 0:
            button = dict(reversed(button.items()))
        buttons.append(button)
    return tuple(buttons) if draw(st.integers(0, 3)) == 0 else buttons


@st.composite
def odd_form_entries(draw: st.DrawFn) -> dict[str, Any]:
    entry = draw(form_entries())
    for name in entry:
        if draw(st.integers(0, 4)) == 0:
            entry[name] = draw(ODDER)
    if "ref" in entry and draw(st.booleans()):
        if "step" in entry and type(entry["step"]) is not str:
            entry["step"] = draw(ANY_TEXT | st.sampled_from(["a:b", ":", "\n"]))
        entry["ref"] = draw(odd_refs(entry.get("step")))
    if "buttons" in entry and draw(st.booleans()):
        entry["buttons"] = draw(odd_buttons())
    if "happened_at" in entry and draw(st.booleans()):
        at = entry["at"] = draw(st.floats(NOW - 1e5, NOW + 1e5) | st.floats(1, 2**40) | TIMES)
        if type(at) is float:
            entry["happened_at"] = at - draw(st.integers(-2**31 - 2, 2**31 + 2)) / 4194304.0
    return entry


def read_back(pack: Any, entry: dict[str, Any]) -> Any:
    try:
        return codec.unpack(pack(entry))
    except (TypeError, ValueError, OverflowError) as e:  # msgpack's refusal (a lone surrogate, a huge int …)
        return type(e)


@settings(max_examples=500)
@given(odd_form_entries())
def test_any_entry_with_a_forms_keys_reads_back_as_plain_msgpack_does(entry: dict[str, Any]) -> None:
    """Whatever it holds (tuples, lone surrogates, 64-bit numbers, near-runtime refs and buttons),
    an entry reads back from its form exactly as from plain msgpack, or fails to pack as that does."""
    assert same(read_back(codec.pack_entry, entry), read_back(codec.pack, entry))


@given(ANY_TEXT | st.sampled_from(["reply", "a:b", ":", "\n", "m1"]), st.data())
def test_a_bot_messages_ref_of_any_text_reads_back(step: str, data: st.DataObject) -> None:
    """Refs near the engine's ``r<run>:<step>:m<seq>``: numbers in other digits than ASCII's
    (``r1٣``), with leading zeros, past 9 digits, other letters, a step with ``:`` or a line break."""
    ref = data.draw(odd_refs(step))
    for entry in ({**bench_entries()[1], "ref": ref, "step": step},
                  {**bench_entries()[1], "ref": ref, "step": entryforms.ref_step(ref)}):
        assert same(read_back(codec.pack_entry, entry), read_back(codec.pack, entry))
