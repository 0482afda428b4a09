"""Exports for QGIS and spreadsheets: GeoPackage, GeoJSON and CSV, written with pyogrio.

GeoPackage layers (grid CRS, EPSG:6933 by default; written as GeoPackage 1.2 so that older GDAL,
e.g. Debian's 3.6, opens them without a warning):

- ``cells``: cell footprints with score, uncertainty, label, status, in_territory, year,
  model_version;
- ``mine_points``: one point per confirmed or predicted mine cell (lon, lat, x, y attributes);
- ``mining_area``: the dissolved ``BUFFER_M`` buffers, one multipolygon per year, with km²;
- ``protected_hits``: each protected area per year, with its mine points and mining area;
- ``change``: footprints of cells that were a mine in any year, with their change class.

GeoJSON (RFC 7946, lon/lat) and CSV hold one layer: ``cells`` or ``mine_points``. Cells are read
from one cursor and written ``CHUNK_CELLS`` at a time (GeoPackage layers appended per chunk,
GeoJSON and CSV streamed), so an export of millions of cells keeps its memory bounded; only the
mine cells (points, mining area, change) are held whole. Every file is
written to a temporary file in the target folder and moved into place only when complete, so an
export never leaves a half-written file where a good one was. Cells outside a loaded territory
are left out, like in the report.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio.raw
import shapely

from analysis import AnalysisError
from analysis.area import area_km2, mining_area
from analysis.change import PersistenceRule, change_over_years
from analysis.protected import protected_areas, protected_hits
from analysis.status import (
    MINE_STATUSES,
    YearCells,
    cell_footprints,
    cell_footprints_lonlat,
    iter_year_cells,
    mine_points,
    resolve_model,
    resolve_year,
    year_cells,
)
from analysis.territory import refresh_territory_cells
from db.store import Store
from imagery.grid import CellGrid
from pipeline.settings import Settings

FORMATS: tuple[str, ...] = ("gpkg", "geojson", "csv")
SINGLE_LAYERS: tuple[str, ...] = ("cells", "mine_points")
GPKG_LAYERS: tuple[str, ...] = ("cells", "mine_points", "mining_area", "protected_hits", "change")
#: Cells read and written per chunk: an export's memory is bounded by this, not by the territory.
CHUNK_CELLS = 50_000
#: Called after each chunk with (share of the cells written, message).
Progress = Callable[[float, str], None]


@dataclass
class ExportResult:
    path: Path
    format: str
    model_version: str
    years: list[int]
    layers: dict[str, int] = field(default_factory=dict)   # layer -> features written


@contextmanager
def atomic_path(out: Path) -> Iterator[Path]:
    """A temporary path next to ``out``; on success it replaces ``out``, on failure it vanishes."""
    out = Path(out)
    if out.is_dir():
        raise AnalysisError(f"{out} is a folder; give a file name to export to")
    if not out.parent.exists():
        raise AnalysisError(f"{out.parent}: no such folder")
    handle, name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=f".part{out.suffix}",
                                    dir=out.parent)
    os.close(handle)
    os.unlink(name)              # GDAL creates the file itself
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        for leftover in (tmp, *(tmp.with_name(tmp.name + s) for s in ("-wal", "-shm", "-journal"))):
            leftover.unlink(missing_ok=True)


def _years(store: Store, model: dict[str, Any], year: int | None) -> list[int]:
    if year is not None:
        return [resolve_year(store, model, year)]
    resolve_year(store, model)   # errors when the model has no scores
    return store.scores.scored_years(model["version"])


def _stacked(parts: list, name: str) -> np.ndarray:
    """One column of per-year parts (YearCells or MinePoints) concatenated."""
    return np.concatenate([getattr(part, name) for part in parts]) if parts else np.zeros(0)


def _common_columns(parts: list) -> dict[str, np.ndarray]:
    """Columns every cell and point layer has: id, year, model version, status, score."""
    n = [len(part) for part in parts]
    return {
        "cell_id": _stacked(parts, "cell_id").astype(np.int64),
        "year": np.repeat([part.year for part in parts], n).astype(np.int32),
        "model_version": np.repeat([part.model_version for part in parts], n).astype(object),
        "status": _stacked(parts, "status").astype(object),
        "score": _stacked(parts, "score").astype(float),
    }


def _cells_columns(cells: list[YearCells]) -> dict[str, np.ndarray]:
    return {
        **_common_columns(cells),
        "uncertainty": _stacked(cells, "uncertainty").astype(float),
        "label": np.asarray([v or "" for v in _stacked(cells, "label")], dtype=object),
        "in_territory": _stacked(cells, "inside").astype(np.int32),
        "lon": _stacked(cells, "lon").astype(float),
        "lat": _stacked(cells, "lat").astype(float),
    }


def _points_columns(points: list) -> dict[str, np.ndarray]:
    columns = _common_columns(points)
    for name in ("lon", "lat", "x", "y"):
        columns[name] = _stacked(points, name).astype(float)
    return columns


def _write_layer(path: Path, driver: str, layer: str, geometries: np.ndarray,
                 columns: dict[str, np.ndarray], crs: str, geometry_type: str, **options: Any) -> int:
    names = list(columns)
    pyogrio.raw.write(path, shapely.to_wkb(geometries) if len(geometries) else
                      np.zeros(0, dtype=object),
                      [columns[k] for k in names], names, layer=layer, driver=driver, crs=crs,
                      geometry_type=geometry_type, promote_to_multi=None, **options)
    return int(len(geometries))


def export(store: Store, settings: Settings, fmt: str, out: str | Path, *, year: int | None = None,
           model_version: str | None = None, layer: str = "cells",
           rule: PersistenceRule | None = None, progress: Progress | None = None,
           chunk_cells: int = CHUNK_CELLS) -> ExportResult:
    """Write an export (see the module docstring); ``year`` None exports every scored year.

    Cells are read from one cursor and written ``chunk_cells`` at a time, so memory stays bounded
    whatever the territory's size (``bench/export.py`` measures it); ``progress`` receives the
    share of cells written and a message after each chunk.
    """
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise AnalysisError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt != "gpkg" and layer not in SINGLE_LAYERS:
        raise AnalysisError(f"a {fmt} export holds one layer: {' or '.join(SINGLE_LAYERS)}, "
                            f"not {layer!r}")
    model = resolve_model(store, model_version)
    years = _years(store, model, year)
    refresh_territory_cells(store, settings.grid)
    chunks = _CellChunks(store, model, years, chunk_cells, progress)
    result = ExportResult(Path(out), fmt, model["version"], years)
    with atomic_path(Path(out)) as tmp:
        if fmt == "csv":
            result.layers[layer] = _write_csv(tmp, settings.grid, layer, chunks)
        elif fmt == "geojson":
            result.layers[layer] = _write_geojson(tmp, settings.grid, layer, chunks)
        else:
            _write_gpkg(tmp, store, settings, chunks, rule, result)
    return result


class _CellChunks:
    """The export's cells, year after year, in chunks of at most ``chunk_cells``; reports the
    share written to ``progress`` after each chunk (estimated from the scored cells, which
    include any outside the territory) and 1.0 at the end."""

    def __init__(self, store: Store, model: dict[str, Any], years: list[int], chunk_cells: int,
                 progress: Progress | None) -> None:
        self.store, self.model, self.years = store, model, years
        self.chunk_cells, self.progress = max(1, int(chunk_cells)), progress
        counts = {r["year"]: r["scored"] + r["not_scored"] for r in
                  store.scores.score_summary(model["version"], float(model["threshold"]))}
        self.total = max(1, sum(int(counts.get(y, 0)) for y in years))

    def __iter__(self) -> Iterator[YearCells]:
        done = 0
        for year in self.years:
            for cells in iter_year_cells(self.store, self.model, year, inside_only=True,
                                         chunk_rows=self.chunk_cells):
                yield cells
                done += len(cells)
                if self.progress:
                    self.progress(min(done / self.total, 0.99),
                                  f"{done:,} of about {self.total:,} cells written")
        if self.progress:
            self.progress(1.0, f"{done:,} cells written")


def _csv_value(value: Any) -> Any:
    return "" if value is None or (isinstance(value, float) and value != value) else value


def _layer_columns(grid: CellGrid, layer: str, cells: YearCells) -> dict[str, np.ndarray]:
    """One chunk's columns of a single-layer export (cells, or their mine points)."""
    return _cells_columns([cells]) if layer == "cells" else _points_columns([mine_points(cells, grid)])


