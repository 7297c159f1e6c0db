"""Validation and compilation of flow documents.

``check_document`` finds *every* problem at once (schema, references, limits, templates,
regexes, loops that never wait) with its JSON pointer; ``compile_document`` turns a valid
document into a ``CompiledFlow`` or raises ``FlowInvalid`` with the whole list.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import regex
from jinja2 import TemplateSyntaxError
from pydantic import Field, StringConstraints, TypeAdapter, ValidationError

from ..errors import FlowInvalid, Problem
from ..messages import OutButton
from . import compiled as c
from . import models as m
from . import splits as sp
from .graph import Edge, all_edges, loops_without_wait, reachable
from .normalize import normalize
from .problems import (
    _ACTION_NAMES,
    _KEYS,
    _STEP_TYPE_NAMES,
    pointer,
    repeated_key_problems,
    schema_problems,
    sorted_problems,
    suggest,
)
from .salvage import outside, salvage
from .templates import Expression, Template, evaluate_value
from .working_hours import WorkingHours, WorkingHoursError

#: Largest document accepted (the stored JSON). Kommo's own limit is 64 KB; we allow more.
MAX_DOCUMENT_BYTES = 512 * 1024

_STEP: TypeAdapter[m.Step] = TypeAdapter(m.Step)


class _Envelope(m.Model):
    """The document with its steps left unparsed, so each step is checked on its own."""

    format: Literal["salesbot.flow/1"]
    id: m.BotId
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    start: m.StepId
    settings: m.Settings = m.Settings()
    variables: dict[m.VarName, Any] = Field(default_factory=dict)
    steps: Annotated[dict[str, Any], Field(min_length=1)]
    goals: Annotated[dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")], m.Goal],
                     Field(max_length=50)] = Field(default_factory=dict)


def _schema_problems(exc: ValidationError, raw: Any, prefix: list[str | int]) -> list[Problem]:
    return schema_problems(exc, raw, prefix, step=bool(prefix))


_REF_KEYS = {"next", "other_answer", "failed", "else", "pass", "fail", "step", "on_timeout"}
_OPAQUE_KEYS = {"params", "body", "headers", "data", "variables", "value"}


def _raw_refs(raw: Any, at: list[str | int]) -> Iterable[tuple[list[str | int], str]]:
    """Best-effort step references of a step that failed the schema, so they are checked too."""
    if isinstance(raw, dict):
        for k, v in raw.items():
            if k in _REF_KEYS and isinstance(v, str):
                yield at + [k], v
            elif k == "options" and isinstance(v, list):
                yield from ((at + [k, i], x) for i, x in enumerate(v) if isinstance(x, str))
            elif k not in _OPAQUE_KEYS:
                yield from _raw_refs(v, at + [k])
    elif isinstance(raw, list):
        for i, v in enumerate(raw):
            yield from _raw_refs(v, at + [i])


def _step_key_problems(steps: Mapping[str, Any]) -> list[Problem]:
    bad = TypeAdapter(m.StepId)
    out = []
    for key in steps:
        try:
            bad.validate_python(key)
        except ValidationError:
            out.append(Problem(pointer(["steps", key]),
                               f'"{key}" is not a step id: letters, digits, _ and -, up to 64'))
    return out


#: Action parameters that are choices or settings, never templates.
_PLAIN_ACTION_KEYS = frozenset({
    "entity", "status", "save_as", "method", "form", "to", "sender", "unsubscribe_link", "copy",
    "entities", "timeout", "due", "task_type", "from", "fields", "account", "process", "subscribe", "unsubscribe",
    "expires",
})


class Compiler:
    """Compiles parsed steps, collecting template and regex problems with their pointers."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.names: set[str] = set()  # every context name the flow reads (to skip CRM reads)
        self.loops = False  # whether any template loops (its turns may take CPU time)

    def template(self, source: str, at: list[str | int]) -> Template:
        try:
            compiled = Template(source)
            if compiled.constant is None:
                self.names |= referenced_names(source)
                self.loops = self.loops or compiled.loops
            return compiled
        except TemplateSyntaxError as exc:
            self.problems.append(Problem(pointer(at), f"template does not compile: {exc.message} (line {exc.lineno})"))
            return Template("")

    def optional(self, source: str | None, at: list[str | int]) -> Template | None:
        return None if source is None else self.template(source, at)

    def value(self, value: Any, at: list[str | int]) -> Any:
        if isinstance(value, str):
            return self.template(value, at)
        if isinstance(value, list):
            return [self.value(v, at + [i]) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.value(v, at + [k]) for k, v in value.items()}
        return value

    def regex(self, pattern: str, at: list[str | int]) -> regex.Pattern[str] | None:
        try:
            return regex.compile(pattern, regex.IGNORECASE | regex.V0)
        except regex.error as exc:
            self.problems.append(Problem(pointer(at), f"regular expression does not compile: {exc}"))
            return None
        except Exception as exc:
            self.problems.append(Problem(pointer(at), f"regular expression does not compile: {exc}"))
            return None

    def predicate(self, p: m.Predicate, at: list[str | int]) -> c.CPredicate:
        if isinstance(p, m.AllPredicate):
            return c.CAll(tuple(self.predicate(x, at + ["all", i]) for i, x in enumerate(p.all)))
        if isinstance(p, m.AnyPredicate):
            return c.CAny(tuple(self.predicate(x, at + ["any", i]) for i, x in enumerate(p.any)))
        if isinstance(p, m.NotPredicate):
            return c.CNot(self.predicate(p.not_, at + ["not"]))
        if isinstance(p, m.ExprPredicate):
            try:
                compiled = c.CExpr(Expression(p.expr))
                self.names |= referenced_names("{{ " + p.expr + " }}")
                return compiled
            except TemplateSyntaxError as exc:
                self.problems.append(Problem(pointer(at + ["expr"]), f"expression does not compile: {exc.message}"))
                return c.CExpr(Expression("false"))
        self.names.add(p.field.split(".")[0])
        value = self.value(p.value, at + ["value"])
        pattern = None
        if p.op == "matches":
            if isinstance(p.value, str) and "{{" not in p.value and "{%" not in p.value:
                pattern = self.regex(p.value, at + ["value"])
            elif not isinstance(p.value, str):
                self.problems.append(Problem(pointer(at + ["value"]), '"matches" takes a regular expression'))
        if not _has_template(value):  # plain data: evaluated once, here
            return c.CLeaf(tuple(p.field.split(".")), p.op, evaluate_value(value, {}), pattern, True)
        return c.CLeaf(tuple(p.field.split(".")), p.op, value, pattern)

    def actions(self, actions: Iterable[m.Action], at: list[str | int]) -> tuple[c.CAction, ...]:
        """Actions with their templates compiled (an action step's, or an automation rule's)."""
        out = []
        for i, a in enumerate(actions):
            params = a.model_dump(by_alias=True, exclude={"do"})
            compiled_params = {
                k: v if k in _PLAIN_ACTION_KEYS or (a.do == "set_variable" and k == "name")
                else self.value(v, at + [i, k])
                for k, v in params.items()
            }
            out.append(c.CAction(a.do, MappingProxyType(compiled_params)))
        return tuple(out)

    def step(self, sid: str, s: m.Step) -> c.CStep:
        at: list[str | int] = ["steps", sid]
        t = s.type
        if isinstance(s, m.MessageStep):
            buttons = []
            for i, b in enumerate(s.buttons):
                title = self.template(b.title, at + ["buttons", i, "title"])
                syn = frozenset(normalize(x) for x in b.synonyms)
                keys = syn | ({normalize(b.title)} if title.is_constant else frozenset())
                buttons.append(c.CButton(title, keys, syn, _payload(sid, i), b.next,
                                         self.optional(b.url, at + ["buttons", i, "url"])))
            return c.CMessage(
                sid, t, self.optional(s.text, at + ["text"]), s.template,
                self.value(s.params, at + ["params"]),
                tuple(c.CAttachment(a.kind, self.template(a.url, at + ["attachments", i, "url"]),
                                    self.optional(a.name, at + ["attachments", i, "name"]))
                      for i, a in enumerate(s.attachments)),
                tuple(buttons), s.other_answer,
                (_seconds(s.no_answer.after), s.no_answer.next) if s.no_answer else None,
                s.failed, s.recipients, s.channel_mode,
                tuple(s.channels) if s.channels is not None else None, s.next,
                any(b.next is not None for b in s.buttons),
                _static_buttons(buttons),
                tuple(b for b in buttons if b.next is not None),
            )
        if isinstance(s, m.ListStep):
            rows: list[c.CListRow] = []
            sections = []
            seen: set[str] = set()
            for si, sec in enumerate(s.sections):
                srows = []
                for ri, r in enumerate(sec.rows):
                    row = c.CListRow(r.id or _payload(sid, len(rows)), r.title, r.description, r.next, len(rows) + 1)
                    if row.id in seen:
                        self.problems.append(Problem(pointer(at + ["sections", si, "rows", ri, "id"]),
                                                     f'row id "{row.id}" is used twice'))
                    seen.add(row.id)
                    srows.append(row)
                    rows.append(row)
                sections.append((sec.title, tuple(srows)))
            return c.CList(
                sid, t, self.optional(s.header, at + ["header"]), self.template(s.text, at + ["text"]),
                self.optional(s.footer, at + ["footer"]), s.button, tuple(sections), tuple(rows),
                s.other_answer, (_seconds(s.no_answer.after), s.no_answer.next) if s.no_answer else None,
                s.failed, s.recipients, s.channel_mode,
                tuple(s.channels) if s.channels is not None else None,
            )
        if isinstance(s, m.ConditionStep):
            return c.CCondition(sid, t, tuple(
                (self.predicate(b.if_, at + ["branches", i, "if"]), b.next) for i, b in enumerate(s.branches)
            ), s.else_)
        if isinstance(s, m.ValidationStep):
            rules = tuple(
                c.CRule(r.check, r.kind, self.value(r.value, at + ["rules", i, "value"]), r.min, r.max,
                        self.regex(r.pattern, at + ["rules", i, "pattern"]) if r.pattern else None)
                for i, r in enumerate(s.rules)
            )
            return c.CValidation(sid, t, self.template(s.value, at + ["value"]), s.logic, rules,
                                 s.save_as, s.pass_, s.fail)
        if isinstance(s, m.PauseStep):
            return c.CPause(sid, t, tuple(sp.pause_event(self, e, at + ["until", i], s.next)
                                          for i, e in enumerate(s.until)))
        if isinstance(s, m.SplitStep):
            return sp.split(sid, s)
        if isinstance(s, m.ActionStep):
            return c.CActionStep(sid, t, self.actions(s.actions, at + ["actions"]), s.next, s.failed)
        if isinstance(s, m.InternalMessageStep):
            return c.CInternalMessage(sid, t, self.template(s.text, at + ["text"]), tuple(s.to), s.next)
        if isinstance(s, m.SubscribeStep):
            return c.CSubscribe(sid, t, s.tag, self.template(s.title, at + ["title"]), s.next, s.failed)
        if isinstance(s, m.CommentStep):
            return c.CComment(sid, t, self.template(s.text, at + ["text"]), s.next, s.failed)
        if isinstance(s, m.GotoStep):
            return c.CGoto(sid, t, s.step)
        if isinstance(s, m.StartBotStep):
            return c.CStartBot(sid, t, s.bot, s.next)
        if isinstance(s, m.RoundRobinStep):
            rotation = f"{sid}:{zlib.crc32(json.dumps(s.options).encode()):08x}"
            return c.CRoundRobin(sid, t, tuple(s.options), rotation)
        if isinstance(s, m.WidgetStep):
            return c.CWidget(sid, t, s.widget, self.value(s.params, at + ["params"]),
                             _seconds(s.wait.timeout) if s.wait else None,
                             s.wait.on_timeout if s.wait else None, s.next, s.failed)
        if isinstance(s, m.CustomStep):
            return c.CCustom(sid, t, s.handler, self.value(s.params, at + ["params"]), s.next, s.failed)
        if isinstance(s, m.StopStep):
            return c.CStop(sid, t, s.close_chat)
        raise AssertionError(f"no compiler for {t}")  # pragma: no cover - the schema forbids it


