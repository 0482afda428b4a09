"""Agreement and pace (review/agreement.py) against hand-computed values and scikit-learn."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sklearn.metrics import cohen_kappa_score

from review import agreement

M, B = "mine", "background"


def test_kappa_by_hand() -> None:
    # 10 pairs: both mine 4, both background 3, (mine, background) 2, (background, mine) 1.
    pairs = [(M, M)] * 4 + [(B, B)] * 3 + [(M, B)] * 2 + [(B, M)]
    # p_o = 0.7; rater 1: 6 mine 4 background; rater 2: 5 mine 5 background
    # p_e = 0.6 * 0.5 + 0.4 * 0.5 = 0.5; kappa = (0.7 - 0.5) / 0.5 = 0.4
    result = agreement.agreement(pairs)
    assert result.n == 10 and result.agreed == 7
    assert result.percent == pytest.approx(70.0)
    assert result.kappa == pytest.approx(0.4)
    first, second = zip(*pairs, strict=True)
    assert result.kappa == pytest.approx(cohen_kappa_score(first, second))


@pytest.mark.parametrize("pairs", [
    [(M, M), (B, B), (B, B)],
    [(M, B), (B, M), (M, B), (M, M)],
    [(M, M)] * 7 + [(B, M)] * 3,
])
def test_kappa_matches_sklearn(pairs) -> None:
    first, second = zip(*pairs, strict=True)
    assert agreement.cohen_kappa(pairs) == pytest.approx(cohen_kappa_score(first, second))


def test_kappa_undefined_when_everyone_uses_one_class() -> None:
    result = agreement.agreement([(M, M)] * 5)
    assert result.percent == 100.0 and result.kappa is None
    assert agreement.agreement([]).percent is None and agreement.agreement([]).kappa is None


def test_skips_are_not_a_class() -> None:
    result = agreement.agreement([(M, M), (M, "skip"), ("skip", B), (B, B)])
    assert result.n == 2 and result.percent == 100.0 and result.kappa == pytest.approx(1.0)


def test_per_reviewer_and_per_pair() -> None:
    rows = [
        {"first_reviewer": "ana", "first_label": M, "second_reviewer": "ben", "second_label": M},
        {"first_reviewer": "ben", "first_label": B, "second_reviewer": "ana", "second_label": M},
        {"first_reviewer": "ana", "first_label": B, "second_reviewer": "cy", "second_label": B},
        {"first_reviewer": "cy", "first_label": M, "second_reviewer": "ben", "second_label": M},
    ]
    per = agreement.by_reviewer(rows)
    assert {name: (a.n, a.agreed) for name, a in per.items()} == {
        "ana": (3, 2), "ben": (3, 2), "cy": (2, 2)}
    # ana's own labels vs the others': (M, M), (M, B), (B, B): p_o 2/3, p_e = 2/3*1/3 + 1/3*2/3
    assert per["ana"].kappa == pytest.approx((2 / 3 - 4 / 9) / (1 - 4 / 9))
    pairs = agreement.by_pair(rows)
    assert set(pairs) == {("ana", "ben"), ("ana", "cy"), ("ben", "cy")}
    assert (pairs[("ana", "ben")].n, pairs[("ana", "ben")].agreed) == (2, 1)
    # the pair's labels are in name order: (ana, ben) = (M, M), (M, B)
    assert pairs[("ana", "ben")].kappa == pytest.approx(
        cohen_kappa_score([M, M], [M, B]))
    assert pairs[("ana", "cy")].kappa is None  # one class only


def test_pace_splits_sessions_at_long_gaps() -> None:
    t0 = datetime(2026, 1, 5, 9, 0, 0)
    # session 1: decisions at 0, 30, 60 s (first card took 20 s) -> 80 s
    # session 2 (after 1 h): decisions at 0, 40 s, first card 10 s -> 50 s
    times = [t0, t0 + timedelta(seconds=30), t0 + timedelta(seconds=60),
             t0 + timedelta(hours=1), t0 + timedelta(hours=1, seconds=40)]
    ms = [20_000, 30_000, 30_000, 10_000, 40_000]
    result = agreement.pace(times, ms)
    assert result.sessions == 2 and result.decisions == 5
    assert result.active_hours == pytest.approx(130 / 3600)
    assert result.per_hour == pytest.approx(5 / (130 / 3600))
    assert result.median_ms == 30_000


def test_pace_without_card_times_and_single_decision() -> None:
    t0 = datetime(2026, 1, 5, 9, 0, 0)
    assert agreement.pace([t0], [None]).per_hour is None
    quick = agreement.pace([t0, t0 + timedelta(seconds=20)], [5_000, 5_000])
    assert quick.active_hours == pytest.approx(25 / 3600) and quick.per_hour is None  # < 60 s
    assert agreement.pace([], []).decisions == 0
    rows = [{"reviewer": "ana", "created_at": (t0 + timedelta(seconds=s)).isoformat(),
             "ms_spent": 6_000} for s in (12, 0, 6)]
    result = agreement.pace_by_reviewer(rows)["ana"]
    assert result.active_hours == pytest.approx(18 / 3600)  # 12 s span + 6 s first card
