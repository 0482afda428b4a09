"""The store: migrations, WAL, labels as an append-only history, leases, queue, cycles."""

from __future__ import annotations

import os
import sqlite3

import pytest
import sqlite_utils

from db.schema import migrations
from db.store import (
    CycleRunningError,
    InvalidLabelError,
    Store,
    StoreError,
    UnknownCellError,
)
from tests.concurrency import run_together


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "mw.db") as opened:
        opened.cells.add_cells([(c, 0, c, 29.0 + c / 100, -25.9) for c in range(1, 11)])
        yield opened


def add_model(store: Store, version: str = "m0001", threshold: float = 0.5, activate=True):
    store.models.add_model({"version": version, "parent": None, "path": f"/models/{version}.keras",
                            "bands": ["B2", "B3", "B4"], "threshold": threshold, "metrics": {"ap": 0.9},
                            "training": {"n": 4}}, activate=activate)


def add_scene(store: Store) -> int:
    return store.scenes.add_scene({"year": 2020, "name": "s.tif", "paths": ["/data/s.tif"],
                                   "bands": ["B2", "B3", "B4"], "crs": "EPSG:32735", "row0": 0,
                                   "row1": 1, "col0": 0, "col1": 11, "stretch": {"B4": [0, 3000]},
                                   "synthetic": 1})


def test_migrated_with_wal_and_busy_timeout(tmp_path):
    with Store(tmp_path / "a.db") as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
        assert {"cells", "scenes", "models", "scores", "label_events", "current_labels",
                "leases", "cycles", "seed_labels"} <= set(store.db.table_names())
        applied = store.db.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0]
    with Store(tmp_path / "a.db") as again:  # re-opening applies nothing twice
        assert again.db.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == applied
        assert migrations.pending(again.db) == []


def test_scene_json_round_trip_and_covering(store):
    scene_id = add_scene(store)
    assert add_scene(store) == scene_id  # same paths: updated, not duplicated
    scene = store.scenes.scene(scene_id)
    assert scene["bands"] == ["B2", "B3", "B4"] and scene["stretch"] == {"B4": [0, 3000]}
    assert [s["id"] for s in store.scenes.scenes_covering(5, 2020)] == [scene_id]
    assert store.scenes.scenes_covering(5, 2019) == [] and store.scenes.scenes_covering(100_005, 2020) == []
    assert store.scenes.years() == [2020]


def test_one_active_model(store):
    add_model(store, "m0001")
    add_model(store, "m0002")
    assert store.models.active_model()["version"] == "m0002"
    store.models.activate_model("m0001")
    assert store.models.active_model()["version"] == "m0001"
    assert sum(m["active"] for m in store.models.models()) == 1
    assert store.models.next_model_version() == "m0003"
    with pytest.raises(StoreError):
        store.models.activate_model("nope")


def test_scores_keep_the_better_covered_scene(store):
    add_model(store)
    scene_id = add_scene(store)
    store.scores.write_scores(2020, "m0001", scene_id, [1, 2], [0.9, float("nan")], [0.4, None], [1.0, 0.2])
    store.scores.write_scores(2020, "m0001", scene_id, [1], [0.1], [0.4], [0.5])  # worse coverage: kept
    assert store.scores.score(1, 2020, "m0001")["score"] == pytest.approx(0.9)
    assert store.scores.score(2, 2020, "m0001")["score"] is None  # not scored, says so via coverage
    assert store.scores.score_summary("m0001", 0.5) == [
        {"year": 2020, "scored": 1, "not_scored": 1, "predicted_mines": 1}]
    assert store.scores.score_histogram("m0001", 2020, bins=10)[9] == 1


