"""The 1-km cells: the fixed grid squares every score, label and status joins on."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from db.base import Part, UnknownCellError


class Cells(Part):
    """The cells table."""

    def add_cells(self, cells: Iterable[tuple[int, int, int, float, float]]) -> None:
        """Insert cells given as (id, row, col, lon, lat); cells already present are kept."""
        with self.atomic():
            self.db.conn.executemany(
                "INSERT OR IGNORE INTO cells (id, row, col, lon, lat) VALUES (?, ?, ?, ?, ?)",
                ((int(i), int(r), int(c), float(lo), float(la)) for i, r, c, lo, la in cells),
            )

    def cell(self, cell_id: int) -> dict[str, Any] | None:
        """The cell row (id, row, col, lon, lat), or None."""
        return self._row("SELECT * FROM cells WHERE id = ?", [cell_id])

    def require_cell(self, cell_id: int) -> dict[str, Any]:
        """The cell, or UnknownCellError."""
        cell = self.cell(cell_id)
        if cell is None:
            raise UnknownCellError(f"unknown cell {cell_id}")
        return cell

    def count_cells(self) -> int:
        """How many cells are registered."""
        return int(self._scalar("SELECT count(*) FROM cells"))

    def cells_in_range(self, row0: int, row1: int, col0: int, col1: int) -> list[int]:
        """Ids of the registered cells with ``row0 <= row < row1`` and ``col0 <= col < col1``."""
        rows = self.db.execute(
            "SELECT id FROM cells WHERE row >= ? AND row < ? AND col >= ? AND col < ? ORDER BY id",
            [row0, row1, col0, col1],
        ).fetchall()
        return [r[0] for r in rows]

    def cell_ids(self) -> list[int]:
        """Every cell id, in order."""
        return [row[0] for row in self.db.execute("SELECT id FROM cells ORDER BY id").fetchall()]
