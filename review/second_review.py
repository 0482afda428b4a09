"""Second review and adjudication: which decisions get a blind second look, the lead's
adjudication of disagreements, and the figures of the Team page.

A first decision (mine or background; skips never) on a cell-year is picked for second review
when a hash of (cell, year) falls below ``SECOND_REVIEW_SHARE`` (deterministic: a rerun, an undo
and a new decision pick the same cell-years), or when it is a mine and
``SECOND_REVIEW_ALL_MINES`` is on. ``review.decisions.decide`` opens the task in the decision's
transaction; ``review.cards.next_cards`` serves it, blind, to another reviewer; the second
decision resolves it (``db.second_review.SecondReview._sync_second_review``). A disagreement waits for a lead:
:func:`adjudicate` records the lead's label as a label event (source ``adjudication``), which is
then the effective label that training and reports use.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from db.store import TRAINING_LABELS, Store
from pipeline.numbers import parse_decimal
from pipeline.settings import Settings
from review import agreement

#: The ``source`` of a lead's adjudication in ``label_events``.
ADJUDICATION_SOURCE = "adjudication"


class SecondReviewError(ValueError):
    """A malformed adjudication (the message is written for the lead)."""


class NothingToAdjudicateError(LookupError):
    """The cell-year has no disagreement waiting for a lead."""


@dataclass(frozen=True)
class SecondReviewPolicy:
    """Which first decisions go to a second reviewer: a share of all, and optionally every mine."""

    share: float = Settings.SECOND_REVIEW_SHARE
    all_mines: bool = Settings.SECOND_REVIEW_ALL_MINES

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"SECOND_REVIEW_SHARE must lie in [0, 1], got {self.share}")

    @classmethod
    def from_settings(cls, settings: Settings) -> SecondReviewPolicy:
        return cls(settings.SECOND_REVIEW_SHARE, settings.SECOND_REVIEW_ALL_MINES)

    def reason(self, cell_id: int, year: int, label: str) -> str | None:
        """Why a first decision ``label`` on the cell-year is second-reviewed ('mine' or
        'share'), or None when it is not (skips never are)."""
        if label not in TRAINING_LABELS:
            return None
        if self.all_mines and label == "mine":
            return "mine"
        return "share" if sample_point(cell_id, year) < self.share else None


def current_policy(store: Store, settings: Settings) -> SecondReviewPolicy:
    """The policy in force: a lead's choice stored in the database, else the settings'."""
    chosen = store.second_review.second_review_policy()
    if chosen is None:
        return SecondReviewPolicy.from_settings(settings)
    return SecondReviewPolicy(float(chosen["share"]), bool(chosen["all_mines"]))


def set_policy(store: Store, *, lead: str, percent: str, all_mines: bool) -> SecondReviewPolicy:
    """Store a lead's choice: ``percent`` of first decisions (text as typed, 0 to 100) and
    whether every mine goes too. SecondReviewError for anything but a number from 0 to 100 in
    ASCII digits (``pipeline.numbers.parse_decimal``: "١٠" is refused, not read as 10)."""
    problem = f"the share is a percentage from 0 to 100 in digits 0-9, got {percent[:20]!r}"
    try:
        share = parse_decimal(percent) / 100.0
    except ValueError:
        raise SecondReviewError(problem) from None
    if not 0.0 <= share <= 1.0:
        raise SecondReviewError(problem)
    store.second_review.set_second_review_policy(share, all_mines, lead)
    return SecondReviewPolicy(share, all_mines)


def sample_point(cell_id: int, year: int) -> float:
    """A fixed pseudo-random number in [0, 1) for a cell-year (SHA-256 of "cell:year")."""
    digest = hashlib.sha256(f"{int(cell_id)}:{int(year)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def adjudicate(store: Store, *, lead: str, cell_id: int, year: int, label: str,
               request_id: str | None = None) -> dict[str, Any]:
    """Record a lead's label for a disagreement (or replace an earlier adjudication), in one
    transaction; returns the updated task. A repeated ``request_id`` records nothing more.

    Raises SecondReviewError for a label other than mine/background, NothingToAdjudicateError
    when the cell-year has no disagreement or adjudication.
    """
    if label not in TRAINING_LABELS:
        raise SecondReviewError(f"adjudicate as mine or background, not {label!r}")
    with store.atomic():
        if request_id is not None and store.labels.label_event_by_request(request_id) is not None:
            return store.second_review.second_review(cell_id, year)
        task = store.second_review.second_review(cell_id, year)
        if task is None or task["status"] not in ("disagreed", "adjudicated"):
            raise NothingToAdjudicateError(f"cell {cell_id} ({year}) has no disagreement to "
                                           "adjudicate")
        store.labels.record_label(cell_id, year, label, lead, request_id=request_id,
                                  source=ADJUDICATION_SOURCE)
        return store.second_review.second_review(cell_id, year)


def adjudication_queue(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    """Disagreements waiting for a lead, oldest first, each with both decisions' events."""
    rows = []
    for task in store.second_review.second_reviews("disagreed", limit=limit):
        rows.append({**task, "first": store.labels.label_event(task["first_event_id"]),
                     "second": store.labels.label_event(task["second_event_id"])})
    return rows


@dataclass(frozen=True)
class TeamFigures:
    """What the Team page shows."""

    per_reviewer: dict[str, agreement.Agreement]
    per_pair: dict[tuple[str, str], agreement.Agreement]
    pace: dict[str, agreement.Pace]
    states: dict[str, int]
    pending_by_reviewer: dict[str, int]


def team_figures(store: Store) -> TeamFigures:
    """Agreement per reviewer and per pair, pace per reviewer, and the review-state counts."""
    pairs = store.second_review.double_reviewed()
    pending: dict[str, int] = {}
    for task in store.second_review.second_reviews("pending"):
        pending[task["first_reviewer"]] = pending.get(task["first_reviewer"], 0) + 1
    return TeamFigures(agreement.by_reviewer(pairs), agreement.by_pair(pairs),
                       agreement.pace_by_reviewer(store.second_review.decision_times()),
                       store.second_review.review_state_counts(), pending)