def test_labels_are_an_append_only_history(store):
    first = store.labels.record_label(3, 2020, "mine", "ann", request_id="r1", ms_spent=900)
    assert store.labels.record_label(3, 2020, "mine", "ann", request_id="r1")["id"] == first["id"]
    second = store.labels.record_label(3, 2020, "background", "bob")
    assert store.labels.current_label(3, 2020)["label"] == "background"
    undo = store.labels.undo_label(second["id"], "bob")
    assert undo["kind"] == "undo" and store.labels.current_label(3, 2020)["label"] == "mine"
    assert store.labels.undo_label(second["id"], "bob")["id"] == undo["id"]  # undone once
    store.labels.undo_label(first["id"], "ann")
    assert store.labels.current_label(3, 2020) is None
    history = store.labels.label_history(3)
    assert [(e["kind"], e["label"], bool(e["undone"])) for e in history] == [
        ("label", "mine", True), ("label", "background", True), ("undo", None, False),
        ("undo", None, False)]
    assert store.db.execute("SELECT count(*) FROM label_events").fetchone()[0] == 4


def test_bad_labels_change_nothing(store):
    with pytest.raises(InvalidLabelError):
        store.labels.record_label(3, 2020, "maybe", "ann")
    with pytest.raises(UnknownCellError):
        store.labels.record_label(999, 2020, "mine", "ann")
    with pytest.raises(StoreError):
        store.labels.undo_label(12345, "ann")
    assert store.db.execute("SELECT count(*) FROM label_events").fetchone()[0] == 0


def test_training_labels_review_overrides_seed(store):
    store.labels.replace_seed_labels(2020, [(1, "mine"), (2, "background")], "mines.geojson")
    store.labels.record_label(1, 2020, "background", "ann")
    store.labels.record_label(4, 2020, "mine", "ann")
    store.labels.record_label(5, 2020, "skip", "ann")
    rows = {(r["cell_id"], r["label"], r["source"]) for r in store.labels.training_labels()}
    assert rows == {(1, "background", "review"), (2, "background", "seed"), (4, "mine", "review")}
    with pytest.raises(InvalidLabelError):
        store.labels.replace_seed_labels(2020, [(1, "skip")], "x")
    assert len(store.labels.seed_labels(2020)) == 2  # the failed replacement rolled back


def test_queue_orders_and_skips_labelled_and_leased(store):
    add_model(store)
    scene_id = add_scene(store)
    cells = list(range(1, 11))
    scores = [c / 10 for c in cells]
    uncertainty = [1 - abs(s - 0.5) * 2 for s in scores]
    store.scores.write_scores(2020, "m0001", scene_id, cells, scores, uncertainty, [1.0] * 10)
    by_uncertainty = store.leases.queue_candidates("m0001", 2020, "uncertainty", "ann", 3)
    assert by_uncertainty[0]["cell_id"] == 5
    assert [r["cell_id"] for r in store.leases.queue_candidates("m0001", 2020, "score", "ann", 2)] == [10, 9]
    assert len(store.leases.queue_candidates("m0001", 2020, "random", "ann", 10)) == 10
    store.labels.record_label(10, 2020, "mine", "ann")
    assert store.leases.lease_cells([(9, 2020)], "bob", 60) == [(9, 2020)]
    assert store.leases.lease_cells([(9, 2020)], "ann", 60) == []  # bob holds it
    top = [r["cell_id"] for r in store.leases.queue_candidates("m0001", 2020, "score", "ann", 2)]
    assert top == [8, 7]
    assert [r["cell_id"] for r in store.leases.queue_candidates("m0001", 2020, "score", "bob", 1)] == [9]
    assert store.leases.count_queue("m0001", 2020) == 9
    assert store.leases.count_queue("m0001", 2020, min_score=0.75) == 2
    # an expired lease no longer blocks
    assert store.leases.queue_candidates("m0001", 2020, "score", "ann", 1, now=10**12)[0]["cell_id"] == 9


def test_only_one_running_cycle(store):
    cycle_id = store.cycles.start_cycle(None)
    with pytest.raises(CycleRunningError):
        store.cycles.start_cycle(None)
    store.cycles.update_cycle(cycle_id, stage="training", progress=0.25, history={"loss": [1.0, 0.5]})
    assert store.cycles.cycle(cycle_id)["history"] == {"loss": [1.0, 0.5]}
    store.cycles.finish_cycle(cycle_id, "succeeded", predicted_mines={"2020": 4})
    assert store.cycles.cycle(cycle_id)["predicted_mines"] == {"2020": 4}
    second = store.cycles.start_cycle(None)
    assert second > cycle_id


