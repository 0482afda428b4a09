"""What every part of the store shares: its errors, label values, SQL fragments and ``Part``.

Each concern of the database (cells, scenes, models, scores, labels, leases, ...) is a ``Part``:
a small class over the one ``db.store.Store`` connection, reached as an attribute of the store
(``store.labels.record_label(...)``), whose writes run in the store's transaction.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database

if TYPE_CHECKING:
    from db.store import Store

LABELS: tuple[str, ...] = ("mine", "background", "skip")
TRAINING_LABELS: tuple[str, ...] = ("mine", "background")
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
_JSON_COLUMNS = frozenset(
    {"paths", "bands", "stretch", "metrics", "training", "history", "predicted_mines", "params"}
)
#: Seconds a running cycle or job may go without a recorded worker pid (the moment between
#: recording it and starting its process) before it counts as a worker that never started.
WORKER_START_GRACE_S = 120.0


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


def _encode(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list | tuple) else value


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


class Part:
    """One concern of the database over the store's connection (``store.<concern>``).

    Reads and writes go through the store: its connection (``db``), its transaction
    (``atomic``: one user action is one transaction, whichever parts it touches) and its
    shared SQL helpers. A call into another concern goes through the store's attribute
    (``self.store.second_review._sync_second_review(...)``).
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def db(self) -> Database:
        """The store's sqlite-utils database (its one connection)."""
        return self.store.db

    def atomic(self) -> AbstractContextManager[Store]:
        """The store's write transaction (``Store.atomic``)."""
        return self.store.atomic()

    def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        return self.store._rows(sql, params)

    def _row(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> dict[str, Any] | None:
        return self.store._row(sql, params)

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.store._scalar(sql, params)

    def _not_outside(self) -> str:
        return self.store._not_outside()
