"""Serving cards: the queue of a reviewer, its leases, and what a card shows.

Cards come from the *active* model's scores of one year, in the order of a strategy
(``score``, ``uncertainty``, ``random`` or ``mixed``; ``review.queues`` names them), optionally
only predicted mines (score >= the model's threshold), or the look-alikes of an anchor cell
(``SIMILAR``). Each served card is leased to its reviewer for ``LEASE_SECONDS``; while a lease is
live no other reviewer is served that cell. Every function takes an open
:class:`db.store.Store`; writes run in one ``BEGIN IMMEDIATE`` transaction each
(``Store.atomic``), so several reviewers and a background retrain job never meet "database is
locked".

Second review (``review.second_review``): pending tasks of other reviewers come first in a
reviewer's queue (at most ``SECOND_REVIEW_BATCH_SHARE`` of a batch), shown blind
(:func:`is_blind`: no earlier label, no label history). Decisions on cards are
``review.decisions``; their pictures ``review.thumbnails``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db.store import QUEUE_STRATEGIES, Store, UnknownCellError
from imagery.grid import ID_STRIDE
from pipeline.embedding_index import similarity_index
from review.errors import NotFoundError, ReviewError
from review.queues import DEFAULT_STRATEGY
from review.similar import MAX_K, anchor_vector, nearest_cells

#: Candidates fetched per wanted card, so that spatial de-duplication still fills a batch.
OVERFETCH = 6
#: At most this share of a served batch (rounded up) are second reviews of others' decisions.
SECOND_REVIEW_BATCH_SHARE = 0.5

#: The "more like this" order: the unreviewed cells nearest to an anchor cell's embedding.
SIMILAR = "similar"


@dataclass(frozen=True)
class QueueChoice:
    """How a reviewer's queue is ordered and filtered. ``strategy`` is one of QUEUE_STRATEGIES
    or SIMILAR, which needs the ``anchor`` cell whose look-alikes are served."""

    strategy: str = DEFAULT_STRATEGY
    year: int | None = None
    predicted_only: bool = False
    anchor: int | None = None

    def __post_init__(self) -> None:
        if self.strategy not in (*QUEUE_STRATEGIES, SIMILAR):
            raise ReviewError(f"unknown queue order {self.strategy!r}; choose one of "
                              f"{', '.join(QUEUE_STRATEGIES)} or {SIMILAR} with an anchor cell")
        if (self.strategy == SIMILAR) != (self.anchor is not None):
            raise ReviewError(f"an anchor cell goes with the {SIMILAR!r} order, and only with it")


# queue ------------------------------------------------------------------------------------------
def default_year(store: Store) -> int | None:
    """The latest year the active model has scores for (None without an active model)."""
    model = store.models.active_model()
    if model is None:
        return None
    years = store.scores.scored_years(model["version"])
    return years[-1] if years else None


def _row_col(cell_id: int) -> tuple[int, int]:
    return divmod(int(cell_id), ID_STRIDE)


def _adjacent(a: int, b: int) -> bool:
    """Whether two cells are within one cell of each other (Chebyshev distance <= 1)."""
    (ra, ca), (rb, cb) = _row_col(a), _row_col(b)
    return abs(ra - rb) <= 1 and abs(ca - cb) <= 1


def _order_key(strategy: str):
    if strategy == "uncertainty":
        return lambda r: -(r["uncertainty"] if r["uncertainty"] is not None else -1.0)
    if strategy == "score":
        return lambda r: -r["score"]
    return lambda r: r["rand"]


def next_cards(
    store: Store,
    *,
    reviewer: str,
    strategy: str = DEFAULT_STRATEGY,
    year: int | None = None,
    predicted_only: bool = False,
    n: int = 1,
    lease_seconds: float = 300,
    exclude: Sequence[int] = (),
    now: float | None = None,
    show_first: bool = True,
    anchor: int | None = None,
    similar_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """Lease and return up to ``n`` cards (score rows of the active model) for ``reviewer``.

    Cards already leased to the reviewer (served earlier as prefetch) come first, so the
    thumbnails a page prefetched are the cards it shows next; then new candidates from
    ``Leases.queue_candidates`` in the strategy's order. Candidates are over-fetched
    (``OVERFETCH`` per card) and de-duplicated spatially: a candidate within one cell (Chebyshev
    distance <= 1 in row/col) of a card already in the batch is skipped, so adjacent cells of
    one mine do not fill a batch (they come back in later batches). The batch is then leased
    (``Leases.lease_cells``) in the same ``BEGIN IMMEDIATE`` transaction as the queue query, so
    two reviewers are never served the same cell while a lease is live.

    Pending second reviews of other reviewers' decisions (``SecondReview.second_review_candidates``,
    any year) come first, at most ``SECOND_REVIEW_BATCH_SHARE`` of the batch; such a card is the
    active model's score row of its cell-year (or a row without score) with
    ``second_review=True``.

    With ``show_first`` the first card is the one the reviewer sees now: its lease records the
    moment and the score and model shown (``Leases.lease_cells(shown=...)``), unless it already
    did. Each card carries the score row plus ``threshold``. ``year`` defaults to
    :func:`default_year`; cells in ``exclude`` are left out. Cost: one query for the reviewer's
    leases, one for pending second reviews, one queue query (only when the leases do not fill
    the batch), one lease write.

    ``strategy=SIMILAR`` serves the unreviewed cells nearest to ``anchor`` in embedding space,
    nearest first (:func:`similar_candidates`; the index lives in ``similar_dir``), the
    reviewer's own leases among them in their place; NoEmbeddingError when the anchor has none.
    """
    model = store.models.active_model()
    if model is None or n <= 0:
        return []
    QueueChoice(strategy, year, predicted_only, anchor)
    year = default_year(store) if year is None else int(year)
    if year is None:
        return []
    now = time.time() if now is None else now
    min_score = float(model["threshold"]) if predicted_only else None
    version = model["version"]
    if strategy == SIMILAR:
        if similar_dir is None:
            raise ReviewError(f"the {SIMILAR!r} order needs the folder of its index")
        similarity_index(store, similar_dir, version, year)  # built (slow) outside the transaction
        anchor_vector(store, version, year, anchor)
    skip = {int(c) for c in exclude}
    batch: list[dict[str, Any]] = []

    def take(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if len(batch) >= n:
                return
            cell_id = int(row["cell_id"])
            if cell_id in skip or any(_adjacent(cell_id, b["cell_id"]) for b in batch):
                continue
            skip.add(cell_id)
            batch.append(row)

    # One write transaction: no other reviewer can lease or label a candidate in between.
    with store.atomic():
        seconds = store.second_review.second_review_candidates(
            reviewer, math.ceil(n * SECOND_REVIEW_BATCH_SHARE), now=now)
        take([_second_review_row(store, version, task) for task in seconds])
        if strategy == SIMILAR:
            take(similar_candidates(store, similar_dir, version, year, anchor, reviewer,
                                    n * OVERFETCH + len(skip) + 8, min_score=min_score, now=now))
        else:
            own = store.leases.leased_to(version, year, reviewer, min_score=min_score, now=now)
            take(sorted(own, key=_order_key(strategy)))
        if len(batch) < n and strategy != SIMILAR:
            limit = n * OVERFETCH + len(skip) + 8
            take(_candidates(store, version, year, strategy, reviewer, limit, min_score, now))
        if not batch:
            return []
        first = (int(batch[0]["cell_id"]), int(batch[0]["year"])) if show_first else None
        leased = set(store.leases.lease_cells([(r["cell_id"], r["year"]) for r in batch], reviewer,
                                              lease_seconds, now=now, shown=first))
    return [{**row, "threshold": model["threshold"]} for row in batch
            if (int(row["cell_id"]), int(row["year"])) in leased]


def similar_candidates(
    store: Store, folder: Path, version: str, year: int, anchor: int, reviewer: str, limit: int,
    *, min_score: float | None = None, now: float | None = None,
) -> list[dict[str, Any]]:
    """Up to ``limit`` score rows of the cells nearest to ``anchor`` (itself excluded) that are
    scored, unlabelled, inside the territory and not leased to another reviewer, nearest first,
    each with its ``similarity`` (cosine). Asks the index for 4 x more neighbours until enough
    pass (at most MAX_K)."""
    k = max(limit, 1) * 2
    while True:
        near = nearest_cells(store, folder, version, year, anchor, k)
        rows = store.leases.unreviewed_scores(version, year, [c for c, _ in near], reviewer,
                                              min_score=min_score, now=now)
        if len(rows) >= limit or len(near) < k or k >= MAX_K:
            break
        k = min(k * 4, MAX_K)
    similarity = dict(near)
    by_id = {int(r["cell_id"]): r for r in rows}
    return [{**by_id[c], "similarity": similarity[c]} for c, _ in near if c in by_id][:limit]


def _second_review_row(store: Store, version: str, task: dict[str, Any]) -> dict[str, Any]:
    """A second-review card: the model's score row of the cell-year (or one without a score)."""
    row = store.scores.score(task["cell_id"], task["year"], version) or {
        "cell_id": task["cell_id"], "year": task["year"], "model_version": version,
        "score": None, "uncertainty": None, "rand": 0.0}
    return {**row, "second_review": True}