def test_a_cycle_whose_worker_died_does_not_block_the_next(store):
    import subprocess
    import sys

    worker = subprocess.Popen([sys.executable, "-c", "pass"])
    worker.wait()
    cycle_id = store.cycles.start_cycle(None)
    store.cycles.update_cycle(cycle_id, pid=worker.pid)
    assert store.cycles.running_cycle() is None
    assert store.cycles.cycle(cycle_id)["status"] == "failed"
    assert "interrupted" in store.cycles.cycle(cycle_id)["message"]
    store.cycles.update_cycle(store.cycles.start_cycle(None), pid=os.getpid())  # a live worker keeps it running
    with pytest.raises(CycleRunningError):
        store.cycles.start_cycle(None)


def test_concurrent_writers_never_see_locked(tmp_path):
    path = tmp_path / "c.db"
    with Store(path) as store:
        store.cells.add_cells([(c, 0, c, 0.0, 0.0) for c in range(400)])
    errors: list[BaseException] = []

    def review(name: str, offset: int) -> None:
        try:
            with Store(path) as own:
                for c in range(offset, 400, 4):
                    own.labels.record_label(c, 2020, "mine", name, request_id=f"{name}-{c}")
        except (sqlite3.Error, StoreError) as error:  # pragma: no cover - reported below
            errors.append(error)

    run_together(review, [(f"r{i}", i) for i in range(4)])
    assert errors == []
    with Store(path) as store:
        assert store.labels.count_decisions() == 400


def test_migration_0005_summarises_existing_scores(tmp_path):
    from sqlite_utils import Database

    old = Database(sqlite3.connect(tmp_path / "old.db", isolation_level=None))
    migrations.apply(old, stop_before="0005_scoring_progress")
    old.execute("INSERT INTO models (version, path, bands, threshold, metrics, training,"
                " created_at) VALUES ('m0001', 'm.keras', '[]', 0.5, '{}', '{}', 'now')")
    old.execute("INSERT INTO scenes (id, year, name, paths, bands, crs, row0, row1, col0, col1,"
                " stretch, ingested_at) VALUES (1, 2020, 's', '[]', '[]', 'x', 0, 1, 0, 3, '{}',"
                " 'now')")
    for cell, score in ((1, 0.9), (2, 0.2), (3, None)):
        old.execute("INSERT INTO scores VALUES (?, 2020, 'm0001', ?, 0.1, 1.0, 1, 0.5)",
                    [cell, score])
    old.conn.close()
    with Store(tmp_path / "old.db") as store:
        summary = store.scores.year_summary("m0001", 2020)
        assert (summary["scored"], summary["not_scored"], summary["predicted_mines"]) == (2, 1, 1)
        assert summary["mean_score"] == pytest.approx(0.55)


def test_scored_blocks_are_written_with_their_scores(store):
    import numpy as np

    from model.score import CellScores

    add_model(store)
    scene_id = add_scene(store)
    cells = CellScores(np.array([1, 2]), np.array([0.9, np.nan], np.float32),
                       np.array([0.3, np.nan], np.float32), np.array([1.0, 0.1], np.float32))
    assert store.scores.write_scored_blocks(2020, "m0001", scene_id, [((0, 16, 0, 16), cells)]) == 2
    assert store.scores.scored_blocks("m0001", 2020) == {(0, 0)}
    with pytest.raises(StoreError, match="already scored"):
        store.scores.write_scored_blocks(2020, "m0001", scene_id, [((0, 16, 0, 16), cells)])
    live = store.scores.year_summary("m0001", 2020)  # no kept row yet: counted from the scores
    assert (live["scored"], live["predicted_mines"], live["summarised_at"]) == (1, 1, None)
    assert store.scores.summarise_scores("m0001", 2020, 0.5)["predicted_mines"] == 1
    assert store.scores.prune_scores(["m0001"]) == 2
    assert store.scores.score(1, 2020, "m0001") is None and store.scores.scored_blocks("m0001", 2020) == set()
    assert store.scores.summarised_years("m0001") == [2020]
    store.scores.delete_model_scores("m0001")  # a failed cycle's version leaves nothing behind
    assert store.scores.year_summary("m0001", 2020) is None
    with pytest.raises(StoreError, match="unknown model"):
        store.scores.prune_scores(["m0009"])


