"""The territory, protected areas and cell statuses (confirmed, rejected, predicted, background)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from db.base import _EFFECTIVE_LABEL, _LABELS_WITH_REVIEW, Part, utc_now


def _cell_status_query(
    model_version: str, year: int, threshold: float, *,
    statuses: Sequence[str] | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    inside_only: bool = False, limit: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters of ``Territory.cell_statuses`` (see there)."""
    sql = (
        "SELECT * FROM (SELECT cell_id, row, col, lon, lat, score, uncertainty, label, inside,"
        " CASE WHEN label = 'mine' THEN 'confirmed'"
        " WHEN score >= :thr AND label = 'background' THEN 'rejected'"
        " WHEN score >= :thr THEN 'predicted' ELSE 'background' END AS status"
        f" FROM (SELECT s.cell_id, c.row, c.col, c.lon, c.lat, s.score, s.uncertainty,"
        f" {_EFFECTIVE_LABEL} AS label, t.inside"
        " FROM scores s JOIN cells c ON c.id = s.cell_id"
        " LEFT JOIN current_labels l ON l.cell_id = s.cell_id AND l.year = s.year"
        " LEFT JOIN second_reviews r ON r.cell_id = s.cell_id AND r.year = s.year"
        " LEFT JOIN territory_cells t ON t.cell_id = s.cell_id"
        " WHERE s.model_version = :model AND s.year = :year)"
        " UNION ALL SELECT * FROM (SELECT l.cell_id, c.row, c.col, c.lon, c.lat, NULL, NULL,"
        f" {_EFFECTIVE_LABEL} AS label, t.inside, 'confirmed' FROM {_LABELS_WITH_REVIEW}"
        " JOIN cells c ON c.id = l.cell_id LEFT JOIN territory_cells t ON t.cell_id = l.cell_id"
        " WHERE l.year = :year AND NOT EXISTS (SELECT 1 FROM scores s"
        " WHERE s.cell_id = l.cell_id AND s.year = l.year AND s.model_version = :model))"
        " WHERE label = 'mine') WHERE 1"
    )
    params: dict[str, Any] = {"model": model_version, "year": year, "thr": threshold}
    if statuses is not None:
        names = [f":st{i}" for i in range(len(statuses))]
        sql += f" AND status IN ({', '.join(names) or 'NULL'})"
        params.update({name[1:]: value for name, value in zip(names, statuses, strict=True)})
    if bounds is not None:
        sql += " AND lon BETWEEN :west AND :east AND lat BETWEEN :south AND :north"
        params.update(zip(("west", "south", "east", "north"), map(float, bounds), strict=True))
    if inside_only:
        sql += " AND (inside IS NULL OR inside = 1)"
    if limit is not None:
        sql += (" ORDER BY status = 'confirmed' DESC, coalesce(score, -1) DESC, cell_id"
                " LIMIT :limit")
        params["limit"] = int(limit)
    else:
        sql += " ORDER BY cell_id"
    return sql, params


