"""Properties of the export on random flows made only of what Kommo can express: it never fails
but by refusing; what it writes imports to a valid flow; and that flow, exported and imported
again, comes back unchanged (import ∘ export is the identity on imported flows)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bot.builder import check_document
from bot.kommo_import.convert_in import convert
from bot.kommo_import.convert_out import export
from bot.kommo_import.errors import KommoExportRefused

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IDS = ["s0", "s1", "s2", "s3", "s4", "s5"]
texts = st.sampled_from(["Hi", "Hi {{ contact.name }}!", "Your phone?", "{{ lead.fields.cf_7 }}", "Bye"])


def step() -> st.SearchStrategy[dict[str, Any]]:
    to = st.sampled_from(IDS)  # a step the flow may not have is pointed at the first (flows())
    optional = st.none() | to
    message = st.builds(lambda text, nxt: {"type": "message", "text": text, **({"next": nxt} if nxt else {})},
                        texts, optional)
    menu = st.builds(
        lambda text, a, b, other: {"type": "message", "text": text, "buttons": [
            {"title": "Yes", "next": a}, {"title": "No", "synonyms": ["2"], "next": b}],
            **({"other_answer": other} if other else {})},
        texts, to, to, optional)
    wait_menu = st.builds(lambda text, a: {"type": "message", "text": text, "buttons": [{"title": "Ok", "next": a}],
                                           "other_answer": a}, texts, to)
    condition = st.builds(
        lambda field, value, a, b, other: {"type": "condition", "branches": [
            {"if": {"field": field, "op": "eq", "value": value}, "next": a},
            *([{"if": {"field": "lead.tags", "op": "has", "value": "vip"}, "next": b}] if b else [])],
            **({"else": other} if other else {})},
        st.sampled_from(["message.text", "chat.channel", "json.status"]), st.sampled_from(["1", "ok"]),
        to, optional, optional)
    validation = st.builds(lambda ok, bad: {"type": "validation", "rules": [{"check": "contains", "kind": "phone"}],
                                            **({"pass": ok} if ok else {}), **({"fail": bad} if bad else {})},
                           optional, optional)
    pause = st.builds(lambda nxt: {"type": "pause", "until": [{"on": "message", "next": nxt}]}, to)
    action = st.builds(lambda tag, nxt: {"type": "action", "actions": [{"do": "tags", "add": [tag]}],
                                         **({"next": nxt} if nxt else {})}, st.sampled_from(["a", "b"]), optional)
    goto = st.builds(lambda nxt: {"type": "goto", "step": nxt}, to)
    stop = st.builds(lambda close: {"type": "stop", "close_chat": close}, st.booleans())
    return st.one_of(message, menu, wait_menu, condition, validation, pause, action, goto, stop)


@st.composite
def flows(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(min_value=1, max_value=len(IDS)))
    steps = {IDS[i]: draw(step()) for i in range(n)}
    known = set(steps)

    def fix(value: Any) -> Any:  # references to steps this flow does not have go to the first
        if isinstance(value, dict):
            return {k: (v if v in known else IDS[0]) if k in ("next", "else", "pass", "fail", "other_answer", "step")
                    and isinstance(v, str) else fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    return {"format": "salesbot.flow/1", "id": "p", "start": IDS[0], "steps": fix(steps)}


def valid(doc: Any) -> bool:
    return not [p for p in check_document(doc)[0] if p.severity == "error"]


@SETTINGS
@given(flows())
def test_an_exported_flow_comes_back_from_kommo_and_then_stays_as_it_is(doc: dict[str, Any]) -> None:
    assume(valid(doc))
    try:
        kommo = export(doc)
    except KommoExportRefused as exc:  # the only way it may fail, with every problem named
        assert exc.problems and all(p.pointer.startswith("/steps/") for p in exc.problems)
        return
    imported = convert(kommo, bot_id="p").flow
    assert valid(imported)
    assert convert(export(imported), bot_id="p").flow == imported