# hard negatives: every lesson kept ----------------------------------------------------------------
def test_a_rejected_prediction_stays_a_hard_negative_of_the_model_that_made_it(store):
    scene_id = add_scene(store)
    add_model(store, "m0001", threshold=0.4)
    store.scores.write_scores(2020, "m0001", scene_id, [1, 2, 3, 4], [0.9, 0.45, 0.2, 0.8],
                              [0.1] * 4, [1.0] * 4)
    shown = store.labels.record_label(1, 2020, "background", "ann", score_shown=0.9,
                                      model_version_shown="m0001")
    store.labels.record_label(2, 2020, "background", "ann")  # no lease: the active model's score counts
    store.labels.record_label(3, 2020, "background", "ann", score_shown=0.2, model_version_shown="m0001")
    store.labels.record_label(4, 2020, "mine", "ann", score_shown=0.8, model_version_shown="m0001")
    rows = store.labels.hard_negatives()
    assert [(r["cell_id"], r["model_version"]) for r in rows] == [(1, "m0001"), (2, "m0001")]
    assert rows[0]["event_id"] == shown["id"] and rows[0]["score"] == pytest.approx(0.9)
    assert store.labels.false_positives_found("m0001") == 2

    # a retrained model no longer predicts cell 1 but predicts the already-rejected cell 3
    add_model(store, "m0002", threshold=0.5)
    store.scores.write_scores(2020, "m0002", scene_id, [1, 2, 3, 4], [0.1, 0.6, 0.7, 0.9],
                              [0.1] * 4, [1.0] * 4)
    assert store.labels.record_predicted_rejections("m0002") == 2  # cells 2 and 3
    assert store.labels.record_predicted_rejections("m0002") == 0  # once only
    keys = {(r["cell_id"], r["model_version"]) for r in store.labels.hard_negatives()}
    assert keys == {(1, "m0001"), (2, "m0001"), (2, "m0002"), (3, "m0002")}
    assert store.labels.false_positives_found() == 3  # distinct cell-years, any model
    assert store.labels.false_positives_found("m0002") == 2
    assert store.labels.false_positives_found(year=2021) == 0
    assert next(r for r in store.labels.hard_negatives() if r["cell_id"] == 3)["event_id"] == \
        store.labels.current_label(3, 2020)["event_id"]

    store.territory.classify_cells([(2, 0)] + [(c, 1) for c in (1, 3, 4)])  # cell 2 lies outside
    assert store.labels.false_positives_found() == 2
    assert store.labels.false_positives_found(inside_territory=False) == 3
    # a cell relabelled as a mine is no longer a hard negative; the history row stays
    store.labels.record_label(1, 2020, "mine", "bob")
    assert {r["cell_id"] for r in store.labels.hard_negatives()} == {2, 3}
    assert store.db.execute("SELECT count(*) FROM hard_negatives").fetchone()[0] == 4


def test_predicted_mine_count_leaves_out_cells_outside_the_territory(store):
    scene_id = add_scene(store)
    add_model(store, "m0001", threshold=0.5)
    store.scores.write_scores(2020, "m0001", scene_id, [1, 2, 3], [0.9, 0.8, 0.1], [0.1] * 3, [1.0] * 3)
    assert store.scores.predicted_mine_count("m0001", 2020, 0.5) == 2
    store.territory.classify_cells([(1, 0), (2, 1), (3, 1)])
    assert store.scores.predicted_mine_count("m0001", 2020, 0.5) == 1


