"""Pooled uint8 embeddings of scored cells, per model version and year ('More like this')."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from db.base import Part

if TYPE_CHECKING:  # model.score loads TensorFlow; the store only needs its arrays
    from model.score import CellScores


class Embeddings(Part):
    """The embeddings table."""

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
