"""The triage grid: pages of N candidates decided at a glance, without any web framework.

A page is leased from the very queue the single card uses (:func:`review.cards.next_cards`,
same strategy, filters, year and pending blind second reviews first); every tile's lease records
its showing when the page is served, so each tile's decision carries the score and model shown
and its time on screen (from the page's serving to its submission), as a card's does.

Every tile is a separate decision in the append-only history, recorded by
:func:`review.decisions.decide` in its own transaction, under the idempotency key
``label:<reviewer>:grid-<page>-<index>``. One transaction per tile, not per page: a tile that
another reviewer decided in the meantime is refused without holding back its neighbours, and a
double (or interrupted and repeated) submit records each tile at most once because the keys are
per tile. The keys also name the page, so the reviewer's last page can be reopened from the
history alone (:func:`last_page`) and corrected through :func:`review.decisions.change_decision`.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from db.store import LABELS, Store
from review.cards import QueueChoice, is_blind, next_cards, require_cell_year
from review.decisions import (
    DecisionForm,
    change_decision,
    changeable_decision,
    decide,
    parse_token,
    request_key,
)
from review.errors import ReviewError
from review.second_review import SecondReviewPolicy

#: What a tile's outcome says to the reviewer, by status.
OUTCOMES: dict[str, str] = {
    "recorded": "recorded",
    "recorded_late": "recorded; your lease had expired but nobody else held the cell",
    "second_review": "recorded as a second review",
    "duplicate": "already recorded by an earlier submit of this page (counted once)",
    "decided_by_other": "not recorded: {who} decided this cell after the page was served",
    "held_by_other": "not recorded: your lease expired and the cell is now leased to {who}",
}
_TOKEN = re.compile(r"grid-([0-9a-f]{32})-(\d{1,3})")


@dataclass(frozen=True)
class TileForm:
    """One submitted tile: its cell-year, the label and its token ``grid-<page>-<index>``."""

    cell_id: int
    year: int
    label: str
    request_id: str

    @property
    def page(self) -> str:
        return _TOKEN.fullmatch(self.request_id).group(1)  # type: ignore[union-attr]


@dataclass(frozen=True)
class TileOutcome:
    """What happened to one submitted tile."""

    cell_id: int
    year: int
    label: str
    status: str
    who: str | None = None
    event_id: int | None = None

    @property
    def recorded(self) -> bool:
        return self.status in ("recorded", "recorded_late", "second_review", "duplicate")

    @property
    def message(self) -> str:
        return OUTCOMES[self.status].format(who=self.who or "another reviewer")


# serving ----------------------------------------------------------------------------------------
def new_page_id() -> str:
    """A fresh page id (32 hex digits)."""
    return uuid.uuid4().hex


def tile_token(page: str, index: int) -> str:
    """The decision token of tile ``index`` of a page (its idempotency key's last part)."""
    return f"grid-{page}-{index}"


def serve_page(
    store: Store, *, reviewer: str, choice: QueueChoice, size: int,
    lease_seconds: float, now: float | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Lease a page of ``size`` tiles plus the next page (prefetch); returns (page, next page).

    Each page is one :func:`review.cards.next_cards` call of ``size`` cards (the reviewer's
    earlier leases first, so the prefetched page is the one served next; pending blind second
    reviews first, at most ``SECOND_REVIEW_BATCH_SHARE`` of a page). Every tile of the page is
    then marked shown (its lease records the moment, the score and the model, unless it already
    did): the time on screen of each tile runs from the page's serving.
    """
    now = time.time() if now is None else now
    common = dict(reviewer=reviewer, strategy=choice.strategy, year=choice.year,
                  predicted_only=choice.predicted_only, n=size, lease_seconds=lease_seconds,
                  now=now, show_first=False)
    page = next_cards(store, **common)  # type: ignore[arg-type]
    ahead = next_cards(store, exclude=[int(c["cell_id"]) for c in page],
                               **common)  # type: ignore[arg-type]
    with store.atomic():
        for card in page:
            cell = (int(card["cell_id"]), int(card["year"]))
            store.leases.lease_cells([cell], reviewer, lease_seconds, now=now, shown=cell)
    return page, ahead


# submitting -------------------------------------------------------------------------------------
def make_tiles(rows: Sequence[tuple[int, int, str, str]], *, max_tiles: int) -> list[TileForm]:
    """Validate a submitted page's (cell, year, label, token) rows (ids already parsed).

    An empty label means background (an unmarked tile); every token is ``grid-<page>-<index>``
    of one page, each once. Raises ReviewError (one line, for the reviewer) on anything
    malformed; nothing is recorded then.
    """
    if not rows:
        raise ReviewError("the page carries no tiles; reload the triage page")
    if len(rows) > max_tiles:
        raise ReviewError(f"a page has at most {max_tiles} tiles, got {len(rows)}")
    tiles: list[TileForm] = []
    for index, (cell_id, year, raw_label, raw_token) in enumerate(rows):
        label = (raw_label or "").strip() or "background"
        if label not in LABELS:
            raise ReviewError(f"tile {index + 1}: unknown label {label[:40]!r}; choose "
                                      "mine, background or skip")
        token = parse_token(raw_token)
        if _TOKEN.fullmatch(token) is None:
            raise ReviewError(f"tile {index + 1}: {token[:40]!r} is not a triage "
                                      "token; reload the triage page")
        tiles.append(TileForm(int(cell_id), int(year), label, token))
    if len({t.page for t in tiles}) != 1:
        raise ReviewError("the tiles come from different pages; reload the triage page")
    if len({t.request_id for t in tiles}) != len(tiles):
        raise ReviewError("a tile appears twice in the page")
    return tiles


def submit_page(
    store: Store, *, reviewer: str, tiles: Sequence[TileForm],
    policy: SecondReviewPolicy | None = None, now: float | None = None,
) -> list[TileOutcome]:
    """Record each tile of a page as its own decision, one transaction per tile.

    Per tile: a token already stored counts once (``duplicate``); a cell another reviewer
    decided since the page was served is not recorded (``decided_by_other``) unless it is a
    blind second review for this reviewer; a cell whose lease expired and that another reviewer
    now holds is not recorded (``held_by_other``); otherwise :func:`review.decisions.decide`
    records it with the audit fields of the tile's lease (``recorded``; ``recorded_late`` when
    the lease had expired; ``second_review``). Every cell-year must exist
    (:func:`review.cards.require_cell_year`, checked for all tiles before anything is
    recorded; NotFoundError otherwise).
    """
    now = time.time() if now is None else now
    for tile in tiles:
        require_cell_year(store, tile.cell_id, tile.year)
    return [_submit_tile(store, reviewer, tile, policy, now) for tile in tiles]


def _submit_tile(store: Store, reviewer: str, tile: TileForm,
                 policy: SecondReviewPolicy | None, now: float) -> TileOutcome:
    """One tile in one transaction (the checks and the decision cannot be separated)."""
    key = request_key("label", reviewer, tile.request_id)
    with store.atomic():
        existing = store.labels.label_event_by_request(key)
        if existing is not None:
            return TileOutcome(tile.cell_id, tile.year, existing["label"], "duplicate",
                               event_id=int(existing["id"]))
        current = store.labels.current_label(tile.cell_id, tile.year)
        blind = is_blind(store, tile.cell_id, tile.year, reviewer)
        if current is not None and current["reviewer"] != reviewer and not blind:
            return TileOutcome(tile.cell_id, tile.year, tile.label, "decided_by_other",
                               who=current["reviewer"])
        lease = store.leases.lease(tile.cell_id, tile.year)
        mine = lease is not None and lease["reviewer"] == reviewer
        if lease is not None and not mine and float(lease["expires_at"]) > now:
            return TileOutcome(tile.cell_id, tile.year, tile.label, "held_by_other",
                               who=lease["reviewer"])
        late = lease is None or not mine or float(lease["expires_at"]) <= now
        decision = decide(
            store, reviewer=reviewer, cell_id=tile.cell_id, year=tile.year,
            form=DecisionForm(tile.label, tile.request_id), now=now, policy=policy)
    status = "second_review" if decision.second_review else "recorded_late" if late else "recorded"
    return TileOutcome(tile.cell_id, tile.year, tile.label, status,
                       event_id=int(decision.event["id"]))


# reopening and correcting -----------------------------------------------------------------------
def last_page(store: Store, reviewer: str) -> list[dict[str, Any]]:
    """The reviewer's last submitted page, tiles in page order: each tile's decision from the
    page (``event_id``), its cell-year and the reviewer's current label of it (``label``: the
    latest of their not-undone decisions, so an earlier correction shows). Empty when the
    reviewer never submitted a page.
    """
    prefix = f"label:{reviewer}:grid-"
    latest = store.labels.latest_event_by_request_prefix(prefix)
    if latest is None:
        return []
    page = latest["request_id"][len(prefix):].split("-", 1)[0]
    events = store.labels.label_events_by_request_prefix(f"{prefix}{page}-")
    events.sort(key=lambda e: int(e["request_id"].rsplit("-", 1)[1]))
    return [{"event_id": int(e["id"]), "cell_id": int(e["cell_id"]), "year": int(e["year"]),
             "label": _own_label(store, reviewer, int(e["cell_id"]), int(e["year"]))
             or e["label"]}
            for e in events]


def _own_label(store: Store, reviewer: str, cell_id: int, year: int) -> str | None:
    """The reviewer's latest not-undone label of a cell-year, if any."""
    own = [e for e in store.labels.label_history(cell_id)
           if e["year"] == year and e["kind"] == "label" and e["reviewer"] == reviewer
           and not e["undone"]]
    return own[-1]["label"] if own else None


def correct_page(
    store: Store, *, reviewer: str, changes: Sequence[tuple[int, str]], token: str,
) -> list[dict[str, Any]]:
    """Apply a reopened page's corrections: ``changes`` are (event_id, label) per tile.

    A tile whose label differs from the reviewer's current label of that cell-year becomes one
    :func:`review.decisions.change_decision` (a new event keyed ``change:<reviewer>:<token>-
    <event_id>``, so a double submit changes once); an unchanged tile records nothing. Returns
    the new events. Every tile is checked (ReviewError for an unknown label, NotFoundError for
    an unknown decision, ForbiddenError for another reviewer's) before any change is written.
    """
    plans: list[tuple[int, str]] = []
    for event_id, label in changes:
        event = changeable_decision(store, reviewer, event_id, label)
        if _own_label(store, reviewer, int(event["cell_id"]), int(event["year"])) != label:
            plans.append((event_id, label))
    return [change_decision(store, reviewer=reviewer, event_id=event_id, label=label,
                                    request_id=f"{token}-{event_id}")
            for event_id, label in plans]
