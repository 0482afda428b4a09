"""Scenes and year mosaics: the imagery rows scores point to, and their source files."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from db.base import Part, _encode, utc_now


class Scenes(Part):
    """The scenes and scene_files tables."""

    def add_scene(self, record: dict[str, Any]) -> int:
        """Register a scene (or update the one with the same paths); returns its id."""
        values = {key: _encode(value) for key, value in record.items()}
        values.setdefault("ingested_at", utc_now())
        with self.atomic():
            existing = self._scalar("SELECT id FROM scenes WHERE paths = ?", [values["paths"]])
            if existing is not None:
                assignments = ", ".join(f"{key} = :{key}" for key in values)
                self.db.execute(f"UPDATE scenes SET {assignments} WHERE id = :id",
                                {**values, "id": existing})
                return int(existing)
            columns = ", ".join(values)
            placeholders = ", ".join(f":{key}" for key in values)
            cursor = self.db.execute(
                f"INSERT INTO scenes ({columns}) VALUES ({placeholders})", values
            )
            return int(cursor.lastrowid)

    def scene(self, scene_id: int) -> dict[str, Any] | None:
        """The scene row (JSON columns decoded), or None."""
        return self._row("SELECT * FROM scenes WHERE id = ?", [scene_id])

    def scenes(self, year: int | None = None) -> list[dict[str, Any]]:
        """Every scene (of ``year`` when given), by year and id."""
        if year is None:
            return self._rows("SELECT * FROM scenes ORDER BY year, id")
        return self._rows("SELECT * FROM scenes WHERE year = ? ORDER BY id", [year])

    def years(self) -> list[int]:
        """Years that have at least one scene."""
        return [row["year"] for row in self._rows("SELECT DISTINCT year FROM scenes ORDER BY year")]

    def replace_year_mosaic(self, record: dict[str, Any], files: Iterable[dict[str, Any]],
                            blocks: Iterable[tuple[int, int]] = ()) -> int:
        """Register (or update) a year's mosaic row and append the source files just ingested.

        ``blocks`` are the (row0, col0) of the store blocks the files wrote: every model
        version's mark that it scored them is cleared, so the next scoring run scores exactly
        those blocks again. Rows of the same year left by installations before the imagery store
        (one per source file) are folded into the mosaic row: their scores point to it and they
        are deleted. Returns the mosaic row's id.
        """
        with self.atomic():
            scene_id = self.add_scene(record)
            self.db.conn.executemany(
                "DELETE FROM scored_blocks WHERE year = ? AND row0 = ? AND col0 = ?",
                [(record["year"], int(row0), int(col0)) for row0, col0 in blocks])
            self.db.execute("UPDATE scores SET scene_id = ? WHERE year = ? AND scene_id != ?",
                            [scene_id, record["year"], scene_id])
            self.db.execute("DELETE FROM scenes WHERE year = ? AND id != ?",
                            [record["year"], scene_id])
            now = utc_now()
            for row in files:
                values = {key: _encode(value) for key, value in row.items()}
                values.update(scene_id=scene_id, year=record["year"], ingested_at=now)
                columns = ", ".join(values)
                placeholders = ", ".join(f":{key}" for key in values)
                self.db.execute(f"INSERT INTO scene_files ({columns}) VALUES ({placeholders})",
                                values)
        return scene_id

    def scene_files(self, year: int | None = None) -> list[dict[str, Any]]:
        """The source files ingested into the year's mosaic (every year when None), oldest first."""
        if year is None:
            return self._rows("SELECT * FROM scene_files ORDER BY year, id")
        return self._rows("SELECT * FROM scene_files WHERE year = ? ORDER BY id", [year])

    def scenes_covering(self, cell_id: int, year: int) -> list[dict[str, Any]]:
        """Scenes of ``year`` whose cell range contains the cell, newest first."""
        row, col = divmod(int(cell_id), 100_000)
        return self._rows(
            "SELECT * FROM scenes WHERE year = ? AND row0 <= ? AND ? < row1 AND col0 <= ? AND ? < col1"
            " ORDER BY id DESC",
            [year, row, row, col, col],
        )
