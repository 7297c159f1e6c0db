"""Hypothesis strategies for the interpreter's property tests: random *valid* flow documents
(``flow_docs``; steps that run at once only point forward, so every cycle goes through a step
that waits) and random sequences of outside events (``event_specs``), apart from the harness
that drives them."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from .helpers import make_doc, make_flow

TITLES = ["Catalog", "Katalóg", "Person", "Yes", "No", "1", "Menu"]
TEXTS = [
    "Hi {{ contact.name }}",
    "{{ vars.x }}",
    "{{ vars.x + 1 }}",
    "n={{ vars.n | default(0) }}",
    "{{ now }}",
    "{{ json.n }}",
    "{{ lead.tags }}",
    "{{ last_validation_result }}",
    "plain",
    "{{ message.text }}",
]
VALUES: list[Any] = [
    "{{ vars.x + 1 }}",
    "{{ now }}",
    "{{ vars }}",
    "{{ message.text }}",
    "{{ lead.tags }}",
    5,
    "{{ 2 ** 70 }}",
    "{{ (1, 2) }}",
    "{{ [vars.missing] }}",
    "{{ json }}",
    "text",
    None,
    [1, "a"],
]
FIELDS = [
    "message.text",
    "vars.x",
    "vars.n",
    "lead.tags",
    "lead.price",
    "contact.name",
    "json.n",
    "last_validation_result",
    "chat.status",
]
OPS = [
    "eq",
    "ne",
    "contains",
    "not_contains",
    "starts_with",
    "matches",
    "in",
    "not_in",
    "gt",
    "gte",
    "lt",
    "lte",
    "between",
    "empty",
    "not_empty",
    "has",
]
PATTERNS = [r"\d+", "^ye", "{{ vars.x }}", "(a|aa)+$", "cat(alog)?"]
OPERANDS: list[Any] = [1, "10", "a", "{{ vars.x }}", True, "yes"]
EXPRS = [
    "vars.x > 1",
    "lead.price > 1000",
    "'vip' in lead.tags",
    "message.text|length > 3",
    "vars.n + 1 > 2",
]
USER_TEXTS = TITLES + [
    "2",
    "3",
    "",
    "catalog ",
    "KATALOG",
    "my number is 0555 111 22 33",
    "a@example.com",
    "99999999999999999999999",
    "፩",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
    "what's the price",
]
DURATIONS: list[Any] = ["1m", "1h", 30, "1d"]


# ---------------------------------------------------------------- flow documents
@st.composite
def predicates(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(["leaf", "leaf", "expr"] + (["all", "any", "not"] if depth < 2 else []))
    )
    if kind == "expr":
        return {"expr": draw(st.sampled_from(EXPRS))}
    if kind in ("all", "any"):
        return {kind: draw(st.lists(predicates(depth + 1), min_size=1, max_size=3))}
    if kind == "not":
        return {"not": draw(predicates(depth + 1))}
    op = draw(st.sampled_from(OPS))
    leaf: dict[str, Any] = {"field": draw(st.sampled_from(FIELDS)), "op": op}
    if op == "between":
        leaf["value"] = draw(st.lists(st.sampled_from(OPERANDS), min_size=2, max_size=2))
    elif op in ("in", "not_in"):
        leaf["value"] = draw(
            st.one_of(
                st.lists(st.sampled_from(OPERANDS), min_size=1, max_size=3), st.just("a, yes")
            )
        )
    elif op == "matches":
        leaf["value"] = draw(st.sampled_from(PATTERNS))
    elif op not in ("empty", "not_empty"):
        leaf["value"] = draw(st.sampled_from(OPERANDS))
    return leaf


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    check = draw(
        st.sampled_from(["equals", "not_equals", "contains", "not_contains", "length", "regex"])
    )
    r: dict[str, Any] = {"check": check}
    if check in ("contains", "not_contains"):
        kind = draw(st.sampled_from(["number", "letters", "phone", "email", "range", "text"]))
        r["kind"] = kind
        if kind == "range":
            r["min"], r["max"] = 1, draw(st.sampled_from([5, 100]))
        elif kind == "text":
            r["value"] = draw(st.sampled_from(["yes", "{{ vars.x }}", "{{ vars.n + 1 }}"]))
    elif check == "length":
        r["min"] = draw(st.integers(0, 5))
    elif check == "regex":
        r["pattern"] = draw(st.sampled_from([r"\d+", "(a+)+$", "(a|aa)+$", "^[a-z]+$"]))
    else:
        r["value"] = draw(st.sampled_from(["yes", 10, "{{ vars.x }}", "{{ vars.n + 1 }}"]))
    return r


@st.composite
def actions(draw: st.DrawFn) -> dict[str, Any]:
    do = draw(
        st.sampled_from(
            [
                "add_note",
                "add_task",
                "complete_tasks",
                "set_chat_status",
                "change_stage",
                "change_responsible",
                "create_lead",
                "subscribers",
                "tags",
                "send_email",
                "send_webhook",
                "set_field",
                "set_variable",
                "create_form",
                "meta_conversion",
            ]
        )
    )
    text = draw(st.sampled_from(TEXTS))
    return {
        "add_note": {"do": do, "text": text},
        "add_task": {
            "do": do,
            "text": text,
            "due": draw(
                st.sampled_from(
                    ["now", "end_of_day", "in_1_day", "in_3_days", "end_of_week", "2h", 90]
                )
            ),
        },
        "complete_tasks": {
            "do": do,
            "due": draw(st.sampled_from(["all", "overdue", "today", "tomorrow"])),
        },
        "set_chat_status": {"do": do, "status": draw(st.sampled_from(["closed", "answered"]))},
        "change_stage": {"do": do, "stage": draw(st.sampled_from(["Won", "{{ vars.x }}"]))},
        "change_responsible": {"do": do, "user": 7},
        "create_lead": {"do": do, "copy": ["price"]},
        "subscribers": {"do": do, "add": [1]},
        "tags": {"do": do, "add": [text]},
        "send_email": {"do": do, "template": "welcome"},
        "send_webhook": {
            "do": do,
            "url": "https://hook.test/{{ lead.id }}",
            "save_as": draw(st.sampled_from(["json", "hook"])),
        },
        "set_field": draw(
            st.sampled_from(
                [
                    {"do": do, "field": "f", "value": text},
                    {"do": do, "field": "f", "from": "message"},
                    {"do": do, "field": "f", "from": "manual"},
                ]
            )
        ),
        "set_variable": {
            "do": do,
            "name": draw(st.sampled_from(["x", "n", "sub"])),
            "value": draw(st.sampled_from(VALUES)),
        },
        "create_form": {"do": do, "fields": ["email"]},
        "meta_conversion": {"do": do, "event": "Lead", "value": text},
    }[do]


@st.composite
def flow_docs(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(3, 10))
    ids = [f"s{i}" for i in range(n)]

    def any_step() -> str:
        return draw(st.sampled_from(ids))

    def forward(i: int, optional: bool = True) -> str | None:
        later = ids[i + 1 :]
        if not later:
            return None
        return draw(st.sampled_from(later + ([None] if optional else [])))

    def maybe_any() -> str | None:
        return draw(st.sampled_from(ids + [None]))

    def put(d: dict[str, Any], key: str, value: Any) -> None:
        if value is not None:
            d[key] = value

    steps: dict[str, Any] = {}
    for i, sid in enumerate(ids):
        kinds = [
            "message",
            "buttons",
            "buttons",
            "list",
            "validation",
            "validation",
            "pause",
            "pause",
            "action",
            "action",
            "action",
            "internal_message",
            "subscribe",
            "comment",
            "start_bot",
            "start_bot",
            "widget",
            "custom",
            "stop",
        ]
        if i < n - 1:
            kinds += ["goto", "round_robin", "condition", "condition"]  # they need a step after them
        kind = draw(st.sampled_from(kinds))
        s: dict[str, Any]
        if kind == "message":
            s = {"type": "message", "text": draw(st.sampled_from(TEXTS))}
            if draw(st.booleans()):
                s["buttons"] = [{"title": "Site", "url": "https://x.test/{{ lead.id }}"}]
            put(s, "next", forward(i))
            put(s, "failed", maybe_any())
        elif kind == "buttons":
            titles = draw(st.lists(st.sampled_from(TITLES), min_size=1, max_size=3, unique=True))
            s = {
                "type": "message",
                "text": draw(st.sampled_from(TEXTS)),
                "buttons": [
                    {
                        "title": t,
                        "synonyms": draw(
                            st.lists(st.sampled_from(["human", "2", "k"]), max_size=1)
                        ),
                        "next": any_step(),
                    }
                    for t in titles
                ],
            }
            if draw(st.booleans()):
                s["buttons"].append({"title": "Site", "url": "https://x.test"})
            put(s, "other_answer", maybe_any())
            if draw(st.booleans()):
                s["no_answer"] = {"after": draw(st.sampled_from(DURATIONS)), "next": any_step()}
            put(s, "failed", maybe_any())
        elif kind == "list":
            rows = [
                {"title": t, "next": any_step()}
                for t in draw(
                    st.lists(st.sampled_from(TITLES), min_size=1, max_size=4, unique=True)
                )
            ]
            if draw(st.booleans()):
                rows[0]["id"] = "row-a"
            s = {
                "type": "list",
                "text": "Pick",
                "button": "Open",
                "sections": [{"title": "All", "rows": rows}],
            }
            put(s, "other_answer", maybe_any())
            if draw(st.booleans()):
                s["no_answer"] = {"after": draw(st.sampled_from(DURATIONS)), "next": any_step()}
        elif kind == "condition":
            branches = [
                {"if": draw(predicates()), "next": forward(i, optional=False)}
                for _ in range(draw(st.integers(1, 3)))
            ]
            s = {"type": "condition", "branches": branches}
            put(s, "else", forward(i))
        elif kind == "validation":
            s = {
                "type": "validation",
                "rules": draw(st.lists(rules(), min_size=1, max_size=3)),
                "logic": draw(st.sampled_from(["all", "any"])),
            }
            put(s, "save_as", draw(st.sampled_from(["x", "found", None])))
            put(s, "pass", forward(i))
            put(s, "fail", forward(i))
        elif kind == "pause":
            ons = draw(
                st.lists(
                    st.sampled_from(
                        ["message", "timer", "working_hours", "video_opened", "video_closed"]
                    ),
                    min_size=1,
                    max_size=4,
                    unique=True,
                )
            )
            until = []
            for on in ons:
                e: dict[str, Any] = {"on": on}
                if on == "timer":
                    e["after"] = draw(st.sampled_from(DURATIONS))
                put(e, "next", forward(i) if on == "working_hours" else maybe_any())
                until.append(e)
            s = {"type": "pause", "until": until}
        elif kind == "action":
            s = {"type": "action", "actions": draw(st.lists(actions(), min_size=1, max_size=3))}
            put(s, "next", forward(i))
            put(s, "failed", forward(i))
        elif kind == "internal_message":
            s = {"type": "internal_message", "text": draw(st.sampled_from(TEXTS)), "to": ["user:7"]}
            put(s, "next", forward(i))
        elif kind == "subscribe":
            s = {"type": "subscribe", "tag": "weekly", "title": "Weekly"}
            put(s, "next", forward(i))
        elif kind == "comment":
            s = {"type": "comment", "text": "Thanks"}
            put(s, "next", forward(i))
        elif kind == "goto":
            s = {"type": "goto", "step": forward(i, optional=False)}
        elif kind == "round_robin":
            s = {
                "type": "round_robin",
                "options": [forward(i, optional=False) for _ in range(draw(st.integers(2, 3)))],
            }
        elif kind == "start_bot":
            s = {"type": "start_bot", "bot": draw(st.sampled_from(["sub", "bot", "ghost"]))}
            put(s, "next", maybe_any())
        elif kind == "widget":
            s = {"type": "widget", "widget": "http_request", "params": {"lead": "{{ lead.id }}"}}
            if draw(st.booleans()):
                s["wait"] = {"timeout": draw(st.sampled_from(DURATIONS))}
                put(s["wait"], "on_timeout", maybe_any())
                put(s, "next", maybe_any())
            else:
                put(s, "next", forward(i))
            put(s, "failed", forward(i))
        elif kind == "custom":
            s = {"type": "custom", "handler": "acme.score", "params": {"x": "{{ vars.x }}"}}
            put(s, "next", forward(i))
            put(s, "failed", forward(i))
        else:
            s = {"type": "stop", "close_chat": draw(st.booleans())}
        steps[sid] = s
    settings_: dict[str, Any] = {
        "timezone": draw(st.sampled_from(["UTC", "Europe/Istanbul"])),
        "step_budget": draw(st.sampled_from([3, 20, 100])),
        "leave_unanswered": draw(st.booleans()),
    }
    if draw(st.booleans()):
        settings_["working_hours"] = {"mon-fri": "09:00-18:00"}
    return make_doc(steps, **settings_)


SUB = make_flow(
    {
        "ask": {
            "type": "pause",
            "until": [{"on": "message", "next": "save"}, {"on": "timer", "after": "1h"}],
        },
        "save": {
            "type": "action",
            "actions": [{"do": "set_variable", "name": "answer", "value": "{{ message.text }}"}],
            "next": "end",
        },
        "end": {"type": "stop"},
    },
    id="sub",
    variables={"from_sub": True},
)


# ---------------------------------------------------------------- events
EVENT_KINDS = [
    "say",
    "say",
    "say",
    "click",
    "click",
    "timer",
    "timer",
    "stale_timer",
    "video",
    "takeover",
    "release",
    "stop",
    "start",
    "delivery",
    "widget",
    "stale_result",
    "crm",
    "human",
]


@st.composite
def event_specs(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    specs: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(3, 20))):
        kind = draw(st.sampled_from(EVENT_KINDS))
        if kind == "say":
            specs.append((kind, draw(st.one_of(st.sampled_from(USER_TEXTS), st.text(max_size=12)))))
        elif kind == "video":
            specs.append((kind, draw(st.sampled_from(["video_opened", "video_closed"]))))
        elif kind == "release":
            specs.append((kind, draw(st.sampled_from([None, "s0", "s1", "s4", "nope"]))))
        elif kind == "start":
            specs.append(
                (
                    kind,
                    draw(st.sampled_from(["bot", "sub", "ghost"])),
                    draw(st.sampled_from([None, "s1", "ask"])),
                )
            )
        elif kind == "widget":
            specs.append((kind, draw(st.booleans())))
        else:
            specs.append((kind, draw(st.integers(0, 10))))
    return specs
