"""Agreement between reviewers and their pace, as pure functions (no database, no web).

Agreement is measured on double-reviewed decisions: pairs of labels that two reviewers gave the
same cell-year (the first decision and its blind second review). Only pairs where both labels
are ``mine`` or ``background`` count; a skip is not a class here (it goes to a lead instead).

* percent agreement: the share of pairs with equal labels;
* Cohen's kappa: (p_o - p_e) / (1 - p_e), where p_e = sum over classes of the product of the two
  raters' marginal shares, computed by scikit-learn's ``cohen_kappa_score``. Undefined (None)
  when p_e = 1, i.e. both raters used one and the same class for every pair: perfect but
  uninformative agreement (scikit-learn answers NaN with a warning there).

Pace comes from the decisions' times: a reviewer's decisions are split into sessions at gaps
longer than ``SESSION_GAP_S``; a session lasts from its first to its last decision plus the time
spent on its first card; decisions per hour = decisions / total session time (none below
``MIN_ACTIVE_S`` of active time: too little to rate).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: The classes agreement is measured on.
CLASSES: tuple[str, ...] = ("mine", "background")
#: A pause longer than this (seconds) between two decisions ends a review session.
SESSION_GAP_S = 600.0
#: Less active time than this (seconds) is too little to give a rate per hour.
MIN_ACTIVE_S = 60.0


@dataclass(frozen=True)
class Agreement:
    """Agreement over ``n`` label pairs (percent in [0, 100]; kappa None when undefined)."""

    n: int
    agreed: int
    percent: float | None
    kappa: float | None


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa of (rater 1, rater 2) label pairs; None when empty or undefined (p_e = 1)."""
    if len({label for pair in pairs for label in pair}) < 2:
        return None  # no pair, or one class for every label: p_e = 1
    from sklearn.metrics import cohen_kappa_score  # scikit-learn loads in a second; only here

    first, second = zip(*pairs, strict=True)
    return float(cohen_kappa_score(first, second))


def agreement(pairs: Iterable[tuple[str, str]]) -> Agreement:
    """Percent agreement and kappa of label pairs; pairs with a label outside CLASSES are dropped."""
    kept = [(a, b) for a, b in pairs if a in CLASSES and b in CLASSES]
    agreed = sum(a == b for a, b in kept)
    percent = 100.0 * agreed / len(kept) if kept else None
    return Agreement(len(kept), agreed, percent, cohen_kappa(kept))


def by_reviewer(rows: Iterable[Mapping[str, Any]]) -> dict[str, Agreement]:
    """Agreement of each reviewer with the colleagues who reviewed the same cell-years.

    ``rows``: double-reviewed tasks with first_reviewer, first_label, second_reviewer,
    second_label. A reviewer's pairs are (their label, the other's label), whether they decided
    first or second.
    """
    pairs: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for row in rows:
        first, second = row["first_label"], row["second_label"]
        pairs[row["first_reviewer"]].append((first, second))
        pairs[row["second_reviewer"]].append((second, first))
    return {name: agreement(p) for name, p in sorted(pairs.items())}


def by_pair(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Agreement]:
    """Agreement per pair of reviewers (names in alphabetical order; labels in that order)."""
    pairs: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for row in rows:
        a, b = row["first_reviewer"], row["second_reviewer"]
        la, lb = row["first_label"], row["second_label"]
        if b < a:
            a, b, la, lb = b, a, lb, la
        pairs[(a, b)].append((la, lb))
    return {key: agreement(p) for key, p in sorted(pairs.items())}


@dataclass(frozen=True)
class Pace:
    """A reviewer's pace: decisions, sessions, active hours, decisions per hour, median ms."""

    decisions: int
    sessions: int
    active_hours: float
    per_hour: float | None
    median_ms: float | None


def pace(times: Sequence[datetime], ms_spent: Sequence[int | None],
         gap_s: float = SESSION_GAP_S) -> Pace:
    """The pace of one reviewer's decisions (``times`` ascending, ``ms_spent`` per decision).

    A session's length is last - first decision plus the time spent on its first card (its
    ``ms_spent``, else the reviewer's median card time, else nothing); decisions per hour is None
    when that total is under ``MIN_ACTIVE_S``.
    """
    known = [ms for ms in ms_spent if ms is not None]
    median_ms = float(statistics.median(known)) if known else None
    if not times:
        return Pace(0, 0, 0.0, None, median_ms)
    seconds, sessions = 0.0, 0
    start = 0
    for i in range(1, len(times) + 1):
        if i == len(times) or (times[i] - times[i - 1]).total_seconds() > gap_s:
            first_card = ms_spent[start] if ms_spent[start] is not None else (median_ms or 0.0)
            seconds += (times[i - 1] - times[start]).total_seconds() + first_card / 1000.0
            sessions += 1
            start = i
    hours = seconds / 3600.0
    per_hour = len(times) / hours if seconds >= MIN_ACTIVE_S else None
    return Pace(len(times), sessions, hours, per_hour, median_ms)


def pace_by_reviewer(rows: Iterable[Mapping[str, Any]],
                     gap_s: float = SESSION_GAP_S) -> dict[str, Pace]:
    """:func:`pace` per reviewer from rows with reviewer, created_at (ISO-8601), ms_spent."""
    times: dict[str, list[datetime]] = defaultdict(list)
    spent: dict[str, list[int | None]] = defaultdict(list)
    for row in rows:
        times[row["reviewer"]].append(datetime.fromisoformat(row["created_at"]))
        spent[row["reviewer"]].append(row["ms_spent"])
    result = {}
    for name in sorted(times):
        order = sorted(range(len(times[name])), key=times[name].__getitem__)
        result[name] = pace([times[name][i] for i in order], [spent[name][i] for i in order],
                            gap_s)
    return result
