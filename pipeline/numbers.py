"""Numbers typed by people (form fields, query strings): ASCII digits only.

Python's ``int()`` and ``float()`` accept any Unicode decimal digit (``"١٠"`` and ``"１０"`` are
10), underscores (``"1_0"``), exponents and words (``"nan"``, ``"inf"``). A number a reviewer
sends should mean what it shows, so every number read from a request goes through these two
functions: a whole number is ASCII digits; a decimal number is an optional sign, ASCII digits and
at most one decimal point. Surrounding whitespace is ignored. Anything else is a ValueError.
"""

from __future__ import annotations

import re

_WHOLE = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def parse_whole(text: str) -> int:
    """``text`` as a non-negative whole number written in ASCII digits; ValueError otherwise."""
    stripped = text.strip()
    if not _WHOLE.fullmatch(stripped):
        raise ValueError(f"not a whole number in digits 0-9: {stripped[:20]!r}")
    return int(stripped)


def parse_decimal(text: str) -> float:
    """``text`` as a decimal number ("12", "-4.5", ".5") written in ASCII digits; ValueError
    otherwise (no exponent, no "nan" or "inf")."""
    stripped = text.strip()
    if not _DECIMAL.fullmatch(stripped):
        raise ValueError(f"not a number in digits 0-9: {stripped[:20]!r}")
    return float(stripped)
