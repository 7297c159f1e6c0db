"""What a person or the API may write into the embedded CRM's records, checked and cleaned
before it is stored: texts (text or a whole number, at most so long, no control characters: a
NUL or ``\x1f`` is a store separator and would reach conversation metadata), e-mails, phones,
tags and scores. A refusal is ``CrmRejected`` naming the field (a 422 at the API)."""

from __future__ import annotations

from typing import Any

from bot.errors import CrmRejected
from bot.inputs import holds_control

#: The largest contact score a person may set (automations add and decay it: automations.md).
MAX_SCORE = 10**9


def text_value(name: str, value: Any, *, max_len: int = 255, required: bool = False) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise CrmRejected(f"{name} is required")
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):  # a whole number: a phone, an id
        raise CrmRejected(f"{name} is text")
    text = str(value).strip()
    if len(text) > max_len:
        raise CrmRejected(f"{name} is at most {max_len} characters")
    if holds_control(text):
        raise CrmRejected(f"{name} holds a control character")
    return text


def clean_email(value: Any) -> str | None:
    text = text_value("email", value)
    if text is None:
        return None
    from email_validator import EmailNotValidError, validate_email  # on first use: off the start path

    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise CrmRejected(f"email: {exc}") from None


def clean_phone(value: Any) -> str | None:
    text = text_value("phone", value, max_len=40)
    if text is None:
        return None
    digits = sum(c.isdigit() for c in text)
    if not 5 <= digits <= 15 or any(not (c.isdigit() or c in "+-() .") for c in text):
        raise CrmRejected(f"phone {text!r} is not a phone number (5 to 15 digits, optionally +, spaces, - and ())")
    return text


def tags_value(value: Any, name: str = "tags") -> list[str]:
    if not isinstance(value, list) or not all(
            isinstance(t, (str, int)) and not isinstance(t, bool) and str(t).strip() for t in value):
        raise CrmRejected(f"{name} is a list of non-empty texts")
    if holds_control(value):
        raise CrmRejected(f"{name}: a tag holds a control character")
    out: list[str] = []
    for t in value:
        tag = str(t).strip()[:100]
        if tag not in out:
            out.append(tag)
    return out


def score_value(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_SCORE:
        raise CrmRejected(f"score is a whole number from 0 to {MAX_SCORE}")  # NaN fails the comparison
    if not float(value).is_integer():
        raise CrmRejected(f"score is a whole number from 0 to {MAX_SCORE}")
    return int(value)
