"""Conversation tests (``*.test.yaml``): operators' scripted chats, run on the simulator.

The format is in ``docs/testing.md``. A failing test reports the failing line and the expected
and actual transcripts as a diff; a malformed file (``testfile``), or anything else that stops a
test from running (a crash of the runtime included), is a broken test: reported, and the run goes on.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import re
import traceback
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crm_bridge.memory import DEFAULT_PIPELINE, DEFAULT_STAGES

from ..automations.compiled import CompiledAutomations, compile_automations
from ..automations.validate import AutomationContext, parse_automations
from ..builder.durations import DurationError, parse_duration
from ..builder.loader import load_flow, read_document
from ..engine import events as ev
from ..engine.predicates import lookup
from ..engine.process import PROCESS_CHANNEL
from ..errors import AutomationsInvalid, ConversationTestError, CrmRejected, FlowInvalid, FlowLoadError
from .simulator import Line, Simulator
from .testfile import MATCHERS as _MATCHERS
from .testfile import Header, load_test_file


@dataclass
class TestOutcome:
    path: Path
    passed: bool
    message: str = ""
    lines_run: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def broken(self) -> bool:
        """The test could not run (a malformed file, a crash): not a failing conversation."""
        return not self.passed and self.message.startswith("broken test:")

    def report(self) -> str:
        if self.passed:
            return f"PASS {self.path}"
        return "\n".join([f"FAIL {self.path}: {self.message}", *("  " + d for d in self.details)])


class _Failure(Exception):
    def __init__(self, message: str, expected: str | None = None, actual: str | None = None) -> None:
        super().__init__(message)
        self.expected, self.actual = expected, actual


def discover(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(p.rglob("*.test.yaml")))
        else:
            out.append(p)
    return out


def load_automations(path: Path, pipelines: Any) -> CompiledAutomations:
    """The test's automation document, validated against the test's pipelines (or the default
    ``Sales`` one) and compiled. Bots are not checked: a bot the test does not load fails when
    a rule starts it."""
    known = {str(k): [str(s) for s in v] for k, v in pipelines.items()} if isinstance(pipelines, dict) else {
        DEFAULT_PIPELINE: list(DEFAULT_STAGES)}
    try:
        model = parse_automations(read_document(path), AutomationContext(pipelines=known))
        return compile_automations(model, known.get(model.pipeline, []), version=1)
    except AutomationsInvalid as exc:
        errors = "; ".join(str(p) for p in exc.problems if p.severity == "error")
        raise ConversationTestError(f"the automations are invalid: {errors}") from exc
    except FlowLoadError as exc:
        raise ConversationTestError(str(exc)) from exc


def build_simulator(path: Path, doc: Header) -> Simulator:
    base = path.parent
    try:
        flow = load_flow(base / doc.flow)
        bots = [load_flow(base / b) for b in doc.bots]
    except FlowInvalid as exc:
        errors = "; ".join(str(p) for p in exc.problems if p.severity == "error")
        raise ConversationTestError(f"{path}: the flow is invalid: {errors}") from exc
    except FlowLoadError as exc:
        raise ConversationTestError(f"{path}: {exc}") from exc
    automations = None
    if doc.automations is not None:
        try:
            automations = load_automations(base / doc.automations, doc.pipelines)
        except ConversationTestError as exc:
            raise ConversationTestError(f"{path}: {exc}") from exc
    try:
        return Simulator(
            flow, bots=bots, channel=doc.channel, now=doc.now,
            contact=doc.contact.model_dump(exclude_unset=True) if doc.contact else {},
            lead=doc.lead.model_dump(exclude_unset=True) if doc.lead else {}, pipelines=doc.pipelines,
            webhooks=doc.webhooks or {}, widgets=doc.widgets or {}, automations=automations,
        )
    except CrmRejected as exc:
        raise ConversationTestError(f"{path}: the CRM refuses the lead: {exc}") from exc


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _script_line(entry: Any) -> str:
    if isinstance(entry, dict) and len(entry) == 1:
        (key, value), = entry.items()
        if key == "user" and isinstance(value, dict) and "click" in value:
            return f"user: [click {value['click']}]"
        if key in ("user", "bot"):
            if isinstance(value, str):
                return f"{key}: {value}"
            text = value.get("text") or (f"~{value['contains']}~" if "contains" in value else
                                         f"/{value['matches']}/" if "matches" in value else "")
            buttons = value.get("buttons")
            return f"{key}: {text}" + (" [" + " | ".join(map(str, buttons)) + "]" if buttons else "")
        return f"{key}: {_show(value)}"
    return _show(entry)


def _actual_line(line: Line) -> str:
    if line.role == "user" and line.kind == "button":
        return f"user: [click {line.text}]"
    return line.show()


def match_value(actual: Any, expected: Any) -> bool:
    """``expected`` is a literal (compared exactly, numbers by value) or a matcher mapping."""
    if isinstance(expected, dict) and expected and set(expected) <= _MATCHERS:
        return all(_matcher(actual, k, v) for k, v in expected.items())
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual is expected or actual == expected
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return float(expected) == float(actual)
    if isinstance(expected, (int, float)) and isinstance(actual, str):
        try:
            return float(actual) == float(expected)
        except ValueError:
            return False
    if isinstance(expected, dict) and isinstance(actual, dict):
        return all(k in actual and match_value(actual[k], v) for k, v in expected.items())
    if isinstance(expected, list) and isinstance(actual, (list, tuple)):
        return len(expected) == len(actual) and all(match_value(a, e) for a, e in zip(actual, expected, strict=True))
    return bool(actual == expected)


def _matcher(actual: Any, kind: str, wanted: Any) -> bool:
    if kind == "has":
        return isinstance(actual, (list, tuple)) and any(match_value(a, wanted) for a in actual)
    if kind == "contains":
        return str(wanted) in _as_text(actual)
    if kind == "matches":
        return re.search(str(wanted), _as_text(actual)) is not None
    if kind == "count":
        return isinstance(actual, (list, tuple, dict, str)) and len(actual) == int(wanted)
    return False


def _as_text(value: Any) -> str:
    """What ``contains`` and ``matches`` read: text as it is, nothing (``None``, a missing path) as
    "" (as a template renders it), anything else as YAML and JSON spell it: 2, 2.5, true, ["a"]."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, default=str)