def is_blind(store: Store, cell_id: int, year: int, reviewer: str | None) -> bool:
    """Whether the cell-year waits for its second review and ``reviewer`` may give it (someone
    else decided first, nobody second yet): its card then shows no earlier label."""
    task = store.second_review.second_review(cell_id, year)
    return (reviewer is not None and task is not None and task["status"] == "pending"
            and task["first_reviewer"] != reviewer and task["second_reviewer"] is None)


_frontier: dict[tuple[Any, ...], tuple[float, float]] = {}
_frontier_lock = threading.Lock()
#: How long (seconds) the queue may start its scan at a remembered frontier before a full scan.
FRONTIER_MAX_AGE = 30.0


def _candidates(
    store: Store, version: str, year: int, strategy: str, reviewer: str, limit: int,
    min_score: float | None, now: float,
) -> list[dict[str, Any]]:
    """Queue candidates; the ordered strategies start at a remembered frontier.

    Reviewers consume the uncertainty (or score) order from the top, so after a while the top of
    the index is a long prefix of labelled cells that every queue query would have to skip
    (100,000 labels: ~0.1-0.3 s). The order value of the first cell found is remembered per
    (database, model, year, strategy, filter) and later scans start there (inclusive); a full
    scan runs again every ``FRONTIER_MAX_AGE`` seconds, and at once after an undo in this
    process (:func:`forget_frontier`), so a cell that became unlabelled again is served again
    within that time. The frontier is the first *unlabelled* cell (leased or not), so cells
    leased by other reviewers stay below it and come back when their lease expires.
    """
    if strategy not in ("uncertainty", "score"):
        return store.leases.queue_candidates(version, year, strategy, reviewer, limit,
                                             min_score=min_score, now=now)
    key = (str(store.path), version, year, strategy, min_score)
    clock = time.monotonic()
    with _frontier_lock:
        entry = _frontier.get(key)
    fresh = entry is not None and clock - entry[0] < FRONTIER_MAX_AGE
    rows = store.leases.ordered_queue(version, year, strategy, reviewer, limit, min_score=min_score,
                                      now=now, start=entry[1] if fresh else None)
    if not rows and fresh:
        rows = store.leases.ordered_queue(version, year, strategy, reviewer, limit,
                                          min_score=min_score, now=now)
        fresh = False
    if rows:
        with _frontier_lock:
            _frontier[key] = (entry[0] if fresh else clock, float(rows[0][strategy]))
    return [row for row in rows if not row.pop("leased_to_other")]


