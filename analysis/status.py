"""The status of each cell in a year, for one model version, and the mine points.

Per (cell, year, model version) a cell is:

==========  =================================================================
confirmed   its effective review label is ``mine`` (whatever the score)
rejected    its effective review label is ``background`` and its score >= threshold
predicted   score >= threshold and not reviewed yet (no label, ``skip``, or an open
            disagreement between two reviewers)
background  everything else: score below threshold, or not scored
==========  =================================================================

The effective label is a lead's adjudication, else the agreed or current label (see
``Labels.reviewed_labels``).

Mine points are the confirmed and predicted cells, one point at each cell's centre. The rule
itself is in ``Territory.cell_statuses`` (SQL); this module picks the model and year and turns rows
into arrays.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry.base import BaseGeometry

from analysis import AnalysisError
from db.store import Store
from imagery.grid import CellGrid

STATUSES: tuple[str, ...] = ("confirmed", "rejected", "predicted", "background")
MINE_STATUSES: tuple[str, ...] = ("confirmed", "predicted")


def resolve_model(store: Store, version: str | None = None) -> dict[str, Any]:
    """The model row of ``version``, or of the active model; AnalysisError when there is none."""
    if version:
        model = store.models.ready_model(version)
        if model is None:
            known = ", ".join(m["version"] for m in store.models.models()) or "none"
            raise AnalysisError(f"unknown model version {version!r} (known: {known})")
        return model
    model = store.models.active_model()
    if model is None:
        raise AnalysisError("no active model yet: run `run.py train` (or `run.py demo`) first")
    return model


def resolve_year(store: Store, model: dict[str, Any], year: int | None = None) -> int:
    """``year`` if the model scored it, else the latest scored year; AnalysisError otherwise."""
    years = store.scores.scored_years(model["version"])
    if not years and store.scores.summarised_years(model["version"]):
        raise AnalysisError(f"the scores of model {model['version']} were pruned to per-year "
                            "summaries (setting KEEP_SCORED_MODELS): score it again with "
                            f"`run.py score --model {model['version']}`")
    if not years:
        raise AnalysisError(f"model {model['version']} has no scores yet: run `run.py score`")
    if year is None:
        return years[-1]
    if int(year) not in years:
        raise AnalysisError(f"no scores for year {year} by model {model['version']} "
                            f"(years with scores: {', '.join(map(str, years))})")
    return int(year)


@dataclass(frozen=True)
class YearCells:
    """Cells of one year as arrays (one entry per cell), for one model version."""

    year: int
    model_version: str
    threshold: float
    cell_id: np.ndarray       # int64
    status: np.ndarray        # str
    score: np.ndarray         # float, NaN: not scored
    uncertainty: np.ndarray   # float, NaN: not scored
    label: np.ndarray         # object: 'mine', 'background', 'skip' or None
    inside: np.ndarray        # bool: centre inside the territory (True when none is loaded)
    lon: np.ndarray
    lat: np.ndarray

    def __len__(self) -> int:
        return len(self.cell_id)

    def subset(self, keep: np.ndarray) -> YearCells:
        """The cells where ``keep`` is True."""
        arrays = {name: getattr(self, name)[keep] for name in
                  ("cell_id", "status", "score", "uncertainty", "label", "inside", "lon", "lat")}
        return YearCells(self.year, self.model_version, self.threshold, **arrays)

    def is_mine(self) -> np.ndarray:
        return np.isin(self.status, MINE_STATUSES)

    def count(self, status: str) -> int:
        return int(np.count_nonzero(self.status == status))


def year_cells(store: Store, model: dict[str, Any], year: int, *, inside_only: bool = False,
               statuses: tuple[str, ...] | None = None) -> YearCells:
    """Every cell of ``year`` with its status under ``model`` (see the module docstring)."""
    rows = store.territory.cell_statuses(model["version"], year, float(model["threshold"]),
                                         inside_only=inside_only, statuses=statuses)
    return _year_cells_of(rows, model, year)


def iter_year_cells(store: Store, model: dict[str, Any], year: int, *, inside_only: bool = False,
                    chunk_rows: int = 50_000) -> Iterator[YearCells]:
    """``year_cells`` in chunks of at most ``chunk_rows`` cells (ordered by cell id), read from
    one cursor: memory stays bounded whatever the number of cells."""
    for rows in store.territory.iter_cell_statuses(model["version"], year, float(model["threshold"]),
                                                   inside_only=inside_only, chunk_rows=chunk_rows):
        yield _year_cells_of(rows, model, year)


def _year_cells_of(rows: list[dict[str, Any]], model: dict[str, Any], year: int) -> YearCells:
    def column(name: str, dtype: Any, missing: Any = None) -> np.ndarray:
        values = [row[name] if row[name] is not None else missing for row in rows]
        return np.asarray(values, dtype=dtype)

    return YearCells(
        year=int(year), model_version=model["version"], threshold=float(model["threshold"]),
        cell_id=column("cell_id", np.int64), status=column("status", object),
        score=column("score", float, np.nan), uncertainty=column("uncertainty", float, np.nan),
        label=np.asarray([row["label"] for row in rows], dtype=object),
        inside=column("inside", bool, 1), lon=column("lon", float), lat=column("lat", float),
    )


@dataclass(frozen=True)
class MinePoints:
    """One point per mine cell (confirmed or predicted) at the cell centre."""

    year: int
    model_version: str
    cell_id: np.ndarray
    status: np.ndarray
    score: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    x: np.ndarray             # grid CRS
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.cell_id)


def mine_points(cells: YearCells, grid: CellGrid) -> MinePoints:
    """The mine points of a year's cells (filter ``cells`` to the territory first if needed)."""
    mines = cells.subset(cells.is_mine())
    x, y = grid.cell_centres(mines.cell_id)
    return MinePoints(cells.year, cells.model_version, mines.cell_id, mines.status, mines.score,
                      mines.lon, mines.lat, np.asarray(x, dtype=float), np.asarray(y, dtype=float))