def _write_csv(path: Path, grid: CellGrid, layer: str, chunks: _CellChunks) -> int:
    names = list(_layer_columns(grid, layer, _empty_cells(chunks.model, chunks.years[0])))
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for cells in chunks:
            columns = _layer_columns(grid, layer, cells)
            values = [columns[k].tolist() for k in names]
            writer.writerows([_csv_value(v) for v in row] for row in zip(*values, strict=True))
            n += len(values[0])
    return n


def _write_geojson(path: Path, grid: CellGrid, layer: str, chunks: _CellChunks) -> int:
    """RFC 7946 GeoJSON (lon/lat, 7 decimals), one feature at a time."""
    n = 0
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('{"type": "FeatureCollection", "features": [')
        for cells in chunks:
            columns = _layer_columns(grid, layer, cells)
            if layer == "cells":
                geometries = cell_footprints_lonlat(grid, columns["cell_id"])
            else:
                geometries = shapely.points(columns["lon"], columns["lat"])
            geometries = shapely.transform(geometries, lambda xy: np.round(xy, 7))
            names = list(columns)
            values = [columns[k].tolist() for k in names]
            for geometry, row in zip(shapely.to_geojson(geometries).tolist(),
                                     zip(*values, strict=True), strict=True):
                properties = {k: None if isinstance(v, float) and v != v else v
                              for k, v in zip(names, row, strict=True)}
                handle.write(("," if n else "") + '\n{"type": "Feature", "properties": '
                             f"{json.dumps(properties)}, \"geometry\": {geometry}}}")
                n += 1
        handle.write("\n]}\n")
    return n