#: The name other modules used before the compiler was shared (bot.automations.compiled).
_Compiler = Compiler


def _seconds(duration: int | str) -> int:
    """A duration field of a parsed step. The model's type is what a document may say ("2h" or
    7200); its validator has already turned either into seconds."""
    assert isinstance(duration, int), duration
    return duration


def _static_buttons(buttons: list[c.CButton]) -> tuple[OutButton, ...] | None:
    """The buttons as sent, when nothing in them is a template (most flows)."""
    if not all(b.title.constant is not None and (b.url is None or b.url.constant is not None) for b in buttons):
        return None
    out = []
    number = 0
    for b in buttons:
        if b.next is not None:
            number += 1
            out.append(OutButton(b.title.source, b.payload, None, number))
        else:
            out.append(OutButton(b.title.source, None, b.url.source if b.url else None))
    return tuple(out)


def _has_template(value: Any) -> bool:
    if isinstance(value, Template):
        return value.constant is None
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    if isinstance(value, dict):
        return any(_has_template(v) for v in value.values())
    return False


#: Template names whose values come from the CRM snapshot.
CRM_NAMES = frozenset({"contact", "lead", "company"})


def referenced_names(source: str) -> set[str]:
    """The top-level context names a template reads (``{{ lead.price }}`` -> {"lead"})."""
    from jinja2 import meta

    from .templates import _ENV

    try:
        return set(meta.find_undeclared_variables(_ENV.parse(source)))
    except TemplateSyntaxError:
        return set()


