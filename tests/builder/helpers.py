"""Shared helpers of the validator tests: a flow document from its steps, the problems
``check_document`` reports (errors or warnings, as (pointer, message) pairs) and step makers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.builder import check_document

STOP: dict[str, Any] = {"type": "stop"}
UNREACHABLE = "step cannot be reached from the start"


def flow(steps: Mapping[str, Any], **top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": "salesbot.flow/1", "id": "test", "start": next(iter(steps), "start"),
        "steps": dict(steps),
    }
    doc.update(top)
    return doc


def errors(doc: Any) -> list[tuple[str, str]]:
    problems, compiled = check_document(doc)
    out = [(p.pointer, p.message) for p in problems if p.severity == "error"]
    if out:
        assert compiled is None, "a compiled flow came back together with errors"
    return out


def warnings(doc: Any) -> list[tuple[str, str]]:
    problems, _ = check_document(doc)
    return [(p.pointer, p.message) for p in problems if p.severity == "warning"]


def message(text: str, *, next: str | None = None, **extra: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"type": "message", "text": text, **extra}
    if next is not None:
        step["next"] = next
    return step


def rows(n: int, target: str) -> list[dict[str, Any]]:
    return [{"title": f"Row {i}", "next": target} for i in range(n)]


def lst(sections: list[dict[str, Any]], *, button: str = "Open", target: str) -> dict[str, Any]:
    return {"type": "list", "text": "Pick one", "button": button, "sections": sections,
            "other_answer": target}


def pause_timer(after: Any, target: str) -> dict[str, Any]:
    return {"type": "pause", "until": [{"on": "timer", "after": after, "next": target}]}