def _empty_cells(model: dict[str, Any], year: int) -> YearCells:
    """A year with no cell (gives the column names, and the layer of an empty export)."""
    empty = np.zeros(0)
    return YearCells(year, model["version"], float(model["threshold"]),
                     cell_id=empty.astype(np.int64), status=empty.astype(object), score=empty,
                     uncertainty=empty, label=empty.astype(object), inside=empty.astype(bool),
                     lon=empty, lat=empty)


def _concat(parts: list[YearCells], empty: YearCells) -> YearCells:
    """Chunks of one year's cells as one YearCells (``empty`` when there is none)."""
    if not parts:
        return empty
    arrays = {name: np.concatenate([getattr(p, name) for p in parts]) for name in
              ("cell_id", "status", "score", "uncertainty", "label", "inside", "lon", "lat")}
    return YearCells(parts[0].year, parts[0].model_version, parts[0].threshold, **arrays)


def _write_cells_layer(path: Path, grid: CellGrid, chunks: _CellChunks) -> tuple[int, list]:
    """Append the cells layer chunk by chunk; (cells written, each year's mine points)."""
    written, mines = 0, {year: [] for year in chunks.years}
    for cells in chunks:
        columns = _cells_columns([cells])
        written += _write_layer(path, "GPKG", "cells", cell_footprints(grid, columns["cell_id"]),
                                columns, grid.crs, "Polygon", **_gpkg_options(written))
        mines[cells.year].append(cells.subset(cells.is_mine()))
    if written == 0:
        columns = _cells_columns([_empty_cells(chunks.model, chunks.years[0])])
        _write_layer(path, "GPKG", "cells", np.zeros(0, dtype=object), columns, grid.crs,
                     "Polygon", **_gpkg_options(0))
    points = [mine_points(_concat(parts, _empty_cells(chunks.model, year)), grid)
              for year, parts in mines.items()]
    return written, points


def _gpkg_options(written: int) -> dict[str, Any]:
    """The first chunk creates the GeoPackage (1.2), later ones append to the layer."""
    return {"append": True} if written else {"dataset_options": {"VERSION": "1.2"}}


