"""Second review: the tasks of double-reviewed cell-years, a lead's policy, the team's figures."""

from __future__ import annotations

import time
from typing import Any

from db.base import _LABELS_WITH_REVIEW, _NOT_UNDONE, TRAINING_LABELS, Part, utc_now

#: Review states of a current label, as ``SecondReview.review_state_counts`` names them.
REVIEW_STATES: tuple[str, ...] = ("single", "pending", "agreed", "disagreed", "adjudicated")


class SecondReview(Part):
    """The second_reviews and second_review_policy tables."""

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