def _payload(step_id: str, index: int) -> str:
    """A button's click payload: short (Telegram allows 64 bytes) and tied to its step."""
    return f"{zlib.crc32(step_id.encode()):08x}.{index}"


def check_document(doc: Any, *, repeated: Iterable[str] = ()) -> tuple[list[Problem], c.CompiledFlow | None]:
    """Every problem of a document (errors and warnings), and the compiled flow if it has no
    errors. ``repeated``: pointers of keys the document's JSON repeats (``RepeatedKeys``)."""
    problems: list[Problem] = repeated_key_problems(repeated)
    if not isinstance(doc, dict):
        return sorted_problems([Problem("", "a flow is a JSON object"), *problems]), None
    size = len(json.dumps(doc, ensure_ascii=False).encode())
    if size > MAX_DOCUMENT_BYTES:
        problems.append(Problem("", f"the document is {size} bytes; at most {MAX_DOCUMENT_BYTES} are allowed"))
    try:
        env = _Envelope.model_validate(doc)
    except ValidationError as exc:
        problems.extend(_schema_problems(exc, doc, []))
        env = None
    given_steps = doc.get("steps")
    raw_steps: dict[str, Any] = given_steps if isinstance(given_steps, dict) else {}
    steps: dict[str, m.Step] = {}
    salvaged: dict[str, m.Step] = {}  # steps that failed the schema, pruned: checked all the same
    touched: list[str] = []  # what pruning dropped or made up
    for sid, raw in raw_steps.items():
        try:
            steps[sid] = _STEP.validate_python(raw)
        except ValidationError as exc:
            problems.extend(_schema_problems(exc, raw, ["steps", sid]))
            if (found := salvage(_STEP.validate_python, raw, ["steps", sid], step=True)) is not None:
                salvaged[sid] = found[0]
                touched += found[1]
    problems.extend(_step_key_problems(raw_steps))
    salvaged_env = env is None
    if env is None:
        env, touched_env = _salvaged_envelope(doc)
        touched += touched_env

    names = list(raw_steps)
    raw_edges: list[Edge] = []  # references of steps that failed the schema: they still reach steps
    for sid, raw in raw_steps.items():
        if sid not in steps:
            for at, target in _raw_refs(raw, ["steps", sid]):
                if target not in raw_steps:
                    problems.append(Problem(pointer(at), f'unknown step "{target}"{suggest(target, names)}'))
                else:
                    raw_edges.append(Edge(sid, target, pointer(at), "", "wait"))
    edges = all_edges(steps)
    for e in edges:
        if e.target not in raw_steps:
            problems.append(Problem(e.pointer, f'unknown step "{e.target}"{suggest(e.target, names)}'))
    start = doc.get("start")
    if isinstance(start, str) and raw_steps and start not in raw_steps:
        problems.append(Problem("/start", f'unknown step "{start}"{suggest(start, names)}'))

    side: list[Problem] = []  # problems that may lie in what pruning touched
    settings = env.settings if env is not None else None
    tz, hours = check_clock(settings.timezone if settings else None, settings.working_hours if settings else None,
                            side)

    for cycle in loops_without_wait([e for e in edges if e.target in raw_steps]):
        route = " → ".join([cycle[0].source] + [e.target for e in cycle])
        problems.append(Problem(cycle[-1].pointer, f"loop {route} can run without ever waiting for the customer"))

    compiler = Compiler()
    compiled_steps = {sid: compiler.step(sid, s) for sid, s in steps.items()}
    pruned = Compiler()  # the salvaged parts' templates and regexes: checked, never run
    goals = sp.goals(pruned if salvaged_env else compiler, env.goals) if env is not None else {}
    for sid, s in salvaged.items():
        pruned.step(sid, s)
    problems.extend(compiler.problems)
    side += pruned.problems + sp.problems(doc, {**steps, **salvaged}, env.goals if env is not None else {})
    problems.extend(p for p in side if outside(p.pointer, touched))

    # Warnings: steps that cannot be reached; waiting steps without a fallback.
    if isinstance(start, str) and start in raw_steps:
        known = [e for e in edges if e.target in raw_steps] + raw_edges
        seen = reachable(start, known)
        for g in env.goals.values() if env is not None else ():  # a goal jumps there from any step
            if g.next is not None and g.next in raw_steps:
                seen |= reachable(g.next, known)
        for sid in raw_steps:
            if sid not in seen:
                problems.append(Problem(pointer(["steps", sid]), "step cannot be reached from the start", "warning"))
    for sid, s in steps.items():
        if not isinstance(s, (m.MessageStep, m.ListStep)):
            continue
        waits = isinstance(s, m.ListStep) or any(b.next for b in s.buttons)
        if isinstance(s, m.MessageStep) and waits and s.next is not None:
            problems.append(Problem(pointer(["steps", sid, "next"]), "ignored: a message with reply buttons goes on "
                                    "through its buttons, other_answer or no_answer", "warning"))
        if waits and s.other_answer is None and s.no_answer is None:
            problems.append(Problem(pointer(["steps", sid]), "waits for a reply but has neither other_answer nor "
                                    "no_answer: an unexpected reply leaves the customer without an answer", "warning"))

    if any(p.severity == "error" for p in problems) or env is None or touched:
        return sorted_problems(problems), None
    flow = c.CompiledFlow(
        id=env.id, version=0, name=env.name or env.id, start=env.start, tz=tz, hours=hours,
        leave_unanswered=env.settings.leave_unanswered, step_budget=env.settings.step_budget,
        variables=MappingProxyType(dict(env.variables)), steps=MappingProxyType(compiled_steps),
        digest=hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16],
        source=MappingProxyType(doc), goals=goals,
        warnings=tuple(str(p) for p in problems if p.severity == "warning"),
        called_bots=frozenset(s.bot for s in steps.values() if isinstance(s, m.StartBotStep)),
        reads_clock="now" in compiler.names,
        names=frozenset(compiler.names),
        slow_work=compiler.loops or _slow_checks(steps.values()),
        uses_crm=bool(compiler.names & CRM_NAMES) or any(
            isinstance(s, m.ActionStep) and any(getattr(a, "from_", None) == "manual" for a in s.actions)
            for s in steps.values()),
    )
    return sorted_problems(problems), flow


