"""A flow's step graph laid out for the dashboard (no JavaScript graph library, no build step).

A simple layered ("Sugiyama-style") layout from ``bot.builder.graph.all_edges``: back edges
found by a depth-first walk from the start step are set aside, every step gets the layer of its
longest path from the start, steps in a layer are ordered by a few barycenter sweeps, and edges
become SVG path strings (forward edges as vertical curves, back and same-layer edges as loops
on the right). The answer is plain numbers and texts; the page draws it with DOM calls, so a
step's text is never parsed as markup.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..builder import models as m

NODE_W, NODE_H = 176, 52
H_GAP, V_GAP = 36, 56
MARGIN = 24
#: An edge label's box as the page draws it (10 px text): width per character, padding, height.
LABEL_CHAR_W, LABEL_PAD, LABEL_H = 6.0, 8.0, 14.0

Box = tuple[float, float, float, float]  # left, top, right, bottom


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(wanted: list[tuple[float, float, str]], obstacles: list[Box]) -> list[tuple[float, float, float]]:
    """Each label's (centre x, centre y, width): at its wanted point when that is free, else the
    nearest free spot of a few tried around it (up and down first, then sideways), so no label
    covers another label or a step. Greedy, in the given order; labels are short (28 characters)."""
    placed: list[Box] = []
    out: list[tuple[float, float, float]] = []
    steps = [(0.0, 0.0)] + [(dx, dy * LABEL_H) for k in range(1, 9)
                            for dx, dy in ((0.0, -k), (0.0, k))] + [
        (dx * sign, dy * LABEL_H) for dx in (60.0, 120.0) for sign in (1, -1) for dy in (0, -1, 1, -2, 2)]
    for x, y, text in wanted:
        w = len(text) * LABEL_CHAR_W + LABEL_PAD
        best: Box | None = None
        for dx, dy in steps:
            box = (x + dx - w / 2, y + dy - LABEL_H / 2, x + dx + w / 2, y + dy + LABEL_H / 2)
            if box[0] >= 0 and box[1] >= 0 and not any(_overlaps(box, o) for o in placed + obstacles):
                best = box
                break
        if best is None:  # nowhere free nearby: below everything else placed, at its own x
            bottom = max((b[3] for b in placed + obstacles), default=y)
            best = (x - w / 2, bottom + 2, x + w / 2, bottom + 2 + LABEL_H)
        placed.append(best)
        out.append(((best[0] + best[2]) / 2, (best[1] + best[3]) / 2, w))
    return out


def _label(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def layout(flow: m.Flow) -> dict[str, Any]:
    from ..builder.graph import all_edges  # on first use: the flow models stay off the start path

    steps = list(flow.steps)
    edges = [e for e in all_edges(flow.steps) if e.source in flow.steps and e.target in flow.steps]
    out: dict[str, list[str]] = defaultdict(list)
    for e in edges:
        if e.target not in out[e.source]:
            out[e.source].append(e.target)

    # 1. Back edges: a depth-first walk from the start (then from anything unreached, in order).
    back: set[tuple[str, str]] = set()
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    order: list[str] = []
    for root in [flow.start, *steps]:
        if root in state or root not in flow.steps:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        order.append(root)
        while stack:
            node, i = stack.pop()
            nexts = out.get(node, [])
            if i < len(nexts):
                stack.append((node, i + 1))
                nxt = nexts[i]
                if state.get(nxt) == 1:
                    back.add((node, nxt))
                elif nxt not in state:
                    state[nxt] = 1
                    order.append(nxt)
                    stack.append((nxt, 0))
            else:
                state[node] = 2

    # 2. Layers: the longest path over forward edges (Kahn's order of the acyclic rest).
    fwd: dict[str, list[str]] = {s: [t for t in out.get(s, []) if (s, t) not in back and t != s] for s in steps}
    indeg = dict.fromkeys(steps, 0)
    for s in steps:
        for t in fwd[s]:
            indeg[t] += 1
    layer = dict.fromkeys(steps, 0)
    ready = [s for s in order if indeg[s] == 0]
    while ready:
        s = ready.pop(0)
        for t in fwd[s]:
            layer[t] = max(layer[t], layer[s] + 1)
            indeg[t] -= 1
            if indeg[t] == 0:
                ready.append(t)
    layers: dict[int, list[str]] = defaultdict(list)
    for s in order:
        layers[layer[s]].append(s)

    # 3. Order within layers: barycenter sweeps, down then up.
    preds: dict[str, list[str]] = defaultdict(list)
    for s in steps:
        for t in fwd[s]:
            preds[t].append(s)
    pos = {s: i for lv in layers.values() for i, s in enumerate(lv)}
    depth = max(layers) if layers else 0
    for sweep in range(4):
        rng = range(1, depth + 1) if sweep % 2 == 0 else range(depth - 1, -1, -1)
        down = sweep % 2 == 0
        for lv in rng:
            def bary(s: str, down: bool = down) -> float:
                near = preds[s] if down else fwd[s]
                return sum(pos[n] for n in near) / len(near) if near else pos[s]
            layers[lv].sort(key=bary)
            for i, s in enumerate(layers[lv]):
                pos[s] = i

    # 4. Coordinates: each layer centred on the widest.
    widest = max((len(v) for v in layers.values()), default=1)
    width = MARGIN * 2 + widest * NODE_W + (widest - 1) * H_GAP + 40  # room for loops on the right
    xy: dict[str, tuple[float, float]] = {}
    for lv, names in layers.items():
        row = len(names) * NODE_W + (len(names) - 1) * H_GAP
        x0 = MARGIN + (widest * NODE_W + (widest - 1) * H_GAP - row) / 2
        for i, s in enumerate(names):
            xy[s] = (x0 + i * (NODE_W + H_GAP), MARGIN + lv * (NODE_H + V_GAP))
    height = MARGIN * 2 + (depth + 1) * NODE_H + depth * V_GAP

    nodes = []
    for s in steps:
        step = flow.steps[s]
        text = getattr(step, "text", None)
        x, y = xy[s]
        nodes.append({"id": s, "type": step.type, "label": _label(s, 24),
                      "text": _label(text, 60) if isinstance(text, str) else "",
                      "x": x, "y": y, "w": NODE_W, "h": NODE_H, "start": s == flow.start})

    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for e in edges:
        key = (e.source, e.target)
        if key in merged:
            if e.label and e.label not in merged[key]["labels"]:
                merged[key]["labels"].append(e.label)
            continue
        merged[key] = {"source": e.source, "target": e.target, "when": e.when, "labels": [e.label] if e.label else []}
    drawn: list[dict[str, Any]] = []
    loop = 0
    for (s, t), info in merged.items():
        sx, sy = xy[s]
        tx, ty = xy[t]
        forward = layer[t] > layer[s] and (s, t) not in back
        if forward:
            x1, y1 = sx + NODE_W / 2, sy + NODE_H
            x2, y2 = tx + NODE_W / 2, ty
            mid = (y1 + y2) / 2
            path = f"M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} {x2:.1f},{y2 - 2:.1f}"
            lx, ly = (x1 + x2) / 2, mid
        else:  # back, same-layer or self edge: out of the right side, around, into the right side
            loop += 1
            x1, y1 = sx + NODE_W, sy + NODE_H / 2
            x2, y2 = tx + NODE_W, ty + NODE_H / 2
            bulge = max(x1, x2) + 18 + 6 * (loop % 4)
            path = f"M{x1:.1f},{y1:.1f} C{bulge:.1f},{y1:.1f} {bulge:.1f},{y2:.1f} {x2 + 2:.1f},{y2:.1f}"
            lx, ly = bulge, (y1 + y2) / 2
        drawn.append({"source": s, "target": t, "when": info["when"], "back": not forward,
                      "label": _label(" / ".join(info["labels"]), 28), "path": path,
                      "lx": round(lx, 1), "ly": round(ly, 1)})
    # Labels: none on another or on a step (several branches of one step meet at the same height).
    labelled = [d for d in drawn if d["label"]]
    spots = place_labels([(d["lx"], d["ly"], d["label"]) for d in labelled],
                         [(x, y, x + NODE_W, y + NODE_H) for x, y in xy.values()])
    for d, (x, y, w) in zip(labelled, spots, strict=True):
        d["lx"], d["ly"], d["lw"] = round(x, 1), round(y, 1), round(w, 1)
        width = max(width, int(x + w / 2 + MARGIN / 2))
        height = max(height, int(y + LABEL_H / 2 + MARGIN / 2))
    return {"start": flow.start, "width": width, "height": height, "nodes": nodes, "edges": drawn}