def forget_frontier(store: Store) -> None:
    """Drop the remembered queue frontiers of this database (a cell became unlabelled)."""
    path = str(store.path)
    with _frontier_lock:
        for key in [k for k in _frontier if k[0] == path]:
            del _frontier[key]


def lease_one(store: Store, cell_id: int, year: int, reviewer: str, lease_seconds: float) -> bool:
    """Lease one cell to a reviewer as the card shown now; False if another reviewer holds it."""
    with store.atomic():
        return bool(store.leases.lease_cells([(cell_id, year)], reviewer, lease_seconds,
                                             shown=(cell_id, year)))


def require_cell_year(store: Store, cell_id: int, year: int) -> dict[str, Any]:
    """The cell, or NotFoundError when the cell is unknown or no scene exists for ``year``."""
    try:
        cell = store.cells.require_cell(cell_id)
    except UnknownCellError as error:
        raise NotFoundError(f"unknown cell {cell_id}") from error
    if int(year) not in store.scenes.years():
        raise NotFoundError(f"no scene of {year} in this installation")
    return cell


# cards and counters -----------------------------------------------------------------------------
def card_details(store: Store, cell_id: int, year: int,
                 reviewer: str | None = None) -> dict[str, Any]:
    """Everything a card shows about a cell-year: cell, the active model's score, history.

    For a blind second review (:func:`is_blind` for ``reviewer``) ``blind`` is True and the
    card carries no label history and no current label: the reviewer sees what a first
    reviewer saw (the pictures, the score, the scores of other years). On a card of another
    year, the events of every year blind to ``reviewer`` are left out of the history too
    (``hidden_years``), so no view of the cell shows a label its blind second review must not.
    """
    cell = store.cells.cell(cell_id)
    if cell is None:
        raise NotFoundError(f"unknown cell {cell_id}")
    model = store.models.active_model()
    score = store.scores.score(cell_id, year, model["version"]) if model else None
    blind = is_blind(store, cell_id, year, reviewer)
    history, hidden = visible_history(store, cell_id, reviewer)
    return {
        "cell": cell,
        "year": int(year),
        "model": model,
        "score": score,
        "blind": blind,
        "history": [] if blind else history,
        "hidden_years": hidden,
        "scores": store.scores.cell_scores(cell_id),
        "current": None if blind else store.labels.current_label(cell_id, year),
    }


