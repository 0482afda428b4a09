"""pipeline.numbers: numbers typed into forms and query strings are ASCII digits only."""

from __future__ import annotations

import pytest

from pipeline.numbers import parse_decimal, parse_whole


def test_whole_numbers_in_ascii_digits() -> None:
    assert parse_whole("10") == 10 and parse_whole(" 007 ") == 7


@pytest.mark.parametrize("text", ["\u0661\u0660", "\uff11\uff10", "²", "1_0", "-1", "+1", "1.0",
                                  "", " ", "1 0", "10\n5"])
def test_other_whole_numbers_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="digits 0-9"):
        parse_whole(text)


def test_decimal_numbers_in_ascii_digits() -> None:
    assert parse_decimal("10") == 10.0 and parse_decimal(" 12.5 ") == 12.5
    assert parse_decimal("-47.25") == -47.25 and parse_decimal(".5") == 0.5
    assert parse_decimal("+3.") == 3.0


@pytest.mark.parametrize("text", ["\u0661\u0660", "\u0661\u0660.5", "\uff11\uff10", "1_0", "1e1",
                                  "nan", "inf", "-inf", "", ".", "-", "1.2.3", "0x10", "١"])
def test_other_decimal_numbers_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="digits 0-9"):
        parse_decimal(text)