def _check_bot(line: Line, expected: Any) -> str | None:
    """Why ``line`` does not match a ``bot:`` expectation, or None."""
    if isinstance(expected, str):
        return None if line.text == expected else "text differs"
    if "text" in expected and line.text != expected["text"]:
        return "text differs"
    if "contains" in expected and str(expected["contains"]) not in line.text:
        return f"text does not contain {_show(expected['contains'])}"
    if "matches" in expected and re.search(str(expected["matches"]), line.text) is None:
        return f"text does not match /{expected['matches']}/"
    if "buttons" in expected and [str(b) for b in expected["buttons"]] != line.buttons:
        return f"buttons differ: expected {_show(expected['buttons'])}, got {_show(line.buttons)}"
    if "kind" in expected and expected["kind"] != line.kind:
        return f"kind differs: expected {expected['kind']}, got {line.kind}"
    if "attachments" in expected:
        got = [a["kind"] for a in line.attachments]
        want = [a if isinstance(a, str) else a.get("kind") for a in expected["attachments"]]
        if got != want:
            return f"attachments differ: expected {_show(want)}, got {_show(got)}"
    return None


async def _run_script(sim: Simulator, script: list[Any], lines: list[int], shown: dict[int, str]) -> int:
    """Run the script (its shape checked); ``shown`` gets the transcript line each user line made
    and each bot line matched, so that the diff shows them as they happened."""
    pending: list[Line] = []
    cursor = 0  # transcript lines already moved into pending

    def collect() -> None:
        nonlocal cursor
        pending.extend(line for line in sim.transcript[cursor:] if line.role == "bot")
        cursor = len(sim.transcript)

    def where(i: int) -> str:
        return f"line {lines[i]}" if i < len(lines) else f"entry {i + 1}"

    await sim.settle()
    if sim.channel == PROCESS_CHANNEL:  # a process: started for the contact, nobody writes first
        await sim.feed(ev.StartBot(sim.flow.id))

    for i, entry in enumerate(script):
        collect()
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConversationTestError(
                f"{where(i)}: each script entry has one key (user, bot, wait, expect, event, silence)")
        (key, value), = entry.items()
        if key in ("user", "wait", "event") and pending:
            raise _Failure(f"{where(i)}: unexpected bot message before this {key}: {pending[0].show()}",
                           _script_line(entry), pending[0].show())
        if key == "user":
            said = len(sim.transcript)
            if isinstance(value, str):
                await sim.say(value)
            elif isinstance(value, dict) and "click" in value:
                try:
                    await sim.click(str(value["click"]))
                except LookupError as exc:
                    raise _Failure(f"{where(i)}: {exc}") from None
            elif isinstance(value, dict) and ("text" in value or "payload" in value):
                await sim.say(str(value.get("text", "")), payload=value.get("payload"),
                              kind=str(value.get("kind") or ("button" if value.get("payload") else "text")))
            else:
                raise ConversationTestError(f"{where(i)}: user takes text or {{click: TITLE}}")
            shown.update((i, _actual_line(x)) for x in sim.transcript[said:] if x.role == "user")
        elif key == "bot":
            if not pending:
                raise _Failure(f"{where(i)}: expected a bot message, but the bot sent nothing more",
                               _script_line(entry), "(nothing)")
            line = pending.pop(0)
            why = _check_bot(line, value)
            if why:
                raise _Failure(f"{where(i)}: {why}", _script_line(entry), line.show())
            shown[i] = line.show()
        elif key == "wait":
            try:
                seconds = parse_duration(value)
            except DurationError as exc:
                raise ConversationTestError(f"{where(i)}: {exc}") from None
            await sim.wait(seconds)
        elif key == "event":
            if not isinstance(value, dict) or "type" not in value:
                raise ConversationTestError(f"{where(i)}: event takes a mapping with type")
            data = {k: v for k, v in value.items() if k != "type"}
            try:
                await sim.event(str(value["type"]), data)
            except ValueError as exc:
                raise ConversationTestError(f"{where(i)}: event: {exc}") from None
        elif key == "expect":
            if not isinstance(value, dict):
                raise ConversationTestError(f"{where(i)}: expect takes a mapping of path: value")
            ctx = sim.context()
            for path, wanted in value.items():
                actual = lookup(ctx, tuple(str(path).split(".")))
                if not match_value(actual, wanted):
                    raise _Failure(f"{where(i)}: {path} is {_show(actual)}, expected {_show(wanted)}",
                                   f"{path}: {_show(wanted)}", f"{path}: {_show(actual)}")
        elif key == "silence":
            if value and pending:
                raise _Failure(f"{where(i)}: expected silence, but the bot sent: {pending[0].show()}",
                               "(silence)", pending[0].show())
        else:
            raise ConversationTestError(
                f"{where(i)}: unknown script entry {key!r} (user, bot, wait, expect, event, silence)")
    collect()
    if pending:
        raise _Failure(f"end of script: unexpected bot message: {pending[0].show()}", "(end)", pending[0].show())
    return len(script)


