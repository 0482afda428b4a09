"""The review service (review/service.py): queue strategies, filters, spatial de-duplication,
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
from pipeline.settings import load_settings
from review import service
from review.second_review import SecondReviewPolicy
from tests.concurrency import labelled_twice_unexpectedly, run_together

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
    assert all(store.leases.lease_holder(i, 2021) == "ana" for i in ids)


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
    store.leases.release_leases("ben")
    ben = service.next_cards(store, reviewer="ben", n=1, lease_seconds=10, now=t0 + 20)
    assert ben[0]["cell_id"] == cell
    decision = service.decide(store, reviewer="ana", cell_id=cell, year=2021, form=form(),
                              now=t0 + 25, policy=SecondReviewPolicy(share=0.0))
    assert decision.lease_expired and decision.held_by == "ben"
    assert "ben" in decision.notice
    assert store.labels.current_label(cell, 2021)["label"] == "mine"
    later = service.decide(store, reviewer="ben", cell_id=cell, year=2021,
                           form=form("background", "r2"), now=t0 + 26)
    assert "ana (mine)" in later.notice
    assert store.labels.current_label(cell, 2021)["label"] == "background"
    assert len([e for e in store.labels.label_history(cell) if e["kind"] == "label"]) == 2


def test_double_submit_counts_once(store) -> None:
    cell = cards(store, n=1)[0]["cell_id"]
    first = service.decide(store, reviewer="ana", cell_id=cell, year=2021, form=form())
    second = service.decide(store, reviewer="ana", cell_id=cell, year=2021, form=form())
    assert not first.duplicate and second.duplicate
    assert second.event["id"] == first.event["id"]
    assert store.labels.count_decisions("ana") == 1


def test_undo_restores_and_repeated_undo_request_counts_once(store) -> None:
    a, b = (c["cell_id"] for c in cards(store, n=2))
    service.decide(store, reviewer="ana", cell_id=a, year=2021, form=form("mine", "x1"))
    service.decide(store, reviewer="ana", cell_id=b, year=2021, form=form("background", "x2"))
    undone = service.undo_last(store, "ana", request_id="x3")
    assert undone["cell_id"] == b
    again = service.undo_last(store, "ana", request_id="x3")
    assert again["cell_id"] == b
    assert store.labels.current_label(b, 2021) is None
    assert store.labels.current_label(a, 2021)["label"] == "mine"
    kinds = [e["kind"] for e in store.labels.label_history(b)]
    assert kinds == ["label", "undo"]
    assert service.undo_last(store, "nobody") is None


def test_change_decision_appends_a_new_event(store) -> None:
    cell = cards(store, n=1)[0]["cell_id"]
    event = service.decide(store, reviewer="ana", cell_id=cell, year=2021, form=form()).event
    service.change_decision(store, reviewer="ana", event_id=event["id"], label="background")
    history = store.labels.label_history(cell)
    assert [e["label"] for e in history] == ["mine", "background"]
    assert store.labels.current_label(cell, 2021)["label"] == "background"
    recent = service.recent_decisions(store, "ana")
    assert len(recent) == 1 and recent[0]["current"]["label"] == "background"
    with pytest.raises(service.ReviewError):
        service.change_decision(store, reviewer="ana", event_id=event["id"], label="maybe")
    with pytest.raises(service.NotFoundError):
        service.change_decision(store, reviewer="ana", event_id=999, label="mine")
    with pytest.raises(service.ForbiddenError, match="only your own"):
        service.change_decision(store, reviewer="ben", event_id=event["id"], label="mine")
    assert store.labels.current_label(cell, 2021)["label"] == "background"


@pytest.mark.parametrize(("data", "message"), [
    ({"request_id": "a"}, "no decision"),
    ({"label": "maybe", "request_id": "a"}, "unknown label"),
    ({"label": "mine"}, "decision token"),
    ({"label": "mine", "request_id": "a" * 101}, "too long"),
    ({"label": "mine", "request_id": "a\nb"}, "printable ASCII"),
])
def test_malformed_forms_are_refused(data, message) -> None:
    with pytest.raises(service.ReviewError, match=message):
        service.parse_decision_form(data)


def test_client_audit_fields_are_ignored() -> None:
    parsed = service.parse_decision_form({"label": "skip", "request_id": "a", "ms": "-5",
                                          "score_shown": "nan", "model_version": "x" * 60_000})
    assert parsed == service.DecisionForm("skip", "a")


def test_audit_fields_come_from_the_lease(store) -> None:
    t0 = time.time()
    first, second = service.next_cards(store, reviewer="ana", n=2, lease_seconds=60, now=t0)
    shown = store.leases.lease(first["cell_id"], 2021)
    assert shown["shown_at"] == t0 and shown["model_version_shown"] == "m0001"
    assert shown["score_shown"] == pytest.approx(first["score"])
    assert store.leases.lease(second["cell_id"], 2021)["shown_at"] is None  # prefetched, not shown
    event = service.decide(store, reviewer="ana", cell_id=first["cell_id"], year=2021,
                           form=form(), now=t0 + 2.5).event
    assert event["ms_spent"] == 2500 and event["model_version_shown"] == "m0001"
    assert event["score_shown"] == pytest.approx(first["score"])
    # the prefetched card becomes the shown one on the next request: its clock starts then
    (now_shown,) = service.next_cards(store, reviewer="ana", n=1, lease_seconds=60, now=t0 + 3)
    assert now_shown["cell_id"] == second["cell_id"]
    later = service.decide(store, reviewer="ana", cell_id=second["cell_id"], year=2021,
                           form=form("skip", "r2"), now=t0 + 4).event
    assert later["ms_spent"] == 1000
    # a decision without a lease of one's own: the active model's score now, no time
    other = next(c for c in store.cells.cell_ids() if store.labels.current_label(c, 2021) is None
                 and store.leases.lease(c, 2021) is None)
    blind = service.decide(store, reviewer="ben", cell_id=other, year=2021,
                           form=form("mine", "b1")).event
    assert blind["ms_spent"] is None and blind["model_version_shown"] == "m0001"


def test_request_ids_are_scoped_to_the_account_and_kind(store) -> None:
    a, b = (c["cell_id"] for c in cards(store, n=2))
    ana = service.decide(store, reviewer="ana", cell_id=a, year=2021, form=form("mine", "T"))
    ben = service.decide(store, reviewer="ben", cell_id=b, year=2021, form=form("mine", "T"))
    assert not ben.duplicate and ben.event["reviewer"] == "ben"  # not swallowed by ana's "T"
    assert store.labels.current_label(b, 2021)["reviewer"] == "ben"
    # a label sent with the token a later undo uses cannot make that undo lie
    service.decide(store, reviewer="ana", cell_id=b, year=2021, form=form("skip", "undo:U"))
    undone = service.undo_last(store, "ana", request_id="U")
    assert undone["label"] == "skip" and undone["cell_id"] == b
    assert [e["kind"] for e in store.labels.label_history(b)][-1] == "undo"
    assert service.undo_last(store, "ana", request_id="undo:U")["id"] == ana.event["id"]
    assert store.labels.current_label(a, 2021) is None


def test_undo_leases_the_cell_back_in_the_same_transaction(store) -> None:
    (card,) = service.next_cards(store, reviewer="ana", n=1, lease_seconds=60)
    service.decide(store, reviewer="ana", cell_id=card["cell_id"], year=2021, form=form())
    assert store.leases.lease(card["cell_id"], 2021) is None
    undone = service.undo_last(store, "ana", request_id="u1", lease_seconds=60)
    assert undone["cell_id"] == card["cell_id"]
    lease = store.leases.lease(card["cell_id"], 2021)
    assert lease["reviewer"] == "ana" and lease["shown_at"] is not None
    served = service.next_cards(store, reviewer="ben", n=8, lease_seconds=60)
    assert card["cell_id"] not in {c["cell_id"] for c in served}


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
                    batch = service.next_cards(store, reviewer=name, n=1, strategy="uncertainty",
                                               year=2021, lease_seconds=60)
                    if not batch:
                        break
                    service.decide(store, reviewer=name, cell_id=batch[0]["cell_id"], year=2021,
                                   form=form("background", f"{name}-{count}"))
                    if count % 3 == 2:
                        # as the web app does: undo and re-lease in one transaction
                        service.undo_last(store, name, request_id=f"u-{count}", lease_seconds=60)
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
    stretch = store.scenes.scenes(2021)[0]["stretch"]
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
        total = store.db.execute("SELECT count(*) FROM label_events").fetchone()[0]
        assert total == len(submitted) > 20
        assert labelled_twice_unexpectedly(store) == [], "a cell was served to two reviewers"


def test_undone_cell_returns_to_the_top_of_the_queue(store) -> None:
    top = cards(store, "ana", n=1, strategy="uncertainty")[0]["cell_id"]
    service.decide(store, reviewer="ana", cell_id=top, year=2021, form=form())
    assert cards(store, "ben", n=1, strategy="uncertainty")[0]["cell_id"] != top
    store.leases.release_leases("ben")
    service.undo_last(store, "ana")
    store.leases.release_leases("ana")
    assert cards(store, "ben", n=1, strategy="uncertainty")[0]["cell_id"] == top


def test_thumbnail_versions_match_one_at_a_time(store, review_db) -> None:
    pairs = [(review_db.cell_ids[0], 2021), (review_db.cell_ids[5], 2021), (1, 2021),
             (review_db.cell_ids[0], 1999)]
    versions = service.thumbnail_versions(store, pairs)
    assert versions == {pair: service.thumbnail_version(store, *pair) for pair in pairs}
    assert versions[pairs[0]] is not None and versions[(1, 2021)] is None


def test_queue_count_is_reused_only_when_it_cost_cpu(store, monkeypatch) -> None:
    service._queue_cache.clear()
    before = service.queue_left(store, 2021)
    card = cards(store, n=1)[0]
    service.decide(store, reviewer="ana", cell_id=card["cell_id"], year=2021, form=form())
    assert service.queue_left(store, 2021) == before - 1  # a cheap count is counted again
    monkeypatch.setattr(service, "QUEUE_COUNT_SLOW", -1.0)  # every count "costly"
    service._queue_cache.clear()
    counted = service.queue_left(store, 2021)
    card = cards(store, n=1)[0]
    service.decide(store, reviewer="ana", cell_id=card["cell_id"], year=2021,
                   form=form(request_id="r2"))
    assert service.queue_left(store, 2021) == counted  # reused for QUEUE_COUNT_MAX_AGE seconds
    service._queue_cache.clear()
