"""Money: integers in the currency's minor unit, everywhere but at the API's edge.

The API speaks major units as JSON numbers (``35.5`` EUR, ``1200`` JPY); they become minor-unit
integers here (``3550``, ``1200``) and every sum is exact. The number of decimals of a currency
comes from CLDR through babel (JPY 0, EUR 2, KWD 3), imported with the first amount or
currency checked: a server that never prices anything starts without it (issue 14: startup).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache, lru_cache
from typing import TYPE_CHECKING

from ..errors import ShopRejected

if TYPE_CHECKING:
    from babel import Locale

#: The largest price of one unit, in minor units: 50 lines × 999 × this stays exact in a JS number.
MAX_MINOR = 10**11


@cache
def _known() -> frozenset[str]:
    from babel.numbers import list_currencies

    return frozenset(list_currencies())


def is_currency(code: object) -> bool:
    """Whether ``code`` is an ISO 4217 code that CLDR knows (``EUR``; not ``eur``, not ``XYZ``)."""
    return isinstance(code, str) and len(code) == 3 and code.isupper() and code in _known()


@lru_cache(maxsize=512)
def digits(currency: str) -> int:
    """Decimals of the currency's minor unit: JPY 0, EUR 2, KWD 3 (remembered: babel's lookup
    is imported and run once per currency)."""
    from babel.numbers import get_currency_precision

    return int(get_currency_precision(currency))


def to_minor(amount: object, currency: str, *, what: str = "price", limit: int | None = MAX_MINOR) -> int:
    """A major-unit amount of the API (a JSON number) in minor units; ``ShopRejected`` for a
    negative, non-finite or too large amount (over ``limit`` minor units: a unit price's bound by
    default; None for an order's total, which may be 50 × 999 times that), or one with more
    decimals than the currency has."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise ShopRejected(f"{what} in {currency} is a number, not {amount!r}")
    try:
        exact = Decimal(str(amount))  # the number as written (35.5), not the float's binary value
        minor = exact.scaleb(digits(currency))
    except InvalidOperation:
        raise ShopRejected(f"{what} in {currency} is a finite number") from None
    if not exact.is_finite():
        raise ShopRejected(f"{what} in {currency} is a finite number")
    if minor != minor.to_integral_value():
        raise ShopRejected(f"{what} in {currency} has at most {digits(currency)} decimals, not {amount!r}")
    if minor < 0 or (limit is not None and minor > limit):
        top = "" if limit is None else f" to {limit // 10 ** digits(currency)}"
        raise ShopRejected(f"{what} in {currency} is from 0{top}")
    return int(minor)


def to_major(minor: int, currency: str) -> int | float:
    """Minor units as the API's JSON number: an int for a currency without decimals, else the
    float nearest the exact amount (``3550`` EUR → ``35.5``, written back as ``35.5``)."""
    places = digits(currency)
    return minor if places == 0 else float(Decimal(minor).scaleb(-places))


def unit_price(base: int, discount: float) -> int:
    """The customer's price of one unit: ``base × (1 − discount/100)`` rounded half-up to the
    minor unit (a 10 % discount on 0.05 EUR is 0.045 → 0.05)."""
    if not 0 <= discount <= 100:
        raise ShopRejected(f"a discount is a percent from 0 to 100, not {discount!r}")
    exact = Decimal(base) * (Decimal(100) - Decimal(str(discount))) / Decimal(100)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def total(lines: Iterable[tuple[int, int]]) -> int:
    """The sum of ``unit_price × qty`` over ``(unit_price, qty)`` lines, in minor units."""
    return sum(price * qty for price, qty in lines)


def format_money(minor: int, currency: str, language: str | None) -> str:
    """``minor`` written for people of ``language`` (``35,50 €`` in de, ``€35.50`` in en);
    an unknown language reads as English."""
    from babel.numbers import format_currency

    amount = Decimal(minor).scaleb(-digits(currency))
    return str(format_currency(amount, currency, locale=_locale(language or "en")))


@cache
def _locale(language: str) -> Locale:
    from babel import Locale, UnknownLocaleError

    try:
        return Locale.parse(language.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return Locale.parse("en")
