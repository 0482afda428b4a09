"""Labels: seed labels, the append-only label history with undo, current labels, hard negatives
and the training set they make."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from db.base import (
    _EFFECTIVE_LABEL,
    _LABELS_WITH_REVIEW,
    _NOT_UNDONE,
    _SECOND_REVIEW_JOIN,
    LABELS,
    TRAINING_LABELS,
    InvalidLabelError,
    Part,
    StoreError,
    utc_now,
)


def _prefix_end(prefix: str) -> str:
    """The smallest string above every string that starts with ``prefix`` (a non-empty one)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Labels(Part):
    """The seed_labels, label_events, current_labels and hard_negatives tables."""

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

    def seed_labels(self, year: int | None = None) -> list[dict[str, Any]]:
        """The seed labels of ``year`` (every year when None), by year and cell."""
        if year is None:
            return self._rows("SELECT * FROM seed_labels ORDER BY year, cell_id")
        return self._rows("SELECT * FROM seed_labels WHERE year = ? ORDER BY cell_id", [year])

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
            self.store.cells.require_cell(cell_id)
            cursor = self.db.execute(
                "INSERT INTO label_events (cell_id, year, kind, label, reviewer, created_at,"
                " score_shown, model_version_shown, ms_spent, request_id, source)"
                " VALUES (?, ?, 'label', ?, ?, ?, ?, ?, ?, ?, ?)",
                [cell_id, year, label, reviewer, utc_now(), score_shown, model_version_shown,
                 ms_spent, request_id, source],
            )
            self._refresh_current_label(cell_id, year)
            self.store.second_review._sync_second_review(cell_id, year)
            self.store.leases._release_after_decision(cell_id, year, reviewer)
            event = self.label_event(int(cursor.lastrowid))
            self._keep_rejection(event)
            return event

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
            self.store.second_review._sync_second_review(target["cell_id"], target["year"])
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

    def _keep_rejection(self, event: dict[str, Any]) -> None:
        """Record a background decision on a cell the shown model (else the active one) predicted
        as a mine as a hard negative of that model version."""
        if event["label"] != "background":
            return
        version, score = event["model_version_shown"], event["score_shown"]
        if version is None:
            active = self.store.models.active_model()
            row = (self.store.scores.score(event["cell_id"], event["year"], active["version"])
                   if active else None)
            version, score = (active["version"], row["score"]) if row else (None, None)
        model = self.store.models.model(version) if version is not None else None
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
        """The label or undo event with this id, or None."""
        return self._row("SELECT * FROM label_events WHERE id = ?", [event_id])

    def current_label(self, cell_id: int, year: int) -> dict[str, Any] | None:
        """The current label row of a cell-year, or None."""
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

    def label_event_by_request(self, request_id: str) -> dict[str, Any] | None:
        """The label or undo event stored under an idempotency key, if any."""
        return self._row("SELECT * FROM label_events WHERE request_id = ?", [request_id])

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
            active = self.store.models.active_model()
            for version in sorted(shown | ({active["version"]} if active else set())):
                self.record_predicted_rejections(version)
        return count
