"""The checks of ``validation`` steps: phone numbers, e-mails, numbers, ranges, text, regex.

Each check returns ``(passed, matched)``; ``matched`` is the part found (the phone number in
E.164, the normalised e-mail, the number) that becomes ``last_validation_result``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from typing import Any

from ..builder.compiled import CRule
from ..builder.templates import evaluate_value
from .predicates import as_number, search

_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?")
_LETTERS = re.compile(r"[^\W\d_]+")
# Runs of text between the characters an address cannot hold (split, not searched: a search
# for ``[^…]+@[^…]+`` is quadratic on a long run without a usable ``@``).
_EMAIL_DELIMITERS = re.compile(r"[\s<>()\[\],;:\"']+")


@lru_cache(maxsize=1)
def _zone_regions() -> dict[str, str]:
    """IANA timezone -> ISO country, from tzdata's zone.tab (so "Europe/Istanbul" -> "TR")."""
    out: dict[str, str] = {}
    try:
        text = resources.files("tzdata.zoneinfo").joinpath("zone.tab").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        return out
    for line in text.splitlines():
        if line and not line.startswith("#"):
            parts = line.split("\t")
            if len(parts) >= 3:
                out.setdefault(parts[2], parts[0])
    return out


def region_for_timezone(tz_name: str) -> str | None:
    """The country whose numbers a customer in this timezone most likely types without ``+``."""
    return _zone_regions().get(tz_name)


def _to_number(text: str) -> int | float:
    n = float(text.replace(",", "."))
    return int(n) if n.is_integer() and "." not in text and "," not in text else n


def find_phone(text: str, region: str | None) -> str | None:
    import phonenumbers  # on first use: off the start path

    for match in phonenumbers.PhoneNumberMatcher(text, region or "ZZ", leniency=phonenumbers.Leniency.VALID):
        return phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
    return None


def find_email(text: str) -> str | None:
    if "@" not in text:
        return None
    from email_validator import EmailNotValidError, validate_email  # on first use: off the start path

    for candidate in _EMAIL_DELIMITERS.split(text):
        if "@" not in candidate[1:-1]:  # an address has something on each side of its "@"
            continue
        try:
            return validate_email(candidate.strip(".!?"), check_deliverability=False).normalized
        except EmailNotValidError:
            continue
    return None


def _contains(rule: CRule, text: str, context: dict[str, Any], region: str | None) -> Any:
    """What the rule's kind finds in the text, or None."""
    kind = rule.kind
    if kind == "number":
        m = _NUMBER.search(text)
        return _to_number(m.group()) if m else None
    if kind == "letters":
        m = _LETTERS.search(text)
        return m.group() if m else None
    if kind == "phone":
        return find_phone(text, region)
    if kind == "email":
        return find_email(text)
    if kind == "range":
        for m in _NUMBER.finditer(text):
            n = float(m.group().replace(",", "."))
            if (rule.min is None or n >= rule.min) and (rule.max is None or n <= rule.max):
                return _to_number(m.group())
        return None
    if kind == "text":
        wanted = str(evaluate_value(rule.value, context))
        return wanted if wanted.casefold() in text.casefold() else None
    return None


def check(rule: CRule, text: str, context: dict[str, Any], region: str | None) -> tuple[bool, Any]:
    c = rule.check
    if c == "contains":
        found = _contains(rule, text, context, region)
        return found is not None, found
    if c == "not_contains":
        found = _contains(rule, text, context, region)
        return found is None, text
    if c in ("equals", "not_equals"):
        wanted = evaluate_value(rule.value, context)
        a, b = as_number(text), as_number(wanted)
        same = (a == b) if a is not None and b is not None else (
            text.strip().casefold() == str(wanted).strip().casefold())
        return (same, text) if c == "equals" else (not same, text)
    if c == "length":
        n = len(text.strip())
        ok = (rule.min is None or n >= rule.min) and (rule.max is None or n <= rule.max)
        return ok, text
    if c == "regex":
        m = search(rule.pattern, text) if rule.pattern is not None else None
        return m is not None, (m.group() if m else None)
    return False, None
