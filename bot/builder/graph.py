"""The step graph of a flow: edges, reachability, loops that never wait, and Mermaid output.

Edges are typed by *when* they are taken:

* ``now``   — at once, in the same event (``next`` of a plain message, condition branches…);
* ``wait``  — only after the customer or time moves (button replies, pause events, no_answer);
* ``async`` — on a later report from the platform (a message's ``failed``).

A cycle made only of ``now`` edges is a loop that can run without ever waiting.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import models as m


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    pointer: str  # JSON pointer of the reference inside the document
    label: str
    when: str  # "now" | "wait" | "async"


def _esc(text: str) -> str:
    return text.replace("~", "~0").replace("/", "~1")


def step_edges(step_id: str, step: Any) -> Iterator[Edge]:
    """Every reference from one step to another, with its JSON pointer."""
    base = f"/steps/{_esc(step_id)}"

    def edge(target: str | None, path: str, label: str, when: str) -> Iterator[Edge]:
        if target is not None:
            yield Edge(step_id, target, f"{base}/{path}", label, when)

    if isinstance(step, m.MessageStep):
        branching = [b for b in step.buttons if b.next is not None]
        for i, b in enumerate(step.buttons):
            yield from edge(b.next, f"buttons/{i}/next", b.title, "wait")
        yield from edge(step.next, "next", "", "wait" if branching else "now")
        yield from edge(step.other_answer, "other_answer", "other answer", "wait")
        if step.no_answer:
            yield from edge(step.no_answer.next, "no_answer/next", "no answer", "wait")
        yield from edge(step.failed, "failed", "failed", "async")
    elif isinstance(step, m.ListStep):
        for si, section in enumerate(step.sections):
            for ri, row in enumerate(section.rows):
                yield from edge(row.next, f"sections/{si}/rows/{ri}/next", row.title, "wait")
        yield from edge(step.other_answer, "other_answer", "other answer", "wait")
        if step.no_answer:
            yield from edge(step.no_answer.next, "no_answer/next", "no answer", "wait")
        yield from edge(step.failed, "failed", "failed", "async")
    elif isinstance(step, m.ConditionStep):
        for i, br in enumerate(step.branches):
            yield from edge(br.next, f"branches/{i}/next", f"if {i + 1}", "now")
        yield from edge(step.else_, "else", "else", "now")
    elif isinstance(step, m.ValidationStep):
        yield from edge(step.pass_, "pass", "pass", "now")
        yield from edge(step.fail, "fail", "fail", "now")
    elif isinstance(step, m.PauseStep):
        for i, ev in enumerate(step.until):
            # working_hours fires at once while the hours are on: it does not wait.
            # So does a condition that already holds when the pause is reached.
            when = "now" if ev.on in ("working_hours", "condition") else "wait"
            if ev.next is not None:
                yield from edge(ev.next, f"until/{i}/next", ev.on, when)
            elif step.next is not None:
                yield from edge(step.next, "next", ev.on, when)
    elif isinstance(step, m.ActionStep):
        yield from edge(step.next, "next", "", "now")
        yield from edge(step.failed, "failed", "failed", "now")
    elif isinstance(step, (m.InternalMessageStep, m.SubscribeStep)):
        yield from edge(step.next, "next", "", "now")
        if isinstance(step, m.SubscribeStep):
            yield from edge(step.failed, "failed", "failed", "async")
    elif isinstance(step, m.CommentStep):
        yield from edge(step.next, "next", "", "now")
        yield from edge(step.failed, "failed", "failed", "async")
    elif isinstance(step, m.GotoStep):
        yield from edge(step.step, "step", "", "now")
    elif isinstance(step, m.StartBotStep):
        # The called bot may wait for the customer; we cannot know, so this is not a "now" edge.
        yield from edge(step.next, "next", f"after {step.bot}", "wait")
    elif isinstance(step, m.SplitStep):
        for i, path in enumerate(step.paths):
            yield from edge(path.next, f"paths/{i}/next", path.id, "now")
    elif isinstance(step, m.RoundRobinStep):
        for i, option in enumerate(step.options):
            yield from edge(option, f"options/{i}", f"#{i + 1}", "now")
    elif isinstance(step, (m.WidgetStep, m.CustomStep)):
        waits = isinstance(step, m.WidgetStep) and step.wait is not None
        yield from edge(step.next, "next", "", "wait" if waits else "now")
        yield from edge(step.failed, "failed", "failed", "now")
        if isinstance(step, m.WidgetStep) and step.wait:
            yield from edge(step.wait.on_timeout, "wait/on_timeout", "timeout", "wait")


def all_edges(steps: Mapping[str, Any]) -> list[Edge]:
    return [e for sid, step in steps.items() for e in step_edges(sid, step)]


def reachable(start: str, edges: list[Edge]) -> set[str]:
    out: dict[str, list[str]] = {}
    for e in edges:
        out.setdefault(e.source, []).append(e.target)
    seen = {start}
    todo = [start]
    while todo:
        for nxt in out.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def loops_without_wait(edges: list[Edge]) -> list[list[Edge]]:
    """Each distinct cycle of ``now`` edges, as the list of edges that form it (one per SCC)."""
    now: dict[str, list[Edge]] = {}
    for e in edges:
        if e.when == "now":
            now.setdefault(e.source, []).append(e)
    # Tarjan's strongly connected components, iteratively.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[set[str]] = []
    counter = 0
    for root in list(now):
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            out = now.get(node, [])
            if i < len(out):
                work.append((node, i + 1))
                nxt = out[i].target
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            for e in out:
                if e.target in on_stack and e.target in low:
                    low[node] = min(low[node], low[e.target])
            if low[node] == index[node]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == node:
                        break
                if len(comp) > 1 or any(e.target == node for e in out):
                    sccs.append(comp)
    cycles = []
    for comp in sccs:
        # Walk one concrete cycle inside the component, for a readable message.
        start = min(comp)
        path: list[Edge] = []
        node = start
        visited = set()
        while True:
            visited.add(node)
            e = next(e for e in now[node] if e.target in comp)
            path.append(e)
            node = e.target
            if node == start or node in visited:
                break
        if node != start:
            path = path[[p.source for p in path].index(node):]
        cycles.append(path)
    return cycles


def _mermaid_id(step_id: str) -> str:
    """A Mermaid node id, one per step id ("a-b" and "a_b" must not become the same node)."""
    return "s_" + "".join(
        "__" if c == "_" else c if c.isascii() and c.isalnum() else f"_{ord(c):x}_" for c in step_id
    )


def _mermaid_text(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace('"', "#quot;").replace("|", "#124;")  # "|" would end an edge label


def to_mermaid(flow: m.Flow, *, highlight: str | None = None) -> str:
    """A Mermaid ``flowchart TD`` of the flow; ``highlight`` marks one step (the current one)."""
    lines = ["flowchart TD", '    START(["start"]) --> ' + _mermaid_id(flow.start)]
    for sid, step in flow.steps.items():
        label = f"{sid}: {step.type}"
        text = getattr(step, "text", None)
        if isinstance(text, str):
            label += "<br/>" + _mermaid_text(text)
        shape = ('{{"%s"}}' if step.type in ("condition", "validation", "round_robin", "split")
                 else '(["%s"])' if step.type == "stop" else '["%s"]')
        lines.append(f"    {_mermaid_id(sid)}{shape % _mermaid_text(label, 80)}")
    for e in all_edges(flow.steps):
        arrow = "-.->" if e.when != "now" else "-->"
        label = f"|{_mermaid_text(e.label)}|" if e.label else ""
        lines.append(f"    {_mermaid_id(e.source)} {arrow}{label} {_mermaid_id(e.target)}")
    for name, goal in flow.goals.items():  # reached from any step, by an event
        if goal.next is not None:
            node = "g_" + _mermaid_id(name)[2:]
            lines.append(f'    {node}(["goal {_mermaid_text(name)}: {_mermaid_text(goal.on)}"])')
            lines.append(f"    {node} -.-> {_mermaid_id(goal.next)}")
    if highlight and highlight in flow.steps:
        lines.append("    classDef current fill:#ffe08a,stroke:#b58900,stroke-width:3px")
        lines.append(f"    class {_mermaid_id(highlight)} current")
    return "\n".join(lines) + "\n"