def test_migration_0009_keeps_the_lessons_already_stored(tmp_path):
    """An installation from before 0009: its rejected predictions become hard negatives and its
    uncertainty column becomes closeness to each model's threshold."""
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before="0009_learning_loop")
    db.execute("INSERT INTO cells (id, row, col, lon, lat) VALUES (1, 0, 1, 29.0, -25.9)")
    db.execute("INSERT INTO cells (id, row, col, lon, lat) VALUES (2, 0, 2, 29.0, -25.9)")
    db.execute("INSERT INTO scenes (year, name, paths, bands, crs, row0, row1, col0, col1,"
               " stretch, synthetic, ingested_at) VALUES (2020, 's', '[\"a\"]', '[]', 'x',"
               " 0, 1, 0, 3, '{}', 1, 'now')")
    db.execute("INSERT INTO models (version, path, bands, threshold, metrics, training,"
               " created_at, active) VALUES ('m0001', 'p', '[]', 0.3, '{}', '{}', 'now', 1)")
    for cell, score in ((1, 0.35), (2, 0.9)):
        db.execute("INSERT INTO scores (cell_id, year, model_version, score, uncertainty,"
                   " valid_fraction, scene_id, rand) VALUES (?, 2020, 'm0001', ?, 0.5, 1, 1,"
                   " 0.5)", [cell, score])
    db.execute("INSERT INTO label_events (id, cell_id, year, kind, label, reviewer, created_at,"
               " source) VALUES (7, 2, 2020, 'label', 'background', 'ann', 'now', 'review')")
    db.execute("INSERT INTO current_labels (cell_id, year, label, event_id, reviewer,"
               " updated_at) VALUES (2, 2020, 'background', 7, 'ann', 'now')")
    db.conn.commit()
    db.close()
    with Store(path) as store:
        [row] = store.labels.hard_negatives()
        assert (row["cell_id"], row["model_version"], row["event_id"]) == (2, "m0001", 7)
        assert store.scores.score(1, 2020, "m0001")["uncertainty"] == pytest.approx(1 - 0.05 / 0.7)
        assert store.scores.score(2, 2020, "m0001")["uncertainty"] == pytest.approx(1 - 0.6 / 0.7)
        assert store.cycles.cycles() == [] and "validation_ap" in store.db["cycles"].columns_dict


def _plan(store: Store, sql: str, params: list) -> list[str]:
    return [row[-1] for row in store.db.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()]


def test_review_query_plans_do_not_depend_on_statistics(store):
    """Never ANALYZEd (as the app's database): leased_to starts at the reviewer's leases, the
    queue count at the year's labels, the territory check at one index entry."""
    add_model(store)
    scene_id = add_scene(store)
    store.scores.write_scores(2020, "m0001", scene_id, list(range(1, 11)), [c / 10 for c in range(1, 11)],
                              [0.5] * 10, [1.0] * 10)
    assert store.db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'"
                            ).fetchone()[0] == 0
    statements = []
    store.db.conn.set_trace_callback(statements.append)
    store.leases.leased_to("m0001", 2020, "ann")
    store.leases.count_queue_fast("m0001", 2020)
    store._not_outside()
    store.db.conn.set_trace_callback(None)
    leased, labelled, outside = (next(sql for sql in statements if part in sql) for part in (
        "FROM leases l", "count(*) FROM current_labels c", "FROM territory_cells"))
    assert _plan(store, leased, [])[:2] == [
        "SEARCH l USING INDEX leases_reviewer (reviewer=?)",
        "SEARCH s USING PRIMARY KEY (cell_id=? AND year=? AND model_version=?)"]
    assert _plan(store, labelled, [])[0].startswith(
        "SEARCH c USING COVERING INDEX current_labels_year (year=?)")
    assert _plan(store, outside, []) == [
        "SEARCH territory_cells USING COVERING INDEX territory_cells_outside (inside=?)"]


def test_current_labels_of_several_cells(store):
    store.labels.record_label(1, 2020, "mine", "ann")
    store.labels.record_label(1, 2020, "background", "bob")
    store.labels.record_label(2, 2021, "skip", "ann")
    found = store.labels.current_labels_of([(1, 2020), (2, 2021), (3, 2020), (1, 2021)])
    assert set(found) == {(1, 2020), (2, 2021)}
    assert (found[(1, 2020)]["label"], found[(1, 2020)]["reviewer"]) == ("background", "bob")
    assert found[(2, 2021)] == store.labels.current_label(2, 2021)
    assert store.labels.current_labels_of([]) == {}