def blind_cells(store: Store, reviewer: str | None) -> set[int]:
    """Cells with a cell-year whose blind second review may still come to ``reviewer``
    (:func:`is_blind`): every view of such a cell (card, history, map) hides its labels."""
    if reviewer is None:
        return set()
    return {int(task["cell_id"]) for task in store.second_review.second_reviews(status="pending")
            if task["first_reviewer"] != reviewer and task["second_reviewer"] is None}


def unreviewed_view(row: dict[str, Any], threshold: float) -> dict[str, Any]:
    """A cell-status row (``Territory.cell_statuses``) as a reviewer who may not see its label sees
    it: no label, and the status the model's score alone gives."""
    predicted = row["score"] is not None and float(row["score"]) >= threshold
    return {**row, "label": None, "status": "predicted" if predicted else "background"}


def visible_history(store: Store, cell_id: int,
                    reviewer: str | None) -> tuple[list[dict[str, Any]], list[int]]:
    """A cell's label history as ``reviewer`` may see it, and the years left out because their
    blind second review may still come to ``reviewer`` (:func:`is_blind`)."""
    history = store.labels.label_history(cell_id)
    hidden = sorted(y for y in {int(e["year"]) for e in history}
                    if is_blind(store, cell_id, y, reviewer))
    return [e for e in history if int(e["year"]) not in hidden], hidden


_queue_cache: dict[tuple[Any, ...], tuple[float, float, int]] = {}
_queue_lock = threading.Lock()
#: A queue count that cost more than this (seconds of the thread's CPU, so that a busy machine
#: does not make a cheap count look slow) is reused for QUEUE_COUNT_MAX_AGE seconds.
QUEUE_COUNT_SLOW = 0.005
QUEUE_COUNT_MAX_AGE = 15.0


def queue_left(store: Store, year: int | None, *, predicted_only: bool = False) -> int | None:
    """Cells of ``year`` the active model scored and nobody has labelled yet.

    On big databases the count scans the year's scores (about 20 ms of CPU at 300,000 cells); a
    count that cost more than ``QUEUE_COUNT_SLOW`` of CPU is reused for ``QUEUE_COUNT_MAX_AGE``
    seconds so that serving cards stays cheap (the counter then lags by a few seconds).
    """
    model = store.models.active_model()
    if model is None or year is None:
        return None
    min_score = float(model["threshold"]) if predicted_only else None
    key = (str(store.path), model["version"], year, min_score)
    now = time.monotonic()
    with _queue_lock:
        cached = _queue_cache.get(key)
    if cached and now - cached[0] < QUEUE_COUNT_MAX_AGE and cached[1] > QUEUE_COUNT_SLOW:
        return cached[2]
    start = time.thread_time()
    count = store.leases.count_queue_fast(model["version"], year, min_score=min_score)
    with _queue_lock:
        _queue_cache[key] = (now, time.thread_time() - start, count)
    return count


def session_stats(
    store: Store, reviewer: str, *, since: str, started: float, year: int | None,
    predicted_only: bool = False, now: float | None = None,
) -> dict[str, Any]:
    """Counters for a review session: decisions since ``since`` (ISO), rate per hour, queue left."""
    now = time.time() if now is None else now
    decisions = store.labels.count_decisions(reviewer, since=since)
    hours = max(now - started, 60.0) / 3600.0
    return {
        "decisions": decisions,
        "rate_per_hour": round(decisions / hours),
        "queue_left": queue_left(store, year, predicted_only=predicted_only),
    }
