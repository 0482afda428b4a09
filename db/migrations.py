"""The migrations of the MineWatch database, in order (sqlite-utils ``Migrations``).

``migrations`` is the list ``Store`` applies on opening a database: first the initial schema
(``db.schema.initial``), then each later change of the schema as its own migration, named by its
number. A migration is never edited once released; a change is a new one at the end.
"""

from __future__ import annotations

import os

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from db.schema import execute_each, initial

migrations = Migrations("minewatch")
migrations(name="0001_initial")(initial)


@migrations(name="0002_territory_and_protected_areas")
def territory_and_protected_areas(db: Database) -> None:
    """The territory (one at a time), which cells' centres lie inside it, and protected areas.

    Geometries are WKB in the grid CRS. ``territory_cells`` holds one row per classified cell
    (``inside`` 1 or 0); a cell marked outside is dropped from review queues and reports.
    """
    execute_each(
        db,
        """
        CREATE TABLE territories (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            source TEXT NOT NULL,            -- the polygon file it was loaded from
            selection TEXT NOT NULL DEFAULT '',  -- e.g. "iso3=ZAF,LSO" (empty: every feature)
            crs TEXT NOT NULL,               -- the grid CRS the geometry is in
            geometry BLOB NOT NULL,          -- WKB (dissolved features)
            area_km2 REAL NOT NULL,
            n_features INTEGER NOT NULL,
            loaded_at TEXT NOT NULL
        );
        CREATE TABLE territory_cells (
            cell_id INTEGER PRIMARY KEY,
            inside INTEGER NOT NULL CHECK (inside IN (0, 1))   -- cell centre inside the territory
        ) WITHOUT ROWID;
        CREATE TABLE protected_areas (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            designation TEXT,
            source TEXT NOT NULL,
            geometry BLOB NOT NULL,          -- WKB in the grid CRS
            area_km2 REAL NOT NULL,
            loaded_at TEXT NOT NULL
        );
        """
    )


@migrations(name="0003_cycle_worker_pid")
def cycle_worker_pid(db: Database) -> None:
    """The process id of the worker running a cycle, so a worker that died can be noticed."""
    db.execute("ALTER TABLE cycles ADD COLUMN pid INTEGER")


@migrations(name="0004_imagery_store")
def imagery_store(db: Database) -> None:
    """The source files ingested into each year's mosaic (``imagery/store.py``), for the record.

    From this migration on a ``scenes`` row is one year's mosaic: its ``paths`` is the store
    folder relative to DATA_DIR (``["imagery/2021"]``) and its cell range the mosaic's bounding
    range. Rows of older installations (one per source file) are replaced by the year's mosaic
    row, their scores moved to it, when the year is ingested again.
    """
    execute_each(
        db,
        """
        CREATE TABLE scene_files (
            id INTEGER PRIMARY KEY,
            scene_id INTEGER NOT NULL REFERENCES scenes(id),   -- the year's mosaic row
            year INTEGER NOT NULL,
            path TEXT NOT NULL,              -- relative to DATA_DIR when inside it, else as given
            size INTEGER NOT NULL,           -- bytes (sum over the files of a band stack)
            mtime REAL NOT NULL,             -- unix seconds (newest file of a band stack)
            crs TEXT NOT NULL,
            bands TEXT NOT NULL,             -- JSON list of band names, as stored
            dn_offset REAL NOT NULL,         -- DN subtracted (processing baseline >= 04.00: 1000)
            blocks INTEGER NOT NULL,         -- store blocks its footprint touched
            ingested_at TEXT NOT NULL
        );
        CREATE INDEX scene_files_year ON scene_files(year);
        CREATE INDEX cells_row_col ON cells(row, col)
        """
    )


