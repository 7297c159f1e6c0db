"""The step graph: edges with pointers and timing, reachability, loops, Mermaid output."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import TypeAdapter

from bot.builder import models as m
from bot.builder.graph import Edge, _mermaid_id, all_edges, loops_without_wait, reachable, step_edges, to_mermaid
from bot.builder.validate import check_document, parse_flow_model

STEP = TypeAdapter(m.Step)


def edges_of(sid: str, raw: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [(e.target, e.pointer, e.label, e.when) for e in step_edges(sid, STEP.validate_python(raw))]


@pytest.mark.parametrize(("raw", "expected"), [
    ({"type": "message", "text": "t", "buttons": [{"title": "A", "next": "a"}, {"title": "W", "url": "u"}],
      "other_answer": "o", "no_answer": {"after": "1h", "next": "n"}, "failed": "f"},
     [("a", "/steps/s/buttons/0/next", "A", "wait"), ("o", "/steps/s/other_answer", "other answer", "wait"),
      ("n", "/steps/s/no_answer/next", "no answer", "wait"), ("f", "/steps/s/failed", "failed", "async")]),
    ({"type": "message", "text": "t", "next": "x"}, [("x", "/steps/s/next", "", "now")]),
    ({"type": "list", "text": "t", "button": "b", "sections": [
        {"title": "S", "rows": [{"title": "R1", "next": "r1"}]},
        {"title": "T", "rows": [{"title": "R2", "next": "r2"}]}]},
     [("r1", "/steps/s/sections/0/rows/0/next", "R1", "wait"),
      ("r2", "/steps/s/sections/1/rows/0/next", "R2", "wait")]),
    ({"type": "condition", "branches": [{"if": {"expr": "true"}, "next": "y"}], "else": "z"},
     [("y", "/steps/s/branches/0/next", "if 1", "now"), ("z", "/steps/s/else", "else", "now")]),
    ({"type": "validation", "rules": [{"check": "length", "max": 3}], "pass": "p", "fail": "f"},
     [("p", "/steps/s/pass", "pass", "now"), ("f", "/steps/s/fail", "fail", "now")]),
    ({"type": "pause", "until": [{"on": "message", "next": "m"}, {"on": "timer", "after": "1d"},
                                 {"on": "working_hours", "next": "w"}], "next": "d"},
     [("m", "/steps/s/until/0/next", "message", "wait"), ("d", "/steps/s/next", "timer", "wait"),
      ("w", "/steps/s/until/2/next", "working_hours", "now")]),
    ({"type": "action", "actions": [{"do": "add_note", "text": "n"}], "next": "n", "failed": "f"},
     [("n", "/steps/s/next", "", "now"), ("f", "/steps/s/failed", "failed", "now")]),
    ({"type": "comment", "text": "t", "next": "n", "failed": "f"},
     [("n", "/steps/s/next", "", "now"), ("f", "/steps/s/failed", "failed", "async")]),
    ({"type": "subscribe", "tag": "t", "title": "T", "next": "n", "failed": "f"},
     [("n", "/steps/s/next", "", "now"), ("f", "/steps/s/failed", "failed", "async")]),
    ({"type": "goto", "step": "g"}, [("g", "/steps/s/step", "", "now")]),
    ({"type": "start_bot", "bot": "other", "next": "n"}, [("n", "/steps/s/next", "after other", "wait")]),
    ({"type": "round_robin", "options": ["a", "b"]},
     [("a", "/steps/s/options/0", "#1", "now"), ("b", "/steps/s/options/1", "#2", "now")]),
    ({"type": "widget", "widget": "w", "wait": {"timeout": "1m", "on_timeout": "t"}, "next": "n", "failed": "f"},
     [("n", "/steps/s/next", "", "wait"), ("f", "/steps/s/failed", "failed", "now"),
      ("t", "/steps/s/wait/on_timeout", "timeout", "wait")]),
    ({"type": "widget", "widget": "w", "next": "n"}, [("n", "/steps/s/next", "", "now")]),
    ({"type": "custom", "handler": "acme.x", "next": "n", "failed": "f"},
     [("n", "/steps/s/next", "", "now"), ("f", "/steps/s/failed", "failed", "now")]),
    ({"type": "stop"}, []),
])
def test_step_edges(raw: dict[str, Any], expected: list[tuple[str, str, str, str]]) -> None:
    assert edges_of("s", raw) == expected


def test_message_next_after_buttons_waits() -> None:
    raw = {"type": "message", "text": "t", "buttons": [{"title": "A", "next": "a"}], "next": "x"}
    assert ("x", "/steps/s/next", "", "wait") in edges_of("s", raw)


def test_edge_pointer_escapes_the_step_id() -> None:
    (edge,) = step_edges("a/b~c", STEP.validate_python({"type": "goto", "step": "z"}))
    assert edge.pointer == "/steps/a~1b~0c/step"


def e(source: str, target: str, when: str = "now") -> Edge:
    return Edge(source, target, f"/steps/{source}/next", "", when)


def test_reachable() -> None:
    edges = [e("a", "b"), e("b", "c", "wait"), e("d", "a")]
    assert reachable("a", edges) == {"a", "b", "c"}
    assert reachable("d", edges) == {"a", "b", "c", "d"}
    assert reachable("zz", edges) == {"zz"}


def test_loops_without_wait_finds_one_cycle_per_component() -> None:
    edges = [e("a", "b"), e("b", "a"), e("b", "c"), e("c", "c"), e("x", "y", "wait"), e("y", "x"),
             e("p", "q"), e("q", "r"), e("r", "p"), e("q", "p")]
    cycles = [[(x.source, x.target) for x in cycle] for cycle in loops_without_wait(edges)]
    assert sorted(cycles) == [[("a", "b"), ("b", "a")], [("c", "c")], [("p", "q"), ("q", "r"), ("r", "p")]]


def test_loops_without_wait_ignores_acyclic_and_waiting_edges() -> None:
    assert loops_without_wait([e("a", "b"), e("b", "c"), e("a", "c")]) == []
    assert loops_without_wait([e("a", "b"), e("b", "a", "wait")]) == []
    assert loops_without_wait([e("a", "b"), e("b", "a", "async")]) == []


def test_loops_in_a_long_chain_do_not_recurse() -> None:
    n = 5000  # deeper than Python's recursion limit: the search must be iterative
    edges = [e(f"s{i}", f"s{i + 1}") for i in range(n)] + [e(f"s{n}", "s0")]
    (cycle,) = loops_without_wait(edges)
    assert len(cycle) == n + 1
    assert {x.source for x in cycle} == {f"s{i}" for i in range(n + 1)}


FLOW = {
    "format": "salesbot.flow/1", "id": "demo", "start": "hello",
    "steps": {
        "hello": {"type": "message", "text": 'Say "hi" to   our | team, this text is long enough to be cut',
                  "buttons": [{"title": "Catalog", "next": "catalog"}, {"title": "A|B", "next": "a-b"},
                              {"title": "Site", "url": "https://example.com"}],
                  "other_answer": "hello", "failed": "a_b"},
        "catalog": {"type": "condition", "branches": [{"if": {"expr": "true"}, "next": "a-b"}], "else": "end"},
        "a-b": {"type": "goto", "step": "end"},
        "a_b": {"type": "stop"},
        "end": {"type": "stop", "close_chat": True},
    },
}


def test_mermaid_lists_every_step_and_every_edge() -> None:
    problems, compiled = check_document(FLOW)
    assert compiled is not None, problems
    text = to_mermaid(parse_flow_model(FLOW))
    assert text == (
        "flowchart TD\n"
        '    START(["start"]) --> s_hello\n'
        '    s_hello["hello: message<br/>Say #quot;hi#quot; to our #124; team, this text is lo…"]\n'
        '    s_catalog{{"catalog: condition"}}\n'
        '    s_a_2d_b["a-b: goto"]\n'
        '    s_a__b(["a_b: stop"])\n'
        '    s_end(["end: stop"])\n'
        "    s_hello -.->|Catalog| s_catalog\n"
        "    s_hello -.->|A#124;B| s_a_2d_b\n"
        "    s_hello -.->|other answer| s_hello\n"
        "    s_hello -.->|failed| s_a__b\n"
        "    s_catalog -->|if 1| s_a_2d_b\n"
        "    s_catalog -->|else| s_end\n"
        "    s_a_2d_b --> s_end\n"
    )
    node_lines = [line for line in text.splitlines() if re.match(r"    s_\w+[\[({]", line)]
    assert len(node_lines) == len(FLOW["steps"])
    edge_lines = [line for line in text.splitlines() if "-->" in line or "-.->" in line]
    assert len(edge_lines) == 1 + len(all_edges(parse_flow_model(FLOW).steps))


def test_mermaid_highlights_the_current_step() -> None:
    text = to_mermaid(parse_flow_model(FLOW), highlight="a-b")
    assert text.endswith(
        "    classDef current fill:#ffe08a,stroke:#b58900,stroke-width:3px\n"
        "    class s_a_2d_b current\n"
    )
    assert "classDef" not in to_mermaid(parse_flow_model(FLOW), highlight="nope")


def test_mermaid_ids_are_distinct_for_distinct_steps() -> None:
    """Regression: "a-b" and "a_b" both used to become the node s_a_b."""
    ids = ["a-b", "a_b", "a__b", "a_2d_b", "a-2d-b", "A", "a", "_", "-", "__", "_-", "-_"]
    assert len({_mermaid_id(i) for i in ids}) == len(ids)
    assert all(re.fullmatch(r"s_[A-Za-z0-9_]+", _mermaid_id(i)) for i in ids)


def test_mermaid_draws_each_goal_to_the_step_it_leads_to() -> None:
    """A goal is reached from any step by an event: its target used to be drawn unreachable."""
    flow = {**FLOW, "goals": {"paid": {"on": "order.paid", "next": "end"}, "seen": {"on": "custom.seen"}}}
    problems, compiled = check_document(flow)
    assert compiled is not None, problems
    text = to_mermaid(parse_flow_model(flow))
    assert '    g_paid(["goal paid: order.paid"])\n    g_paid -.-> s_end\n' in text
    assert "seen" not in text  # a goal that only counts leads nowhere
