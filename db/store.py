"""The MineWatch store: the one module that writes SQL.

Every value is a parameter; one user action is one transaction (``Store.atomic``). Connections use
WAL and a busy timeout so reviewers and a background retrain job never meet "database is locked".
A web request opens one ``Store`` and closes it at teardown; background jobs open their own.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlite_utils import Database

from db.schema import migrations

if TYPE_CHECKING:  # model.score loads TensorFlow; the store only needs its arrays
    from model.score import CellScores

LABELS: tuple[str, ...] = ("mine", "background", "skip")
TRAINING_LABELS: tuple[str, ...] = ("mine", "background")
QUEUE_STRATEGIES: tuple[str, ...] = ("uncertainty", "score", "random", "mixed")
#: The "mixed" queue interleaves these orders: half most uncertain, a quarter highest score, a
#: quarter random (an unbiased look at precision). Measured by pipeline/simulate.py (issue 5).
MIXED_PATTERN: tuple[str, ...] = ("uncertainty", "score", "uncertainty", "random")
BUSY_TIMEOUT_MS = 30_000
#: SQL condition: label event ``e`` has not been undone.
_NOT_UNDONE = "NOT EXISTS (SELECT 1 FROM label_events u WHERE u.kind = 'undo' AND u.undoes = e.id)"
#: SQL condition: score row ``s`` is not of a cell outside the loaded territory.
_NOT_OUTSIDE = ("NOT EXISTS (SELECT 1 FROM territory_cells t WHERE t.cell_id = s.cell_id"
                " AND t.inside = 0)")
#: SQL: the effective label of current label ``l`` given its second review ``r`` (LEFT JOINed):
#: the lead's label when adjudicated, the agreed label, NULL while the two reviewers disagree
#: (not yet adjudicated), else the current label (single-reviewed or awaiting its second review).
_EFFECTIVE_LABEL = ("CASE r.status WHEN 'adjudicated' THEN r.adjudicated_label"
                    " WHEN 'agreed' THEN r.first_label WHEN 'disagreed' THEN NULL ELSE l.label END")
#: SQL: current label ``l``'s second review ``r`` (LEFT JOINed), and the two joined.
_SECOND_REVIEW_JOIN = "LEFT JOIN second_reviews r ON r.cell_id = l.cell_id AND r.year = l.year"
_LABELS_WITH_REVIEW = f"current_labels l {_SECOND_REVIEW_JOIN}"
#: Review states of a current label, as ``Store.review_state_counts`` names them.
REVIEW_STATES: tuple[str, ...] = ("single", "pending", "agreed", "disagreed", "adjudicated")
_JSON_COLUMNS = frozenset(
    {"paths", "bands", "stretch", "metrics", "training", "history", "predicted_mines", "params"}
)
#: Seconds a running cycle or job may go without a recorded worker pid (the moment between
#: recording it and starting its process) before it counts as a worker that never started.
WORKER_START_GRACE_S = 120.0


def _prefix_end(prefix: str) -> str:
    """The smallest string above every string that starts with ``prefix`` (a non-empty one)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class StoreError(Exception):
    """A request the store cannot honour (the message says why)."""


class UnknownCellError(StoreError, LookupError):
    """A cell id (or cell-year) that the database does not hold."""


class InvalidLabelError(StoreError, ValueError):
    """A label value that is not one of ``LABELS``."""