def lonlat_transformer(grid: CellGrid) -> Transformer:
    """Grid CRS -> WGS84 lon/lat."""
    return Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)


def cell_footprints(grid: CellGrid, cell_ids: np.ndarray) -> np.ndarray:
    """Cell squares in the grid CRS (shapely array)."""
    x, y = grid.cell_centres(np.asarray(cell_ids, dtype=np.int64))
    half = grid.cell_size_m / 2
    return shapely.box(x - half, y - half, x + half, y + half)


def to_lonlat(grid: CellGrid, geometries: np.ndarray | BaseGeometry,
              densify_m: float | None = None) -> np.ndarray | BaseGeometry:
    """Geometries from the grid CRS to lon/lat (edges densified every ``densify_m`` first)."""
    if densify_m:
        geometries = shapely.segmentize(geometries, densify_m)
    transformer = lonlat_transformer(grid)
    return shapely.transform(
        geometries, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


def cell_footprints_lonlat(grid: CellGrid, cell_ids: np.ndarray) -> np.ndarray:
    """Cell squares in lon/lat, edges densified to quarter cells (shapely array)."""
    return to_lonlat(grid, cell_footprints(grid, cell_ids), grid.cell_size_m / 4)


def scenes_bounds_lonlat(store: Store, grid: CellGrid) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) of every scene's cells, or None without scenes."""
    boxes = []
    for scene in store.scenes.scenes():
        minx, _, _, maxy = grid.cell_bounds(grid.cell_id(scene["row0"], scene["col0"]))
        _, miny, maxx, _ = grid.cell_bounds(grid.cell_id(scene["row1"] - 1, scene["col1"] - 1))
        boxes.append(shapely.box(minx, miny, maxx, maxy))
    if not boxes:
        return None
    return tuple(float(v) for v in to_lonlat(grid, shapely.union_all(boxes), 1000.0).bounds)
