"""Background jobs (exports, reports): their rows, progress and workers that died."""

from __future__ import annotations

import json
from typing import Any

from db.base import Part, StoreError, _dead_worker, _encode, utc_now


class Jobs(Part):
    """The jobs table."""

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
        """The job row, or None."""
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
        """Forget a job row (its output file is the caller's)."""
        with self.atomic():
            self.db.execute("DELETE FROM jobs WHERE id = ?", [job_id])