class CycleRunningError(StoreError):
    """A retrain cycle is already running."""


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string (what every ``*_at`` column holds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _decode(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        key: json.loads(value) if key in _JSON_COLUMNS and isinstance(value, str) else value
        for key, value in row.items()
    }


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a zombie counts as stopped)."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="ascii") as stat:
            if stat.read().rsplit(")", 1)[-1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _dead_worker(row: dict[str, Any]) -> str | None:
    """Why a running cycle or job row has no live worker, or None when it has one."""
    if row["pid"] is None:
        started = datetime.fromisoformat(row["started_at"])
        if (datetime.now(UTC) - started).total_seconds() > WORKER_START_GRACE_S:
            return "its worker process never started"
        return None
    if not process_alive(row["pid"]):
        return f"its worker process {row['pid']} stopped"
    return None


def _cell_status_query(
    model_version: str, year: int, threshold: float, *,
    statuses: Sequence[str] | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    inside_only: bool = False, limit: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters of ``Store.cell_statuses`` (see there)."""
    sql = (
        "SELECT * FROM (SELECT cell_id, row, col, lon, lat, score, uncertainty, label, inside,"
        " CASE WHEN label = 'mine' THEN 'confirmed'"
        " WHEN score >= :thr AND label = 'background' THEN 'rejected'"
        " WHEN score >= :thr THEN 'predicted' ELSE 'background' END AS status"
        f" FROM (SELECT s.cell_id, c.row, c.col, c.lon, c.lat, s.score, s.uncertainty,"
        f" {_EFFECTIVE_LABEL} AS label, t.inside"
        " FROM scores s JOIN cells c ON c.id = s.cell_id"
        " LEFT JOIN current_labels l ON l.cell_id = s.cell_id AND l.year = s.year"
        " LEFT JOIN second_reviews r ON r.cell_id = s.cell_id AND r.year = s.year"
        " LEFT JOIN territory_cells t ON t.cell_id = s.cell_id"
        " WHERE s.model_version = :model AND s.year = :year)"
        " UNION ALL SELECT * FROM (SELECT l.cell_id, c.row, c.col, c.lon, c.lat, NULL, NULL,"
        f" {_EFFECTIVE_LABEL} AS label, t.inside, 'confirmed' FROM {_LABELS_WITH_REVIEW}"
        " JOIN cells c ON c.id = l.cell_id LEFT JOIN territory_cells t ON t.cell_id = l.cell_id"
        " WHERE l.year = :year AND NOT EXISTS (SELECT 1 FROM scores s"
        " WHERE s.cell_id = l.cell_id AND s.year = l.year AND s.model_version = :model))"
        " WHERE label = 'mine') WHERE 1"
    )
    params: dict[str, Any] = {"model": model_version, "year": year, "thr": threshold}
    if statuses is not None:
        names = [f":st{i}" for i in range(len(statuses))]
        sql += f" AND status IN ({', '.join(names) or 'NULL'})"
        params.update({name[1:]: value for name, value in zip(names, statuses, strict=True)})
    if bounds is not None:
        sql += " AND lon BETWEEN :west AND :east AND lat BETWEEN :south AND :north"
        params.update(zip(("west", "south", "east", "north"), map(float, bounds), strict=True))
    if inside_only:
        sql += " AND (inside IS NULL OR inside = 1)"
    if limit is not None:
        sql += (" ORDER BY status = 'confirmed' DESC, coalesce(score, -1) DESC, cell_id"
                " LIMIT :limit")
        params["limit"] = int(limit)
    else:
        sql += " ORDER BY cell_id"
    return sql, params


def _encode(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list | tuple) else value


class Store:
    """A connection to one MineWatch database, migrated to the latest schema on open."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
            isolation_level=None,
        )
        self.db = Database(conn)
        self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    def close(self) -> None:
        self.db.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def atomic(self) -> Iterator[Store]:
        """One write transaction (nested calls become savepoints).

        It begins IMMEDIATE, taking the write lock up front: a deferred transaction that reads
        and then writes can fail at once with "database is locked" when another writer committed
        in between, whatever the busy timeout; an immediate one waits its turn instead.
        """
        conn = self.db.conn
        if conn.in_transaction:
            with self.db.atomic():
                yield self
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        """Apply pending migrations (another process migrating at the same moment is fine)."""
        if not migrations.pending(self.db):
            return
        try:
            migrations.apply(self.db)
        except sqlite3.OperationalError:
            if migrations.pending(self.db):
                raise

    # helpers -----------------------------------------------------------------------------------
    def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        cursor = self.db.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [_decode(dict(zip(names, row, strict=True))) for row in cursor.fetchall()]

    def _row(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> dict[str, Any] | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def _not_outside(self) -> str:
        """`` AND <score row s is not outside the territory>``, or nothing when no cell is outside
        (the common case costs no anti-join on every queue query)."""
        if self._scalar("SELECT 1 FROM territory_cells WHERE inside = 0 LIMIT 1") is None:
            return ""
        return f" AND {_NOT_OUTSIDE}"

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.db.execute(sql, params).fetchone()
        return row[0] if row else None

    # cells -------------------------------------------------------------------------------------
    def add_cells(self, cells: Iterable[tuple[int, int, int, float, float]]) -> None:
        """Insert cells given as (id, row, col, lon, lat); cells already present are kept."""
        with self.atomic():
            self.db.conn.executemany(
                "INSERT OR IGNORE INTO cells (id, row, col, lon, lat) VALUES (?, ?, ?, ?, ?)",
                ((int(i), int(r), int(c), float(lo), float(la)) for i, r, c, lo, la in cells),
            )

    def cell(self, cell_id: int) -> dict[str, Any] | None:
        return self._row("SELECT * FROM cells WHERE id = ?", [cell_id])

    def require_cell(self, cell_id: int) -> dict[str, Any]:
        """The cell, or UnknownCellError."""
        cell = self.cell(cell_id)
        if cell is None:
            raise UnknownCellError(f"unknown cell {cell_id}")
        return cell

    def count_cells(self) -> int:
        return int(self._scalar("SELECT count(*) FROM cells"))

    # scenes ------------------------------------------------------------------------------------
    def add_scene(self, record: dict[str, Any]) -> int:
        """Register a scene (or update the one with the same paths); returns its id."""
        values = {key: _encode(value) for key, value in record.items()}
        values.setdefault("ingested_at", utc_now())
        with self.atomic():
            existing = self._scalar("SELECT id FROM scenes WHERE paths = ?", [values["paths"]])
            if existing is not None:
                assignments = ", ".join(f"{key} = :{key}" for key in values)
                self.db.execute(f"UPDATE scenes SET {assignments} WHERE id = :id",
                                {**values, "id": existing})
                return int(existing)
            columns = ", ".join(values)
            placeholders = ", ".join(f":{key}" for key in values)
            cursor = self.db.execute(
                f"INSERT INTO scenes ({columns}) VALUES ({placeholders})", values
            )
            return int(cursor.lastrowid)

    def scene(self, scene_id: int) -> dict[str, Any] | None:
        return self._row("SELECT * FROM scenes WHERE id = ?", [scene_id])

    def scenes(self, year: int | None = None) -> list[dict[str, Any]]:
        if year is None:
            return self._rows("SELECT * FROM scenes ORDER BY year, id")
        return self._rows("SELECT * FROM scenes WHERE year = ? ORDER BY id", [year])

    def years(self) -> list[int]:
        """Years that have at least one scene."""
        return [row["year"] for row in self._rows("SELECT DISTINCT year FROM scenes ORDER BY year")]

    def replace_year_mosaic(self, record: dict[str, Any], files: Iterable[dict[str, Any]]) -> int:
        """Register (or update) a year's mosaic row and append the source files just ingested.

        Rows of the same year left by installations before the imagery store (one per source
        file) are folded into the mosaic row: their scores point to it and they are deleted.
        Returns the mosaic row's id.
        """
        with self.atomic():
            scene_id = self.add_scene(record)
            self.db.execute("UPDATE scores SET scene_id = ? WHERE year = ? AND scene_id != ?",
                            [scene_id, record["year"], scene_id])
            self.db.execute("DELETE FROM scenes WHERE year = ? AND id != ?",
                            [record["year"], scene_id])
            now = utc_now()
            for row in files:
                values = {key: _encode(value) for key, value in row.items()}
                values.update(scene_id=scene_id, year=record["year"], ingested_at=now)
                columns = ", ".join(values)
                placeholders = ", ".join(f":{key}" for key in values)
                self.db.execute(f"INSERT INTO scene_files ({columns}) VALUES ({placeholders})",
                                values)
        return scene_id

    def scene_files(self, year: int | None = None) -> list[dict[str, Any]]:
        """The source files ingested into the year's mosaic (every year when None), oldest first."""
        if year is None:
            return self._rows("SELECT * FROM scene_files ORDER BY year, id")
        return self._rows("SELECT * FROM scene_files WHERE year = ? ORDER BY id", [year])

    def scenes_covering(self, cell_id: int, year: int) -> list[dict[str, Any]]:
        """Scenes of ``year`` whose cell range contains the cell, newest first."""
        row, col = divmod(int(cell_id), 100_000)
        return self._rows(
            "SELECT * FROM scenes WHERE year = ? AND row0 <= ? AND ? < row1 AND col0 <= ? AND ? < col1"
            " ORDER BY id DESC",
            [year, row, row, col, col],
        )

    # models ------------------------------------------------------------------------------------
    def next_model_version(self) -> str:
        """The next free version name: m0001, m0002, ..."""
        count = int(self._scalar("SELECT count(*) FROM models"))
        while self.model(f"m{count + 1:04d}") is not None:
            count += 1
        return f"m{count + 1:04d}"

    def add_model(self, record: dict[str, Any], *, activate: bool = False,
                  pending: bool = False) -> None:
        """Register a saved model; with ``activate`` it becomes the one active model.

        A ``pending`` model (a cycle still writing its scores) is hidden from ``model``/``models``
        until ``finish_model``; cleanup removes one whose cycle died.
        """
        if activate and pending:
            raise StoreError("a pending model cannot be activated")
        values = {key: _encode(value) for key, value in record.items()}
        values["active"] = 0
        values["state"] = "pending" if pending else "ready"
        values.setdefault("created_at", utc_now())
        with self.atomic():
            columns = ", ".join(values)
            placeholders = ", ".join(f":{key}" for key in values)
            self.db.execute(f"INSERT INTO models ({columns}) VALUES ({placeholders})", values)
            if activate:
                self.activate_model(values["version"])

    def activate_model(self, version: str) -> None:
        """Make ``version`` (a ready model) the one active model."""
        with self.atomic():
            if self.ready_model(version) is None:
                raise StoreError(f"unknown or unfinished model version {version}")
            self.db.execute("UPDATE models SET active = 0 WHERE active = 1")
            self.db.execute("UPDATE models SET active = 1 WHERE version = ?", [version])

    def finish_model(self, version: str, *, activate: bool) -> None:
        """Mark a pending model ready and, with ``activate``, active, in one transaction."""
        with self.atomic():
            if self.model(version) is None:
                raise StoreError(f"unknown model version {version}")
            self.db.execute("UPDATE models SET state = 'ready' WHERE version = ?", [version])
            if activate:
                self.activate_model(version)

    def model(self, version: str) -> dict[str, Any] | None:
        """A model's row, pending or ready (``state``); see ``ready_model``."""
        return self._row("SELECT * FROM models WHERE version = ?", [version])

    def ready_model(self, version: str) -> dict[str, Any] | None:
        """A model's row unless it is missing or pending (a cycle has not finished it)."""
        return self._row("SELECT * FROM models WHERE version = ? AND state = 'ready'", [version])

    def active_model(self) -> dict[str, Any] | None:
        return self._row("SELECT * FROM models WHERE active = 1")

    def models(self) -> list[dict[str, Any]]:
        """Every ready model, oldest first (pending ones are a running or dead cycle's)."""
        return self._rows("SELECT * FROM models WHERE state = 'ready' ORDER BY created_at, version")

    def pending_models(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM models WHERE state = 'pending' ORDER BY version")

    def model_versions(self) -> set[str]:
        """The version of every model row, pending ones included."""
        return {r[0] for r in self.db.execute("SELECT version FROM models").fetchall()}

    def delete_model(self, version: str) -> None:
        """Remove an inactive model row and every row keyed by its version, in one transaction.

        Every table with a ``model_version`` column (scores and any resume or cache table keyed
        by it) loses that version's rows; cycles keep their history. The active model refuses.
        """
        with self.atomic():
            row = self.model(version)
            if row is None:
                return
            if row["active"]:
                raise StoreError(f"{version} is the active model; activate another one first")
            for table in self._tables_with_column("model_version"):
                self.db.execute(f"DELETE FROM [{table}] WHERE model_version = ?", [version])
            self.db.execute("DELETE FROM models WHERE version = ?", [version])

    def _tables_with_column(self, column: str) -> list[str]:
        tables = [r[0] for r in self.db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()]
        return [t for t in tables
                if any(c[1] == column for c in self.db.execute(f"PRAGMA table_info([{t}])"))]

    # scores ------------------------------------------------------------------------------------
    def write_scores(
        self,
        year: int,
        model_version: str,
        scene_id: int,
        cell_ids: Sequence[int],
        scores: Sequence[float | None],
        uncertainty: Sequence[float | None],
        valid_fraction: Sequence[float],
    ) -> None:
        """Store one score row per cell (NaN scores are stored as NULL: not scored).

        Where scenes of a year overlap, a cell keeps the score from the scene that covers more of it.
        """

        def clean(value: float | None) -> float | None:
            return None if value is None or value != value else float(value)

        rows = (
            (int(c), int(year), model_version, clean(s), clean(u), float(v), int(scene_id),
             random.random())
            for c, s, u, v in zip(cell_ids, scores, uncertainty, valid_fraction, strict=True)
        )
        with self.atomic():
            self.db.conn.executemany(
                "INSERT INTO scores (cell_id, year, model_version, score, uncertainty,"
                " valid_fraction, scene_id, rand) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (cell_id, year, model_version) DO UPDATE SET score = excluded.score,"
                " uncertainty = excluded.uncertainty, valid_fraction = excluded.valid_fraction,"
                " scene_id = excluded.scene_id WHERE excluded.valid_fraction >= scores.valid_fraction",
                rows,
            )

    def delete_model_scores(self, model_version: str) -> None:
        """Drop every score, embedding, block progress and summary of a model version (a cycle
        that failed half-way)."""
        with self.atomic():
            for table in ("scores", "scored_blocks", "score_summaries", "embeddings"):
                self.db.execute(f"DELETE FROM {table} WHERE model_version = ?", [model_version])

    def scored_years(self, model_version: str) -> list[int]:
        return [r["year"] for r in self._rows(
            "SELECT DISTINCT year FROM scores WHERE model_version = ? ORDER BY year",
            [model_version])]

    def score_summary(self, model_version: str, threshold: float) -> list[dict[str, Any]]:
        """Per year: cells scored, cells not scored (low coverage), cells predicted as mines."""
        return self._rows(
            "SELECT year, count(score) AS scored, count(*) - count(score) AS not_scored,"
            " sum(score >= ?) AS predicted_mines FROM scores WHERE model_version = ?"
            " GROUP BY year ORDER BY year",
            [threshold, model_version],
        )

    def score_histogram(self, model_version: str, year: int, bins: int = 20) -> list[int]:
        """Counts of scored cells in ``bins`` equal-width score bins over [0, 1]."""
        counts = [0] * bins
        for row in self._rows(
            "SELECT min(CAST(score * ? AS INTEGER), ? - 1) AS bin, count(*) AS n FROM scores"
            " WHERE model_version = ? AND year = ? AND score IS NOT NULL GROUP BY bin",
            [bins, bins, model_version, year],
        ):
            counts[int(row["bin"])] = int(row["n"])
        return counts

    def score(self, cell_id: int, year: int, model_version: str) -> dict[str, Any] | None:
        return self._row(
            "SELECT * FROM scores WHERE cell_id = ? AND year = ? AND model_version = ?",
            [cell_id, year, model_version],
        )

    def cell_scores(self, cell_id: int) -> list[dict[str, Any]]:
        """Every score of a cell, newest model first, with the model's threshold."""
        return self._rows(
            "SELECT s.*, m.threshold FROM scores s JOIN models m ON m.version = s.model_version"
            " WHERE s.cell_id = ? ORDER BY s.year, m.created_at DESC",
            [cell_id],
        )

    def predicted_mine_count(self, model_version: str, year: int, threshold: float) -> int:
        """Cells of a year scored >= ``threshold``, not counting cells outside the territory."""
        return int(self._scalar(
            "SELECT count(*) FROM scores s WHERE s.model_version = ? AND s.year = ?"
            f" AND s.score >= ?{self._not_outside()}", [model_version, year, threshold]))

    # scoring progress and summaries ----------------------------------------------------------
    def write_scored_blocks(
        self, year: int, model_version: str, scene_id: int,
        blocks: Iterable[tuple[tuple[int, int, int, int], CellScores]],
    ) -> int:
        """Store the scores of finished blocks and mark the blocks finished, in one transaction.

        Each item is ((row0, row1, col0, col1) of the block, its CellScores). A block already
        marked finished for (model_version, year) raises StoreError and nothing of the batch is
        written: a resumed run must skip it. Returns the number of score rows written.
        """
        written = 0
        now = utc_now()
        with self.atomic():
            for (row0, row1, col0, col1), cells in blocks:
                try:
                    self.db.execute(
                        "INSERT INTO scored_blocks (model_version, year, row0, col0, row1, col1,"
                        " n_cells, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [model_version, int(year), row0, col0, row1, col1, len(cells), now])
                except sqlite3.IntegrityError as error:
                    raise StoreError(f"block at cell row {row0}, col {col0} of {year} is already "
                                     f"scored by {model_version}") from error
                self.write_scores(year, model_version, scene_id, cells.cell_ids, cells.scores,
                                  cells.uncertainty, cells.valid_fraction)
                self._write_embeddings(year, model_version, cells)
                written += len(cells)
        return written

    def _write_embeddings(self, year: int, model_version: str, cells: CellScores) -> None:
        """Store the embeddings of ``cells``' scored cells (none when they carry none)."""
        if cells.embeddings is None:
            return
        scored = ~np.isnan(cells.scores)
        self.db.conn.executemany(
            "INSERT OR REPLACE INTO embeddings (model_version, year, cell_id, vector, scale)"
            " VALUES (?, ?, ?, ?, ?)",
            ((model_version, int(year), int(c), np.ascontiguousarray(v, np.uint8).tobytes(),
              float(s))
             for c, v, s in zip(cells.cell_ids[scored], cells.embeddings[scored],
                                cells.embedding_scale[scored], strict=True)))

    def embedding(self, model_version: str, year: int, cell_id: int
                  ) -> tuple[np.ndarray, float] | None:
        """A cell's stored (uint8 vector, scale), or None when it has none."""
        row = self._row("SELECT vector, scale FROM embeddings WHERE model_version = ?"
                        " AND year = ? AND cell_id = ?", [model_version, int(year), int(cell_id)])
        if row is None:
            return None
        return np.frombuffer(row["vector"], dtype=np.uint8), float(row["scale"])

    def embeddings(self, model_version: str, year: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stored embedding of (model_version, year): cell ids int64 (N,), uint8 vectors
        (N, D) and float32 scales (N,), in cell id order."""
        cursor = self.db.execute(
            "SELECT cell_id, vector, scale FROM embeddings WHERE model_version = ? AND year = ?"
            " ORDER BY cell_id", [model_version, int(year)])
        ids, vectors, scales = [], [], []
        for cell_id, vector, scale in cursor:
            ids.append(cell_id)
            vectors.append(vector)
            scales.append(scale)
        width = len(vectors[0]) if vectors else 0
        return (np.asarray(ids, dtype=np.int64),
                np.frombuffer(b"".join(vectors), dtype=np.uint8).reshape(len(ids), width),
                np.asarray(scales, dtype=np.float32))

    def embedding_fingerprint(self, model_version: str, year: int) -> str:
        """Changes whenever the embeddings of (model_version, year) may have changed ('' when
        there are none): the number of finished blocks, their cells and the latest finish time
        (embeddings are written only with their block's row; reads the small block table, not
        the embeddings)."""
        params = [model_version, int(year)]
        if self._scalar("SELECT 1 FROM embeddings WHERE model_version = ? AND year = ? LIMIT 1",
                        params) is None:
            return ""
        row = self._row("SELECT count(*) AS blocks, total(n_cells) AS cells,"
                        " max(finished_at) AS latest FROM scored_blocks WHERE model_version = ?"
                        " AND year = ?", params)
        return f"{row['blocks']}-{int(row['cells'])}-{row['latest'] or ''}"

    def embedded_versions(self) -> set[tuple[str, int]]:
        """Every (model_version, year) with stored embeddings."""
        return {(r[0], int(r[1])) for r in self.db.execute(
            "SELECT DISTINCT model_version, year FROM embeddings").fetchall()}

    def scored_blocks(self, model_version: str, year: int) -> set[tuple[int, int]]:
        """(row0, col0) of every block of ``year`` already scored by ``model_version``."""
        return {(r["row0"], r["col0"]) for r in self._rows(
            "SELECT row0, col0 FROM scored_blocks WHERE model_version = ? AND year = ?",
            [model_version, year])}

    def clear_scored_blocks(self, model_version: str, year: int) -> None:
        """Forget which blocks of ``year`` are scored (the next run scores them all again)."""
        with self.atomic():
            self.db.execute("DELETE FROM scored_blocks WHERE model_version = ? AND year = ?",
                            [model_version, year])

    def summarise_scores(self, model_version: str, year: int, threshold: float) -> dict[str, Any]:
        """Compute and keep the per-year summary of a model version's scores; returns it.

        Its ``predicted_mines`` leaves out cells classified outside the territory."""
        with self.atomic():
            self.db.execute(
                "INSERT OR REPLACE INTO score_summaries (model_version, year, scored, not_scored,"
                " predicted_mines, threshold, mean_score, summarised_at)"
                " SELECT ?, ?, count(s.score), count(*) - count(s.score),"
                f" coalesce(sum(s.score >= ? AND {_NOT_OUTSIDE}), 0), ?, avg(s.score), ?"
                " FROM scores s WHERE s.model_version = ? AND s.year = ?",
                [model_version, year, threshold, threshold, utc_now(), model_version, year])
        return self.year_summary(model_version, year)

    def year_summary(self, model_version: str, year: int) -> dict[str, Any] | None:
        """The summary of (model version, year): the kept row, else (scores written without one)
        counted from the score rows at the model's threshold; None when it was never scored."""
        row = self._row("SELECT * FROM score_summaries WHERE model_version = ? AND year = ?",
                        [model_version, year])
        if row is None:
            row = self._row(
                "SELECT s.model_version, s.year, count(s.score) AS scored,"
                " count(*) - count(s.score) AS not_scored,"
                f" coalesce(sum(s.score >= m.threshold AND {_NOT_OUTSIDE}), 0) AS predicted_mines,"
                " m.threshold, avg(s.score) AS mean_score, NULL AS summarised_at"
                " FROM scores s JOIN models m ON m.version = s.model_version"
                " WHERE s.model_version = ? AND s.year = ?", [model_version, year])
        return row if row is not None and row["scored"] + row["not_scored"] else None

    def summarised_years(self, model_version: str) -> list[int]:
        """Years with a kept summary for ``model_version`` (also after its scores were pruned)."""
        return [r["year"] for r in self._rows(
            "SELECT year FROM score_summaries WHERE model_version = ? ORDER BY year",
            [model_version])]

    def prune_scores(self, model_versions: Iterable[str]) -> int:
        """Delete the score rows (block progress and embeddings) of ``model_versions``, keeping
        their per-year summaries (written first where missing). Returns the rows deleted."""
        deleted = 0
        for version in model_versions:
            model = self.model(version)
            if model is None:
                raise StoreError(f"unknown model version {version}")
            with self.atomic():
                for year in self.scored_years(version):
                    if self.year_summary(version, year) is None:
                        self.summarise_scores(version, year, float(model["threshold"]))
                deleted += self.db.execute(
                    "DELETE FROM scores WHERE model_version = ?", [version]).rowcount
                self.db.execute("DELETE FROM scored_blocks WHERE model_version = ?", [version])
                self.db.execute("DELETE FROM embeddings WHERE model_version = ?", [version])
        return deleted

    # seed labels (the initial training set) ---------------------------------------------------
    def replace_seed_labels(
        self, year: int, labels: Iterable[tuple[int, str]], source: str
    ) -> int:
        """Replace the seed labels of ``year`` by (cell_id, label) pairs; returns how many."""
        rows = [(int(cell_id), int(year), label, source, utc_now()) for cell_id, label in labels]
        bad = {label for _, _, label, _, _ in rows if label not in TRAINING_LABELS}
        if bad:
            raise InvalidLabelError(f"seed labels must be mine or background, got {sorted(bad)}")
        with self.atomic():
            self.db.execute("DELETE FROM seed_labels WHERE year = ?", [year])
            self.db.conn.executemany(
                "INSERT INTO seed_labels (cell_id, year, label, source, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def training_labels_with_seeds(
        self, year: int, labels: Iterable[tuple[int, str]], source: str
    ) -> list[dict[str, Any]]:
        """``training_labels()`` as they would be with the seed labels of ``year`` replaced by
        ``labels`` (``replace_seed_labels``), changing nothing: the replacement is rolled back."""
        conn = self.db.conn
        conn.execute("SAVEPOINT seed_preview")
        try:
            self.replace_seed_labels(year, labels, source)
            return self.training_labels()
        finally:
            conn.execute("ROLLBACK TO seed_preview")
            conn.execute("RELEASE seed_preview")

    def seed_labels(self, year: int | None = None) -> list[dict[str, Any]]:
        if year is None:
            return self._rows("SELECT * FROM seed_labels ORDER BY year, cell_id")
        return self._rows("SELECT * FROM seed_labels WHERE year = ? ORDER BY cell_id", [year])

    # review labels -----------------------------------------------------------------------------
    def record_label(
        self,
        cell_id: int,
        year: int,
        label: str,
        reviewer: str,
        *,
        request_id: str | None = None,
        ms_spent: int | None = None,
        score_shown: float | None = None,
        model_version_shown: str | None = None,
        source: str = "review",
    ) -> dict[str, Any]:
        """Append a decision and update the cell's current label, in one transaction.

        A repeated ``request_id`` returns the event already stored (a double submit counts once).
        """
        if label not in LABELS:
            raise InvalidLabelError(f"unknown label {label!r}; expected one of {', '.join(LABELS)}")
        if not reviewer.strip():
            raise StoreError("a decision needs a reviewer name")
        with self.atomic():
            if request_id is not None:
                existing = self._row("SELECT * FROM label_events WHERE request_id = ?", [request_id])
                if existing is not None:
                    return existing
            self.require_cell(cell_id)
            cursor = self.db.execute(
                "INSERT INTO label_events (cell_id, year, kind, label, reviewer, created_at,"
                " score_shown, model_version_shown, ms_spent, request_id, source)"
                " VALUES (?, ?, 'label', ?, ?, ?, ?, ?, ?, ?, ?)",
                [cell_id, year, label, reviewer, utc_now(), score_shown, model_version_shown,
                 ms_spent, request_id, source],
            )
            self._refresh_current_label(cell_id, year)
            self._sync_second_review(cell_id, year)
            self._release_after_decision(cell_id, year, reviewer)
            event = self.label_event(int(cursor.lastrowid))
            self._keep_rejection(event)
            return event

    def _release_after_decision(self, cell_id: int, year: int, reviewer: str) -> None:
        """Drop the leases of a cell-year just decided: the decider's, and everyone's unless its
        second review is pending (then a second reviewer may hold the card right now, and a
        change of the first decision must not hand that card to a third reviewer)."""
        task = self.second_review(cell_id, year)
        if task is not None and task["status"] == "pending":
            self.db.execute("DELETE FROM leases WHERE cell_id = ? AND year = ? AND reviewer = ?",
                            [cell_id, year, reviewer])
        else:
            self.db.execute("DELETE FROM leases WHERE cell_id = ? AND year = ?", [cell_id, year])

    def undo_label(
        self, event_id: int, reviewer: str, *, request_id: str | None = None
    ) -> dict[str, Any]:
        """Append an undo of a label event; the cell's current label falls back to the one before.

        Undoing an event already undone returns the existing undo event.
        """
        with self.atomic():
            if request_id is not None:
                existing = self._row("SELECT * FROM label_events WHERE request_id = ?", [request_id])
                if existing is not None:
                    return existing
            target = self.label_event(event_id)
            if target is None or target["kind"] != "label":
                raise StoreError(f"no label decision {event_id} to undo")
            already = self._row(
                "SELECT * FROM label_events WHERE kind = 'undo' AND undoes = ?", [event_id])
            if already is not None:
                return already
            cursor = self.db.execute(
                "INSERT INTO label_events (cell_id, year, kind, undoes, reviewer, created_at,"
                " request_id, source) VALUES (?, ?, 'undo', ?, ?, ?, ?, ?)",
                [target["cell_id"], target["year"], event_id, reviewer, utc_now(), request_id,
                 target["source"]],
            )
            self._refresh_current_label(target["cell_id"], target["year"])
            self._sync_second_review(target["cell_id"], target["year"])
            return self.label_event(int(cursor.lastrowid))

    def last_undoable_event(self, reviewer: str) -> dict[str, Any] | None:
        """The reviewer's most recent label decision that has not been undone."""
        return self._row(
            "SELECT e.* FROM label_events e WHERE e.reviewer = ? AND e.kind = 'label'"
            f" AND {_NOT_UNDONE}"
            " ORDER BY e.id DESC LIMIT 1",
            [reviewer],
        )

    def _refresh_current_label(self, cell_id: int, year: int) -> None:
        latest = self._row(
            "SELECT e.* FROM label_events e WHERE e.cell_id = ? AND e.year = ? AND e.kind = 'label'"
            f" AND {_NOT_UNDONE}"
            " ORDER BY e.id DESC LIMIT 1",
            [cell_id, year],
        )
        if latest is None:
            self.db.execute("DELETE FROM current_labels WHERE cell_id = ? AND year = ?",
                            [cell_id, year])
            return
        self.db.execute(
            "INSERT OR REPLACE INTO current_labels (cell_id, year, label, event_id, reviewer,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            [cell_id, year, latest["label"], latest["id"], latest["reviewer"], utc_now()],
        )

    # hard negatives: every lesson kept ----------------------------------------------------------
    def _keep_rejection(self, event: dict[str, Any]) -> None:
        """Record a background decision on a cell the shown model (else the active one) predicted
        as a mine as a hard negative of that model version."""
        if event["label"] != "background":
            return
        version, score = event["model_version_shown"], event["score_shown"]
        if version is None:
            active = self.active_model()
            row = self.score(event["cell_id"], event["year"], active["version"]) if active else None
            version, score = (active["version"], row["score"]) if row else (None, None)
        model = self.model(version) if version is not None else None
        if model is None or score is None or score < model["threshold"]:
            return
        self.db.execute(
            "INSERT OR IGNORE INTO hard_negatives (cell_id, year, model_version, score, event_id,"
            " added_at) VALUES (?, ?, ?, ?, ?, ?)",
            [event["cell_id"], event["year"], version, score, event["id"], utc_now()])

    def record_predicted_rejections(self, model_version: str) -> int:
        """Add the cells ``model_version`` predicts as mines that are currently labelled
        background to the hard negatives (with the rejecting decision); returns how many were new.
        """
        with self.atomic():
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO hard_negatives (cell_id, year, model_version, score,"
                " event_id, added_at) SELECT l.cell_id, l.year, s.model_version, s.score,"
                f" l.event_id, ? FROM {_LABELS_WITH_REVIEW} JOIN scores s ON s.cell_id = l.cell_id"
                " AND s.year = l.year AND s.model_version = ? JOIN models m"
                f" ON m.version = s.model_version WHERE {_EFFECTIVE_LABEL} = 'background'"
                " AND s.score >= m.threshold", [utc_now(), model_version])
            return int(cursor.rowcount)

    def hard_negatives(self) -> list[dict[str, Any]]:
        """Hard-negative rows (one per cell-year and model version that predicted it) whose
        cell-year's effective label is still background, oldest first."""
        return self._rows(
            "SELECT h.* FROM hard_negatives h JOIN current_labels l ON l.cell_id = h.cell_id"
            f" AND l.year = h.year {_SECOND_REVIEW_JOIN} WHERE {_EFFECTIVE_LABEL} = 'background'"
            " ORDER BY h.added_at, h.cell_id, h.year, h.model_version")

    def false_positives_found(self, model_version: str | None = None, *, year: int | None = None,
                              inside_territory: bool = True) -> int:
        """Cell-years a model (``model_version``, or any) predicted as mines that review rejected.

        Counted from the hard negatives whose effective label is still background (of ``year``,
        or all years);
        with ``inside_territory``, cells classified outside the territory are left out.
        """
        sql = ("SELECT count(DISTINCT h.cell_id || ':' || h.year) FROM hard_negatives h"
               " JOIN current_labels l ON l.cell_id = h.cell_id AND l.year = h.year"
               f" {_SECOND_REVIEW_JOIN} WHERE {_EFFECTIVE_LABEL} = 'background'")
        params: list[Any] = []
        if model_version is not None:
            sql += " AND h.model_version = ?"
            params.append(model_version)
        if year is not None:
            sql += " AND h.year = ?"
            params.append(year)
        if inside_territory:
            sql += (" AND NOT EXISTS (SELECT 1 FROM territory_cells t WHERE t.cell_id = h.cell_id"
                    " AND t.inside = 0)")
        return int(self._scalar(sql, params))

    def label_event(self, event_id: int) -> dict[str, Any] | None:
        return self._row("SELECT * FROM label_events WHERE id = ?", [event_id])

    def current_label(self, cell_id: int, year: int) -> dict[str, Any] | None:
        return self._row("SELECT * FROM current_labels WHERE cell_id = ? AND year = ?",
                         [cell_id, year])

    def current_labels_of(
        self, cells: Iterable[tuple[int, int]]
    ) -> dict[tuple[int, int], dict[str, Any]]:
        """The current label rows of (cell_id, year) pairs that have one, in one query."""
        pairs = [(int(cell_id), int(year)) for cell_id, year in cells]
        if not pairs:
            return {}
        values = ", ".join("(?, ?)" for _ in pairs)
        rows = self._rows(  # one primary-key lookup per pair (a row-value IN scans the table)
            f"SELECT c.* FROM (VALUES {values}) v CROSS JOIN current_labels c"
            " ON c.cell_id = v.column1 AND c.year = v.column2",
            [value for pair in pairs for value in pair])
        return {(row["cell_id"], row["year"]): row for row in rows}

    def label_history(self, cell_id: int) -> list[dict[str, Any]]:
        """Every event of a cell, oldest first, with whether it was undone later."""
        return self._rows(
            f"SELECT e.*, NOT {_NOT_UNDONE} AS undone FROM label_events e WHERE e.cell_id = ?"
            " ORDER BY e.id",
            [cell_id],
        )

    def recent_decisions(self, reviewer: str, limit: int = 10) -> list[dict[str, Any]]:
        """The reviewer's latest label decisions (undone ones excluded), newest first."""
        return self._rows(
            "SELECT e.* FROM label_events e WHERE e.reviewer = ? AND e.kind = 'label'"
            f" AND {_NOT_UNDONE}"
            " ORDER BY e.id DESC LIMIT ?",
            [reviewer, limit],
        )

    def label_events_by_request_prefix(self, prefix: str) -> list[dict[str, Any]]:
        """Events whose idempotency key starts with ``prefix`` (e.g. one triage page's tiles),
        oldest first, with whether each was undone. A range on the unique key's index."""
        return self._rows(
            f"SELECT e.*, NOT {_NOT_UNDONE} AS undone FROM label_events e"
            " WHERE e.request_id >= ? AND e.request_id < ? ORDER BY e.id",
            [prefix, _prefix_end(prefix)])

    def latest_event_by_request_prefix(self, prefix: str) -> dict[str, Any] | None:
        """The newest event whose idempotency key starts with ``prefix``, if any."""
        return self._row(
            "SELECT * FROM label_events WHERE request_id >= ? AND request_id < ?"
            " ORDER BY id DESC LIMIT 1", [prefix, _prefix_end(prefix)])

    def count_decisions(self, reviewer: str | None = None, since: str | None = None) -> int:
        """Label decisions (not undone) by a reviewer (or everyone) since an ISO time."""
        sql = f"SELECT count(*) FROM label_events e WHERE e.kind = 'label' AND {_NOT_UNDONE}"
        params: list[Any] = []
        if reviewer is not None:
            sql += " AND e.reviewer = ?"
            params.append(reviewer)
        if since is not None:
            sql += " AND e.created_at >= ?"
            params.append(since)
        return int(self._scalar(sql, params))

    def reviewed_labels(self) -> list[dict[str, Any]]:
        """Effective mine/background review labels (skips and open disagreements excluded).

        The effective label is the lead's when adjudicated, else the agreed or current label; a
        cell-year whose two reviewers disagree and that no lead adjudicated yet has none.
        """
        return self._rows(
            f"SELECT * FROM (SELECT l.cell_id, l.year, {_EFFECTIVE_LABEL} AS label, l.reviewer,"
            f" l.updated_at FROM {_LABELS_WITH_REVIEW})"
            " WHERE label IN ('mine', 'background') ORDER BY year, cell_id"
        )

    def training_labels(self) -> list[dict[str, Any]]:
        """Seed labels and effective review labels (``reviewed_labels``), a review overriding the
        seed label of the same cell-year; a cell-year under an open disagreement is left out
        entirely (its seed label too) until a lead adjudicates it.

        Each row: cell_id, year, label, source ('seed' or 'review').
        """
        return self._rows(
            f"SELECT * FROM (SELECT l.cell_id, l.year, {_EFFECTIVE_LABEL} AS label,"
            f" 'review' AS source FROM {_LABELS_WITH_REVIEW}) WHERE label IN ('mine', 'background')"
            " UNION ALL SELECT s.cell_id, s.year, s.label, 'seed' AS source FROM seed_labels s"
            " WHERE NOT EXISTS (SELECT 1 FROM current_labels c WHERE c.cell_id = s.cell_id"
            " AND c.year = s.year AND c.label IN ('mine', 'background'))"
            " AND NOT EXISTS (SELECT 1 FROM second_reviews r WHERE r.cell_id = s.cell_id"
            " AND r.year = s.year AND r.status = 'disagreed')"
            " ORDER BY year, cell_id"
        )

    # second review -----------------------------------------------------------------------------
    def add_second_review(self, event: dict[str, Any], reason: str) -> None:
        """Open a second-review task for the cell-year of a first decision (a label event).

        ``reason``: 'share' (picked by the configured share) or 'mine' (every mine asked for).
        Does nothing when the cell-year already has a task.
        """
        with self.atomic():
            self.db.execute(
                "INSERT OR IGNORE INTO second_reviews (cell_id, year, first_reviewer, reason,"
                " created_at, first_event_id, first_label) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [event["cell_id"], event["year"], event["reviewer"], reason, utc_now(),
                 event["id"], event["label"]])

    def second_review_policy(self) -> dict[str, Any] | None:
        """A lead's choice of second-review share and all-mines (share, all_mines, set_by,
        set_at), or None when the settings decide."""
        return self._row("SELECT share, all_mines, set_by, set_at FROM second_review_policy")

    def set_second_review_policy(self, share: float, all_mines: bool, set_by: str) -> None:
        """Store a lead's choice (``share`` in [0, 1])."""
        with self.atomic():
            self.db.execute(
                "INSERT OR REPLACE INTO second_review_policy (id, share, all_mines, set_by, set_at)"
                " VALUES (1, ?, ?, ?, ?)", [float(share), int(bool(all_mines)), set_by, utc_now()])

    def clear_second_review_policy(self) -> None:
        """Forget the lead's choice: the settings decide again."""
        with self.atomic():
            self.db.execute("DELETE FROM second_review_policy")

    def second_review(self, cell_id: int, year: int) -> dict[str, Any] | None:
        """The second-review task of a cell-year, if any."""
        return self._row("SELECT * FROM second_reviews WHERE cell_id = ? AND year = ?",
                         [cell_id, year])

    def second_reviews(self, status: str | None = None, limit: int | None = None
                       ) -> list[dict[str, Any]]:
        """Second-review tasks (of one status), oldest first."""
        sql, params = "SELECT * FROM second_reviews", []
        if status is not None:
            sql += " WHERE status = ?"
            params.append(status)
        sql += " ORDER BY created_at, cell_id, year"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return self._rows(sql, params)

    def second_review_candidates(
        self, reviewer: str, limit: int, *, now: float | None = None
    ) -> list[dict[str, Any]]:
        """Pending second reviews ``reviewer`` may be served: first decided by someone else, not
        second-reviewed yet (a task waiting for its first reviewer's new decision after an undo
        is not), not decided by ``reviewer`` already, not under another reviewer's live lease.
        Tasks leased to ``reviewer`` come first, then the oldest. Rows: cell_id, year.

        Two indexed queries (the reviewer's leases; the pending tasks in age order, stopping at
        ``limit``), so the cost does not grow with the number of pending tasks.
        """
        now = time.time() if now is None else now
        params = {"reviewer": reviewer, "now": now, "limit": int(limit)}
        own = self._rows(
            "SELECT r.cell_id, r.year FROM leases l JOIN second_reviews r ON r.cell_id = l.cell_id"
            " AND r.year = l.year WHERE l.reviewer = :reviewer AND l.expires_at > :now"
            " AND r.status = 'pending' AND r.first_reviewer != :reviewer"
            " ORDER BY r.created_at LIMIT :limit", params)
        oldest = self._rows(
            "SELECT r.cell_id, r.year FROM second_reviews r INDEXED BY second_reviews_status"
            " WHERE r.status = 'pending' AND r.first_reviewer != :reviewer"
            " AND r.second_reviewer IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.cell_id = r.cell_id"
            " AND l.year = r.year AND l.expires_at > :now AND l.reviewer != :reviewer)"
            " AND NOT EXISTS (SELECT 1 FROM label_events e WHERE e.cell_id = r.cell_id"
            f" AND e.year = r.year AND e.reviewer = :reviewer AND e.kind = 'label' AND {_NOT_UNDONE})"
            " ORDER BY r.created_at LIMIT :limit", params)
        rows = {(row["cell_id"], row["year"]): row for row in own + oldest}
        return list(rows.values())[:limit]

    def double_reviewed(self) -> list[dict[str, Any]]:
        """Tasks with both decisions (agreed, disagreed or adjudicated): first_reviewer,
        first_label, second_reviewer, second_label, status."""
        return self._rows(
            "SELECT cell_id, year, first_reviewer, first_label, second_reviewer, second_label,"
            " status FROM second_reviews WHERE status != 'pending'"
            " ORDER BY created_at, cell_id, year")

    def decision_times(self) -> list[dict[str, Any]]:
        """Every review decision not undone (adjudications excluded): reviewer, created_at,
        ms_spent; by reviewer, oldest first."""
        return self._rows(
            "SELECT e.reviewer, e.created_at, e.ms_spent FROM label_events e"
            f" WHERE e.kind = 'label' AND e.source != 'adjudication' AND {_NOT_UNDONE}"
            " ORDER BY e.reviewer, e.id")

    def review_state_counts(self) -> dict[str, int]:
        """How many current mine/background labels are single-reviewed (``single``), awaiting
        their second review (``pending``), double-reviewed agreeing (``agreed``), waiting for a
        lead (``disagreed``) or adjudicated (``adjudicated``). Skips are not counted unless a
        second review involves them."""
        counts = dict.fromkeys(REVIEW_STATES, 0)
        for row in self._rows(
            f"SELECT coalesce(r.status, 'single') AS state, count(*) AS n FROM {_LABELS_WITH_REVIEW}"
            " WHERE l.label IN ('mine', 'background') OR r.status IS NOT NULL GROUP BY state"
        ):
            counts[row["state"]] = int(row["n"])
        return counts

    def _sync_second_review(self, cell_id: int, year: int) -> None:
        """Re-derive a cell-year's second-review task from its label history (inside the
        transaction of a decision or undo).

        The first reviewer never changes; their side is their latest decision not undone. The
        second reviewer is the earliest other reviewer with a decision not undone (adjudications
        aside), their side their latest such decision. Status: adjudicated while a lead's
        adjudication is not undone; else pending while either side is missing (no second
        decision yet, or the first decision was undone and its reviewer has not decided again);
        else agreed when both chose the same of mine/background, else disagreed (a skip by
        either side needs a lead). With no decision left at all the task is deleted (the next
        first decision may open a new one), unless another reviewer holds its card right now
        (a live lease): then it stays pending and their decision is still its second review.
        """
        task = self.second_review(cell_id, year)
        if task is None:
            return
        events = self._rows(
            "SELECT e.id, e.label, e.reviewer, e.source FROM label_events e WHERE e.cell_id = ?"
            f" AND e.year = ? AND e.kind = 'label' AND {_NOT_UNDONE} ORDER BY e.id",
            [cell_id, year])
        reviews = [e for e in events if e["source"] != "adjudication"]
        first_reviewer = task["first_reviewer"]
        if not reviews:
            held = self._scalar(
                "SELECT reviewer FROM leases WHERE cell_id = ? AND year = ? AND reviewer != ?"
                " AND expires_at > ?", [cell_id, year, first_reviewer, time.time()])
            if held is None:
                self.db.execute("DELETE FROM second_reviews WHERE cell_id = ? AND year = ?",
                                [cell_id, year])
            return
        firsts = [e for e in reviews if e["reviewer"] == first_reviewer]
        first = firsts[-1] if firsts else None
        others = list(dict.fromkeys(e["reviewer"] for e in reviews if e["reviewer"] != first_reviewer))
        second_reviewer = (task["second_reviewer"] if task["second_reviewer"] in others
                           else others[0] if others else None)
        seconds = [e for e in reviews if e["reviewer"] == second_reviewer]
        second = seconds[-1] if seconds else None
        adjudications = [e for e in events if e["source"] == "adjudication"]
        adjudication = adjudications[-1] if adjudications else None
        if adjudication is not None:
            status = "adjudicated"
        elif first is None or second is None:
            status = "pending"
        elif first["label"] == second["label"] and first["label"] in TRAINING_LABELS:
            status = "agreed"
        else:
            status = "disagreed"
        resolved = task["resolved_at"] if status == task["status"] else utc_now()
        self.db.execute(
            "UPDATE second_reviews SET status = ?, first_event_id = ?, first_label = ?,"
            " second_reviewer = ?, second_event_id = ?, second_label = ?,"
            " adjudication_event_id = ?, adjudicated_label = ?, adjudicated_by = ?,"
            " resolved_at = ? WHERE cell_id = ? AND year = ?",
            [status, first["id"] if first else task["first_event_id"],
             first["label"] if first else task["first_label"], second_reviewer,
             second and second["id"], second and second["label"],
             adjudication and adjudication["id"], adjudication and adjudication["label"],
             adjudication and adjudication["reviewer"],
             None if status == "pending" else resolved, cell_id, year])

    # accounts ----------------------------------------------------------------------------------
    def add_account(self, name: str, role: str, password_hash: str) -> dict[str, Any]:
        """Create an account; StoreError when the name is taken in any case (names are never
        reused)."""
        now = utc_now()
        with self.atomic():
            taken = self.account_for_login(name)
            if taken is not None:
                raise StoreError(f"an account named {taken['name']!r} already exists (names "
                                 "ignore case)")
            self.db.execute(
                "INSERT INTO accounts (name, role, password_hash, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)", [name, role, password_hash, now, now])
            return self.account(name)

    def account(self, name: str) -> dict[str, Any] | None:
        """The account of exactly this name (sessions and leases use the exact name)."""
        return self._row("SELECT * FROM accounts WHERE name = ?", [name])

    def account_for_login(self, name: str) -> dict[str, Any] | None:
        """The account whose name equals ``name`` without regard to (ASCII) case."""
        return self._row("SELECT * FROM accounts WHERE name = ? COLLATE NOCASE", [name])

    def accounts(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM accounts ORDER BY name")

    def has_accounts(self) -> bool:
        return bool(self._scalar("SELECT EXISTS (SELECT 1 FROM accounts)"))

    def update_account(self, name: str, *, password_hash: str | None = None,
                       disabled: bool | None = None, end_sessions: bool = True) -> dict[str, Any]:
        """Change an account's password hash and/or disabled flag (StoreError if unknown).

        With ``end_sessions`` its ``session_version`` grows, so its open sessions end.
        """
        with self.atomic():
            if self.account(name) is None:
                raise StoreError(f"no account named {name!r}")
            if password_hash is not None:
                self.db.execute("UPDATE accounts SET password_hash = ? WHERE name = ?",
                                [password_hash, name])
            if disabled is not None:
                self.db.execute("UPDATE accounts SET disabled = ? WHERE name = ?",
                                [int(disabled), name])
            bump = 1 if end_sessions else 0
            self.db.execute("UPDATE accounts SET updated_at = ?,"
                            " session_version = session_version + ? WHERE name = ?",
                            [utc_now(), bump, name])
            if disabled:
                self.db.execute("DELETE FROM leases WHERE reviewer = ?", [name])
            return self.account(name)

    # leases and the review queue ---------------------------------------------------------------
    def queue_candidates(
        self,
        model_version: str,
        year: int,
        strategy: str,
        reviewer: str,
        limit: int,
        *,
        min_score: float | None = None,
        now: float | None = None,
    ) -> list[dict[str, Any]]:
        """Scored, unlabelled cells not leased to another reviewer, in the strategy's order.

        ``uncertainty``: most uncertain first; ``score``: highest score first; ``random``: a
        uniform random order (the indexed ``rand`` column from a random start, wrapping around);
        ``mixed``: the three interleaved by ``MIXED_PATTERN``, each cell once.
        """
        if strategy not in QUEUE_STRATEGIES:
            raise StoreError(f"unknown queue strategy {strategy!r}; expected one of "
                             f"{', '.join(QUEUE_STRATEGIES)}")
        if strategy == "mixed":
            orders = {name: iter(self.queue_candidates(model_version, year, name, reviewer, limit,
                                                       min_score=min_score, now=now))
                      for name in dict.fromkeys(MIXED_PATTERN)}
            mixed: dict[tuple[int, int], dict[str, Any]] = {}
            while len(mixed) < limit and orders:
                for name in MIXED_PATTERN:
                    for row in orders.get(name, ()):
                        if (row["cell_id"], row["year"]) not in mixed:
                            mixed[(row["cell_id"], row["year"])] = row
                            break
                    else:
                        orders.pop(name, None)
                    if len(mixed) >= limit:
                        break
            return list(mixed.values())
        now = time.time() if now is None else now
        where = (
            "s.model_version = :model AND s.year = :year AND s.score IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM current_labels c WHERE c.cell_id = s.cell_id"
            " AND c.year = s.year)"
            " AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.cell_id = s.cell_id"
            " AND l.year = s.year AND l.expires_at > :now AND l.reviewer != :reviewer)"
            f"{self._not_outside()}"
        )
        params: dict[str, Any] = {"model": model_version, "year": year, "now": now,
                                  "reviewer": reviewer, "limit": limit}
        if min_score is not None:
            where += " AND s.score >= :min_score"
            params["min_score"] = min_score
        select = "SELECT s.* FROM scores s"
        if strategy == "uncertainty":
            return self._rows(f"{select} WHERE {where} ORDER BY s.uncertainty DESC LIMIT :limit",
                              params)
        if strategy == "score":
            return self._rows(f"{select} WHERE {where} ORDER BY s.score DESC LIMIT :limit", params)
        params["start"] = random.random()
        rows = self._rows(
            f"{select} WHERE {where} AND s.rand >= :start ORDER BY s.rand LIMIT :limit", params)
        if len(rows) < limit:
            params["limit"] = limit - len(rows)
            rows += self._rows(
                f"{select} WHERE {where} AND s.rand < :start ORDER BY s.rand LIMIT :limit", params)
        return rows

    def unreviewed_scores(
        self, model_version: str, year: int, cell_ids: Sequence[int], reviewer: str, *,
        min_score: float | None = None, now: float | None = None,
    ) -> list[dict[str, Any]]:
        """The score rows of those ``cell_ids`` that ``queue_candidates`` could serve: scored,
        unlabelled, not outside the territory, not under another reviewer's live lease (in no
        particular order)."""
        now = time.time() if now is None else now
        # CROSS JOIN: look each given cell up by the primary key (cell_id, year, model_version)
        # instead of scanning the year's scores.
        sql = ("SELECT s.* FROM json_each(:ids) j CROSS JOIN scores s ON s.cell_id = j.value"
               " AND s.year = :year AND s.model_version = :model WHERE s.score IS NOT NULL"
               " AND NOT EXISTS (SELECT 1 FROM current_labels c WHERE c.cell_id = s.cell_id"
               " AND c.year = s.year)"
               " AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.cell_id = s.cell_id"
               " AND l.year = s.year AND l.expires_at > :now AND l.reviewer != :reviewer)"
               f"{self._not_outside()}")
        params: dict[str, Any] = {"model": model_version, "year": int(year), "now": now,
                                  "reviewer": reviewer,
                                  "ids": json.dumps([int(c) for c in cell_ids])}
        if min_score is not None:
            sql += " AND s.score >= :min_score"
            params["min_score"] = min_score
        return self._rows(sql, params)

    def lease_cells(
        self, cells: Iterable[tuple[int, int]], reviewer: str, seconds: float,
        *, now: float | None = None, shown: tuple[int, int] | None = None,
    ) -> list[tuple[int, int]]:
        """Lease (cell_id, year) pairs to a reviewer; returns the pairs actually leased.

        A pair leased to someone else and not yet expired is left alone. Renewing one's own
        lease keeps what it recorded; a lease taken over from someone else starts afresh.
        ``shown`` names the pair whose card the reviewer sees now: unless its lease already
        recorded a showing, it records the moment and the active model's score and version
        (the audit fields of the decision that follows).
        """
        now = time.time() if now is None else now
        leased: list[tuple[int, int]] = []
        with self.atomic():
            for cell_id, year in cells:
                holder = self._row(
                    "SELECT reviewer, expires_at FROM leases WHERE cell_id = ? AND year = ?",
                    [cell_id, year])
                if holder and holder["reviewer"] != reviewer and holder["expires_at"] > now:
                    continue
                if holder and holder["reviewer"] == reviewer:
                    self.db.execute("UPDATE leases SET expires_at = ? WHERE cell_id = ?"
                                    " AND year = ?", [now + seconds, cell_id, year])
                else:
                    self.db.execute(
                        "INSERT OR REPLACE INTO leases (cell_id, year, reviewer, expires_at)"
                        " VALUES (?, ?, ?, ?)", [cell_id, year, reviewer, now + seconds])
                leased.append((int(cell_id), int(year)))
            if shown is not None and (int(shown[0]), int(shown[1])) in leased:
                self.db.execute(
                    "UPDATE leases SET shown_at = ?, model_version_shown = (SELECT version"
                    " FROM models WHERE active = 1), score_shown = (SELECT s.score FROM scores s"
                    " JOIN models m ON m.version = s.model_version AND m.active = 1"
                    " WHERE s.cell_id = leases.cell_id AND s.year = leases.year)"
                    " WHERE cell_id = ? AND year = ? AND shown_at IS NULL",
                    [now, shown[0], shown[1]])
        return leased

    def lease(self, cell_id: int, year: int) -> dict[str, Any] | None:
        """The lease row of a cell-year (live or expired), if any."""
        return self._row("SELECT * FROM leases WHERE cell_id = ? AND year = ?", [cell_id, year])

    def release_leases(self, reviewer: str) -> None:
        with self.atomic():
            self.db.execute("DELETE FROM leases WHERE reviewer = ?", [reviewer])

    def lease_holder(self, cell_id: int, year: int, *, now: float | None = None) -> str | None:
        """Who holds an unexpired lease on a cell-year, if anyone."""
        now = time.time() if now is None else now
        return self._scalar(
            "SELECT reviewer FROM leases WHERE cell_id = ? AND year = ? AND expires_at > ?",
            [cell_id, year, now])

    def count_queue(self, model_version: str, year: int, *, min_score: float | None = None) -> int:
        """Scored cells of a year that have no current label yet."""
        sql = ("SELECT count(*) FROM scores s WHERE s.model_version = ? AND s.year = ?"
               " AND s.score IS NOT NULL AND NOT EXISTS (SELECT 1 FROM current_labels c"
               " WHERE c.cell_id = s.cell_id AND c.year = s.year)"
               f"{self._not_outside()}")
        params: list[Any] = [model_version, year]
        if min_score is not None:
            sql += " AND s.score >= ?"
            params.append(min_score)
        return int(self._scalar(sql, params))

    def ordered_queue(
        self, model_version: str, year: int, strategy: str, reviewer: str, limit: int, *,
        min_score: float | None = None, now: float | None = None, start: float | None = None,
    ) -> list[dict[str, Any]]:
        """``queue_candidates`` for the ordered strategies (uncertainty, score), built for speed.

        The skipping (labelled cells, others' live leases) reads only the strategy's index
        (covering, no table lookups), and ``start`` (inclusive) lets the scan begin at an order
        value instead of the top, past a prefix known to be labelled (see
        ``review.service.next_cards``). Score rows of the hits are fetched afterwards. Cells
        under another reviewer's live lease are returned too, flagged ``leased_to_other`` (the
        limit grows by the number of such leases), so the caller sees where the unlabelled part
        of the order begins; it must not serve them.
        """
        column = {"uncertainty": "uncertainty", "score": "score"}.get(strategy)
        if column is None:
            raise StoreError(f"ordered_queue orders by uncertainty or score, not {strategy!r}")
        now = time.time() if now is None else now
        params: dict[str, Any] = {"model": model_version, "year": year, "now": now,
                                  "reviewer": reviewer, "limit": limit}
        where = (f"s.model_version = :model AND s.year = :year AND s.{column} IS NOT NULL"
                 " AND NOT EXISTS (SELECT 1 FROM current_labels c WHERE c.cell_id = s.cell_id"
                 f" AND c.year = s.year){self._not_outside()}")
        if start is not None:
            where += f" AND s.{column} <= :start"
            params["start"] = start
        if min_score is not None:
            where += " AND s.score >= :min_score"
            params["min_score"] = min_score
        params["limit"] = limit + int(self._scalar(
            "SELECT count(*) FROM leases WHERE year = ? AND expires_at > ? AND reviewer != ?",
            [year, now, reviewer]))
        return self._rows(
            f"SELECT s.*, EXISTS (SELECT 1 FROM leases l WHERE l.cell_id = s.cell_id"
            " AND l.year = s.year AND l.expires_at > :now AND l.reviewer != :reviewer)"
            f" AS leased_to_other FROM (SELECT s.cell_id AS cid, s.{column} AS k FROM scores s"
            f" INDEXED BY scores_by_{column} WHERE {where} ORDER BY s.{column} DESC"
            " LIMIT :limit) q JOIN scores s ON s.cell_id = q.cid AND s.year = :year"
            " AND s.model_version = :model WHERE s.score IS NOT NULL ORDER BY q.k DESC",
            params,
        )

    def count_queue_fast(
        self, model_version: str, year: int, *, min_score: float | None = None
    ) -> int:
        """``count_queue`` computed as (scored cells) - (labelled scored cells).

        The first count reads only the covering score index, the second walks the year's
        current labels (``current_labels_year``) with one score lookup each; about 10x faster
        than the anti-join on 1.3 million cells.
        """
        extra = " AND score >= :min_score" if min_score is not None else ""
        params = {"model": model_version, "year": year, "min_score": min_score}
        scored = self._scalar(
            "SELECT count(*) FROM scores s INDEXED BY scores_by_score WHERE model_version = :model"
            f" AND year = :year AND score IS NOT NULL{self._not_outside()}{extra}", params)
        labelled = self._scalar(  # the year's labels first, whatever the statistics say
            "SELECT count(*) FROM current_labels c INDEXED BY current_labels_year CROSS JOIN"
            " scores s ON s.cell_id = c.cell_id"
            " AND s.year = c.year AND s.model_version = :model WHERE c.year = :year"
            f" AND s.score IS NOT NULL{self._not_outside()}"
            + (" AND s.score >= :min_score" if extra else ""), params)
        return int(scored) - int(labelled)

    def label_event_by_request(self, request_id: str) -> dict[str, Any] | None:
        """The label or undo event stored under an idempotency key, if any."""
        return self._row("SELECT * FROM label_events WHERE request_id = ?", [request_id])

    def leased_to(
        self, model_version: str, year: int, reviewer: str, *,
        min_score: float | None = None, now: float | None = None,
    ) -> list[dict[str, Any]]:
        """Score rows of the unlabelled cells of ``year`` with a live lease held by ``reviewer``.

        These are the cards already served (prefetched) to the reviewer; the queue serves them
        again before new ones, so prefetched thumbnails are the next cards shown. The plan is
        fixed (``INDEXED BY leases_reviewer``, ``CROSS JOIN``: the reviewer's few leases first,
        then one score lookup each), so it does not depend on ANALYZE statistics: without them
        SQLite may walk the year's whole score index instead (55-700 ms at 1.3 M cells).
        """
        now = time.time() if now is None else now
        sql = ("SELECT s.* FROM leases l INDEXED BY leases_reviewer CROSS JOIN scores s"
               " ON s.cell_id = l.cell_id"
               " AND s.year = l.year AND s.model_version = ?"
               " WHERE l.reviewer = ? AND l.year = ? AND l.expires_at > ? AND s.score IS NOT NULL"
               " AND NOT EXISTS (SELECT 1 FROM current_labels c WHERE c.cell_id = s.cell_id"
               " AND c.year = s.year)")
        params: list[Any] = [model_version, reviewer, year, now]
        if min_score is not None:
            sql += " AND s.score >= ?"
            params.append(min_score)
        return self._rows(sql, params)

    def import_label_events(self, rows: Iterable[dict[str, Any]]) -> int:
        """Bulk-append label decisions (kind 'label') and set each cell's current label.

        For imports and benchmarks: rows are dicts with cell_id, year, label, reviewer and
        optionally created_at, score_shown, model_version_shown, ms_spent, request_id, source.
        Rows are applied in order (a later row for the same cell-year wins). One transaction.
        Rejected cells that the models shown (or the active model) predict become hard
        negatives (``record_predicted_rejections``).
        """
        count = 0
        shown: set[str] = set()
        with self.atomic():
            for row in rows:
                if row.get("model_version_shown"):
                    shown.add(row["model_version_shown"])
                if row["label"] not in LABELS:
                    raise InvalidLabelError(f"unknown label {row['label']!r}")
                created = row.get("created_at") or utc_now()
                cursor = self.db.conn.execute(
                    "INSERT INTO label_events (cell_id, year, kind, label, reviewer, created_at,"
                    " score_shown, model_version_shown, ms_spent, request_id, source)"
                    " VALUES (?, ?, 'label', ?, ?, ?, ?, ?, ?, ?, ?)",
                    [row["cell_id"], row["year"], row["label"], row["reviewer"], created,
                     row.get("score_shown"), row.get("model_version_shown"),
                     row.get("ms_spent"), row.get("request_id"), row.get("source", "review")],
                )
                self.db.conn.execute(
                    "INSERT OR REPLACE INTO current_labels (cell_id, year, label, event_id,"
                    " reviewer, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    [row["cell_id"], row["year"], row["label"], cursor.lastrowid,
                     row["reviewer"], created],
                )
                count += 1
            active = self.active_model()
            for version in sorted(shown | ({active["version"]} if active else set())):
                self.record_predicted_rejections(version)
        return count

    # retrain cycles ----------------------------------------------------------------------------
    def start_cycle(self, parent_model: str | None) -> int:
        """Record a new running cycle; CycleRunningError when one is already running."""
        running = self.running_cycle()  # also fails a cycle whose worker died
        try:
            if running is not None:
                raise sqlite3.IntegrityError("a cycle is running")
            with self.atomic():
                cursor = self.db.execute(
                    "INSERT INTO cycles (status, stage, started_at, parent_model)"
                    " VALUES ('running', 'queued', ?, ?)",
                    [utc_now(), parent_model],
                )
        except sqlite3.IntegrityError as error:
            running = self.running_cycle()
            since = running["started_at"] if running else "?"
            raise CycleRunningError(f"a retrain cycle is already running (since {since})") from error
        return int(cursor.lastrowid)

    def update_cycle(self, cycle_id: int, **fields: Any) -> None:
        """Set columns of a cycle (stage, progress, message, metrics, ...)."""
        if not fields:
            return
        values = {key: _encode(value) for key, value in fields.items()}
        assignments = ", ".join(f"{key} = :{key}" for key in values)
        with self.atomic():
            self.db.execute(f"UPDATE cycles SET {assignments} WHERE id = :cycle_id",
                            {**values, "cycle_id": cycle_id})

    def finish_cycle(self, cycle_id: int, status: str, **fields: Any) -> None:
        """Mark a cycle succeeded or failed."""
        if status not in ("succeeded", "failed"):
            raise StoreError(f"a cycle finishes as succeeded or failed, not {status!r}")
        self.update_cycle(cycle_id, status=status, finished_at=utc_now(), **fields)

    def cycle(self, cycle_id: int) -> dict[str, Any] | None:
        return self._row("SELECT * FROM cycles WHERE id = ?", [cycle_id])

    def cycles(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM cycles ORDER BY id")

    def running_cycle(self) -> dict[str, Any] | None:
        """The running cycle, if any. A cycle whose worker process (``pid``, on this machine)
        has died, or that got no worker within ``WORKER_START_GRACE_S``, is marked failed
        first, so it never blocks the next one."""
        row = self._row("SELECT * FROM cycles WHERE status = 'running'")
        if row is None:
            return None
        why = _dead_worker(row)
        if why:
            self.finish_cycle(row["id"], "failed", message=f"interrupted: {why}")
            return None
        return row

    # background jobs (exports, reports) ------------------------------------------------------
    def start_job(self, kind: str, params: dict[str, Any], requested_by: str | None) -> int:
        """Record a running job (its worker's pid comes with ``update_job``)."""
        with self.atomic():
            cursor = self.db.execute(
                "INSERT INTO jobs (kind, params, status, started_at, requested_by)"
                " VALUES (?, ?, 'running', ?, ?)",
                [kind, json.dumps(params), utc_now(), requested_by])
        return int(cursor.lastrowid)

    def update_job(self, job_id: int, **fields: Any) -> None:
        """Set columns of a job (progress, message, pid, output, ...)."""
        if not fields:
            return
        values = {key: _encode(value) for key, value in fields.items()}
        assignments = ", ".join(f"{key} = :{key}" for key in values)
        with self.atomic():
            self.db.execute(f"UPDATE jobs SET {assignments} WHERE id = :job_id",
                            {**values, "job_id": job_id})

    def finish_job(self, job_id: int, status: str, **fields: Any) -> None:
        """Mark a job succeeded or failed."""
        if status not in ("succeeded", "failed"):
            raise StoreError(f"a job finishes as succeeded or failed, not {status!r}")
        self.update_job(job_id, status=status, finished_at=utc_now(), **fields)

    def job(self, job_id: int) -> dict[str, Any] | None:
        return self._row("SELECT * FROM jobs WHERE id = ?", [job_id])

    def jobs(self, kind: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The newest jobs first (of one ``kind`` when given)."""
        where = "WHERE kind = ?" if kind else ""
        return self._rows(f"SELECT * FROM jobs {where} ORDER BY id DESC LIMIT ?",
                          [kind, limit] if kind else [limit])

    def fail_dead_jobs(self) -> list[int]:
        """Mark failed every running job whose worker died or never started; their ids."""
        failed = []
        for row in self._rows("SELECT * FROM jobs WHERE status = 'running'"):
            why = _dead_worker(row)
            if why:
                self.finish_job(row["id"], "failed", message=f"interrupted: {why}")
                failed.append(row["id"])
        return failed

    def finished_jobs_before(self, before: str) -> list[dict[str, Any]]:
        """Finished jobs that ended before the ISO time ``before``."""
        return self._rows("SELECT * FROM jobs WHERE status != 'running' AND finished_at < ?"
                          " ORDER BY id", [before])

    def delete_job(self, job_id: int) -> None:
        with self.atomic():
            self.db.execute("DELETE FROM jobs WHERE id = ?", [job_id])

    # territory, protected areas and analyses ---------------------------------------------------
    def replace_territory(self, record: dict[str, Any], inside: Iterable[tuple[int, int]]) -> int:
        """Store the territory (replacing any earlier one) and, per cell, whether its centre lies
        inside (``(cell_id, 1 or 0)`` pairs), in one transaction; returns the territory id.

        ``record``: name, source, selection, crs, geometry (WKB), area_km2, n_features.
        """
        values = dict(record)
        values.setdefault("loaded_at", utc_now())
        with self.atomic():
            self.db.execute("DELETE FROM territories")
            self.db.execute("DELETE FROM territory_cells")
            columns = ", ".join(values)
            placeholders = ", ".join(f":{key}" for key in values)
            cursor = self.db.execute(
                f"INSERT INTO territories ({columns}) VALUES ({placeholders})", values)
            self.classify_cells(inside)
        return int(cursor.lastrowid)

    def territory(self) -> dict[str, Any] | None:
        """The loaded territory (with its WKB geometry), or None."""
        return self._row("SELECT * FROM territories ORDER BY id DESC LIMIT 1")

    def classify_cells(self, inside: Iterable[tuple[int, int]]) -> None:
        """Record (cell_id, inside) pairs for the loaded territory (1: centre inside, 0: outside)."""
        with self.atomic():
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO territory_cells (cell_id, inside) VALUES (?, ?)",
                ((int(c), int(bool(i))) for c, i in inside))

    def unclassified_cells(self) -> list[int]:
        """Ids of cells not yet classified against the territory (e.g. ingested after it)."""
        return [row[0] for row in self.db.execute(
            "SELECT id FROM cells c WHERE NOT EXISTS (SELECT 1 FROM territory_cells t"
            " WHERE t.cell_id = c.id) ORDER BY id").fetchall()]

    def count_territory_cells(self) -> dict[str, int]:
        """How many cells have their centre inside and outside the territory."""
        row = self._row("SELECT coalesce(sum(inside), 0) AS inside,"
                        " coalesce(sum(1 - inside), 0) AS outside FROM territory_cells")
        return {"inside": int(row["inside"]), "outside": int(row["outside"])}

    def replace_protected_areas(self, rows: Iterable[dict[str, Any]]) -> int:
        """Replace every protected area by ``rows`` (name, designation, source, geometry WKB,
        area_km2) in one transaction; returns how many."""
        now = utc_now()
        values = [(r["name"], r.get("designation"), r["source"], r["geometry"],
                   float(r["area_km2"]), now) for r in rows]
        with self.atomic():
            self.db.execute("DELETE FROM protected_areas")
            self.db.conn.executemany(
                "INSERT INTO protected_areas (name, designation, source, geometry, area_km2,"
                " loaded_at) VALUES (?, ?, ?, ?, ?, ?)", values)
        return len(values)

    def protected_areas(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM protected_areas ORDER BY id")

    def cell_statuses(
        self,
        model_version: str,
        year: int,
        threshold: float,
        *,
        statuses: Sequence[str] | None = None,
        bounds: tuple[float, float, float, float] | None = None,
        inside_only: bool = False,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Every cell of a year with its status for a model version and threshold.

        ``confirmed``: the effective review label (see ``reviewed_labels``) is mine;
        ``rejected``: reviewed background with score >= threshold; ``predicted``: score >=
        threshold, not reviewed (no label, skip, or two reviewers disagree and no lead decided);
        ``background``: everything else (score below threshold or not scored). Cells labelled mine
        that the model did not score are included as confirmed. Rows: cell_id, row, col, lon,
        lat, score, uncertainty, label, inside (1, 0, or None: not classified / no territory),
        status. ``bounds`` (west, south, east, north) filters cell centres; ``inside_only`` drops
        cells marked outside the territory; ``limit`` keeps the highest scores (confirmed first).
        """
        sql, params = _cell_status_query(model_version, year, threshold, statuses=statuses,
                                         bounds=bounds, inside_only=inside_only, limit=limit)
        return self._rows(sql, params)

    def iter_cell_statuses(self, model_version: str, year: int, threshold: float, *,
                           inside_only: bool = False,
                           chunk_rows: int = 50_000) -> Iterator[list[dict[str, Any]]]:
        """``cell_statuses`` in chunks of ``chunk_rows`` rows read from one cursor, so a caller
        that writes each chunk away holds one chunk at a time (exports of millions of cells)."""
        sql, params = _cell_status_query(model_version, year, threshold, inside_only=inside_only)
        cursor = self.db.conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        while rows := cursor.fetchmany(chunk_rows):
            yield [dict(zip(names, row, strict=True)) for row in rows]

    def cells_in_range(self, row0: int, row1: int, col0: int, col1: int) -> list[int]:
        """Ids of the registered cells with ``row0 <= row < row1`` and ``col0 <= col < col1``."""
        rows = self.db.execute(
            "SELECT id FROM cells WHERE row >= ? AND row < ? AND col >= ? AND col < ? ORDER BY id",
            [row0, row1, col0, col1],
        ).fetchall()
        return [r[0] for r in rows]

    def cell_ids(self) -> list[int]:
        """Every cell id, in order."""
        return [row[0] for row in self.db.execute("SELECT id FROM cells ORDER BY id").fetchall()]