@migrations(name="0005_scoring_progress")
def scoring_progress(db: Database) -> None:
    """Which blocks of a (model version, year) are scored, and per-year score summaries.

    ``scored_blocks`` gets a block's row in the same transaction as the block's scores, so an
    interrupted scoring run resumes after the last finished block and writes nothing twice.
    ``score_summaries`` keeps the per-year figures of a model version, which outlive its score rows
    once older versions are pruned (setting KEEP_SCORED_MODELS); existing scores are summarised
    here.
    """
    execute_each(
        db,
        """
        CREATE TABLE scored_blocks (
            model_version TEXT NOT NULL REFERENCES models(version),
            year INTEGER NOT NULL,
            row0 INTEGER NOT NULL, col0 INTEGER NOT NULL,   -- first cell of the block
            row1 INTEGER NOT NULL, col1 INTEGER NOT NULL,   -- end of the block (half-open)
            n_cells INTEGER NOT NULL,
            finished_at TEXT NOT NULL,
            PRIMARY KEY (model_version, year, row0, col0)
        ) WITHOUT ROWID;
        CREATE TABLE score_summaries (
            model_version TEXT NOT NULL REFERENCES models(version),
            year INTEGER NOT NULL,
            scored INTEGER NOT NULL,          -- cells with a score
            not_scored INTEGER NOT NULL,      -- cells below MIN_VALID_FRACTION
            predicted_mines INTEGER NOT NULL, -- scored cells >= threshold (not outside territory)
            threshold REAL NOT NULL,
            mean_score REAL,                  -- over scored cells
            summarised_at TEXT NOT NULL,
            PRIMARY KEY (model_version, year)
        ) WITHOUT ROWID;
        INSERT INTO score_summaries (model_version, year, scored, not_scored, predicted_mines,
                                     threshold, mean_score, summarised_at)
            SELECT s.model_version, s.year, count(s.score), count(*) - count(s.score),
                   coalesce(sum(s.score >= m.threshold), 0), m.threshold, avg(s.score),
                   strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
            FROM scores s JOIN models m ON m.version = s.model_version
            GROUP BY s.model_version, s.year
        """
    )


@migrations(name="0006_accounts")
def accounts(db: Database) -> None:
    """Accounts (name, role, argon2 password hash) and what a lease showed its reviewer.

    The reviewer columns of ``label_events``, ``leases`` and ``current_labels`` hold the account
    name (unique, never renamed or reused). ``session_version`` grows on a password reset or a
    disable, which ends that account's open sessions. A lease remembers when its card was first
    shown and the active model's score and version at that moment: the audit fields of a
    decision come from there, never from the browser.
    """
    execute_each(
        db,
        """
        CREATE TABLE accounts (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL CHECK (role IN ('reviewer', 'lead', 'admin')),
            password_hash TEXT NOT NULL,     -- argon2id (argon2-cffi PasswordHasher)
            disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
            session_version INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        ALTER TABLE leases ADD COLUMN shown_at REAL;
        ALTER TABLE leases ADD COLUMN score_shown REAL;
        ALTER TABLE leases ADD COLUMN model_version_shown TEXT
        """
    )



@migrations(name="0007_second_review")
def second_review(db: Database) -> None:
    """Second reviews: one task per (cell, year) whose first decision was picked for a blind
    second look by another reviewer, its outcome and the lead's adjudication.

    The columns after ``created_at`` are derived from the label history by
    ``Store._sync_second_review`` in the transaction of every decision and undo: the first
    reviewer's latest decision, the second reviewer's latest, the latest adjudication, and the
    status (pending: no second decision yet; agreed / disagreed; adjudicated: a lead decided).
    ``second_review_policy`` holds a lead's choice of share and all-mines (one row at most),
    which overrides the settings ``SECOND_REVIEW_SHARE`` and ``SECOND_REVIEW_ALL_MINES``.
    """
    execute_each(
        db,
        """
        CREATE TABLE second_reviews (
            cell_id INTEGER NOT NULL,
            year INTEGER NOT NULL,
            first_reviewer TEXT NOT NULL,
            reason TEXT NOT NULL CHECK (reason IN ('share', 'mine')),  -- why it was picked
            created_at TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'agreed', 'disagreed', 'adjudicated')),
            first_event_id INTEGER NOT NULL REFERENCES label_events(id),
            first_label TEXT NOT NULL,
            second_reviewer TEXT,
            second_event_id INTEGER REFERENCES label_events(id),
            second_label TEXT,
            adjudication_event_id INTEGER REFERENCES label_events(id),
            adjudicated_label TEXT,
            adjudicated_by TEXT,
            resolved_at TEXT,                -- when the status last left 'pending'
            PRIMARY KEY (cell_id, year)
        ) WITHOUT ROWID;
        CREATE INDEX second_reviews_status ON second_reviews(status, created_at);
        CREATE TABLE second_review_policy (   -- a lead's choice; absent: the settings decide
            id INTEGER PRIMARY KEY CHECK (id = 1),
            share REAL NOT NULL CHECK (share BETWEEN 0 AND 1),
            all_mines INTEGER NOT NULL CHECK (all_mines IN (0, 1)),
            set_by TEXT NOT NULL,
            set_at TEXT NOT NULL
        );
        """
    )


