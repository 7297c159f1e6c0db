"""Kommo placeholders (``{{lead.cf.123}}``, ``{{message_text}}``) ↔ our Jinja2 templates, both directions.

Kommo text is plain text with ``{{path}}`` placeholders and no other syntax; ours is a Jinja2
template. Import (``to_template``) rewrites each placeholder into an expression of our template
context (docs/flows.md "Values") and escapes anything Jinja would read as syntax. Export
(``to_kommo``) accepts only the expressions import produces (plain paths), since Kommo evaluates
nothing else, and lists every other one as a problem.

Custom fields: Kommo names them by numeric id, we by name. ``FieldNames`` holds the ``[fields]``
table of the ``--map`` file; an id without a name becomes ``cf_<id>`` (and back), so a bot imports
without a map and exports again unchanged.

Placeholders without an equivalent (``{{founded_id}}``, ``{{contact_double.name}}``, …) become
``{{ vars["kommo:<path>"] }}``: they render empty, as a missing value does, and export restores the
original placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

#: A Kommo placeholder: ``{{`` a path of letters, digits, ``_ . - |`` ``}}`` (spaces tolerated).
_KOMMO = re.compile(r"\{\{\s*([^{}\s][^{}]*?)\s*\}\}")
#: One placeholder of our templates; the text between is literal.
_OURS = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT = re.compile(r"^[0-9]+$")
_FIELD_DEFAULT = re.compile(r"^cf_([0-9]+)$")
_UNKNOWN = re.compile(r'^vars\["kommo:([^"\\]+)"\]$')
_LITERAL = re.compile(r"""^'([^'\\]*)'$""")
_FORMULA_PART = re.compile(r"\(([^()|]+) \| float\)")
_ARITHMETIC = re.compile(r"^[0-9.+\-*/() ]*$")
_FIELD_REF = re.compile(r"""^(lead|contact|company)\.fields(?:\.([A-Za-z_][A-Za-z0-9_]*)|\["([^"\\]+)"\])$""")

#: Kommo placeholder → our expression, where the meaning is the same.
EXACT: dict[str, str] = {
    "name": "contact.name",
    "contact.name": "contact.name",
    "contact.first_name": "contact.first_name",
    "contact.id": "contact.id",
    "lead.id": "lead.id",
    "lead.name": "lead.name",
    "lead.price": "lead.price",
    "company.id": "company.id",
    "company.name": "company.name",
    "message_text": "message.text",
    "origin": "chat.channel",
    "chat.origin": "chat.channel",
    "last_validation_result": "last_validation_result",
}

#: Kommo placeholder → our nearest expression, and what differs (the warning).
APPROXIMATE: dict[str, tuple[str, str]] = {
    "lead.responsible_user_id": ("lead.responsible", "our lead.responsible is the responsible user as we know it"),
    "lead.responsible.id": ("lead.responsible", "our lead.responsible is the responsible user as we know it"),
    "lead.status_id": ("lead.stage", "our lead.stage is the stage name, not Kommo's status id"),
    "lead.pipeline_id": ("lead.pipeline", "our lead.pipeline is the pipeline name, not Kommo's id"),
    "message_text.email": ("message.text", ("the whole message, not only the e-mail address found in it "
                                           "(use a validation step and last_validation_result)")),
    "message_text.phone": ("message.text", ("the whole message, not only the phone number found in it "
                                           "(use a validation step and last_validation_result)")),
    "current_date": ("now.strftime('%d.%m.%Y')", "the date in the flow's timezone, as dd.mm.yyyy"),
    "rand": ("range(1111, 10000) | random", "a random number from 1111 to 9999"),
    "short_rand": ("range(1111, 10000) | random", "a random number from 1111 to 9999"),
    "short_rand_num": ("range(1111, 10000) | random", "a random number from 1111 to 9999"),
}

#: Our expression → Kommo placeholder (export); the first Kommo spelling of each wins.
REVERSE: dict[str, str] = {}
for _kommo, _ours in [*EXACT.items(), *((k, v[0]) for k, v in APPROXIMATE.items())]:
    REVERSE.setdefault(_ours, _kommo)
REVERSE["contact.name"] = "contact.name"
REVERSE["range(1111, 10000) | random"] = "short_rand_num"
REVERSE["message.text"] = "message_text"
REVERSE["lead.responsible"] = "lead.responsible_user_id"


@dataclass(slots=True)
class FieldNames:
    """Kommo custom-field ids ↔ our field names (the map's ``[fields]``); records the ids used without a name."""

    names: Mapping[int, str] = field(default_factory=dict)
    unmapped: set[int] = field(default_factory=set)

    def name(self, kommo_id: int) -> str:
        """Our name for a Kommo field id: the map's, else ``cf_<id>``."""
        found = self.names.get(kommo_id)
        if found is None:
            self.unmapped.add(kommo_id)
            return f"cf_{kommo_id}"
        return found

    def id(self, name: str) -> int | None:
        """The Kommo id for our field name (the map's, or the id in ``cf_<id>``); None when unknown."""
        for kommo_id, ours in self.names.items():
            if ours == name:
                return kommo_id
        m = _FIELD_DEFAULT.match(name)
        return int(m.group(1)) if m else None


@dataclass(frozen=True, slots=True)
class Rewritten:
    """A rewritten text and what an operator should know about it (plain messages, no pointer)."""

    text: str
    approximations: list[str]
    unknown: list[str]
    problems: list[str] = field(default_factory=list)  # export only: what Kommo cannot express


