"""The model registry: versions, the one active model, pending models of a running cycle."""

from __future__ import annotations

from typing import Any

from db.base import Part, StoreError, _encode, utc_now


class Models(Part):
    """The models table (and, on delete, every row keyed by a model version)."""

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
        """The active model's row, or None."""
        return self._row("SELECT * FROM models WHERE active = 1")

    def models(self) -> list[dict[str, Any]]:
        """Every ready model, oldest first (pending ones are a running or dead cycle's)."""
        return self._rows("SELECT * FROM models WHERE state = 'ready' ORDER BY created_at, version")

    def pending_models(self) -> list[dict[str, Any]]:
        """Models still pending (a running cycle's, or a dead one's), by version."""
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