class Territory(Part):
    """The territories, territory_cells and protected_areas tables, and cell statuses."""

    def replace_territory(self, record: dict[str, Any], inside: Iterable[tuple[int, int]]) -> int:
        """Store the territory (replacing any earlier one) and, per cell, whether its centre lies
        inside (``(cell_id, 1 or 0)`` pairs), in one transaction; returns the territory id.

        ``record``: name, source, selection, crs, geometry (WKB), area_km2, n_features.
        """
        values = dict(record)
        values.setdefault("loaded_at", utc_now())
        with self.atomic():
            self.db.execute("DELETE FROM territories")
            self.db.execute("DELETE FROM territory_cells")
            columns = ", ".join(values)
            placeholders = ", ".join(f":{key}" for key in values)
            cursor = self.db.execute(
                f"INSERT INTO territories ({columns}) VALUES ({placeholders})", values)
            self.classify_cells(inside)
        return int(cursor.lastrowid)

    def territory(self) -> dict[str, Any] | None:
        """The loaded territory (with its WKB geometry), or None."""
        return self._row("SELECT * FROM territories ORDER BY id DESC LIMIT 1")

    def classify_cells(self, inside: Iterable[tuple[int, int]]) -> None:
        """Record (cell_id, inside) pairs for the loaded territory (1: centre inside, 0: outside)."""
        with self.atomic():
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO territory_cells (cell_id, inside) VALUES (?, ?)",
                ((int(c), int(bool(i))) for c, i in inside))

    def unclassified_cells(self) -> list[int]:
        """Ids of cells not yet classified against the territory (e.g. ingested after it)."""
        return [row[0] for row in self.db.execute(
            "SELECT id FROM cells c WHERE NOT EXISTS (SELECT 1 FROM territory_cells t"
            " WHERE t.cell_id = c.id) ORDER BY id").fetchall()]

    def count_territory_cells(self) -> dict[str, int]:
        """How many cells have their centre inside and outside the territory."""
        row = self._row("SELECT coalesce(sum(inside), 0) AS inside,"
                        " coalesce(sum(1 - inside), 0) AS outside FROM territory_cells")
        return {"inside": int(row["inside"]), "outside": int(row["outside"])}

    def replace_protected_areas(self, rows: Iterable[dict[str, Any]]) -> int:
        """Replace every protected area by ``rows`` (name, designation, source, geometry WKB,
        area_km2) in one transaction; returns how many."""
        now = utc_now()
        values = [(r["name"], r.get("designation"), r["source"], r["geometry"],
                   float(r["area_km2"]), now) for r in rows]
        with self.atomic():
            self.db.execute("DELETE FROM protected_areas")
            self.db.conn.executemany(
                "INSERT INTO protected_areas (name, designation, source, geometry, area_km2,"
                " loaded_at) VALUES (?, ?, ?, ?, ?, ?)", values)
        return len(values)

    def protected_areas(self) -> list[dict[str, Any]]:
        """Every protected area (with its WKB geometry), by id."""
        return self._rows("SELECT * FROM protected_areas ORDER BY id")

    def cell_statuses(
        self,
        model_version: str,
        year: int,
        threshold: float,
        *,
        statuses: Sequence[str] | None = None,
        bounds: tuple[float, float, float, float] | None = None,
        inside_only: bool = False,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Every cell of a year with its status for a model version and threshold.

        ``confirmed``: the effective review label (see ``reviewed_labels``) is mine;
        ``rejected``: reviewed background with score >= threshold; ``predicted``: score >=
        threshold, not reviewed (no label, skip, or two reviewers disagree and no lead decided);
        ``background``: everything else (score below threshold or not scored). Cells labelled mine
        that the model did not score are included as confirmed. Rows: cell_id, row, col, lon,
        lat, score, uncertainty, label, inside (1, 0, or None: not classified / no territory),
        status. ``bounds`` (west, south, east, north) filters cell centres; ``inside_only`` drops
        cells marked outside the territory; ``limit`` keeps the highest scores (confirmed first).
        """
        sql, params = _cell_status_query(model_version, year, threshold, statuses=statuses,
                                         bounds=bounds, inside_only=inside_only, limit=limit)
        return self._rows(sql, params)

    def iter_cell_statuses(self, model_version: str, year: int, threshold: float, *,
                           inside_only: bool = False,
                           chunk_rows: int = 50_000) -> Iterator[list[dict[str, Any]]]:
        """``cell_statuses`` in chunks of ``chunk_rows`` rows read from one cursor, so a caller
        that writes each chunk away holds one chunk at a time (exports of millions of cells)."""
        sql, params = _cell_status_query(model_version, year, threshold, inside_only=inside_only)
        cursor = self.db.conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        while rows := cursor.fetchmany(chunk_rows):
            yield [dict(zip(names, row, strict=True)) for row in rows]
