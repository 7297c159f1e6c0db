"""A product of the catalogue: what a seller may write, and how it reads for one customer.

Stored form (``check_product``'s result): ``{"sku", "name": {lang: text}, "description":
{lang: text}, "image_url", "prices": {currency: minor units}, "active", "updated_at"}``. A name
given as plain text is English (``{"en": text}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from yarl import URL

from ..errors import ShopRejected
from .prices import is_currency, to_major, to_minor

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
PRODUCT_FIELDS = frozenset({"name", "description", "image_url", "prices", "active"})
MAX_NAME = 200
MAX_DESCRIPTION = 4000
MAX_URL = 2048
MAX_LANGUAGES = 30
MAX_CURRENCIES = 40
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_SKU = re.compile(SKU_PATTERN)


def is_sku(value: object) -> bool:
    return isinstance(value, str) and _SKU.fullmatch(value) is not None


def check_product(sku: str, body: object, now: float) -> dict[str, Any]:
    """The stored product of a ``PUT /api/products/{sku}`` body (all of it: a PUT replaces)."""
    if not is_sku(sku):
        raise ShopRejected("a sku is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    if not isinstance(body, Mapping):
        raise ShopRejected("the body is an object: name, description, image_url, prices, active")
    unknown = sorted(set(body) - PRODUCT_FIELDS)
    if unknown:
        raise ShopRejected(f"unknown product field {unknown[0]!r} (fields: {', '.join(sorted(PRODUCT_FIELDS))})")
    active = body.get("active", True)
    if not isinstance(active, bool):
        raise ShopRejected("active is true or false")
    return {"sku": sku, "name": _texts("name", body.get("name"), MAX_NAME, required=True),
            "description": _texts("description", body.get("description"), MAX_DESCRIPTION),
            "image_url": _image_url(body.get("image_url")), "prices": _prices(body.get("prices")),
            "active": active, "updated_at": now}


def _texts(name: str, value: object, limit: int, *, required: bool = False) -> dict[str, str]:
    if value is None or value == "" or value == {}:
        if required:
            raise ShopRejected(f"{name} is required: text, or an object of translations {{\"en\": …, \"tr\": …}}")
        return {}
    given = {"en": value} if isinstance(value, str) else value
    if not isinstance(given, Mapping) or len(given) > MAX_LANGUAGES:
        raise ShopRejected(f"{name} is text, or an object of at most {MAX_LANGUAGES} translations {{\"en\": …}}")
    out: dict[str, str] = {}
    for lang, text in given.items():
        if not isinstance(lang, str) or not _LANGUAGE.match(lang):
            raise ShopRejected(f"{name}: {lang!r} is not a language tag such as en or pt-BR")
        if not isinstance(text, str) or not text.strip() or len(text) > limit:
            raise ShopRejected(f"{name} in {lang} is text of 1 to {limit} characters")
        out[lang] = text.strip()
    return out


def _image_url(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_URL:
        raise ShopRejected(f"image_url is an http(s) address of at most {MAX_URL} characters")
    try:
        url: URL | None = URL(value)
    except (ValueError, TypeError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host or any(c.isspace() for c in value):
        raise ShopRejected("image_url is an http:// or https:// address")
    return value


def _prices(value: object) -> dict[str, int]:
    if not isinstance(value, Mapping) or not value:
        raise ShopRejected('prices is an object of prices per currency, such as {"TRY": 1200, "EUR": 35.5}')
    if len(value) > MAX_CURRENCIES:
        raise ShopRejected(f"prices has at most {MAX_CURRENCIES} currencies")
    out: dict[str, int] = {}
    for currency, amount in value.items():
        if not is_currency(currency):
            raise ShopRejected(f"prices: {currency!r} is not an ISO 4217 currency code such as EUR")
        out[currency] = to_minor(amount, currency, what="the price")
    return out


def localised(texts: Mapping[str, str], language: str | None) -> str | None:
    """The text for ``language``: that tag, else its base language (pt-BR → pt), else English,
    else the first translation; None when there is none."""
    if not texts:
        return None
    if language:
        if language in texts:
            return texts[language]
        base = language.split("-")[0]
        if base in texts:
            return texts[base]
    return texts.get("en") or next(iter(texts.values()))


def product_json(product: Mapping[str, Any]) -> dict[str, Any]:
    """A stored product as the API shows it: prices in major units."""
    return {**product, "prices": {c: to_major(m, c) for c, m in product["prices"].items()}}
