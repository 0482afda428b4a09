"""Serving cards (review/cards.py): queue strategies, filters, spatial de-duplication, leases,
the queue after undos, the queue counter, and several reviewers at once."""

from __future__ import annotations

import threading
import time

import pytest

from db.store import Store
from review.cards import _queue_cache, next_cards, queue_left, require_cell_year
from review.decisions import decide, undo_last
from review.errors import NotFoundError, ReviewError
from tests.concurrency import labelled_twice_unexpectedly, run_together

pytest.register_assert_rewrite("fixtures_app")
from fixtures_app import THRESHOLD, cards, form  # noqa: E402

pytest_plugins = ["fixtures_app"]


@pytest.fixture
def store(review_db):
    with Store(review_db.database) as s:
        yield s


def chebyshev(a: int, b: int) -> int:
    (ra, ca), (rb, cb) = divmod(a, 100_000), divmod(b, 100_000)
    return max(abs(ra - rb), abs(ca - cb))


def test_uncertainty_strategy_serves_most_uncertain_first(store, review_db) -> None:
    batch = cards(store, strategy="uncertainty")
    assert len(batch) == 4
    top = max(u for _, u in review_db.scores.values())
    assert batch[0]["uncertainty"] == pytest.approx(top)
    values = [c["uncertainty"] for c in batch]
    assert values == sorted(values, reverse=True)
    assert {c["year"] for c in batch} == {2021}  # default year: the latest scored


def test_score_strategy_serves_highest_score_first(store, review_db) -> None:
    batch = cards(store, strategy="score")
    assert batch[0]["score"] == pytest.approx(max(s for s, _ in review_db.scores.values()))
    values = [c["score"] for c in batch]
    assert values == sorted(values, reverse=True)


def test_random_strategy_serves_distinct_leased_cells(store) -> None:
    batch = cards(store, strategy="random")
    ids = [c["cell_id"] for c in batch]
    assert len(ids) == len(set(ids)) == 4
    assert all(store.leases.lease_holder(i, 2021) == "ana" for i in ids)


def test_unknown_strategy_is_refused(store) -> None:
    with pytest.raises(ReviewError, match="unknown queue order"):
        cards(store, strategy="alphabetical")


def test_predicted_only_and_year_filters(store) -> None:
    batch = cards(store, strategy="uncertainty", predicted_only=True, year=2020, n=6)
    assert batch and all(c["score"] >= THRESHOLD for c in batch)
    assert {c["year"] for c in batch} == {2020}


def test_batch_has_no_adjacent_cells(store) -> None:
    batch = cards(store, strategy="score", n=8)
    assert len(batch) == 8
    ids = [c["cell_id"] for c in batch]
    assert all(chebyshev(a, b) > 1 for i, a in enumerate(ids) for b in ids[i + 1:])


def test_prefetched_cards_come_back_first_and_in_order(store) -> None:
    first = cards(store, strategy="random", n=4)
    again = cards(store, strategy="random", n=4)
    assert sorted(c["cell_id"] for c in again) == sorted(c["cell_id"] for c in first)


def test_two_reviewers_get_disjoint_cards(store) -> None:
    a = {c["cell_id"] for c in cards(store, "ana", n=5)}
    b = {c["cell_id"] for c in cards(store, "ben", n=5)}
    assert a and b and not a & b


def test_no_cell_is_served_to_two_reviewers_after_undos(review_db) -> None:
    """6 reviewers label, undo every third decision and go on, at once, for ~2 s: every
    cell-year ends with decisions of one reviewer only (the undo race of issue 9)."""
    errors: list[BaseException] = []
    stop = time.monotonic() + 2.0

    def reviewer(name: str) -> None:
        try:
            with Store(review_db.database) as store:
                count = 0
                while time.monotonic() < stop:
                    batch = next_cards(store, reviewer=name, n=1, strategy="uncertainty",
                                               year=2021, lease_seconds=60)
                    if not batch:
                        break
                    decide(store, reviewer=name, cell_id=batch[0]["cell_id"], year=2021,
                                   form=form("background", f"{name}-{count}"))
                    if count % 3 == 2:
                        # as the web app does: undo and re-lease in one transaction
                        undo_last(store, name, request_id=f"u-{count}", lease_seconds=60)
                    count += 1
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    run_together(reviewer, [(f"r{i}",) for i in range(6)])
    assert not errors, errors
    with Store(review_db.database) as store:
        rows = store.db.execute("SELECT DISTINCT cell_id, year FROM label_events").fetchall()
        undos = store.db.execute("SELECT count(*) FROM label_events WHERE kind = 'undo'"
                                 ).fetchone()[0]
        assert undos > 3 and len(rows) > 10
        assert labelled_twice_unexpectedly(store) == [], "a cell-year was served to two reviewers"


def test_unknown_cell_or_year(store) -> None:
    with pytest.raises(NotFoundError, match="unknown cell"):
        require_cell_year(store, 1, 2021)
    cell = cards(store, n=1)[0]["cell_id"]
    with pytest.raises(NotFoundError, match="no scene of 1999"):
        require_cell_year(store, cell, 1999)


def test_several_reviewers_at_once(review_db) -> None:
    """4 reviewers, each with their own connection, pull and label cards for ~2 s."""
    submitted: list[tuple[str, int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = time.monotonic() + 2.0

    def reviewer(name: str) -> None:
        try:
            with Store(review_db.database) as store:
                count = 0
                while time.monotonic() < stop:
                    batch = next_cards(store, reviewer=name, n=2, strategy="random",
                                               year=2021 if count % 2 else 2020)
                    if not batch:
                        count += 1
                        if count > 6:
                            break
                        continue
                    card = batch[0]
                    decide(store, reviewer=name, cell_id=card["cell_id"],
                                   year=card["year"], form=form("background", f"{name}-{count}"))
                    with lock:
                        submitted.append((name, card["cell_id"], card["year"]))
                    count += 1
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    run_together(reviewer, [(f"r{i}",) for i in range(4)])
    assert not errors, errors
    with Store(review_db.database) as store:
        total = store.db.execute("SELECT count(*) FROM label_events").fetchone()[0]
        assert total == len(submitted) > 20
        assert labelled_twice_unexpectedly(store) == [], "a cell was served to two reviewers"


def test_undone_cell_returns_to_the_top_of_the_queue(store) -> None:
    top = cards(store, "ana", n=1, strategy="uncertainty")[0]["cell_id"]
    decide(store, reviewer="ana", cell_id=top, year=2021, form=form())
    assert cards(store, "ben", n=1, strategy="uncertainty")[0]["cell_id"] != top
    store.leases.release_leases("ben")
    undo_last(store, "ana")
    store.leases.release_leases("ana")
    assert cards(store, "ben", n=1, strategy="uncertainty")[0]["cell_id"] == top


def test_queue_count_is_reused_only_when_it_cost_cpu(store, monkeypatch) -> None:
    _queue_cache.clear()
    before = queue_left(store, 2021)
    card = cards(store, n=1)[0]
    decide(store, reviewer="ana", cell_id=card["cell_id"], year=2021, form=form())
    assert queue_left(store, 2021) == before - 1  # a cheap count is counted again
    monkeypatch.setattr("review.cards.QUEUE_COUNT_SLOW", -1.0)  # every count "costly"
    _queue_cache.clear()
    counted = queue_left(store, 2021)
    card = cards(store, n=1)[0]
    decide(store, reviewer="ana", cell_id=card["cell_id"], year=2021,
                   form=form(request_id="r2"))
    assert queue_left(store, 2021) == counted  # reused for QUEUE_COUNT_MAX_AGE seconds
    _queue_cache.clear()
