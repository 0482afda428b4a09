"""The review service: the queue, decisions, undo and thumbnails, without any web framework.

The web app (``labeller/``) turns HTTP into calls of these functions, and a simulated reviewer
(or a script) can call the same ones directly. Every function takes an open
:class:`db.store.Store`; writes run in one ``BEGIN IMMEDIATE`` transaction each
(``Store.atomic``), so several reviewers and a background retrain job never meet "database is
locked".

Queue: cards come from the *active* model's scores of one year, in the order of a strategy
(``score``, ``uncertainty``, ``random`` or ``mixed``), optionally only predicted mines (score >= the model's
threshold). Each served card is leased to its reviewer for ``LEASE_SECONDS``; while a lease is
live no other reviewer is served that cell. A decision is always recorded, whatever the state
of the lease; the reviewer is told when another reviewer holds the cell or has labelled it too.

Second review (``review.second_review``): a first decision picked by the policy opens a task in
its own transaction; pending tasks of other reviewers come first in a reviewer's queue (at most
``SECOND_REVIEW_BATCH_SHARE`` of a batch), shown blind (no earlier label, no label history).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db.store import LABELS, QUEUE_STRATEGIES, Store, StoreError, UnknownCellError
from imagery.bands import BandMismatchError
from imagery.grid import ID_STRIDE
from pipeline.embedding_index import similarity_index
from pipeline.ingest import year_mosaic
from review.queues import DEFAULT_STRATEGY
from review.second_review import SecondReviewPolicy
from review.similar import MAX_K, anchor_vector, nearest_cells

#: Milliseconds per card are clamped to [0, MAX_MS] (a card left open over lunch says nothing).
MAX_MS = 10 * 60 * 1000
#: Candidates fetched per wanted card, so that spatial de-duplication still fills a batch.
OVERFETCH = 6
#: Pixel size of the served pictures: the cell (100 px at 10 m, enlarged) and its 3 x 3 context.
THUMB_SIZE: dict[str, int] = {"cell": 400, "context": 300}
#: Views a thumbnail can be drawn in.
THUMB_VIEWS: tuple[str, ...] = ("rgb", "false")
#: Longest accepted decision token.
MAX_REQUEST_ID = 100
#: At most this share of a served batch (rounded up) are second reviews of others' decisions.
SECOND_REVIEW_BATCH_SHARE = 0.5


class ReviewError(ValueError):
    """A malformed review request; the message is written for the reviewer."""


class NotFoundError(LookupError):
    """Something the request names does not exist (a cell, a year without scene, a decision)."""


class ForbiddenError(PermissionError):
    """The request acts on something that belongs to another reviewer (e.g. their decision)."""


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


@dataclass(frozen=True)
class DecisionForm:
    """A validated decision as a reviewer's card submits it: the label and its token.

    What the card showed (score, model) and the time spent are not taken from the client; they
    come from the reviewer's lease (:func:`decide`).
    """

    label: str
    request_id: str


@dataclass
class Decision:
    """What happened to a submitted decision."""

    event: dict[str, Any]
    duplicate: bool = False
    lease_expired: bool = False
    held_by: str | None = None
    also_labelled_by: list[dict[str, Any]] = field(default_factory=list)
    second_review: bool = False

    @property
    def notice(self) -> str | None:
        """A sentence for the reviewer when someone else is involved with this cell, else None
        (a blind second review names nobody: "Recorded as a second review.")."""
        cell = f"cell {self.event['cell_id']} ({self.event['year']})"
        if self.second_review:
            return f"Recorded as a second review of {cell}."
        if self.also_labelled_by:
            others = ", ".join(f"{e['reviewer']} ({e['label']})" for e in self.also_labelled_by)
            return f"Recorded. Note: {cell} was also labelled by {others}."
        if self.held_by:
            return f"Recorded. Note: {self.held_by} was also looking at {cell}."
        return None


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


# decisions --------------------------------------------------------------------------------------
def clamp_ms(value: float | int | None) -> int | None:
    """Milliseconds spent on a card, clamped to [0, MAX_MS]."""
    if value is None:
        return None
    return int(min(max(float(value), 0.0), MAX_MS))


def parse_decision_form(form: Mapping[str, Any]) -> DecisionForm:
    """Validate a submitted card: its label and decision token (request_id).

    Anything else the client sends (ms, score_shown, model_version) is ignored: the audit
    fields come from the lease. Raises ReviewError with a message for the reviewer.
    """
    label = str(form.get("label") or "").strip()
    if not label:
        raise ReviewError("no decision given: the form needs a label (mine, background or skip)")
    if label not in LABELS:
        raise ReviewError(f"unknown label {label[:40]!r}: choose mine, background or skip")
    return DecisionForm(label, parse_token(form.get("request_id")))


def parse_token(raw: Any, *, required: bool = True) -> str:
    """A decision token as sent: stripped, at most ``MAX_REQUEST_ID`` printable ASCII characters."""
    token = str(raw or "").strip()
    if not token:
        if required:
            raise ReviewError("the form lacks its decision token (request_id); reload the page")
        return ""
    if len(token) > MAX_REQUEST_ID:
        raise ReviewError("the decision token is too long")
    if not (token.isascii() and token.isprintable()):
        raise ReviewError("the decision token must be printable ASCII")
    return token


def request_key(kind: str, reviewer: str, token: str) -> str:
    """The stored idempotency key of a reviewer's action: ``kind:reviewer:token``.

    Scoped to the account (another reviewer's token never matches) and to the kind of action
    (``label``, ``change`` or ``undo``: a label sent with an undo's token is a different key).
    Account names hold no ":", so the key is unambiguous.
    """
    return f"{kind}:{reviewer}:{token}"


def require_cell_year(store: Store, cell_id: int, year: int) -> dict[str, Any]:
    """The cell, or NotFoundError when the cell is unknown or no scene exists for ``year``."""
    try:
        cell = store.cells.require_cell(cell_id)
    except UnknownCellError as error:
        raise NotFoundError(f"unknown cell {cell_id}") from error
    if int(year) not in store.scenes.years():
        raise NotFoundError(f"no scene of {year} in this installation")
    return cell


def decide(
    store: Store,
    *,
    reviewer: str,
    cell_id: int,
    year: int,
    form: DecisionForm,
    now: float | None = None,
    policy: SecondReviewPolicy | None = None,
) -> Decision:
    """Record a reviewer's decision on a cell-year, in one transaction.

    Idempotent on the reviewer's ``form.request_id``: a double submit returns the stored event
    (``duplicate=True``). The audit fields come from the server: when the reviewer's lease of
    the cell recorded a showing, the score and model shown then and the milliseconds from then
    to now (clamped to ``MAX_MS``); without such a lease, the active model's score now and no
    time. The decision is recorded whatever the lease says: when the reviewer's lease expired,
    or another reviewer now holds the cell, or has already labelled it, the decision still
    counts and :attr:`Decision.notice` says so.

    Second review, in the same transaction: a first decision on an unlabelled cell-year that
    ``policy`` (default: the settings' defaults) picks opens a second-review task; a decision on
    a pending task by another reviewer is its second review (``Decision.second_review``; the
    store resolves the task as agreed or disagreed).
    """
    now = time.time() if now is None else now
    policy = SecondReviewPolicy() if policy is None else policy
    key = request_key("label", reviewer, form.request_id)
    with store.atomic():
        existing = store.labels.label_event_by_request(key)
        if existing is not None:
            return Decision(existing, duplicate=True)
        holder = store.leases.lease_holder(cell_id, year, now=now)
        second = is_blind(store, cell_id, year, reviewer)
        first = store.labels.current_label(cell_id, year) is None
        others = [e for e in store.labels.label_history(cell_id)
                  if e["year"] == year and e["kind"] == "label" and not e["undone"]
                  and e["reviewer"] != reviewer]
        score, version, ms = _shown(store, reviewer, cell_id, year, now)
        event = store.labels.record_label(
            cell_id, year, form.label, reviewer, request_id=key, ms_spent=ms,
            score_shown=score, model_version_shown=version)
        reason = policy.reason(cell_id, year, form.label) if first else None
        if reason is not None:
            store.second_review.add_second_review(event, reason)
    if second:
        return Decision(event, second_review=True)
    return Decision(event, lease_expired=holder != reviewer,
                    held_by=holder if holder not in (None, reviewer) else None,
                    also_labelled_by=others)


def _shown(store: Store, reviewer: str, cell_id: int, year: int,
           now: float) -> tuple[float | None, str | None, int | None]:
    """(score shown, model version shown, ms spent) of a decision, from the reviewer's lease."""
    lease = store.leases.lease(cell_id, year)
    if lease is not None and lease["reviewer"] == reviewer and lease["shown_at"] is not None:
        return (lease["score_shown"], lease["model_version_shown"],
                clamp_ms((now - float(lease["shown_at"])) * 1000.0))
    model = store.models.active_model()
    row = store.scores.score(cell_id, year, model["version"]) if model else None
    return (row["score"] if row else None, model["version"] if model else None, None)


def undo_last(
    store: Store, reviewer: str, *, request_id: str | None = None,
    lease_seconds: float | None = None, now: float | None = None,
) -> dict[str, Any] | None:
    """Undo the reviewer's latest decision (a new 'undo' event); returns the undone label event.

    With ``lease_seconds`` the undone cell is leased back to the reviewer, as the card shown
    now, in the same transaction as the undo: no other reviewer can be served it in between.
    When another reviewer holds its card already (e.g. the first reviewer took it back with
    their own undo, or a second reviewer is looking at it) it is not leased back and the
    returned event's ``held_by`` names that reviewer: the caller must not show the card then.
    None when there is nothing left to undo. A repeated ``request_id`` (the reviewer's token)
    undoes nothing more and returns the event that the first request undid.
    """
    key = request_key("undo", reviewer, request_id) if request_id else None
    with store.atomic():
        if key:
            existing = store.labels.label_event_by_request(key)
            if existing is not None and existing["kind"] == "undo":
                target = store.labels.label_event(existing["undoes"])
                return {**target, "held_by": _held_by_other(store, target, reviewer, now)}
        target = store.labels.last_undoable_event(reviewer)
        if target is None:
            return None
        store.labels.undo_label(target["id"], reviewer, request_id=key)
        if lease_seconds is not None:
            cell = (target["cell_id"], target["year"])
            store.leases.lease_cells([cell], reviewer, lease_seconds, now=now, shown=cell)
        held_by = _held_by_other(store, target, reviewer, now)
    forget_frontier(store)
    return {**target, "held_by": held_by}


def _held_by_other(store: Store, event: dict[str, Any], reviewer: str,
                   now: float | None) -> str | None:
    """Who else holds a live lease on the event's cell-year, if anyone."""
    holder = store.leases.lease_holder(event["cell_id"], event["year"], now=now)
    return holder if holder not in (None, reviewer) else None


def change_decision(
    store: Store, *, reviewer: str, event_id: int, label: str, request_id: str | None = None,
) -> dict[str, Any]:
    """Change one's own past decision: a NEW label event for that cell-year (nothing erased).

    NotFoundError for an unknown decision, ForbiddenError for another reviewer's.
    """
    if label not in LABELS:
        raise ReviewError(f"unknown label {label[:40]!r}: choose mine, background or skip")
    key = request_key("change", reviewer, request_id) if request_id else None
    with store.atomic():
        event = store.labels.label_event(event_id)
        if event is None or event["kind"] != "label":
            raise NotFoundError(f"no decision {event_id}")
        if event["reviewer"] != reviewer:
            raise ForbiddenError(f"decision {event_id} is {event['reviewer']}'s; you can change "
                                 "only your own decisions")
        return store.labels.record_label(
            event["cell_id"], event["year"], label, reviewer, request_id=key,
            score_shown=event["score_shown"], model_version_shown=event["model_version_shown"])


def recent_decisions(store: Store, reviewer: str, limit: int = 10) -> list[dict[str, Any]]:
    """The reviewer's last ``limit`` decided cells (latest decision per cell-year), newest first.

    Each row is the reviewer's label event plus ``current`` (the cell's current label row, which
    may come from another reviewer).
    """
    rows: list[dict[str, Any]] = []
    seen: set[tuple[int, int]] = set()
    for event in store.labels.recent_decisions(reviewer, limit * 4):
        key = (event["cell_id"], event["year"])
        if key in seen:
            continue
        seen.add(key)
        rows.append(event)
        if len(rows) >= limit:
            break
    current = store.labels.current_labels_of(seen)
    return [{**event, "current": current.get((event["cell_id"], event["year"]))}
            for event in rows]


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


# thumbnails -------------------------------------------------------------------------------------
def thumbnail_key(scene: Mapping[str, Any]) -> str:
    """Cache key of a scene's pictures: its id plus a digest of what the pictures depend on."""
    facts = json.dumps([scene["paths"], scene["bands"], scene["stretch"], scene["ingested_at"],
                        THUMB_SIZE], sort_keys=True)
    return f"s{scene['id']}-{hashlib.sha1(facts.encode()).hexdigest()[:10]}"


def thumbnail_version(store: Store, cell_id: int, year: int) -> str | None:
    """The cache key the cell's pictures of ``year`` are served under (None: no scene covers it).

    Pages put it in thumbnail URLs (``?v=``), so a browser may cache those URLs forever.
    """
    scenes = store.scenes.scenes_covering(cell_id, year)
    return thumbnail_key(scenes[0]) if scenes else None


def thumbnail_versions(
    store: Store, cells: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], str | None]:
    """:func:`thumbnail_version` of several (cell_id, year) pairs, reading each year's scenes once
    (a card and its prefetched cards in one query per year, not one per card)."""
    scenes = {year: sorted(store.scenes.scenes(year), key=lambda r: -r["id"])
              for year in {int(year) for _, year in cells}}
    keys: dict[int, str] = {}
    versions: dict[tuple[int, int], str | None] = {}
    for cell_id, year in cells:
        row, col = divmod(int(cell_id), ID_STRIDE)
        scene = next((r for r in scenes[int(year)] if r["row0"] <= row < r["row1"]
                      and r["col0"] <= col < r["col1"]), None)
        if scene is not None and scene["id"] not in keys:
            keys[scene["id"]] = thumbnail_key(scene)
        versions[(int(cell_id), int(year))] = keys[scene["id"]] if scene is not None else None
    return versions


def thumbnail_path(
    store: Store, settings: Any, cell_id: int, year: int, view: str = "rgb", kind: str = "cell",
) -> tuple[Path, str]:
    """(PNG path, cache key) of a cell's picture in ``year``, rendered on the first request.

    Finds the year's mosaic row if its range covers the cell (``Scenes.scenes_covering``) and uses
    ``imagery.thumbnails.ThumbnailCache(settings.thumbnail_dir)`` keyed by :func:`thumbnail_key`
    with the mosaic's stored stretch; a miss reads the year's mosaic (``imagery.store``), the
    very pixels scoring reads. A cached picture is returned without opening the store.
    Raises NotFoundError for an unknown cell, a year without a covering scene, or a view whose
    bands the scene lacks; ReviewError for an unknown view or kind.
    """
    from imagery.thumbnails import ThumbnailCache

    if view not in THUMB_VIEWS:
        raise ReviewError(f"unknown view {view!r}; expected rgb or false")
    if kind not in THUMB_SIZE:
        raise ReviewError(f"unknown kind {kind!r}; expected cell or context")
    if store.cells.cell(cell_id) is None:
        raise NotFoundError(f"unknown cell {cell_id}")
    scenes = store.scenes.scenes_covering(cell_id, year)
    if not scenes:
        raise NotFoundError(f"no scene of {year} covers cell {cell_id}")
    record = scenes[0]
    key = thumbnail_key(record)
    cache = ThumbnailCache(settings.thumbnail_dir)
    path = cache.path_for(key, cell_id, view, kind)
    if path.exists():
        return path, key
    try:
        path = cache.get(year_mosaic(settings, year), cell_id, key=key, view=view, kind=kind,
                         stretch=record["stretch"], size=THUMB_SIZE[kind])
    except BandMismatchError as error:
        raise NotFoundError(f"scene {record['name']} cannot show this view: {error}") from error
    except (OSError, ValueError, StoreError) as error:
        raise NotFoundError(f"scene {record['name']} cannot be read: {error}") from error
    return path, key
