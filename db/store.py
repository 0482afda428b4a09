"""The MineWatch store: the one module that writes SQL.

``Store`` owns the one connection, its transactions and the migrations; each concern of the
database is a small class in its own module of ``db/`` (a ``db.base.Part``), reached as an
attribute of the store, the way sqlite-utils gives each table its object::

    store.cells       db/cells.py          cells of the grid
    store.scenes      db/scenes.py         scenes, year mosaics and their source files
    store.models      db/models.py         the model registry
    store.scores      db/scores.py         scores, scored blocks, summaries, pruning
    store.embeddings  db/embeddings.py     embeddings of scored cells
    store.labels      db/labels.py         seed labels, label history, current labels,
                                           hard negatives
    store.second_review  db/second_review.py  second-review tasks and policy
    store.accounts    db/accounts.py       accounts
    store.leases      db/leases.py         leases and the review queue
    store.cycles      db/cycles.py         retrain cycles
    store.jobs        db/jobs.py           background jobs
    store.territory   db/territory.py      territory, protected areas, cell statuses

Every value is a parameter; one user action is one transaction (``Store.atomic``, shared by
every part). Connections use WAL and a busy timeout so reviewers and a background retrain job
never meet "database is locked". A web request opens one ``Store`` and closes it at teardown;
background jobs open their own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from db.accounts import Accounts
from db.base import (
    _NOT_OUTSIDE,
    LABELS,
    TRAINING_LABELS,
    WORKER_START_GRACE_S,
    CycleRunningError,
    InvalidLabelError,
    StoreError,
    UnknownCellError,
    _decode,
    process_alive,
    utc_now,
)
from db.cells import Cells
from db.cycles import Cycles
from db.embeddings import Embeddings
from db.jobs import Jobs
from db.labels import Labels
from db.leases import MIXED_PATTERN, QUEUE_STRATEGIES, Leases
from db.migrations import migrations
from db.models import Models
from db.scenes import Scenes
from db.scores import Scores
from db.second_review import REVIEW_STATES, SecondReview
from db.territory import Territory

__all__ = [
    "BUSY_TIMEOUT_MS", "LABELS", "MIXED_PATTERN", "QUEUE_STRATEGIES", "REVIEW_STATES",
    "TRAINING_LABELS", "WORKER_START_GRACE_S", "CycleRunningError", "InvalidLabelError", "Store",
    "StoreError", "UnknownCellError", "process_alive", "utc_now",
]

BUSY_TIMEOUT_MS = 30_000


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
        self.cells = Cells(self)
        self.scenes = Scenes(self)
        self.models = Models(self)
        self.scores = Scores(self)
        self.embeddings = Embeddings(self)
        self.labels = Labels(self)
        self.second_review = SecondReview(self)
        self.accounts = Accounts(self)
        self.leases = Leases(self)
        self.cycles = Cycles(self)
        self.jobs = Jobs(self)
        self.territory = Territory(self)

    def close(self) -> None:
        """Close the connection."""
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
