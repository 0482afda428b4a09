"""Retrain cycles: one running at a time, its stages and a worker that died failing it."""

from __future__ import annotations

import sqlite3
from typing import Any

from db.base import CycleRunningError, Part, StoreError, _dead_worker, _encode, utc_now


class Cycles(Part):
    """The cycles table."""

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
        """The cycle row, or None."""
        return self._row("SELECT * FROM cycles WHERE id = ?", [cycle_id])

    def cycles(self) -> list[dict[str, Any]]:
        """Every cycle, oldest first."""
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
