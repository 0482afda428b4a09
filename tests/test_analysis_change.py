"""The k-of-n persistence rule, mine clusters and restoration candidates, by hand-made tables."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.change import (
    PersistenceRule,
    change_over_years,
    classify_series,
    clusters_of,
    stopped_growing,
)
from analysis.status import YearCells
from imagery.grid import ID_STRIDE

YEARS = [2018, 2019, 2020, 2021]
_ = None  # unknown: not scored that year


@pytest.mark.parametrize(("series", "expected"), [
    ([0, 0, 1, 1], ("opened", 2020)),
    ([1, 1, 0, 0], ("closed", 2020)),
    ([1, 1, 1, 1], ("persistent", None)),
    ([1, 1, 1, 0], ("persistent", None)),      # one year without: not yet closed
    ([0, 1, 1, 1], ("persistent", None)),      # one year of absence is not established
    ([1, 0, 1, 0], ("unstable", None)),
    ([0, 0, 0, 1], ("unstable", None)),
    ([1, 1, _, 0], ("persistent", None)),
    ([0, 0, 0, 0], ("none", None)),
    ([_, _, _, _], ("none", None)),
])
def test_two_of_two(series, expected):
    observed = [None if v is None else bool(v) for v in series]
    change = classify_series(YEARS, observed, PersistenceRule(2, 2))
    assert (change.change, change.year) == expected


def test_two_of_three_and_six_years():
    rule = PersistenceRule(2, 3)
    assert classify_series(YEARS, [True, False, True, True], rule).change == "persistent"
    assert classify_series(YEARS, [False, False, True, True], rule).year == 2020
    assert classify_series(YEARS, [True, True, False, False], rule).change == "closed"
    assert classify_series(YEARS, [True, False, False, True], rule).change == "unstable"
    years = list(range(2016, 2022))
    # opened in 2018, closed in 2020: the last change counts, and two changes are recorded
    change = classify_series(years, [False, False, True, True, False, False], PersistenceRule())
    assert (change.change, change.year, change.n_changes) == ("closed", 2020, 2)
    one = PersistenceRule(1, 1)   # every year counts on its own
    assert classify_series(YEARS, [False, True, True, True], one).year == 2019


def test_rule_validation():
    for k, n in ((0, 2), (3, 2), (1, 2), (2, 4)):
        with pytest.raises(ValueError):
            PersistenceRule(k, n)


def test_clusters_are_8_connected():
    ids = np.asarray([0, 1, ID_STRIDE + 2, 5 * ID_STRIDE + 5, 7 * ID_STRIDE + 7], dtype=np.int64)
    labels = clusters_of(ids)
    assert labels[0] == labels[1] == labels[2]            # (0,1) touches (1,2) at a corner
    assert len({labels[0], labels[3], labels[4]}) == 3


def test_stopped_growing():
    assert stopped_growing([3, 5, 5, 5], 2)
    assert not stopped_growing([3, 4, 5, 5], 2)           # grew in 2020: not two flat years yet
    assert not stopped_growing([3, 4, 5, 6], 2)
    assert not stopped_growing([2, 0, 0, 2], 2)           # gone in between: not a steady mine
    assert not stopped_growing([5, 5], 2)                 # too few years to tell


def year(y: int, mine: list[int], other: list[int]) -> YearCells:
    ids = np.asarray(mine + other, dtype=np.int64)
    n = len(ids)
    status = np.asarray(["predicted"] * len(mine) + ["background"] * len(other), dtype=object)
    return YearCells(y, "m1", 0.5, ids, status, np.where(status == "predicted", 0.9, 0.1),
                     np.full(n, 0.3), np.full(n, None, dtype=object), np.ones(n, dtype=bool),
                     np.zeros(n), np.zeros(n))


def test_change_over_years_lists_candidates():
    closing, opening, steady = [0], [10], [20 * ID_STRIDE + c for c in range(3)]
    everything = closing + opening + steady + [99]
    per_year = []
    for y, mines in zip(YEARS, [closing + steady[:2], closing + steady[:3], opening + steady,
                                opening + steady], strict=True):
        per_year.append(year(y, mines, [c for c in everything if c not in mines]))
    result = change_over_years(per_year)
    by_cell = {row["cell_id"]: row["change"] for row in result.cells}
    assert by_cell == {0: "closed", 10: "opened", **dict.fromkeys(steady, "persistent")}
    assert result.counts == {"opened": 1, "closed": 1, "persistent": 3, "unstable": 0}
    kinds = [(c["kind"], c["cell_id"], c["review_url"]) for c in result.candidates]
    assert kinds[0] == ("closed", 0, "/review?cell=0&year=2021")
    assert [k for k, *_ in kinds] == ["closed", "stopped growing"]   # steady: 2, 3, 3, 3
    assert result.candidates[1]["history"] == [2, 3, 3, 3]


def test_too_few_years_says_so():
    result = change_over_years([year(2021, [1], [2])])
    assert result.cells == [] and "needs at least 2 years" in result.note
