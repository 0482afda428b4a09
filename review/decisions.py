"""Decisions on cards: record one, undo the last, change a past one, list the recent ones.

A decision is always recorded, whatever the state of the reviewer's lease
(``review.cards``); the reviewer is told when another reviewer holds the cell or has labelled it
too. Each action is one ``BEGIN IMMEDIATE`` transaction (``Store.atomic``) and idempotent on the
reviewer's token (:func:`request_key`). The audit fields (score and model shown, time spent)
come from the lease, never from the client. A first decision picked by the second-review policy
(``review.second_review``) opens a task in the same transaction; a decision on another
reviewer's pending task is its second review.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from db.store import LABELS, Store
from review.cards import forget_frontier, is_blind
from review.errors import ForbiddenError, NotFoundError, ReviewError
from review.second_review import SecondReviewPolicy

#: Milliseconds per card are clamped to [0, MAX_MS] (a card left open over lunch says nothing).
MAX_MS = 10 * 60 * 1000
#: Longest accepted decision token.
MAX_REQUEST_ID = 100


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
    key = request_key("change", reviewer, request_id) if request_id else None
    with store.atomic():
        event = changeable_decision(store, reviewer, event_id, label)
        return store.labels.record_label(
            event["cell_id"], event["year"], label, reviewer, request_id=key,
            score_shown=event["score_shown"], model_version_shown=event["model_version_shown"])


def changeable_decision(store: Store, reviewer: str, event_id: int, label: str) -> dict[str, Any]:
    """The label event ``reviewer`` may change to ``label``: ReviewError for an unknown label,
    NotFoundError for an unknown decision, ForbiddenError for another reviewer's."""
    if label not in LABELS:
        raise ReviewError(f"unknown label {label[:40]!r}: choose mine, background or skip")
    event = store.labels.label_event(event_id)
    if event is None or event["kind"] != "label":
        raise NotFoundError(f"no decision {event_id}")
    if event["reviewer"] != reviewer:
        raise ForbiddenError(f"decision {event_id} is {event['reviewer']}'s; you can change "
                             "only your own decisions")
    return event


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