def run_test_file(path: Path, channels: Collection[str] | None = None) -> TestOutcome:
    """One test file run; ``channels``: the channel names it may name (None: any)."""
    shown: dict[int, str] = {}
    try:
        test = load_test_file(path, channels)
        sim = build_simulator(path, test.header)
        count = asyncio.run(_run_script(sim, test.script, test.lines, shown))
        return TestOutcome(path, True, lines_run=count)
    except ConversationTestError as exc:
        first, *rest = str(exc).splitlines() or [""]
        return TestOutcome(path, False, f"broken test: {first}", details=rest)
    except _Failure as exc:
        return _failed(path, exc, sim, test.script, shown)
    except Exception as exc:  # a crash (of the runtime under test too) breaks one test, not the run
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        return TestOutcome(path, False, f"broken test: {type(exc).__name__}: {exc}",
                           details=[f"raised at {frame.filename}:{frame.lineno} in {frame.name}"])


def _failed(path: Path, exc: _Failure, sim: Simulator, script: list[Any], shown: dict[int, str]) -> TestOutcome:
    expected = [shown.get(i) or _script_line(e) for i, e in enumerate(script)]
    actual = [_actual_line(line) for line in sim.transcript]
    details = []
    if exc.expected is not None:
        details += [f"expected: {exc.expected}", f"actual:   {exc.actual}"]
    details.append("transcript (- expected script, + what happened):")
    details += ["  " + d for d in _diff(expected, actual)]
    errors = [t for t in sim.traces if t.level in ("error", "warning")]
    if errors:
        details.append("runtime notes:")
        details += [f"  {t.event}: {_show(t.data)}" for t in errors]
    if sim.rules is not None and sim.rules.history:
        details.append("what the rules did:")
        details += [f"  {h['at']} lead {h['lead']}: {h['rule']} {h['outcome']}" + (f" ({h['detail']})"
                    if h["detail"] else "") for h in sim.rules.history]
    return TestOutcome(path, False, str(exc), details=details)


def _diff(expected: list[str], actual: list[str]) -> Iterator[str]:
    # Only user and bot lines are comparable with the script.
    actual = [a for a in actual if a.startswith(("user:", "bot:"))]
    expected = [e for e in expected if e.startswith(("user:", "bot:"))]
    for line in difflib.ndiff(expected, actual):
        if line.startswith("?"):
            continue
        yield line
