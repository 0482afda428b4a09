"""Change over the years: which mine cells opened, closed, persisted or flicker, and which mines
are candidates for restoration.

The k-of-n persistence rule
---------------------------
Per cell, each year with scores gives one observation for a model version: *mine* (status
confirmed or predicted), *not mine* (rejected or background, scored or reviewed), or *unknown*
(not scored that year: too few valid pixels, or no scene). Slide a window of ``n`` consecutive
years over the series. A window **establishes presence** when the cell is seen as a mine in at
least ``k`` of its ``n`` years, and **establishes absence** when it is seen as not a mine in at
least ``k`` of them (``k`` must be more than half of ``n``, so no window does both; unknown years
count for neither). Windows that establish nothing are skipped, and repeats collapse, giving the
cell's sequence of established states. Then:

- ``persistent``: presence only (it may have dropped out in the last year, unconfirmed);
- ``opened``: the last change is absence -> presence; its year is the first mine year of the
  first window that established the presence;
- ``closed``: the last change is presence -> absence; its year is the first not-mine year of the
  first window that established the absence;
- ``unstable``: seen as a mine at least once but never established as one (flickers, or too few
  years to tell);
- ``none``: never seen as a mine (not listed).

With the default ``k = 2, n = 2`` (a mine must be seen in two consecutive years, like Amazon
Mining Watch's two periods) and four years of scores (1 = mine, 0 = not mine, . = unknown):

=====  =====  =====  =====  ===============  ==================================================
2018   2019   2020   2021   class            why
=====  =====  =====  =====  ===============  ==================================================
0      0      1      1      opened 2020      absent in 2018-19, present in 2020-21
1      1      0      0      closed 2020      present in 2018-19, absent in 2020-21
1      1      1      1      persistent       present in every window
1      1      1      0      persistent       the drop in 2021 is seen once only: not yet closed
0      1      1      1      persistent       absence in 2018 alone is not established
1      0      1      0      unstable         never two mine years in a row
0      0      0      1      unstable         seen once; absence established only
1      1      .      0      persistent       2020 unknown: 2020-21 establishes nothing
0      0      0      0      none             never a mine
=====  =====  =====  =====  ===============  ==================================================

With ``k = 2, n = 3`` the row ``1 0 1 1`` is persistent (2 of 3 in both windows), and
``0 0 1 1`` is opened in 2020 (absent in 2018-20, present in 2019-21, first mine year 2020).

Mine clusters are the 8-connected groups of cells that were a mine in any year. A cluster whose
mine-cell count in each of the last ``n`` years is no larger than its largest count before them
has **stopped growing** (it must still be there: no zero count in those years). Closed cells
and stopped-growing clusters are the abandoned-mine candidates for restoration; each points to
a cell and year to open in the review card.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from analysis.status import YearCells
from imagery.grid import ID_STRIDE

CHANGE_CLASSES: tuple[str, ...] = ("opened", "closed", "persistent", "unstable")
#: The review card of a cell-year (served by labeller/review.py).
REVIEW_URL = "/review?cell={cell_id}&year={year}"


@dataclass(frozen=True)
class PersistenceRule:
    """A mine must be seen in ``k`` of ``n`` consecutive years to count (see module docstring)."""

    k: int = 2
    n: int = 2

    def __post_init__(self) -> None:
        if self.n < 1 or self.k < 1 or self.k > self.n:
            raise ValueError(f"persistence rule needs 1 <= k <= n, got k={self.k}, n={self.n}")
        if 2 * self.k <= self.n:
            raise ValueError(f"persistence rule needs k more than half of n (so a window cannot "
                             f"establish both presence and absence), got k={self.k}, n={self.n}")

    def __str__(self) -> str:
        return f"{self.k} of {self.n} consecutive years"


@dataclass(frozen=True)
class CellChange:
    change: str              # opened, closed, persistent, unstable or none
    year: int | None         # first year of the new state (opened / closed)
    n_changes: int           # established changes (more than 1: reopened or opened-and-closed)


def window_states(observations: Sequence[bool | None], rule: PersistenceRule) -> list[str | None]:
    """Per window of ``n`` consecutive years (by start index): 'present', 'absent' or None."""
    states: list[str | None] = []
    for start in range(len(observations) - rule.n + 1):
        window = observations[start:start + rule.n]
        mine = sum(1 for o in window if o is True)
        not_mine = sum(1 for o in window if o is False)
        states.append("present" if mine >= rule.k else "absent" if not_mine >= rule.k else None)
    return states


def classify_series(years: Sequence[int], observations: Sequence[bool | None],
                    rule: PersistenceRule | None = None) -> CellChange:
    """Classify one cell's yearly observations (True mine, False not, None unknown)."""
    rule = rule or PersistenceRule()
    if len(years) != len(observations):
        raise ValueError("one observation per year")
    runs: list[tuple[str, int]] = []          # (state, the year it began)
    for start, state in enumerate(window_states(observations, rule)):
        if state is not None and (not runs or runs[-1][0] != state):
            wanted = state == "present"
            began = next(years[i] for i in range(start, start + rule.n) if observations[i] is wanted)
            runs.append((state, int(began)))
    ever_mine = any(o is True for o in observations)
    if not runs or runs == [("absent", runs[0][1])]:
        return CellChange("unstable" if ever_mine else "none", None, 0)
    if len(runs) == 1:
        return CellChange("persistent", None, 0)
    state, year = runs[-1]
    return CellChange("opened" if state == "present" else "closed", year, len(runs) - 1)


