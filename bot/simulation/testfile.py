"""The shape of a conversation test file (``docs/testing.md``), checked when the file is loaded.

Every problem is reported at once as ``file:line: key: message`` and the test is broken before
anything runs, instead of a crash (or a silently misread value) half-way through the script.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ..builder.durations import DurationError, parse_duration
from ..engine.process import PROCESS_CHANNEL
from ..errors import ConversationTestError

MATCHERS = frozenset({"has", "contains", "matches", "count"})
ENTRIES = ("user", "bot", "wait", "expect", "event", "silence")
_DEFAULT_NOW = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
Loc = tuple[str | int, ...]


def _one_or_list(value: Any) -> Any:
    """One name where a list of names is expected is a one-item list (``tags: vip``)."""
    return [value] if isinstance(value, str) else value


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, not {_show(value)}")
    return value


def _text_or_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected text or a number, not {_show(value)}")
    return value


def _now(value: Any) -> Any:
    if value is None or isinstance(value, datetime):
        parsed = value or _DEFAULT_NOW
    elif isinstance(value, date):  # now: 2026-11-25 (YAML reads a date): its midnight
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{_show(value)} is not an ISO date-time (2026-11-25T10:00:00+03:00)") from None
    else:
        raise ValueError(f"expected an ISO date-time, not {_show(value)}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _pattern(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


Names = Annotated[list[str], BeforeValidator(_one_or_list)]
Number = Annotated[Any, AfterValidator(_number)]
TextOrNumber = Annotated[Any, AfterValidator(_text_or_number)]
Pattern = Annotated[str, AfterValidator(_pattern)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Contact(_Strict):
    name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    email: str | None = None
    score: Number | None = None
    responsible: TextOrNumber | None = None
    fields: dict[str, Any] = Field(default_factory=dict)
    tags: Names = Field(default_factory=list)
    unsubscribed: bool = False


class Lead(_Strict):
    name: str | None = None
    pipeline: str | None = None
    stage: str | None = None
    price: Number | None = None
    responsible: TextOrNumber | None = None
    fields: dict[str, Any] = Field(default_factory=dict)
    tags: Names = Field(default_factory=list)


class Header(_Strict):
    """Everything but the script's entries (checked one by one, see ``_check_entry``)."""

    flow: str
    bots: Names = Field(default_factory=list)
    channel: str = "livechat"
    now: Annotated[datetime, BeforeValidator(_now)] = _DEFAULT_NOW
    contact: Contact | None = None
    lead: Lead | None = None
    pipelines: dict[str, list[str]] | None = None
    webhooks: dict[str, Any] | None = None
    widgets: dict[str, Any] | None = None
    automations: str | None = None
    name: str | None = None
    description: str | None = None
    script: Annotated[list[Any], Field(min_length=1)]


class UserLine(_Strict):
    click: str | None = None
    text: str | None = None
    payload: Any = None
    kind: str | None = None


class BotLine(_Strict):
    text: str | None = None
    contains: str | None = None
    matches: Pattern | None = None
    buttons: Names | None = None
    attachments: list[str | dict[str, Any]] | None = None
    kind: str | None = None


@dataclass
class TestFile:
    """A test file whose shape is right: the header, the normalised script, each entry's line."""

    header: Header
    script: list[dict[str, Any]]
    lines: list[int]