def _change_cells(store: Store, model: dict[str, Any], chunk_cells: int) -> list[YearCells]:
    """Per scored year, the cells that were a mine in any year (all a change needs), read in
    chunks: the other cells never sit in memory."""
    years = store.scores.scored_years(model["version"])
    ids = np.unique(np.concatenate(
        [year_cells(store, model, y, inside_only=True, statuses=MINE_STATUSES).cell_id
         for y in years] or [np.zeros(0, dtype=np.int64)]))
    per_year = []
    for year in years:
        parts = [cells.subset(np.isin(cells.cell_id, ids)) for cells in
                 iter_year_cells(store, model, year, inside_only=True, chunk_rows=chunk_cells)]
        per_year.append(_concat(parts, _empty_cells(model, year)))
    return per_year


def _write_gpkg(path: Path, store: Store, settings: Settings, chunks: _CellChunks,
                rule: PersistenceRule | None, result: ExportResult) -> None:
    grid, crs, version = settings.grid, settings.grid.crs, result.model_version
    result.layers["cells"], points = _write_cells_layer(path, grid, chunks)
    columns = _points_columns(points)
    result.layers["mine_points"] = _write_layer(
        path, "GPKG", "mine_points", shapely.points(columns["x"], columns["y"]), columns, crs, "Point")
    areas = protected_areas(store)
    unions, hits_rows = [], {k: [] for k in ("name", "designation", "year", "model_version",
                                             "area_km2", "mine_points", "mining_km2", "share_pct")}
    hit_geoms = []
    for p in points:
        union = mining_area(p.x, p.y, settings.BUFFER_M)
        unions.append(union)
        if areas:
            hits = protected_hits(areas, p, union)
            for area, row in zip(areas, hits.rows, strict=True):
                hit_geoms.append(area.geometry)
                for key, value in (("name", area.name), ("designation", area.designation or ""),
                                   ("year", p.year), ("model_version", version),
                                   ("area_km2", area.area_km2), ("mine_points", row["points"]),
                                   ("mining_km2", row["mining_km2"]),
                                   ("share_pct", 100 * row["mining_km2"] / area_km2(union)
                                    if not union.is_empty else 0.0)):
                    hits_rows[key].append(value)
    multi = np.asarray([shapely.MultiPolygon() if u.is_empty else
                        (u if u.geom_type == "MultiPolygon" else shapely.MultiPolygon([u]))
                        for u in unions], dtype=object)
    result.layers["mining_area"] = _write_layer(
        path, "GPKG", "mining_area", multi,
        {"year": np.asarray([p.year for p in points], dtype=np.int32),
         "model_version": np.asarray([version] * len(points), dtype=object),
         "buffer_m": np.full(len(points), settings.BUFFER_M),
         "mine_points": np.asarray([len(p) for p in points], dtype=np.int64),
         "area_km2": np.asarray([area_km2(u) for u in unions], dtype=float)},
        crs, "MultiPolygon")
    hit_columns = {k: np.asarray(v, dtype=object if k in ("name", "designation", "model_version")
                                 else float if k.endswith(("km2", "pct")) else np.int64)
                   for k, v in hits_rows.items()}
    hit_multi = np.asarray([g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g])
                            for g in hit_geoms], dtype=object)
    result.layers["protected_hits"] = _write_layer(path, "GPKG", "protected_hits", hit_multi,
                                                   hit_columns, crs, "MultiPolygon")
    change = change_over_years(_change_cells(store, chunks.model, chunks.chunk_cells), rule)
    ids = np.asarray([row["cell_id"] for row in change.cells], dtype=np.int64)
    candidates = {c["cell_id"] for c in change.candidates}
    result.layers["change"] = _write_layer(
        path, "GPKG", "change", cell_footprints(grid, ids),
        {"cell_id": ids,
         "model_version": np.asarray([version] * ids.size, dtype=object),
         "change_class": np.asarray([row["change"] for row in change.cells], dtype=object),
         "change_year": np.asarray([row["change_year"] or 0 for row in change.cells], dtype=np.int32),
         "mine_years": np.asarray([",".join(map(str, row["mine_years"])) for row in change.cells],
                                  dtype=object),
         "restoration_candidate": np.asarray([int(row["cell_id"] in candidates)
                                              for row in change.cells], dtype=np.int32),
         "rule": np.asarray([str(change.rule)] * ids.size, dtype=object)},
        crs, "Polygon")

