"""Exports for QGIS and spreadsheets: GeoPackage, GeoJSON and CSV, written with pyogrio.

GeoPackage layers (grid CRS, EPSG:6933 by default; written as GeoPackage 1.2 so that older GDAL,
e.g. Debian's 3.6, opens them without a warning):

- ``cells``: cell footprints with score, uncertainty, label, status, in_territory, year,
  model_version;
- ``mine_points``: one point per confirmed or predicted mine cell (lon, lat, x, y attributes);
- ``mining_area``: the dissolved ``BUFFER_M`` buffers, one multipolygon per year, with km²;
- ``protected_hits``: each protected area per year, with its mine points and mining area;
- ``change``: footprints of cells that were a mine in any year, with their change class.

GeoJSON (RFC 7946, lon/lat) and CSV hold one layer: ``cells`` or ``mine_points``. Every file is
written to a temporary file in the target folder and moved into place only when complete, so an
export never leaves a half-written file where a good one was. Cells outside a loaded territory
are left out, like in the report.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterator
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
    YearCells,
    cell_footprints,
    cell_footprints_lonlat,
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
_DRIVERS = {"gpkg": "GPKG", "geojson": "GeoJSON"}


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
    return store.scored_years(model["version"])


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
           rule: PersistenceRule | None = None) -> ExportResult:
    """Write an export (see the module docstring); ``year`` None exports every scored year."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise AnalysisError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt != "gpkg" and layer not in SINGLE_LAYERS:
        raise AnalysisError(f"a {fmt} export holds one layer: {' or '.join(SINGLE_LAYERS)}, "
                            f"not {layer!r}")
    grid = settings.grid
    model = resolve_model(store, model_version)
    years = _years(store, model, year)
    refresh_territory_cells(store, grid)
    cells = [year_cells(store, model, y, inside_only=True) for y in years]
    points = [mine_points(c, grid) for c in cells]
    result = ExportResult(Path(out), fmt, model["version"], years)
    with atomic_path(Path(out)) as tmp:
        if fmt == "csv":
            result.layers[layer] = _write_csv(tmp, _cells_columns(cells) if layer == "cells"
                                              else _points_columns(points))
        elif fmt == "geojson":
            _write_geojson(tmp, grid, layer, cells, points, result)
        else:
            _write_gpkg(tmp, store, settings, cells, points, rule, result)
    return result


def _write_csv(path: Path, columns: dict[str, np.ndarray]) -> int:
    names = list(columns)
    n = len(columns[names[0]])
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for i in range(n):
            writer.writerow(["" if isinstance(v, float) and v != v else v
                             for v in (columns[k][i].item() if hasattr(columns[k][i], "item")
                                       else columns[k][i] for k in names)])
    return n


def _write_geojson(path: Path, grid: CellGrid, layer: str, cells: list[YearCells], points: list,
                   result: ExportResult) -> None:
    options = {"layer_options": {"RFC7946": "YES", "WRITE_NAME": "NO"}}
    if layer == "cells":
        columns = _cells_columns(cells)
        geometries = cell_footprints_lonlat(grid, columns["cell_id"])
        kind = "Polygon"
    else:
        columns = _points_columns(points)
        geometries = shapely.points(columns["lon"], columns["lat"])
        kind = "Point"
    result.layers[layer] = _write_layer(path, "GeoJSON", layer, geometries, columns, "EPSG:4326",
                                        kind, **options)


def _write_gpkg(path: Path, store: Store, settings: Settings, cells: list[YearCells], points: list,
                rule: PersistenceRule | None, result: ExportResult) -> None:
    grid, crs, version = settings.grid, settings.grid.crs, result.model_version
    first = {"dataset_options": {"VERSION": "1.2"}}
    columns = _cells_columns(cells)
    result.layers["cells"] = _write_layer(path, "GPKG", "cells", cell_footprints(grid, columns["cell_id"]),
                                          columns, crs, "Polygon", **first)
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
    by_year, model = {c.year: c for c in cells}, store.model(version)
    change = change_over_years([by_year.get(y) or year_cells(store, model, y, inside_only=True)
                                for y in store.scored_years(version)], rule)
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

