"""Leases and the review queue: the unlabelled cells a reviewer is served, who holds a card."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

from db.base import Part, StoreError

QUEUE_STRATEGIES: tuple[str, ...] = ("uncertainty", "score", "random", "mixed")
#: The "mixed" queue interleaves these orders: half most uncertain, a quarter highest score, a
#: quarter random (an unbiased look at precision). Measured by pipeline/simulate.py (issue 5).
MIXED_PATTERN: tuple[str, ...] = ("uncertainty", "score", "uncertainty", "random")


class Leases(Part):
    """The leases table and the queue queries over scores, labels and leases."""

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
        """Drop every lease the reviewer holds, live or expired."""
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
        ``review.cards.next_cards``). Score rows of the hits are fetched afterwards. Cells
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

    def _release_after_decision(self, cell_id: int, year: int, reviewer: str) -> None:
        """Drop the leases of a cell-year just decided: the decider's, and everyone's unless its
        second review is pending (then a second reviewer may hold the card right now, and a
        change of the first decision must not hand that card to a third reviewer)."""
        task = self.store.second_review.second_review(cell_id, year)
        if task is not None and task["status"] == "pending":
            self.db.execute("DELETE FROM leases WHERE cell_id = ? AND year = ? AND reviewer = ?",
                            [cell_id, year, reviewer])
        else:
            self.db.execute("DELETE FROM leases WHERE cell_id = ? AND year = ?", [cell_id, year])
