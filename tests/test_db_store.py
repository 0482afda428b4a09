"""Store: the connection (WAL, busy timeout), migrations applied once and the data
migrations keep, concurrent writers that never see "database is locked"."""

from __future__ import annotations

import sqlite3

import pytest
import sqlite_utils

from db.migrations import migrations
from db.store import Store, StoreError
from tests.concurrency import run_together


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
