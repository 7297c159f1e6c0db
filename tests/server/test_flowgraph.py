"""The flow graph's layout for /live: edge labels never cover one another or a step (issue 15 §5)."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.builder.validate import parse_flow_model
from bot.server.flowgraph import LABEL_CHAR_W, LABEL_H, LABEL_PAD, NODE_H, NODE_W, layout

Box = tuple[float, float, float, float]


def _flow(buttons: dict[str, list[str]]) -> dict[str, Any]:
    """Steps whose buttons (titles) lead to the next steps; every target is a plain stop."""
    steps: dict[str, Any] = {}
    for step, titles in buttons.items():
        steps[step] = {"type": "message", "text": f"Choose, {step}",
                       "buttons": [{"title": t, "next": f"{step}_{i}"} for i, t in enumerate(titles)]}
        for i in range(len(titles)):
            steps[f"{step}_{i}"] = {"type": "stop"}
    first = next(iter(buttons))
    return {"format": "salesbot.flow/1", "id": "g", "name": "g", "start": first, "steps": steps}


def _boxes(graph: dict[str, Any]) -> tuple[list[Box], list[Box]]:
    labels = []
    for e in graph["edges"]:
        if e["label"]:
            w = e.get("lw", len(e["label"]) * LABEL_CHAR_W + LABEL_PAD)
            labels.append((e["lx"] - w / 2, e["ly"] - LABEL_H / 2, e["lx"] + w / 2, e["ly"] + LABEL_H / 2))
    nodes = [(n["x"], n["y"], n["x"] + NODE_W, n["y"] + NODE_H) for n in graph["nodes"]]
    return labels, nodes


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _assert_readable(graph: dict[str, Any]) -> None:
    labels, nodes = _boxes(graph)
    for a, b in itertools.combinations(labels, 2):
        assert not _overlap(a, b), (a, b)
    for a in labels:
        assert not any(_overlap(a, n) for n in nodes), a
        assert a[0] >= 0 and a[1] >= 0 and a[2] <= graph["width"] and a[3] <= graph["height"], (a, graph["width"])


def test_the_labels_of_several_branches_of_one_step_do_not_overlap() -> None:
    titles = ["See our products please", "Opening hours and address", "Talk to a person now", "Track my order"]
    graph = layout(parse_flow_model(_flow({"menu": titles})))
    assert len([e for e in graph["edges"] if e["label"]]) == 4
    _assert_readable(graph)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.text("abcdefgh ", min_size=1, max_size=30).map(str.strip).filter(bool),
                         min_size=1, max_size=6), min_size=1, max_size=3))
def test_no_label_covers_another_or_a_step(menus: list[list[str]]) -> None:
    graph = layout(parse_flow_model(_flow({f"m{i}": titles for i, titles in enumerate(menus)})))
    _assert_readable(graph)
