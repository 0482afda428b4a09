"""The review service (pipeline/review.py): queue strategies, filters, spatial de-duplication,
leases, idempotent decisions, undo, changes, thumbnails and several reviewers at once."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest

from db.store import Store
from imagery.store import open_year
from imagery.thumbnails import render_view
from pipeline import review as service
from pipeline.settings import load_settings
from tests.concurrency import run_together

pytest.register_assert_rewrite("fixtures_app")
from fixtures_app import THRESHOLD  # noqa: E402

pytest_plugins = ["fixtures_app"]


@pytest.fixture
def store(review_db):
    with Store(review_db.database) as s:
        yield s


def cards(store, reviewer="ana", **kwargs):
    kwargs.setdefault("n", 4)
    return service.next_cards(store, reviewer=reviewer, **kwargs)


def form(label="mine", request_id="r1", **kwargs):
    return service.DecisionForm(label=label, request_id=request_id, **kwargs)


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
    assert all(store.lease_holder(i, 2021) == "ana" for i in ids)


def test_unknown_strategy_is_refused(store) -> None:
    with pytest.raises(service.ReviewError, match="unknown queue order"):
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


def test_expired_lease_decision_is_recorded_and_reported(store) -> None:
    t0 = time.time()
    card = service.next_cards(store, reviewer="ana", n=1, lease_seconds=10, now=t0)[0]
    cell = card["cell_id"]
    # while ana's lease is live, ben is not served her cell; after it expires he may be
    assert cell not in {c["cell_id"] for c in service.next_cards(
        store, reviewer="ben", n=8, lease_seconds=10, now=t0 + 5)}
    store.release_leases("ben")
    ben = service.next_cards(store, reviewer="ben", n=1, lease_seconds=10, now=t0 + 20)
    assert ben[0]["cell_id"] == cell
    decision = service.decide(store, reviewer="ana", cell_id=cell, year=2021, form=form(),
                              now=t0 + 25)
    assert decision.lease_expired and decision.held_by == "ben"
    assert "ben" in decision.notice
    assert store.current_label(cell, 2021)["label"] == "mine"
    later = service.decide(store, reviewer="ben", cell_id=cell, year=2021,
                           form=form("background", "r2"), now=t0 + 26)
    assert "ana (mine)" in later.notice
    assert store.current_label(cell, 2021)["label"] == "background"
    assert len([e for e in store.label_history(cell) if e["kind"] == "label"]) == 2


def test_double_submit_counts_once(store) -> None:
    cell = cards(store, n=1)[0]["cell_id"]
    first = service.decide(store, reviewer="ana", cell_id=cell, year=2021, form=form(ms=900))
    second = service.decide(store, reviewer="ana", cell_id=cell, year=2021, form=form(ms=900))
    assert not first.duplicate and second.duplicate
    assert second.event["id"] == first.event["id"]
    assert store.count_decisions("ana") == 1


def test_undo_restores_and_repeated_undo_request_counts_once(store) -> None:
    a, b = (c["cell_id"] for c in cards(store, n=2))
    service.decide(store, reviewer="ana", cell_id=a, year=2021, form=form("mine", "x1"))
    service.decide(store, reviewer="ana", cell_id=b, year=2021, form=form("background", "x2"))
    undone = service.undo_last(store, "ana", request_id="undo:x3")
    assert undone["cell_id"] == b
    again = service.undo_last(store, "ana", request_id="undo:x3")
    assert again["cell_id"] == b
    assert store.current_label(b, 2021) is None
    assert store.current_label(a, 2021)["label"] == "mine"
    kinds = [e["kind"] for e in store.label_history(b)]
    assert kinds == ["label", "undo"]
    assert service.undo_last(store, "nobody") is None


def test_change_decision_appends_a_new_event(store) -> None:
    cell = cards(store, n=1)[0]["cell_id"]
    event = service.decide(store, reviewer="ana", cell_id=cell, year=2021, form=form()).event
    service.change_decision(store, reviewer="ana", event_id=event["id"], label="background")
    history = store.label_history(cell)
    assert [e["label"] for e in history] == ["mine", "background"]
    assert store.current_label(cell, 2021)["label"] == "background"
    recent = service.recent_decisions(store, "ana")
    assert len(recent) == 1 and recent[0]["current"]["label"] == "background"
    with pytest.raises(service.ReviewError):
        service.change_decision(store, reviewer="ana", event_id=event["id"], label="maybe")
    with pytest.raises(service.NotFoundError):
        service.change_decision(store, reviewer="ana", event_id=999, label="mine")


@pytest.mark.parametrize(("data", "message"), [
    ({"request_id": "a"}, "no decision"),
    ({"label": "maybe", "request_id": "a"}, "unknown label"),
    ({"label": "mine"}, "decision token"),
    ({"label": "mine", "request_id": "a", "ms": "soon"}, "ms must be a number"),
    ({"label": "mine", "request_id": "a", "score_shown": "nan"}, "finite"),
])
def test_malformed_forms_are_refused(data, message) -> None:
    with pytest.raises(service.ReviewError, match=message):
        service.parse_decision_form(data)


def test_ms_is_clamped() -> None:
    parsed = service.parse_decision_form({"label": "skip", "request_id": "a", "ms": "-5"})
    assert parsed.ms == 0
    huge = service.parse_decision_form({"label": "skip", "request_id": "a", "ms": "1e12"})
    assert huge.ms == service.MAX_MS


def test_unknown_cell_or_year(store) -> None:
    with pytest.raises(service.NotFoundError, match="unknown cell"):
        service.require_cell_year(store, 1, 2021)
    cell = cards(store, n=1)[0]["cell_id"]
    with pytest.raises(service.NotFoundError, match="no scene of 1999"):
        service.require_cell_year(store, cell, 1999)


def test_thumbnail_rendered_once_from_the_store_then_served_from_cache(
        store, review_db, tmp_path) -> None:
    data_dir = tmp_path / "own"
    shutil.copytree(review_db.imagery, data_dir / "imagery")
    settings = load_settings({"DATA_DIR": str(data_dir), "THUMBNAIL_DIR": str(tmp_path / "t")})
    cell = review_db.cell_ids[9]
    path, key = service.thumbnail_path(store, settings, cell, 2021, "rgb", "cell")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(path).size == (400, 400)
    context, _ = service.thumbnail_path(store, settings, cell, 2021, "false", "context")
    assert Image.open(context).size == (300, 300)
    # the picture shows the stored pixels: its mean colour follows the mosaic's cell
    mosaic = open_year(data_dir, settings.grid, 2021)
    r, c = settings.grid.cell_pixel_origin(cell)
    pixels, _ = mosaic.read(r, c, settings.grid.cell_px, settings.grid.cell_px, ["B4", "B3", "B2"])
    stretch = store.scenes(2021)[0]["stretch"]
    expected = render_view(pixels, ("B4", "B3", "B2"), "rgb", stretch, size=400)
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(expected))
    shutil.rmtree(data_dir / "imagery" / "2021")
    again, again_key = service.thumbnail_path(store, settings, cell, 2021, "rgb", "cell")
    assert (again, again_key) == (path, key)  # a hit does not touch the store
    with pytest.raises(service.NotFoundError, match="cannot be read"):
        service.thumbnail_path(store, settings, review_db.cell_ids[10], 2021, "rgb", "cell")
    with pytest.raises(service.NotFoundError, match="no scene of 1999"):
        service.thumbnail_path(store, settings, cell, 1999, "rgb", "cell")
    with pytest.raises(service.ReviewError):
        service.thumbnail_path(store, settings, cell, 2021, "ultraviolet", "cell")


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
                    batch = service.next_cards(store, reviewer=name, n=2, strategy="random",
                                               year=2021 if count % 2 else 2020)
                    if not batch:
                        count += 1
                        if count > 6:
                            break
                        continue
                    card = batch[0]
                    service.decide(store, reviewer=name, cell_id=card["cell_id"],
                                   year=card["year"], form=form("background", f"{name}-{count}"))
                    with lock:
                        submitted.append((name, card["cell_id"], card["year"]))
                    count += 1
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    run_together(reviewer, [(f"r{i}",) for i in range(4)])
    assert not errors, errors
    with Store(review_db.database) as store:
        rows = store.db.execute("SELECT cell_id, year, count(*) FROM label_events"
                                " GROUP BY cell_id, year").fetchall()
        total = store.db.execute("SELECT count(*) FROM label_events").fetchone()[0]
    assert total == len(submitted) > 20
    assert all(n == 1 for _, _, n in rows), "a cell was served to two reviewers"
    assert len({(c, y) for _, c, y in submitted}) == len(submitted)


def test_undone_cell_returns_to_the_top_of_the_queue(store) -> None:
    top = cards(store, "ana", n=1, strategy="uncertainty")[0]["cell_id"]
    service.decide(store, reviewer="ana", cell_id=top, year=2021, form=form())
    assert cards(store, "ben", n=1, strategy="uncertainty")[0]["cell_id"] != top
    store.release_leases("ben")
    service.undo_last(store, "ana")
    store.release_leases("ana")
    assert cards(store, "ben", n=1, strategy="uncertainty")[0]["cell_id"] == top