def _path(base: str, parts: list[str]) -> str:
    """A Jinja path from segments: ``json.a.b``, ``json["x-y"]``, ``json.items[0]``."""
    out = base
    for p in parts:
        if _IDENT.match(p):
            out += f".{p}"
        elif _INT.match(p):
            out += f"[{p}]"
        else:
            out += f'["{p}"]' if '"' not in p and "\\" not in p else f"[{p!r}]"
    return out


def _field_expr(entity: str, name: str) -> str:
    return f"{entity}.fields.{name}" if _IDENT.match(name) else f'{entity}.fields["{name}"]'


def _one_to_ours(path: str, fields: FieldNames) -> tuple[str, str | None, bool]:
    """(our expression, approximation note or None, known?) for one Kommo placeholder path."""
    if path in EXACT:
        return EXACT[path], None, True
    if path in APPROXIMATE:
        expr, note = APPROXIMATE[path]
        return expr, note, True
    parts = path.split(".")
    if parts[0] == "json" and len(parts) > 1 and all(parts[1:]):
        return _path("json", parts[1:]), None, True
    if len(parts) >= 3 and parts[0] in ("lead", "contact", "company") and parts[1] == "cf" and _INT.match(parts[2]):
        expr = _field_expr(parts[0], fields.name(int(parts[2])))
        if len(parts) == 3:
            return expr, None, True
        return expr, f"the field's value, not Kommo's per-option test {{{{{path}}}}}", True
    if '"' in path or "\\" in path:
        return "''", None, False
    return f'vars["kommo:{path}"]', None, False


def _escape(text: str) -> str:
    """Literal text made safe for Jinja: ``{%``, ``{#`` and a stray ``{{`` become string expressions."""
    return re.sub(r"\{[{%#]", lambda m: "{{ '" + m.group(0) + "' }}", text)


def to_template(text: str, fields: FieldNames) -> Rewritten:
    """Kommo text → our template (import)."""
    out: list[str] = []
    approximations: list[str] = []
    unknown: list[str] = []
    at = 0
    for m in _KOMMO.finditer(text):
        out.append(_escape(text[at:m.start()]))
        at = m.end()
        expr, note, known = _one_to_ours(m.group(1), fields)
        out.append("{{ " + expr + " }}")
        if note is not None:
            approximations.append(f"{{{{{m.group(1)}}}}} became {{{{ {expr} }}}}: {note}")
        if not known:
            unknown.append(f"Kommo placeholder {{{{{m.group(1)}}}}} has no equivalent here; it renders empty")
    out.append(_escape(text[at:]))
    return Rewritten("".join(out), approximations, unknown)


def _one_to_kommo(expr: str, fields: FieldNames) -> tuple[str | None, str | None]:
    """(Kommo text, None) or (None, problem) for one of our expressions."""
    if expr in REVERSE:
        return "{{" + REVERSE[expr] + "}}", None
    m = _LITERAL.match(expr)
    if m:
        return m.group(1), None
    m = _UNKNOWN.match(expr)
    if m:
        return "{{" + m.group(1) + "}}", None
    m = _FIELD_REF.match(expr)
    if m:
        name = m.group(2) or m.group(3)
        kommo_id = fields.id(name)
        if kommo_id is None:
            return None, (f'Kommo has no field named "{name}": add its id to [fields] in the map '
                          f"(or name it cf_<id>)")
        return "{{" + f"{m.group(1)}.cf.{kommo_id}" + "}}", None
    if "| float)" in expr:  # a Kommo formula import made typed: (lead.fields.a | float)*(lead.fields.b | float)
        parts: list[str] = []
        for i, piece in enumerate(_FORMULA_PART.split(expr)):
            if i % 2 == 0:
                if not _ARITHMETIC.match(piece):
                    break
                parts.append(piece)
            else:
                text, problem = _one_to_kommo(piece.strip(), fields)
                if text is None or problem is not None:
                    break
                parts.append(text)
        else:
            return "".join(parts), None
    if expr.startswith(("json.", "json[")):
        found: list[tuple[str, str, str]] = re.findall(r'\.([A-Za-z_][A-Za-z0-9_]*)|\[([0-9]+)\]|\["([^"\\]+)"\]',
                                                   expr[4:])
        segments = [a or b or c for a, b, c in found]
        if _path("json", segments) == expr:
            return "{{json." + ".".join(segments) + "}}", None
    return None, f"Kommo has no placeholder for {{{{ {expr} }}}} (only plain paths Kommo knows can be exported)"


def to_kommo(template: str, fields: FieldNames) -> Rewritten:
    """Our template → Kommo text (export); ``problems`` lists what Kommo cannot express."""
    out: list[str] = []
    problems: list[str] = []
    at = 0
    for m in _OURS.finditer(template):
        out.append(template[at:m.start()])
        at = m.end()
        text, problem = _one_to_kommo(m.group(1).strip().strip("-+").strip(), fields)
        if problem is not None:
            problems.append(problem)
        else:
            out.append(text or "")
    out.append(template[at:])
    literal = _OURS.sub("", template)
    if "{%" in literal or "{#" in literal:
        problems.append("Kommo has no statements or comments ({% … %}, {# … #}) in texts")
    return Rewritten("".join(out), [], [], problems)
