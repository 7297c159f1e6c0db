"""Property tests: check_document never raises, and valid flows always compile.

* random JSON documents, and random JSON shaped like flows (real keys, real type names);
* random mutations of a valid flow (keys dropped, values replaced, types renamed, references
  pointed elsewhere);
* random *valid* flows: a DAG of steps (references only go to later steps) plus back edges only
  from steps that wait for the customer, so every cycle waits.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.builder import check_document, compile_document
from bot.builder.validate import _ACTION_NAMES, _KEYS, _STEP_TYPE_NAMES
from bot.errors import Problem

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------ strategies: any JSON
scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=True, allow_infinity=True)  # json.loads accepts NaN and Infinity
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=15,
)
step_ids = st.sampled_from(["a", "b", "c", "hello", "menu", "x-1", "bad id"])
names = st.sampled_from(_STEP_TYPE_NAMES + _ACTION_NAMES + ["mesage", "", "x-"])
flowish_scalars = scalars | step_ids | names | st.sampled_from(
    ["1h", "0s", "90 minutes", "{{ x", "{{ contact.name }}", "([a-z", "mon-fri", "09:00-18:00", "Europe"])
flowish_values = st.recursive(
    flowish_scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=6), children, max_size=6),
    max_leaves=25,
)
flowish_steps = st.builds(
    lambda kind, rest: {**rest, "type": kind},
    names,
    st.dictionaries(st.sampled_from(_KEYS), flowish_values, max_size=6),
)
timezones = st.sampled_from(
    ["UTC", "Europe/Istanbul", "Europe", "America", "", "../x", "/UTC", "Mars/Base", "a" * 300, "UTC\x00", "."]
) | st.text(max_size=20)
hour_ranges = st.sampled_from(
    ["09:00-18:00", "09:00-12:00,13:00-18:00", "18:00-09:00", "²:00-1:00", "24:00-24:00", "9-5", "00:00-24:00",
     "", "٠٩:٠٠-١٨:٠٠", "09:00-18:00-20:00", "09:00-18:00,"]
) | st.text(st.sampled_from("0123456789:-, ²"), max_size=14)
settings_values = st.fixed_dictionaries({}, optional={
    "timezone": timezones,
    "working_hours": st.dictionaries(
        st.sampled_from(["mon", "mon-fri", "fri-mon", "sun,sat", "funday", "", "mon-", "-"]) | st.text(max_size=8),
        hour_ranges, max_size=3),
    "step_budget": st.integers(-1, 20_000), "leave_unanswered": st.booleans(), "x-a": json_values})
flowish_documents = st.fixed_dictionaries(
    {"format": st.just("salesbot.flow/1") | json_values, "id": st.just("demo") | json_values,
     "start": step_ids | json_values,
     "steps": st.dictionaries(step_ids, flowish_steps | flowish_values, max_size=5)},
    optional={"settings": settings_values,
              "variables": flowish_values, "x-canvas": json_values, "name": json_values},
)


def assert_well_formed(doc: Any) -> None:
    problems, compiled = check_document(doc)
    assert isinstance(problems, list)
    for p in problems:
        assert isinstance(p, Problem)
        assert p.severity in ("error", "warning")
        assert p.pointer == "" or p.pointer.startswith("/"), p
        assert isinstance(p.message, str) and p.message
    has_errors = any(p.severity == "error" for p in problems)
    # Never a compiled flow together with an error, never no flow without one.
    assert (compiled is None) == has_errors, ([str(p) for p in problems], compiled)
    if compiled is not None:
        assert set(compiled.steps) == set(doc["steps"])


@SETTINGS
@given(json_values)
def test_any_json_value_gives_problems_not_exceptions(doc: Any) -> None:
    assert_well_formed(doc)


@SETTINGS
@given(flowish_documents)
def test_flow_shaped_json_gives_problems_not_exceptions(doc: dict[str, Any]) -> None:
    assert_well_formed(doc)


@SETTINGS
@given(settings_values, st.sampled_from(["demo", "Bad Id"]))
def test_any_settings_give_problems_not_exceptions(settings_: dict[str, Any], bot_id: str) -> None:
    assert_well_formed({"format": "salesbot.flow/1", "id": bot_id, "start": "a", "settings": settings_,
                        "steps": {"a": {"type": "stop"}}})


# ------------------------------------------------------------------ mutations of a valid flow
BASE: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "welcome", "name": "Welcome", "start": "hello",
    "settings": {"timezone": "Europe/Istanbul", "working_hours": {"mon-fri": "09:00-18:00", "sat": "10:00-14:00"},
                 "step_budget": 100, "leave_unanswered": False},
    "variables": {"discount": 10},
    "x-canvas": {"zoom": 1},
    "steps": {
        "hello": {"type": "message", "text": "Hi {{ contact.first_name | default('there') }}!", "next": "menu"},
        "menu": {"type": "message", "text": "How can we help?",
                 "buttons": [{"title": "Catalog", "synonyms": ["katalog"], "next": "catalog"},
                             {"title": "Person", "next": "handoff"}, {"title": "Site", "url": "https://x.example"}],
                 "other_answer": "fallback", "no_answer": {"after": "2h", "next": "remind"}},
        "catalog": {"type": "list", "text": "Pick", "button": "Open", "sections": [
            {"title": "Rooms", "rows": [
                {"id": "living", "title": "Living room", "description": "Sofas", "next": "send"},
                                        {"title": "Bedroom", "next": "send"}]}],
                    "other_answer": "menu", "no_answer": {"after": "1h", "next": "remind"}},
        "send": {"type": "action", "actions": [
            {"do": "tags", "entity": "lead", "add": ["catalog"]},
            {"do": "set_variable", "name": "attempts", "value": "{{ vars.attempts + 1 }}"},
            {"do": "set_field", "entity": "contact", "field": "email", "value": "{{ last_validation_result }}"},
            {"do": "add_task", "text": "Call {{ contact.name }}", "due": "in_1_day"},
            {"do": "send_webhook", "url": "https://x.example/h", "body": {"id": "{{ lead.id }}"}}],
                 "next": "check", "failed": "handoff"},
        "check": {"type": "condition", "branches": [
            {"if": {"field": "message.text", "op": "matches", "value": "^(yes|evet)$"}, "next": "ask_phone"},
            {"if": {"all": [{"field": "lead.tags", "op": "has", "value": "vip"}, {"expr": "lead.price > 1000"}]},
             "next": "handoff"},
            {"if": {"not": {"field": "vars.attempts", "op": "between", "value": [1, 3]}}, "next": "rr"}],
                  "else": "wait"},
        "ask_phone": {"type": "validation", "rules": [{"check": "contains", "kind": "phone"},
                                                      {"check": "regex", "pattern": "^\\+?[0-9 ]+$"}],
                      "save_as": "phone", "pass": "handoff", "fail": "menu"},
        "wait": {"type": "pause", "until": [{"on": "message", "next": "menu"},
                                            {"on": "timer", "after": "1d", "next": "remind"},
                                            {"on": "working_hours", "next": "handoff"}]},
        "rr": {"type": "round_robin", "options": ["handoff", "remind"]},
        "remind": {"type": "message", "text": "Still there?", "next": "widget"},
        "widget": {"type": "widget", "widget": "http_request", "params": {"url": "https://x.example"},
                   "wait": {"timeout": "10m", "on_timeout": "handoff"}, "next": "handoff"},
        "fallback": {"type": "internal_message", "text": "Lead {{ lead.name }}", "to": ["team:sales"],
                     "next": "handoff"},
        "handoff": {"type": "start_bot", "bot": "qualify", "next": "bye"},
        "bye": {"type": "stop", "close_chat": True},
    },
}


def test_the_base_flow_is_valid() -> None:
    problems, compiled = check_document(copy.deepcopy(BASE))
    assert [str(p) for p in problems] == []
    assert compiled is not None


def _paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, at + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, at + (i,))
    return out


def _mutate(doc: dict[str, Any], data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(_paths(doc)[1:]), label="path")
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    key = path[-1]
    op = data.draw(st.sampled_from(["drop", "replace", "rename", "retarget", "duplicate", "add_key"]), label="op")
    if op == "drop":
        del parent[key]
    elif op == "replace":
        parent[key] = data.draw(json_values, label="value")
    elif op == "rename":
        target = parent[key] if isinstance(parent[key], dict) else parent
        if isinstance(target, dict):
            field = "do" if "do" in target else "type"
            target[field] = data.draw(names | st.text(max_size=8), label="name")
    elif op == "retarget":
        parent[key] = data.draw(st.sampled_from(list(BASE["steps"])) | step_ids, label="step")
    elif op == "duplicate":
        if isinstance(parent[key], list) and parent[key]:
            parent[key].extend(copy.deepcopy(parent[key]) * data.draw(st.integers(1, 8), label="times"))
        else:
            parent[key] = [parent[key]] * data.draw(st.integers(0, 3), label="times")
    else:
        target = parent[key] if isinstance(parent[key], dict) else parent
        if isinstance(target, dict):
            target[data.draw(st.sampled_from(_KEYS) | st.text(max_size=6), label="key")] = data.draw(
                json_values, label="value")


@SETTINGS
@given(st.data())
def test_mutated_flows_give_problems_not_exceptions(data: st.DataObject) -> None:
    doc = copy.deepcopy(BASE)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        if isinstance(doc, dict) and len(_paths(doc)) > 1:
            _mutate(doc, data)
    assert_well_formed(doc)


# ------------------------------------------------------------------ random valid flows
DURATIONS = st.sampled_from(["90s", "15m", "2h", "3d", "1h30m", 5400, "8760h60m60s", 1])
TEXTS = st.sampled_from(["Hi", "Hi {{ contact.name }}!", "{{ vars.n + 1 }}", "Price: {{ lead.price | default(0) }}",
                         "{% if lead.tags %}tagged{% endif %}", "Çok güzel 🛋️"])
PREDICATES = st.recursive(
    st.sampled_from([
        {"field": "message.text", "op": "contains", "value": "price"},
        {"field": "lead.tags", "op": "has", "value": "vip"},
        {"field": "vars.n", "op": "between", "value": [1, 3]},
        {"field": "message.text", "op": "matches", "value": "^[0-9]+$"},
        {"field": "contact.email", "op": "empty"},
        {"expr": "lead.price > 1000"},
    ]),
    lambda inner: st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=3))
    | st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3))
    | st.builds(lambda x: {"not": x}, inner),
    max_leaves=5,
)
ACTIONS = st.sampled_from([
    {"do": "add_note", "text": "Note {{ contact.name }}"},
    {"do": "tags", "entity": "lead", "add": ["a"], "remove": ["b"]},
    {"do": "set_variable", "name": "n", "value": "{{ vars.n + 1 }}"},
    {"do": "set_field", "entity": "lead", "field": "budget", "from": "message"},
    {"do": "add_task", "text": "Call", "due": "2h", "responsible": "current"},
    {"do": "set_chat_status", "status": "answered"},
    {"do": "change_stage", "pipeline": "Sales", "stage": "Qualified"},
    {"do": "send_webhook", "url": "https://x.example", "body": {"id": "{{ lead.id }}"}},
])


@st.composite
def valid_flows(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 9))
    ids = draw(st.lists(st.text("abcxyz_-0123456789", min_size=1, max_size=4), min_size=n, max_size=n, unique=True))

    def later(i: int) -> st.SearchStrategy[str]:
        return st.sampled_from(ids[i + 1:])

    def any_step() -> st.SearchStrategy[str]:
        return st.sampled_from(ids)

    def maybe(i: int) -> str | None:
        return draw(st.none() | later(i)) if i + 1 < n else None

    steps: dict[str, Any] = {}
    for i, sid in enumerate(ids):
        has_later = i + 1 < n
        kinds = ["message", "buttons", "list", "pause", "stop", "start_bot", "widget_wait"]
        if has_later:
            kinds += ["condition", "validation", "action", "goto", "internal_message", "comment", "subscribe",
                      "custom", "widget", "pause_working_hours"]
        if i + 2 < n:
            kinds.append("round_robin")
        kind = draw(st.sampled_from(kinds), label=f"kind of {sid}")
        step: dict[str, Any]
        if kind == "message":
            step = {"type": "message", "text": draw(TEXTS)}
            if (nxt := maybe(i)) is not None:
                step["next"] = nxt
        elif kind == "buttons":  # waits: may point anywhere, back edges included
            k = draw(st.integers(1, 13))
            buttons: list[dict[str, Any]] = [
                {"title": f"B{j}", "synonyms": [f"{j}"], "next": draw(any_step())} for j in range(k)]
            if draw(st.booleans()):
                buttons.insert(draw(st.integers(0, len(buttons))), {"title": "Web", "url": "https://x.example"})
            step = {"type": "message", "text": draw(TEXTS), "buttons": buttons[:13]}
            if not any("next" in b for b in step["buttons"]):
                step["buttons"][0] = {"title": "B", "next": draw(any_step())}
            if draw(st.booleans()):
                step["other_answer"] = draw(any_step())
            if draw(st.booleans()):
                step["no_answer"] = {"after": draw(DURATIONS), "next": draw(any_step())}
        elif kind == "list":
            rows = draw(st.integers(1, 10))
            step = {"type": "list", "text": draw(TEXTS), "button": "Open",
                    "sections": [{"title": "S", "rows": [{"title": f"Row {j}", "description": "d" * 72,
                                                          "next": draw(any_step())} for j in range(rows)]}],
                    "other_answer": draw(any_step())}
        elif kind == "pause":
            events = draw(st.lists(st.sampled_from(["message", "timer"]), min_size=1, max_size=3))
            step = {"type": "pause", "until": [
                {"on": on, "next": draw(any_step()), **({"after": draw(DURATIONS)} if on == "timer" else {})}
                for on in events]}
        elif kind == "pause_working_hours":  # fires at once while open: forward only
            step = {"type": "pause", "until": [{"on": "working_hours"}], "next": draw(later(i))}
        elif kind == "stop":
            step = {"type": "stop", "close_chat": draw(st.booleans())}
        elif kind == "start_bot":
            step = {"type": "start_bot", "bot": "other-bot_1"}
            if draw(st.booleans()):
                step["next"] = draw(any_step())
        elif kind == "widget_wait":
            step = {"type": "widget", "widget": "http_request", "params": {"data": {"id": "{{ lead.id }}"}},
                    "wait": {"timeout": draw(DURATIONS), "on_timeout": draw(any_step())}, "next": draw(any_step())}
            if has_later:
                step["failed"] = draw(later(i))
        elif kind == "condition":
            step = {"type": "condition", "branches": [{"if": draw(PREDICATES), "next": draw(later(i))}
                                                      for _ in range(draw(st.integers(1, 3)))]}
            if (nxt := maybe(i)) is not None:
                step["else"] = nxt
        elif kind == "validation":
            step = {"type": "validation", "rules": [{"check": "length", "min": 1, "max": 20},
                                                    {"check": "regex", "pattern": "^[a-z]+$"}],
                    "logic": draw(st.sampled_from(["all", "any"])), "pass": draw(later(i)), "fail": draw(later(i))}
        elif kind == "action":
            step = {"type": "action", "actions": draw(st.lists(ACTIONS, min_size=1, max_size=4)),
                    "next": draw(later(i))}
            if (failed := maybe(i)) is not None:
                step["failed"] = failed
        elif kind == "goto":
            step = {"type": "goto", "step": draw(later(i))}
        elif kind == "internal_message":
            step = {"type": "internal_message", "text": draw(TEXTS), "to": ["user:7"], "next": draw(later(i))}
        elif kind == "comment":
            step = {"type": "comment", "text": draw(TEXTS), "next": draw(later(i))}
        elif kind == "subscribe":
            step = {"type": "subscribe", "tag": "offers", "title": "Offers", "next": draw(later(i))}
        elif kind == "custom":
            step = {"type": "custom", "handler": "acme.discount", "params": {"rate": 5}, "next": draw(later(i))}
        elif kind == "widget":
            step = {"type": "widget", "widget": "score", "next": draw(later(i))}
        else:  # round_robin
            step = {"type": "round_robin", "options": draw(st.lists(later(i), min_size=2, max_size=5))}
        if draw(st.booleans()):
            step["x-pos"] = {"x": i, "y": 0}
        steps[sid] = step
    return {"format": "salesbot.flow/1", "id": "random", "start": ids[0],
            "settings": draw(st.sampled_from([{}, {"timezone": "Europe/Istanbul"},
                                              {"working_hours": {"mon-fri": "09:00-12:00,13:00-18:00"}}])),
            "steps": steps}


@SETTINGS
@given(valid_flows())
def test_random_valid_flows_compile(doc: dict[str, Any]) -> None:
    problems, compiled = check_document(doc)
    assert [str(p) for p in problems if p.severity == "error"] == []
    assert compiled is not None
    assert set(compiled.steps) == set(doc["steps"])
    assert {p.message for p in problems} <= {
        "step cannot be reached from the start",
        ("waits for a reply but has neither other_answer nor no_answer: "
         "an unexpected reply leaves the customer without an answer"),
    }
    again = compile_document(json.loads(json.dumps(doc)), version=2)
    assert again.digest == compiled.digest and again.version == 2


@SETTINGS
@given(valid_flows(), st.data())
def test_a_goto_to_itself_turns_a_valid_flow_invalid(doc: dict[str, Any], data: st.DataObject) -> None:
    """A cycle of steps that never wait (here a goto to itself) is always reported, once."""
    steps = doc["steps"]
    chain = [sid for sid, s in steps.items() if s["type"] == "goto"]
    if not chain:
        steps["zz-loop"] = {"type": "goto", "step": "zz-loop"}
        expected = "/steps/zz-loop/step"
    else:
        sid = data.draw(st.sampled_from(chain))
        steps[sid]["step"] = sid
        expected = f"/steps/{sid}/step"
    problems, compiled = check_document(doc)
    assert compiled is None
    assert [p.pointer for p in problems if "can run without ever waiting" in p.message] == [expected]
