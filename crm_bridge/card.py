"""The customer card of the embedded CRM: what a small business keeps on each contact.

Card fields live on the contact record itself (``contact.temperature`` in templates), next to
name, phone and e-mail; a contact that never had one set reads as the default below.

=============  =========================================  ==========
field          values                                     default
=============  =========================================  ==========
status         ``current`` (a customer), ``potential``    potential
temperature    ``hot``, ``warm``, ``cold``,               null
               ``not_interested``
discount       percent, 0 to 100                          0
currency       preferred currency, ISO 4217 (``EUR``)     null
language       preferred language, a BCP 47 tag (``tr``)  null
unsubscribed   no more ``send_email`` to this contact     false
=============  =========================================  ==========

Notes carry a priority (``high``, ``medium``, ``none``) and are listed by priority, then newest.
Every check raises ``CrmRejected`` with a message that says what to fix.
"""

from __future__ import annotations

import re
from typing import Any

from bot.errors import CrmRejected

STATUSES = ("current", "potential")
TEMPERATURES = ("hot", "warm", "cold", "not_interested")
NOTE_PRIORITIES = ("high", "medium", "none")
CARD_DEFAULTS: dict[str, Any] = {
    "status": "potential", "temperature": None, "discount": 0, "currency": None, "language": None,
    "unsubscribed": False,
}
CARD_FIELDS = frozenset(CARD_DEFAULTS)

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def card_value(name: str, value: Any) -> Any:
    """``value`` checked and normalised for the card field ``name`` (``None`` clears it)."""
    if value is None or value == "":
        return CARD_DEFAULTS[name]
    if name == "status":
        return _choice(name, value, STATUSES)
    if name == "temperature":
        text = str(value).strip().lower().replace(" ", "_").replace("-", "_")
        return _choice(name, text, TEMPERATURES)
    if name == "discount":
        try:
            number = float(str(value).strip().rstrip("%"))
        except ValueError:
            raise CrmRejected(f"discount is a percent from 0 to 100, not {value!r}") from None
        if not 0 <= number <= 100:
            raise CrmRejected(f"discount is a percent from 0 to 100, not {value!r}")
        return int(number) if number.is_integer() else number
    if name == "currency":
        text = str(value).strip().upper()
        if not _CURRENCY.match(text):
            raise CrmRejected(f"currency is a three-letter ISO 4217 code such as EUR, not {value!r}")
        return text
    if name == "language":
        parts = str(value).strip().replace("_", "-").split("-")
        parts = [parts[0].lower()] + [p.upper() if len(p) == 2 else p for p in parts[1:]]
        text = "-".join(parts)
        if not _LANGUAGE.match(text):
            raise CrmRejected(f"language is a language tag such as en or pt-BR, not {value!r}")
        return text
    if name == "unsubscribed":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "1"):
            return True
        if text in ("false", "no", "0"):
            return False
        raise CrmRejected(f"unsubscribed is true or false, not {value!r}")
    raise CrmRejected(f"{name!r} is not a field of the customer card")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in allowed:
        raise CrmRejected(f"{name} is one of {', '.join(allowed)}, not {value!r}")
    return text


def card_of(contact: dict[str, Any]) -> dict[str, Any]:
    """The card fields of a contact record, defaults filled in."""
    return {name: contact.get(name, default) for name, default in CARD_DEFAULTS.items()}


def note_priority(value: Any) -> str:
    if value is None or value == "":
        return "none"
    return _choice("priority", value, NOTE_PRIORITIES)


def note_score(priority: str, created_at: float) -> float:
    """Sort key of a note: higher priority first, then newer first (read with ZREVRANGE)."""
    rank = {"high": 2, "medium": 1}.get(priority, 0)
    return rank * 1e10 + created_at  # created_at (seconds since 1970) stays below 1e10 until 2286