def load_test_file(path: Path, channels: Collection[str] | None = None) -> TestFile:
    """The file, or ``ConversationTestError`` listing every problem (one a line); ``channels``: the
    channel names a test may render for (the CLI's registry; None: any)."""
    try:
        text = path.read_text(encoding="utf-8")
        doc = yaml.safe_load(text)
        node = yaml.compose(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConversationTestError(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConversationTestError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConversationTestError(f"{path}: a test file is a mapping with flow and script")
    problems: list[tuple[Loc, str]] = []
    header: Header | None = None
    try:
        header = Header.model_validate(doc)
    except ValidationError as exc:
        problems += [(tuple(e["loc"]), _message(e)) for e in exc.errors()]
    script: list[dict[str, Any]] = []
    raw = doc.get("script")
    for i, entry in enumerate(raw if isinstance(raw, list) else []):
        found, normal = _check_entry(entry)
        problems += [(("script", i, *loc), msg) for loc, msg in found]
        script.append(normal)
    problems += _check_stages(doc.get("pipelines"), doc.get("lead"))
    problems += _check_channel(doc.get("channel"), channels)
    said = [_where(path, node, loc) + msg for loc, msg in problems]
    said += [f"{path}:{line}: {_key(loc)}: given twice (line {first} too); write it once"
             for line, loc, first in _duplicates(node)]
    if said or header is None:
        raise ConversationTestError("\n".join(said))
    lines = [item.start_mark.line + 1 for item in _child(node, "script").value]  # type: ignore[union-attr]
    return TestFile(header, script, lines)


def _check_channel(channel: Any, channels: Collection[str] | None) -> list[tuple[Loc, str]]:
    """A channel no adapter renders for would run the test as plain text, not as that channel."""
    if channels is None or not isinstance(channel, str) or channel in channels or channel == PROCESS_CHANNEL:
        return []
    known = ", ".join(sorted({*channels, PROCESS_CHANNEL}))
    return [(("channel",), f"unknown channel {_show(channel)} (channels: {known})")]


def _check_stages(pipelines: Any, lead: Any) -> list[tuple[Loc, str]]:
    """The lead's pipeline and stage, when the test names its pipelines (the CRM would refuse them);
    read from the document as it is, so that they are reported beside the other problems."""
    if not isinstance(pipelines, dict) or not pipelines or not isinstance(lead, dict):
        return []
    pipeline = lead.get("pipeline") or next(iter(pipelines))
    if pipeline not in pipelines:
        known = ", ".join(map(str, pipelines))
        return [(("lead", "pipeline"), f"unknown pipeline {_show(pipeline)} (pipelines: {known})")]
    stages = pipelines[pipeline]
    stage = lead.get("stage")
    if stage is not None and isinstance(stages, list) and stage not in stages:
        known = ", ".join(map(str, stages))
        return [(("lead", "stage"), f"unknown stage {_show(stage)} in pipeline {_show(pipeline)} (stages: {known})")]
    return []


def _check_entry(entry: Any) -> tuple[list[tuple[Loc, str]], dict[str, Any]]:
    """The problems of one script entry, and the entry with its value normalised."""
    if not isinstance(entry, dict) or len(entry) != 1:
        return [((), f"each script entry has one key ({', '.join(ENTRIES)})")], {}
    (key, value), = entry.items()
    if key not in ENTRIES:
        return [((key,), f"unknown script entry (known: {', '.join(ENTRIES)})")], entry
    problems: list[tuple[Loc, str]] = []
    models: dict[str, type[BaseModel]] = {"user": UserLine, "bot": BotLine}
    model = models.get(key)
    if model is not None and isinstance(value, dict):
        try:
            value = model.model_validate(value).model_dump(exclude_none=True)  # null: not given
        except ValidationError as exc:
            return [((key, *e["loc"]), _message(e, model)) for e in exc.errors()], entry
        if key == "user" and not {"click", "text", "payload"} & set(value):
            problems.append(((key,), "takes text, {click: TITLE} or {text, payload, kind}"))
        elif key == "user" and "click" in value and len(value) > 1:
            problems.append(((key,), "click takes no other key"))
    elif model is not None and not isinstance(value, str):
        what = "{click: TITLE} or {text, payload, kind}" if key == "user" else \
            "a mapping (text, contains, matches, buttons, attachments, kind)"
        problems.append(((key,), f"takes text or {what}, not {_show(value)}"))
    elif key == "wait":
        try:
            parse_duration(value)
        except DurationError as exc:
            problems.append(((key,), str(exc)))
    elif key == "event":
        if not isinstance(value, dict) or not isinstance(value.get("type"), str):
            problems.append(((key,), "takes a mapping with type"))
        elif value["type"] == "start_bot" and not isinstance(value.get("bot"), str):
            problems.append(((key, "bot"), "start_bot takes bot: BOT_ID (text)"))
    elif key == "expect":
        if not isinstance(value, dict) or not value:
            problems.append(((key,), "takes a mapping of path: value"))
        else:
            for path, wanted in value.items():
                if not isinstance(path, str) or not path:
                    problems.append(((key, path), "a path is text (lead.stage, vars.name …)"))
                problems += [((key, path, *loc), msg) for loc, msg in _check_expected(wanted)]
    elif key == "silence" and not isinstance(value, bool):
        problems.append(((key,), f"takes true or false, not {_show(value)}"))
    return problems, {key: value}


def _check_expected(value: Any) -> list[tuple[Loc, str]]:
    """The problems of an expected value: matchers anywhere in it (``has`` nests)."""
    out: list[tuple[Loc, str]] = []
    if isinstance(value, dict) and value and set(value) <= MATCHERS:
        for kind, wanted in value.items():
            if kind == "matches":
                if not isinstance(wanted, str):
                    out.append(((kind,), f"takes a regular expression (text), not {_show(wanted)}"))
                else:
                    try:
                        _pattern(wanted)
                    except ValueError as exc:
                        out.append(((kind,), str(exc)))
            elif kind == "contains" and not isinstance(wanted, str):
                out.append(((kind,), f"takes text, not {_show(wanted)}"))
            elif kind == "count" and (isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 0):
                out.append(((kind,), f"takes a whole number, not {_show(wanted)}"))
            elif kind == "has":
                out += [((kind, *loc), msg) for loc, msg in _check_expected(wanted)]
    elif isinstance(value, dict):
        for k, v in value.items():
            out += [((k, *loc), msg) for loc, msg in _check_expected(v)]
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += [((i, *loc), msg) for loc, msg in _check_expected(v)]
    return out


def _message(error: Any, model: type[BaseModel] | None = None) -> str:
    """Pydantic's error, said for a test's author (``model``: the one validated, else the header)."""
    kind, value = error["type"], error.get("input")
    known = {"string_type": "text", "list_type": "a list", "dict_type": "a mapping", "bool_type": "true or false",
             "datetime_type": "an ISO date-time", "model_type": "a mapping"}
    if kind == "extra_forbidden":
        parent = error["loc"][-2] if len(error["loc"]) > 1 else ""
        sections: dict[str, type[BaseModel]] = {"contact": Contact, "lead": Lead}
        fields = (model or sections.get(parent, Header)).model_fields
        return f"unknown key (known: {', '.join(fields)})"
    if kind == "missing":
        return "missing"
    if kind in known:
        return f"expected {known[kind]}, not {_show(value)}"
    if kind == "too_short":
        return "must not be empty"
    return str(error["msg"]).removeprefix("Value error, ")


def _show(value: Any) -> str:
    return "nothing" if value is None else repr(value) if isinstance(value, str) else str(value).lower() \
        if isinstance(value, bool) else str(value)


def _child(node: yaml.Node | None, key: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == str(key):
                return v  # type: ignore[no-any-return]
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
        return node.value[key]  # type: ignore[no-any-return]
    return None


def _where(path: Path, root: yaml.Node | None, loc: Loc) -> str:
    """``file:line: key: `` for a problem at ``loc`` (the line of the deepest node found; a script
    entry's key is said from the entry on)."""
    node: yaml.Node | None = root
    line = root.start_mark.line + 1 if root is not None else 1
    for part in loc:
        node = _child(node, part)
        if node is None:
            break
        line = node.start_mark.line + 1
    key = _key(loc)
    return f"{path}:{line}: " + (f"{key}: " if key else "")


def _key(loc: Loc) -> str:
    """``contact.phone``, ``lead.tags[0]``; a script entry's key from the entry on (``bot.matches``)."""
    shown = loc[2:] if loc[:1] == ("script",) and len(loc) > 1 else loc
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in shown).lstrip(".")


def _duplicates(node: yaml.Node | None, loc: Loc = ()) -> list[tuple[int, Loc, int]]:
    """Keys a mapping gives twice (YAML would keep the last silently): line, key, first line."""
    out: list[tuple[int, Loc, int]] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            name = k.value if isinstance(k, yaml.ScalarNode) else None
            if name is not None and name in seen:
                out.append((k.start_mark.line + 1, (*loc, name), seen[name]))
            elif name is not None:
                seen[name] = k.start_mark.line + 1
            out += _duplicates(v, (*loc, name) if name is not None else loc)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out += _duplicates(item, (*loc, i))
    return out
