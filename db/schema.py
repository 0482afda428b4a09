"""Schema of the MineWatch database: the first tables, migration ``0001_initial``.

A cell (``cells.id``, see ``imagery.grid``) is the unit everything joins on. Scores are kept per
(cell, year, model version); labels are an append-only event history whose current state per
(cell, year) is kept in ``current_labels`` in the same transaction as each event. Every later
change of the schema is a migration of ``db.migrations``, which runs this one first.
"""

from __future__ import annotations

from sqlite_utils import Database


def initial(db: Database) -> None:
    """Cells, scenes, models, scores, seed and review labels, leases and retrain cycles."""
    execute_each(
        db,
        """
        CREATE TABLE cells (
            id INTEGER PRIMARY KEY,          -- row * 100000 + col on the installation's grid
            row INTEGER NOT NULL,
            col INTEGER NOT NULL,
            lon REAL NOT NULL,               -- centre, WGS84
            lat REAL NOT NULL
        );
        CREATE TABLE scenes (
            id INTEGER PRIMARY KEY,
            year INTEGER NOT NULL,
            name TEXT NOT NULL,
            paths TEXT NOT NULL UNIQUE,      -- JSON list of file paths
            bands TEXT NOT NULL,             -- JSON list of band names, in pixel order
            crs TEXT NOT NULL,
            row0 INTEGER NOT NULL, row1 INTEGER NOT NULL,   -- cell range covered (half-open)
            col0 INTEGER NOT NULL, col1 INTEGER NOT NULL,
            stretch TEXT NOT NULL,           -- JSON {band: [low, high]} for thumbnails
            synthetic INTEGER NOT NULL DEFAULT 0,
            ingested_at TEXT NOT NULL
        );
        CREATE INDEX scenes_year ON scenes(year);
        CREATE TABLE models (
            version TEXT PRIMARY KEY,
            parent TEXT REFERENCES models(version),
            path TEXT NOT NULL,
            bands TEXT NOT NULL,             -- JSON list
            threshold REAL NOT NULL,
            metrics TEXT NOT NULL,           -- JSON
            training TEXT NOT NULL,          -- JSON
            created_at TEXT NOT NULL,
            active INTEGER NOT NULL DEFAULT 0
        );
        CREATE UNIQUE INDEX models_one_active ON models(active) WHERE active = 1;
        CREATE TABLE scores (
            cell_id INTEGER NOT NULL,
            year INTEGER NOT NULL,
            model_version TEXT NOT NULL REFERENCES models(version),
            score REAL,                      -- NULL: not scored (valid_fraction < minimum)
            uncertainty REAL,
            valid_fraction REAL NOT NULL,
            scene_id INTEGER NOT NULL REFERENCES scenes(id),
            rand REAL NOT NULL,              -- uniform [0, 1): an indexed random order
            PRIMARY KEY (cell_id, year, model_version)
        ) WITHOUT ROWID;
        CREATE INDEX scores_by_uncertainty ON scores(model_version, year, uncertainty DESC);
        CREATE INDEX scores_by_score ON scores(model_version, year, score DESC);
        CREATE INDEX scores_by_rand ON scores(model_version, year, rand);
        CREATE TABLE seed_labels (
            cell_id INTEGER NOT NULL,
            year INTEGER NOT NULL,
            label TEXT NOT NULL CHECK (label IN ('mine', 'background')),
            source TEXT NOT NULL,            -- e.g. the mine-polygon file it came from
            created_at TEXT NOT NULL,
            PRIMARY KEY (cell_id, year)
        );
        CREATE TABLE label_events (
            id INTEGER PRIMARY KEY,
            cell_id INTEGER NOT NULL,
            year INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('label', 'undo')),
            label TEXT CHECK (label IN ('mine', 'background', 'skip')),
            undoes INTEGER REFERENCES label_events(id),
            reviewer TEXT NOT NULL,
            created_at TEXT NOT NULL,
            score_shown REAL,
            model_version_shown TEXT,
            ms_spent INTEGER,
            request_id TEXT UNIQUE,          -- idempotency key: a double submit counts once
            source TEXT NOT NULL DEFAULT 'review',
            CHECK ((kind = 'label' AND label IS NOT NULL AND undoes IS NULL)
                   OR (kind = 'undo' AND label IS NULL AND undoes IS NOT NULL))
        );
        CREATE INDEX label_events_cell ON label_events(cell_id, year);
        CREATE INDEX label_events_reviewer ON label_events(reviewer, id);
        CREATE UNIQUE INDEX label_events_undone_once ON label_events(undoes) WHERE kind = 'undo';
        CREATE TABLE current_labels (
            cell_id INTEGER NOT NULL,
            year INTEGER NOT NULL,
            label TEXT NOT NULL,
            event_id INTEGER NOT NULL REFERENCES label_events(id),
            reviewer TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (cell_id, year)
        ) WITHOUT ROWID;
        CREATE TABLE leases (
            cell_id INTEGER NOT NULL,
            year INTEGER NOT NULL,
            reviewer TEXT NOT NULL,
            expires_at REAL NOT NULL,        -- unix seconds
            PRIMARY KEY (cell_id, year)
        ) WITHOUT ROWID;
        CREATE INDEX leases_reviewer ON leases(reviewer);
        CREATE TABLE cycles (
            id INTEGER PRIMARY KEY,
            status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
            stage TEXT NOT NULL DEFAULT 'queued',
            progress REAL NOT NULL DEFAULT 0,
            message TEXT NOT NULL DEFAULT '',
            started_at TEXT NOT NULL,
            finished_at TEXT,
            parent_model TEXT,
            new_model TEXT,
            n_seed INTEGER, n_mines INTEGER, n_hard_negatives INTEGER,
            metrics TEXT,                    -- JSON: validation precision, recall, AP, ...
            history TEXT,                    -- JSON: training curves
            predicted_mines TEXT,            -- JSON {year: count above threshold}
            false_positives_found INTEGER    -- reviewed background on predicted mines since last
        );
        CREATE UNIQUE INDEX cycles_one_running ON cycles(status) WHERE status = 'running';
        """
    )


def execute_each(db: Database, script: str) -> None:
    """Run each statement of ``script`` inside the migration's transaction.

    (``executescript`` would commit first and defeat the transactional migration.)
    """
    for statement in script.split(";\n"):
        if statement.strip():
            db.execute(statement)