@migrations(name="0008_jobs")
def jobs(db: Database) -> None:
    """Background jobs, pending models, activation decisions, and paths relative to the data folder.

    - ``jobs``: exports and reports run by ``pipeline.jobs`` in their own process (``pid``), with
      ``output`` relative to DATA_DIR;
    - ``models.state``: 'pending' while a cycle has saved but not finished a model (its scores are
      being written); a pending model whose cycle is gone is removed by the next cleanup;
    - ``cycles.decision``: why the cycle's model was or was not activated;
    - absolute ``models.path`` values under the database's folder (the default DATA_DIR) become
      relative to it.
    """
    execute_each(
        db,
        """
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,              -- export, report
            params TEXT NOT NULL,            -- JSON
            status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
            progress REAL NOT NULL DEFAULT 0,
            message TEXT NOT NULL DEFAULT '',
            pid INTEGER,
            requested_by TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            output TEXT,                     -- file path relative to DATA_DIR
            output_bytes INTEGER
        );
        CREATE INDEX jobs_by_status ON jobs(status);
        ALTER TABLE models ADD COLUMN state TEXT NOT NULL DEFAULT 'ready'
            CHECK (state IN ('pending', 'ready'));
        ALTER TABLE cycles ADD COLUMN decision TEXT
        """
    )
    folder = _database_folder(db)
    if folder is None:
        return
    for version, path in db.execute("SELECT version, path FROM models").fetchall():
        relative = _relative_to(path, folder)
        if relative is not None:
            db.execute("UPDATE models SET path = ? WHERE version = ?", [relative, version])


@migrations(name="0009_learning_loop")
def learning_loop(db: Database) -> None:
    """Every lesson kept, each cycle's fixed-block AP, and the queue at the operating point.

    ``hard_negatives``: one row per (cell-year, model version) for every reviewed background cell
    that this model version predicted as a mine (score >= its threshold), with the rejecting
    decision; rows are never deleted, so the lesson outlives the model that taught it. Filled
    from the effective labels (see ``0007_second_review``) and scores already stored.
    ``cycles.validation_ap``: average precision on the fixed validation blocks.
    ``scores.uncertainty`` becomes closeness to the model's threshold,
    1 - |score - threshold| / max(threshold, 1 - threshold) (model/reduce.py).
    """
    execute_each(
        db,
        """
        CREATE TABLE hard_negatives (
            cell_id INTEGER NOT NULL,
            year INTEGER NOT NULL,
            model_version TEXT NOT NULL REFERENCES models(version),  -- predicted it a mine
            score REAL NOT NULL,             -- that model's score (>= its threshold)
            event_id INTEGER REFERENCES label_events(id),  -- the rejecting decision
            added_at TEXT NOT NULL,
            PRIMARY KEY (cell_id, year, model_version)
        ) WITHOUT ROWID;
        CREATE INDEX hard_negatives_model ON hard_negatives(model_version);
        INSERT OR IGNORE INTO hard_negatives (cell_id, year, model_version, score, event_id,
            added_at)
            SELECT c.cell_id, c.year, s.model_version, s.score, c.event_id,
                strftime('%Y-%m-%dT%H:%M:%f', 'now') || '+00:00'
            FROM current_labels c
            LEFT JOIN second_reviews r ON r.cell_id = c.cell_id AND r.year = c.year
            JOIN scores s ON s.cell_id = c.cell_id AND s.year = c.year
            JOIN models m ON m.version = s.model_version
            WHERE s.score >= m.threshold
            AND (CASE r.status WHEN 'adjudicated' THEN r.adjudicated_label
                 WHEN 'agreed' THEN r.first_label WHEN 'disagreed' THEN NULL
                 ELSE c.label END) = 'background';
        ALTER TABLE cycles ADD COLUMN validation_ap REAL;
        UPDATE scores SET uncertainty = (SELECT 1.0 - abs(scores.score - m.threshold)
            / max(m.threshold, 1.0 - m.threshold) FROM models m
            WHERE m.version = scores.model_version)
            WHERE score IS NOT NULL
            AND model_version IN (SELECT version FROM models)
        """
    )


