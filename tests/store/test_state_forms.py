"""The state's short forms (bot/store/statecodec.py) over states shaped as the runtime makes them:
the customer's ``last_message``, ``crm``, a wait's own timers due at its ``until``, token values,
each also just off its form. Every state reads back field for field (not only as its dict: the
timers' ids and order, a list's type), writes the same bytes again once read (an unchanged state
is not saved again, ``service``), reads as its older compact form does, and through the metadata
hash's chunks (``statefields``) alike."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.engine.state import ConversationState, Run, Wait
from bot.store import codec, statefields

SID = "livechat:demo:c1"
#: Text around the tokens (``codec.STATE_TOKENS``): their values, a number's text, odd text.
TEXT = st.sampled_from(["message", "comment", "answered", "unanswered", "waiting", "reply", "no_answer", "text",
                        "bot", "human", "-1", "", "x", "é😀", "t" * 70]) | st.text(max_size=4)
HEX = "49f2acc37e3a491888ff1703d00e14a7"


def ordered(**values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A dict of these keys in this order (``fixed_dictionaries`` draws them in any order)."""
    return st.tuples(*values.values()).map(lambda drawn: dict(zip(values, drawn, strict=True)))


LAST_KEYS = ("text", "payload", "kind", "id", "attachments", "start_param")
#: ``last_message`` as ``interpreter.on_message`` makes it (most often of its short form), just off
#: it, and its keys in another order.
LAST = st.none() | ordered(
    text=TEXT, payload=st.none(), kind=TEXT, id=st.sampled_from([HEX, HEX[:-1], "abc", None]),
    attachments=st.just([]), start_param=st.none()) | ordered(
    text=TEXT | st.none(), payload=st.none() | st.just("p") | st.just(""), kind=TEXT,
    id=st.sampled_from([HEX, HEX.upper(), None]) | st.binary(min_size=16, max_size=16),
    attachments=st.just([]) | st.just([{"kind": "image", "url": "u", "name": None}]),
    start_param=st.none() | st.just("sp")) | st.fixed_dictionaries(dict.fromkeys(LAST_KEYS, TEXT))
#: ``crm`` as the turn makes it, just off it, its keys in another order.
CRM = st.none() | ordered(contact_id=TEXT, lead_id=TEXT, company_id=st.sampled_from(["", "7", None, 7])) \
    | st.fixed_dictionaries({"contact_id": TEXT, "lead_id": TEXT, "company_id": TEXT})
#: The wait's timers: the conversation's own (``<id>:t<n>``), or with others among them.
TIMERS = st.lists(st.sampled_from([f"{SID}:t1", f"{SID}:t7", f"{SID}:t12"]), min_size=1, max_size=2,
                  unique=True) | st.lists(st.sampled_from([f"{SID}:t1", f"{SID}:x:y", "other:t3"]), max_size=3,
                                          unique=True)


@st.composite
def states(draw: st.DrawFn) -> ConversationState:
    until = draw(st.sampled_from([1796617811.252618, 5.0, None, 0.0]))
    ids = draw(TIMERS)
    wait = None if draw(st.integers(0, 5)) == 0 else Wait(
        draw(TEXT), draw(st.sampled_from(["ask", "other"])), {t: draw(TEXT) for t in ids}, until=until)
    run = None if draw(st.integers(0, 5)) == 0 else Run(
        "r1", "demo", 1, draw(st.sampled_from(["ask", None])), draw(TEXT), wait=wait)
    # due: the wait's timers (all, at its ``until``; or some of them, in another order, with others);
    # not ``<id>:x:y``, which ``tm`` keeps as ``x:y`` (read back as that id, since before the short forms)
    due = [t for t in ids if t != f"{SID}:x:y"]
    at = dict.fromkeys(due, until if until is not None else 3.0)
    if draw(st.booleans()):
        due = [t for t in draw(st.permutations(due)) if draw(st.integers(0, 3))]
        due += draw(st.lists(st.sampled_from([f"{SID}:t30", "other:t9"]), max_size=1))
        at = {t: draw(st.sampled_from([at.get(t, 3.0), 3.0])) for t in due}
    return ConversationState(SID, "livechat", "demo", draw(st.none() | TEXT), draw(st.sampled_from(["bot", "human"])),
                             None, draw(TEXT), run, draw(LAST), draw(st.integers(0, 300)), 0, draw(CRM), at)


def _fields(a: ConversationState) -> list[Any]:
    """A state's fields as they are (``==`` of the dataclass, and the order and type of what it holds)."""
    return [a, list(a.timers.items()), list((a.last_message or {}).items()), list((a.crm or {}).items()),
            [type(v) for v in (a.last_message or {}).values()]]


@settings(max_examples=400)
@given(states())
def test_a_state_in_or_out_of_its_short_forms_reads_back_as_it_was(state: ConversationState) -> None:
    blob = codec.encode_state(state)
    back = codec.decode_state(blob)
    assert _fields(back) == _fields(state)
    assert codec.encode_state(back) == blob
    assert codec.unpack(blob) == state.to_dict()
    older = codec._pack_compact(state.to_dict(), codec._STATE)  # as before issue 14 aim 3's state wave
    assert codec.decode_state(older).to_dict() == state.to_dict()
    flat = statefields.fields(blob, SID)
    assert flat is not None and all(len(v) <= statefields.CHUNK for v in flat[1:-2:2])
    raw = {(k.encode() if isinstance(k, str) else k): (v.encode() if isinstance(v, str) else v)
           for k, v in zip(flat[0::2], flat[1::2], strict=True)}
    assert statefields.split(raw, SID, held=False)[1] == blob


#: ``codec.STATE_TOKENS`` as first written (issue 14 aim 3): stored states name these by number.
PINNED_STATE_TOKENS = ("message", "comment", "referral", "answered", "unanswered", "closed", "running", "waiting",
                       "stopped", "failed", "reply", "pause", "token", "widget", "no_answer", "working_hours",
                       "widget_timeout", "text", "bot", "human")


def test_the_states_tokens_only_grow_at_their_end() -> None:
    """A token moved or changed would read every stored state that holds it wrong; new ones go
    after these, and there is room for no more than 32 (one byte: -1 to -32)."""
    assert [codec.STATE_TOKENS[-1 - i] for i in range(len(PINNED_STATE_TOKENS))] == list(PINNED_STATE_TOKENS)
    assert sorted(codec.STATE_TOKENS) == list(range(-len(codec.STATE_TOKENS), 0)) and len(codec.STATE_TOKENS) <= 32
