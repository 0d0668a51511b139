"""Internationalisation: locale-formatted numbers and currency conversion.

Used by the request model and the table validator, so it needs the standard library only.

Numbers: a contract may allow locale-formatted strings on a number feature (`locales: [de_DE,
fr_FR]`). A string is read under each allowed locale with a strict grammar (an optional sign,
digits grouped by threes with the locale's group separator or not grouped at all, an optional
decimal part with the locale's decimal separator; nothing else: no exponent, no currency sign).
If the allowed locales read it differently ("1.234" is 1234 in de_DE and 1.234 in en_US) it is
refused as ambiguous rather than guessed. The separators follow CLDR; where people commonly type
a plain or no-break space instead of CLDR's narrow no-break space, both are accepted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shipml.contract.schema import CurrencyConversion

_NBSP, _NNBSP = "\u00a0", "\u202f"
_SPACES = (" ", _NBSP, _NNBSP)


@dataclass(frozen=True)
class NumberSymbols:
    """How one locale writes numbers: its decimal separator and the group separators it accepts."""

    decimal: str
    groups: tuple[str, ...]


LOCALE_SYMBOLS: dict[str, NumberSymbols] = {
    "de_AT": NumberSymbols(",", (_NBSP, " ", ".")),
    "de_CH": NumberSymbols(".", ("\u2019", "'")),
    "de_DE": NumberSymbols(",", (".",)),
    "en_GB": NumberSymbols(".", (",",)),
    "en_US": NumberSymbols(".", (",",)),
    "es_ES": NumberSymbols(",", (".",)),
    "fr_CH": NumberSymbols(",", _SPACES),
    "fr_FR": NumberSymbols(",", _SPACES),
    "it_IT": NumberSymbols(",", (".",)),
    "nl_NL": NumberSymbols(",", (".",)),
    "pl_PL": NumberSymbols(",", _SPACES),
    "pt_BR": NumberSymbols(",", (".",)),
    "sv_SE": NumberSymbols(",", _SPACES),
}

_SIGNS = {"+": 1.0, "-": -1.0, "\u2212": -1.0}  # U+2212 MINUS SIGN is what sv_SE and others print
_MAX_CHARS = 64


def _pattern(symbols: NumberSymbols) -> re.Pattern[str]:
    groups = "|".join(re.escape(g) for g in symbols.groups)
    # Either plain digits, or 1-3 digits followed by groups of exactly three.
    integer = rf"(?:[0-9]+|[0-9]{{1,3}}(?:(?:{groups})[0-9]{{3}})+)"
    return re.compile(rf"^(?P<int>{integer})(?:{re.escape(symbols.decimal)}(?P<frac>[0-9]+))?$")


_PATTERNS = {name: _pattern(symbols) for name, symbols in LOCALE_SYMBOLS.items()}


def read_number(text: str, locale: str) -> float | None:
    """`text` as a number written in `locale`, or None if it is not one."""
    value = text.strip()
    sign = 1.0
    if value[:1] in _SIGNS:
        sign, value = _SIGNS[value[0]], value[1:]
    match = _PATTERNS[locale].match(value)
    if match is None:
        return None
    digits = re.sub(r"[^0-9]", "", match["int"])
    number = float(f"{digits}.{match['frac']}" if match["frac"] else digits)
    return sign * number


def parse_locale_number(text: str, locales: Sequence[str], *, integer: bool = False) -> float:
    """Read a locale-formatted number; raise ValueError saying why it cannot be read.

    Refused: text longer than 64 characters, text that no allowed locale reads as a number, text
    that two allowed locales read as different numbers, and (for `integer`) a fractional value.
    """
    if len(text) > _MAX_CHARS:
        raise ValueError(f"a number written as text may have at most {_MAX_CHARS} characters")
    readings = {}
    for locale in locales:
        value = read_number(text, locale)
        if value is not None:
            readings.setdefault(value, []).append(locale)
    allowed = ", ".join(locales)
    if not readings:
        raise ValueError(f"is not a number as written in any of the allowed locales ({allowed})")
    if len(readings) > 1:
        shown = "; ".join(f"{'/'.join(where)}: {value:g}" for value, where in readings.items())
        raise ValueError(f"is ambiguous between the allowed locales ({shown}); send a JSON number")
    (value,) = readings
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    if integer and value != int(value):
        raise ValueError("must be a whole number")
    return value


def parse_locale_numbers(
    values: Iterable[str | None], locales: Sequence[str], *, integer: bool = False
) -> tuple[list[float | None], list[str | None]]:
    """Parse many strings (None stays None): the values and, per item, the error message or None.

    Each distinct string is parsed once, so a column of repeated values costs little.
    """
    cache: dict[str, tuple[float | None, str | None]] = {}
    out: list[float | None] = []
    errors: list[str | None] = []
    for text in values:
        if text is None:
            out.append(None)
            errors.append(None)
            continue
        if text not in cache:
            try:
                cache[text] = (parse_locale_number(text, locales, integer=integer), None)
            except ValueError as exc:
                cache[text] = (None, str(exc))
        value, error = cache[text]
        out.append(value)
        errors.append(error)
    return out, errors


def currency_rate(rule: CurrencyConversion, currency: str) -> float:
    """Units of the contract's target currency per unit of `currency`; ValueError if refused."""
    rate = rule.rate(currency)
    if rate is None:
        raise ValueError(
            f"no exchange rate from {currency!r} to {rule.to} in the contract; "
            f"accepted currencies: {', '.join(rule.accepted)}"
        )
    return rate


def convert_amount(amount: float, currency: str, rule: CurrencyConversion) -> float:
    """`amount` in `currency` expressed in the contract's target currency; ValueError if refused."""
    return amount * currency_rate(rule, currency)