@migrations(name="0012_perf")
def perf(db: Database) -> None:
    """Indexes for the review requests, whose plans must not depend on ANALYZE statistics.

    - ``territory_cells_outside``: "is any cell outside the territory?" (asked by every queue
      query) reads one index entry instead of scanning the table (one row per cell);
    - ``current_labels_year``: the queue counter's count of a year's labelled cells walks that
      year's labels instead of the year's scores (1.3 M at full size).
    """
    execute_each(
        db,
        """
        CREATE INDEX territory_cells_outside ON territory_cells(inside) WHERE inside = 0;
        CREATE INDEX current_labels_year ON current_labels(year)
        """
    )


@migrations(name="0013_embeddings")
def embeddings(db: Database) -> None:
    """One compact embedding per scored cell, per (model version, year).

    ``vector``: the FCN's pooled last hidden layer quantised to uint8 (one byte per component,
    64 for the seed's FCN); ``scale``: the float multiplying ``vector / 255`` back. Keyed by
    ``model_version`` like the scores, so deleting or pruning a version's scores removes them.
    """
    execute_each(
        db,
        """
        CREATE TABLE embeddings (
            model_version TEXT NOT NULL,
            year INTEGER NOT NULL,
            cell_id INTEGER NOT NULL,
            vector BLOB NOT NULL,
            scale REAL NOT NULL,
            PRIMARY KEY (model_version, year, cell_id)
        ) WITHOUT ROWID
        """
    )


@migrations(name="0014_account_names_ignore_case")
def account_names_ignore_case(db: Database) -> None:
    """Account names unique without regard to case (``accounts_name_nocase``).

    A database that already holds names differing only in case keeps the oldest account of each
    such group as it is; every later one is renamed ``<name>-renamed-<id>`` and disabled (its
    sessions end and its leases are released). Its label history keeps the old name, so what it
    decided stays attributed as it was; an admin may reset the renamed account's password and
    enable it again under its new name.
    """
    later = db.execute(
        "SELECT a.id, a.name FROM accounts a WHERE EXISTS (SELECT 1 FROM accounts b"
        " WHERE b.name = a.name COLLATE NOCASE AND b.id < a.id) ORDER BY a.id").fetchall()
    for account_id, name in later:
        db.execute("DELETE FROM leases WHERE reviewer = ?", [name])
        db.execute("UPDATE accounts SET name = ?, disabled = 1,"
                   " session_version = session_version + 1 WHERE id = ?",
                   [f"{name}-renamed-{account_id}", account_id])
    db.execute("CREATE UNIQUE INDEX accounts_name_nocase ON accounts(name COLLATE NOCASE)")


def _database_folder(db: Database) -> str | None:
    """The folder of the main database file (None for an in-memory database)."""
    for _, name, file in db.execute("PRAGMA database_list").fetchall():
        if name == "main" and file:
            return os.path.dirname(os.path.abspath(file))
    return None


def _relative_to(path: str, folder: str) -> str | None:
    """``path`` relative to ``folder`` when it is absolute and lies inside it, else None."""
    if not os.path.isabs(path):
        return None
    relative = os.path.relpath(path, folder)
    return None if relative.startswith(os.pardir) else relative.replace(os.sep, "/")