def check_clock(timezone: str | None, working_hours: Mapping[str, str] | None,
                problems: list[Problem]) -> tuple[ZoneInfo, WorkingHours]:
    """The ``settings`` timezone and working hours of a document (flows and automations share
    them), each problem appended; UTC and "always open" stand in for what is wrong."""
    tz = ZoneInfo("UTC")
    if timezone is not None:
        try:
            tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a directory
            problems.append(Problem("/settings/timezone", f'unknown timezone "{timezone}" '
                                    '(use an IANA name such as "Europe/Istanbul")'))
    hours = WorkingHours.parse(None, tz)
    try:
        hours = WorkingHours.parse(dict(working_hours) if working_hours is not None else None, tz)
    except WorkingHoursError as exc:
        problems.append(Problem("/settings/working_hours", str(exc)))
    if working_hours is not None and hours.always is False and not any(hours.week):
        problems.append(Problem("/settings/working_hours", "no open hours on any day"))
    return tz, hours


def _slow_checks(steps: Iterable[m.Step]) -> bool:
    """Whether the flow matches customer text against regexes, or looks for phones or e-mails
    in it: CPU work the runtime keeps off the event loop (see ``bot.runtime.driver``)."""
    def leaves(p: m.Predicate) -> Iterator[m.LeafPredicate]:
        if isinstance(p, m.AllPredicate | m.AnyPredicate):
            for child in p.all if isinstance(p, m.AllPredicate) else p.any:
                yield from leaves(child)
        elif isinstance(p, m.NotPredicate):
            yield from leaves(p.not_)
        elif isinstance(p, m.LeafPredicate):
            yield p

    for s in steps:
        if isinstance(s, m.ValidationStep) and any(
                r.check == "regex" or r.kind in ("phone", "email") for r in s.rules):
            return True
        if isinstance(s, m.ConditionStep) and any(
                p.op == "matches" for b in s.branches for p in leaves(b.if_)):
            return True
    return False


def _salvaged_envelope(doc: dict[str, Any]) -> tuple[_Envelope | None, list[str]]:
    """The envelope of a document that failed it (a bad id, a wrong settings value), pruned so
    its settings and goals are checked too; the steps and format are checked apart."""
    found = salvage(_Envelope.model_validate, {**doc, "format": m.FORMAT, "steps": {"-": None}}, [])
    return found if found is not None else (None, [])


def compile_document(doc: Any, *, version: int = 0, repeated: Iterable[str] = ()) -> c.CompiledFlow:
    """The compiled flow, or ``FlowInvalid`` listing every problem."""
    problems, flow = check_document(doc, repeated=repeated)
    if flow is None:
        raise FlowInvalid(problems)
    if version:
        from dataclasses import replace

        flow = replace(flow, version=version)
    return flow


def parse_flow_model(doc: Any) -> m.Flow:
    """The pydantic model of a document already known to be valid (for graphs and tooling)."""
    return m.Flow.model_validate(doc)


__all__ = ["_ACTION_NAMES", "_KEYS", "_STEP_TYPE_NAMES", "Edge", "check_document", "compile_document",
           "parse_flow_model", "pointer"]