@dataclass
class ChangeResult:
    """Change classes of every cell that was a mine in some year, clusters and candidates."""

    model_version: str
    years: list[int]
    rule: PersistenceRule
    cells: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    clusters: int = 0
    note: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        counted = Counter(row["change"] for row in self.cells)
        return {name: counted.get(name, 0) for name in CHANGE_CLASSES}


def _observations(per_year: list[YearCells], ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, len(ids)) int8 observation matrix (1 mine, 0 not, -1 unknown) and float scores."""
    obs = np.full((len(per_year), ids.size), -1, dtype=np.int8)
    scores = np.full((len(per_year), ids.size), np.nan)
    for t, cells in enumerate(per_year):
        order = np.argsort(cells.cell_id, kind="stable")
        sorted_ids = cells.cell_id[order]
        if sorted_ids.size == 0:
            continue
        pos = np.clip(np.searchsorted(sorted_ids, ids), 0, sorted_ids.size - 1)
        found = sorted_ids[pos] == ids
        index = order[pos]
        mine = cells.is_mine()[index] & found
        reviewed = np.isin(cells.label[index], ["mine", "background"])
        observed = found & (~np.isnan(cells.score[index]) | reviewed)
        obs[t, observed] = 0
        obs[t, mine] = 1
        scores[t, found] = np.where(cells.status[index][found] == "confirmed", 2.0,
                                    np.nan_to_num(cells.score[index][found], nan=-1.0))
    return obs, scores


def clusters_of(ids: np.ndarray) -> np.ndarray:
    """8-connected cluster number (from 0) of each cell id."""
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    rows, cols = ids // ID_STRIDE, ids % ID_STRIDE
    r0, c0 = rows.min(), cols.min()
    raster = np.zeros((rows.max() - r0 + 1, cols.max() - c0 + 1), dtype=bool)
    raster[rows - r0, cols - c0] = True
    labels, _ = ndimage.label(raster, structure=np.ones((3, 3), dtype=bool))
    return labels[rows - r0, cols - c0].astype(np.int64) - 1


def stopped_growing(counts: Sequence[int], n: int) -> bool:
    """True when each of the last ``n`` counts is no larger than the largest count before them
    and none of them is zero (the mine is still there, just not growing)."""
    if len(counts) < n + 1 or counts[-1] <= 0:
        return False
    before = max(counts[:-n])
    return before > 0 and min(counts[-n:]) > 0 and max(counts[-n:]) <= before


def change_over_years(per_year: list[YearCells], rule: PersistenceRule | None = None
                      ) -> ChangeResult:
    """Classify every cell that was a mine in any of ``per_year`` (one YearCells per year, same
    model, oldest first) and list the abandoned-mine candidates."""
    rule = rule or PersistenceRule()
    years = [cells.year for cells in per_year]
    version = per_year[0].model_version if per_year else ""
    result = ChangeResult(version, years, rule)
    if len(years) < rule.n:
        result.note = (f"change over the years needs at least {rule.n} years with scores "
                       f"(rule: {rule}); model {version or '-'} has {len(years)}")
        return result
    ids = np.unique(np.concatenate([c.cell_id[c.is_mine()] for c in per_year]))
    obs, scores = _observations(per_year, ids)
    cluster = clusters_of(ids)
    result.clusters = int(cluster.max() + 1) if cluster.size else 0
    last = len(years) - 1
    for j, cell_id in enumerate(ids.tolist()):
        series = [None if v < 0 else bool(v) for v in obs[:, j].tolist()]
        change = classify_series(years, series, rule)
        row = {"cell_id": cell_id, "change": change.change, "change_year": change.year,
               "n_changes": change.n_changes, "cluster": int(cluster[j]),
               "mine_years": [y for y, o in zip(years, series, strict=True) if o]}
        result.cells.append(row)
        if change.change == "closed":
            result.candidates.append({
                "kind": "closed", "cell_id": cell_id, "year": years[last],
                "since": change.year, "cluster": int(cluster[j]), "cells": 1,
                "history": [int(v == 1) for v in obs[:, j]],
                "review_url": REVIEW_URL.format(cell_id=cell_id, year=years[last])})
    mine = obs == 1
    per_cluster = np.stack([np.bincount(cluster[mine[t]], minlength=result.clusters)
                            for t in range(len(years))]) if result.clusters else np.zeros((0, 0))
    stopped = [c for c in range(result.clusters) if stopped_growing(per_cluster[:, c].tolist(), rule.n)]
    for c in sorted(stopped, key=lambda c: -int(per_cluster[-1, c])):
        counts = per_cluster[:, c].tolist()
        members = np.flatnonzero((cluster == c) & mine[last])
        best = members[np.argmax(scores[last, members])]
        cell_id = int(ids[best])
        result.candidates.append({
            "kind": "stopped growing", "cell_id": cell_id, "year": years[last], "since": None,
            "cluster": c, "cells": int(counts[-1]), "history": [int(v) for v in counts],
            "review_url": REVIEW_URL.format(cell_id=cell_id, year=years[last])})
    return result
