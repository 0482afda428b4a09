"""Scores per cell, year and model version; scored blocks (resumable scoring), kept per-year
summaries and pruning."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from db.base import _NOT_OUTSIDE, Part, StoreError, utc_now

if TYPE_CHECKING:  # model.score loads TensorFlow; the store only needs its arrays
    from model.score import CellScores


class Scores(Part):
    """The scores, scored_blocks and score_summaries tables."""

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
        """Years with score rows of ``model_version``, in order."""
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
        """The score row of a cell, year and model version, or None."""
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
                self.store.embeddings._write_embeddings(year, model_version, cells)
                written += len(cells)
        return written

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
            model = self.store.models.model(version)
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
