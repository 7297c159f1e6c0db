"""Validation of automation documents (``salesbot.automations/1``): every problem at once.

``validate_automations`` checks a document against the models (each rule, trigger and scoring
rule on its own, so one broken rule hides nothing of the others) and then against the outside
world the ``AutomationContext`` describes: the pipeline and its stages, the bots, the fields. It
reports each problem with its JSON pointer and, where a name is close to a known one, a
did-you-mean hint, like the flow validator whose helpers it shares (``bot.builder.validate``).
Every check is listed in docs/automations.md ("What the validator checks").
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from annotated_types import MaxLen
from pydantic import Field, TypeAdapter, ValidationError

from ..builder import models as fm
from ..builder.problems import (
    UnionTag,
    model_keys,
    pointer,
    schema_problems,
    sorted_problems,
    suggest,
    unknown_event_type,
)
from ..builder.validate import MAX_DOCUMENT_BYTES, Compiler, check_clock
from ..errors import AutomationsInvalid, Problem
from . import models as am
from .events import EVENT_TYPE_PATTERN, EVENT_TYPES, is_known_type


@dataclass(frozen=True, slots=True)
class AutomationContext:
    """What a document is checked against.

    ``pipelines``: pipeline name -> its stages in order (empty: the CRM's catalogue is unknown,
    pipeline and stages are not checked); ``bots``: the bot ids ``start_bot`` / ``start_process``
    may name (None: not checked); ``fields``: the custom field paths (``lead.fields.budget``)
    rules may read (None: not checked).
    """

    pipelines: Mapping[str, Sequence[str]]
    bots: Collection[str] | None = None
    fields: Collection[str] | None = None


def _limit(name: str) -> int:
    """The most items the model allows in list ``name`` (the envelope keeps the same limits)."""
    return next(m.max_length for m in am.Automations.model_fields[name].metadata if isinstance(m, MaxLen))


class _Envelope(am.Automations):
    """The document with its rules, triggers and scoring unparsed: each is checked on its own."""

    rules: Annotated[list[Any], Field(max_length=_limit("rules"), default_factory=list)]
    triggers: Annotated[list[Any], Field(max_length=_limit("triggers"), default_factory=list)]
    scoring: Annotated[list[Any], Field(max_length=_limit("scoring"), default_factory=list)]


_T = TypeVar("_T")
_RULE: TypeAdapter[am.Rule] = TypeAdapter(am.Rule)
_TRIGGER: TypeAdapter[am.Trigger] = TypeAdapter(am.Trigger)
_SCORING: TypeAdapter[am.ScoreRule | am.DecayRule] = TypeAdapter(am.Scoring)
#: Keys of both formats, for "unknown key" hints.
_KEYS = model_keys(am, fm)
#: What a rule's condition and templates can read.
RULE_NAMES = frozenset({"lead", "contact", "company", "event", "now"})
_CUSTOM_FIELD = re.compile(r"^(lead|contact|company)\.fields\.[^.]+")
_TEMPLATE = re.compile(r"\{\{|\{%")
#: C0 controls but tab and line breaks, and DEL: never meant, often an attack on logs or the CRM.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: At most this many control-character problems are reported (one is enough to fix them all).
_MAX_CONTROL_REPORTS = 10


def _explain(err: Mapping[str, Any], path: list[str | int]) -> str | None:
    """This format's own wording of some schema errors (None: the flow validator's)."""
    kind = err["type"]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a JSON object"
    if kind == "union_tag_not_found" and "_do_kind" in str((err.get("ctx") or {}).get("discriminator")):
        return 'needs one of "start_bot", "actions" or "start_process"'
    if kind == "union_tag_not_found" and "_score_kind" in str((err.get("ctx") or {}).get("discriminator")):
        return 'a scoring rule is {"on": …, "add": n} or {"decay": {"every": …, "subtract": n}}'
    if kind == "string_pattern_mismatch" and path and path[-1] == "on" and isinstance(err.get("input"), str):
        bad = err["input"]
        return (f'"{bad}" is not an event type: lower-case words joined by dots, such as "order.paid" '
                f'or "custom.signed_up"{suggest(bad, EVENT_TYPES)}')
    return None


def _do_tag(path: list[str | int], node: dict[str, Any]) -> str | None:
    return am._do_kind(node) if path == ["do"] else None


def _score_tag(path: list[str | int], node: dict[str, Any]) -> str | None:
    return am._score_kind(node) if not path else None


def _schema(exc: ValidationError, raw: Any, prefix: list[str | int],
            union_tag: UnionTag | None = None) -> list[Problem]:
    return schema_problems(exc, raw, prefix, keys=_KEYS, union_tag=union_tag, explain=_explain)


def _items(doc: Mapping[str, Any], key: str) -> list[tuple[int, Any]]:
    given = doc.get(key)
    return list(enumerate(given)) if isinstance(given, list) else []


def _text(raw: Any, key: str) -> str | None:
    value = raw.get(key) if isinstance(raw, dict) else None
    return value if isinstance(value, str) else None


class _Checker:
    """The checks that need more than one item, or the context."""

    def __init__(self, doc: Mapping[str, Any], context: AutomationContext) -> None:
        self.doc = doc
        self.context = context
        self.problems: list[Problem] = []
        self.pipeline = _text(doc, "pipeline")
        self.stages: list[str] | None = None  # None: unknown, not checked
        if context.pipelines and self.pipeline is not None:
            if self.pipeline in context.pipelines:
                self.stages = list(context.pipelines[self.pipeline])
            else:
                known = list(context.pipelines)
                self.error(["pipeline"], f'unknown pipeline "{self.pipeline}"{suggest(self.pipeline, known)}; '
                                         f'known: {", ".join(known)}')

    def error(self, at: list[str | int], message: str, severity: str = "error") -> None:
        self.problems.append(Problem(pointer(at), message, severity))

    def warning(self, at: list[str | int], message: str) -> None:
        self.error(at, message, "warning")

    # ------------------------------------------------------------------ names
    def stage(self, name: str | None, at: list[str | int]) -> None:
        if name is None or self.stages is None or name in self.stages:
            return
        self.error(at, f'unknown stage "{name}" of pipeline "{self.pipeline}"{suggest(name, self.stages)}; '
                       f'its stages: {", ".join(self.stages)}')

    def bot(self, name: str | None, at: list[str | int]) -> None:
        bots = self.context.bots
        if name is None or bots is None or name in bots:
            return
        self.error(at, f'unknown bot "{name}"{suggest(name, bots)}' + (
            f'; known: {", ".join(sorted(bots)[:20])}' if bots else "; no bot is loaded"))

    def field(self, name: str | None, at: list[str | int]) -> None:
        fields = self.context.fields
        if name is None or fields is None or not _CUSTOM_FIELD.match(name):
            return
        if name not in fields and not any(name.startswith(f + ".") for f in fields):
            self.error(at, f'unknown field "{name}"{suggest(name, fields)}')

    def event_type(self, name: str | None, at: list[str | int]) -> None:
        if name is None or not re.match(EVENT_TYPE_PATTERN, name) or is_known_type(name):
            return  # a malformed name is the schema's problem
        self.error(at, unknown_event_type(name))

    def ids(self) -> None:
        seen: dict[str, list[str | int]] = {}
        for key in ("rules", "triggers"):
            for i, raw in _items(self.doc, key):
                rid = _text(raw, "id")
                if rid is None:
                    continue
                if rid in seen:
                    self.error([key, i, "id"], f'id "{rid}" is already used by {pointer(seen[rid])}: rule and '
                                               'trigger ids are unique in a document (counts and history use them)')
                else:
                    seen[rid] = [key, i]


def _control_characters(node: Any, at: list[str | int]) -> Iterator[Problem]:
    """A problem for each key or text with a control character (tab and line breaks are fine)."""
    if isinstance(node, str):
        found = _CONTROL.search(node)
        if found:
            yield Problem(pointer(at), f"control character U+{ord(found.group()):04X} is not allowed")
    elif isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and _CONTROL.search(key):
                yield Problem(pointer(at + [key]), "a key with a control character is not allowed")
            yield from _control_characters(value, at + [key])
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _control_characters(value, at + [i])


def _leaf_fields(raw: Any, at: list[str | int]) -> Iterator[tuple[str, list[str | int]]]:
    """The ``field`` of every leaf of a raw condition, with its pointer."""
    if isinstance(raw, dict):
        if isinstance(raw.get("field"), str):
            yield raw["field"], at + ["field"]
        for key in ("all", "any"):
            for i, child in enumerate(raw.get(key) or []) if isinstance(raw.get(key), list) else ():
                yield from _leaf_fields(child, at + [key, i])
        if "not" in raw:
            yield from _leaf_fields(raw["not"], at + ["not"])


def _check_rule(c: _Checker, i: int, raw: Any, rule: am.Rule | None, hours_set: bool) -> None:
    at: list[str | int] = ["rules", i]
    if not isinstance(raw, dict):
        return
    c.stage(_text(raw, "stage"), at + ["stage"])
    do = raw.get("do")
    if isinstance(do, dict):
        c.bot(_text(do, "start_bot"), at + ["do", "start_bot"])
        c.bot(_text(do, "start_process"), at + ["do", "start_process"])
    c.field(_text(raw, "field"), at + ["field"])
    if isinstance(raw.get("at"), dict):
        c.field(_text(raw["at"], "field"), at + ["at", "field"])
    for name, where in _leaf_fields(raw.get("if"), at + ["if"]):
        c.field(name, where)
    if rule is None:
        # The model checks what each kind of rule needs only once every field is valid: say it now.
        on = raw.get("on")
        kinds = {on} if isinstance(on, str) else set(on) if isinstance(on, list) and all(
            isinstance(k, str) for k in on) else set()
        for kind, attr, example in am._NEEDS:
            if kind in kinds and raw.get(attr) is None:
                c.error(at, f'a rule on "{kind}" needs {attr} ({example})')  # the model's own words
        return
    compiler = Compiler()
    if rule.if_ is not None:
        compiler.predicate(rule.if_, at + ["if"])
    if isinstance(rule.do, am.ActionsDo):
        compiler.actions(rule.do.actions, at + ["do", "actions"])
        for j, action in enumerate(rule.do.actions):
            if isinstance(action, fm.ChangeStage) and isinstance(action.stage, str) \
                    and not _TEMPLATE.search(action.stage) and action.pipeline in (None, c.pipeline):
                c.stage(action.stage, at + ["do", "actions", j, "stage"])
                if action.stage == rule.stage:
                    c.warning(at + ["do", "actions", j, "stage"],
                              f'moves the lead to "{rule.stage}", the stage it is already in: nothing happens')
    else:
        compiler.value(rule.do.variables, at + ["do", "variables"])
    c.problems.extend(compiler.problems)
    unknown = sorted(compiler.names - RULE_NAMES)
    if unknown:
        c.warning(at, f'reads {", ".join(unknown)}, which a rule does not have: its condition and templates '
                      f'see {", ".join(sorted(RULE_NAMES))} (always empty otherwise)')
    if rule.active == "outside_working_hours" and not hours_set:
        c.error(at + ["active"], "never acts: without settings.working_hours every hour is a working hour")
    elif rule.active == "working_hours" and not hours_set:
        c.warning(at + ["active"], 'the same as "always": settings.working_hours is not set')
    if rule.apply_to_existing and set(rule.on) <= {"created"}:
        c.warning(at + ["apply_to_existing"], 'a rule on "created" only: leads already in the stage were '
                                              "created long ago; it acts on each of them once now")


def _check_trigger(c: _Checker, i: int, raw: Any, trigger: am.Trigger | None,
                   earlier: dict[str, int]) -> None:
    at: list[str | int] = ["triggers", i]
    if not isinstance(raw, dict):
        return
    stage = _text(raw, "stage")
    c.stage(stage, at + ["stage"])
    c.event_type(_text(raw, "on"), at + ["on"])
    if trigger is None:
        return
    compiler = Compiler()
    compiler.value(trigger.match, at + ["match"])
    c.problems.extend(compiler.problems)
    if c.stages and not trigger.allow_backward and trigger.stage == c.stages[0]:
        c.error(at + ["stage"], f'can never fire: "{trigger.stage}" is the first stage of the pipeline, so moving '
                                'there is always backwards (set "allow_backward": true, or pick a later stage)')
    key = json.dumps([trigger.on, trigger.match], sort_keys=True, default=str)
    if key in earlier:
        c.warning(at, f"fires on the same events as /triggers/{earlier[key]}: the lead would be moved twice")
    else:
        earlier[key] = i


def _check_scoring(c: _Checker, items: list[tuple[int, Any, am.ScoreRule | am.DecayRule | None]]) -> None:
    decay: int | None = None
    adds = 0
    for i, raw, parsed in items:
        at: list[str | int] = ["scoring", i]
        if isinstance(raw, dict):
            c.event_type(_text(raw, "on"), at + ["on"])
            adds += "decay" not in raw
        if isinstance(parsed, am.DecayRule):
            if decay is not None:
                c.error(at, f"a second decay rule: a document has one (/scoring/{decay})")
            decay = i if decay is None else decay
        elif isinstance(parsed, am.ScoreRule):
            compiler = Compiler()
            compiler.value(parsed.match, at + ["match"])
            c.problems.extend(compiler.problems)
    if decay is not None and adds == 0:
        c.warning(["scoring", decay], "only a decay rule: scores only ever go down, never up")


def _parsed(adapter: TypeAdapter[_T], document: Mapping[str, Any], key: str, problems: list[Problem],
            union_tag: UnionTag | None = None) -> list[tuple[int, Any, _T | None]]:
    """Each item of list ``key`` parsed on its own (None when it fails; its problems appended)."""
    out: list[tuple[int, Any, _T | None]] = []
    for i, raw in _items(document, key):
        parsed = None
        try:
            parsed = adapter.validate_python(raw)
        except ValidationError as exc:
            problems.extend(_schema(exc, raw, [key, i], union_tag))
        out.append((i, raw, parsed))
    return out


def check_automations(document: Any, context: AutomationContext) -> tuple[list[Problem], am.Automations | None]:
    """Every problem of a document (errors and warnings, sorted), and its model when it has no errors."""
    if not isinstance(document, dict):
        return [Problem("", "an automation document is a JSON object")], None
    problems: list[Problem] = []
    size = len(json.dumps(document, ensure_ascii=False).encode())
    if size > MAX_DOCUMENT_BYTES:
        problems.append(Problem("", f"the document is {size} bytes; at most {MAX_DOCUMENT_BYTES} are allowed"))
    for n, problem in enumerate(_control_characters(document, [])):
        if n == _MAX_CONTROL_REPORTS:
            break
        problems.append(problem)
    settings: am.Settings | None = None
    try:
        settings = _Envelope.model_validate(document).settings
    except ValidationError as exc:
        problems.extend(_schema(exc, document, []))
        try:  # checked on their own when the envelope failed (a bad id, say)
            settings = am.Settings.model_validate(document.get("settings", {}))
        except ValidationError:
            settings = None  # already reported with the envelope
    check_clock(settings.timezone if settings else None, settings.working_hours if settings else None, problems)
    hours_set = bool(settings and settings.working_hours)

    c = _Checker(document, context)
    c.ids()
    for i, raw, rule in _parsed(_RULE, document, "rules", problems, _do_tag):
        _check_rule(c, i, raw, rule, hours_set)
    earlier: dict[str, int] = {}
    for i, raw, trigger in _parsed(_TRIGGER, document, "triggers", problems):
        _check_trigger(c, i, raw, trigger, earlier)
    scoring = _parsed(_SCORING, document, "scoring", problems, _score_tag)
    _check_scoring(c, scoring)
    problems = sorted_problems(problems + c.problems)
    if any(p.severity == "error" for p in problems):
        return problems, None
    return problems, am.Automations.model_validate(document)


def validate_automations(document: Any, context: AutomationContext) -> list[Problem]:
    """Every problem of an automation document: errors and warnings, each with its JSON pointer."""
    return check_automations(document, context)[0]


def parse_automations(document: Any, context: AutomationContext) -> am.Automations:
    """The model of a valid document, or ``AutomationsInvalid`` listing every problem."""
    problems, model = check_automations(document, context)
    if model is None:
        raise AutomationsInvalid(problems)
    return model


__all__ = ["RULE_NAMES", "AutomationContext", "check_automations", "parse_automations", "validate_automations"]
