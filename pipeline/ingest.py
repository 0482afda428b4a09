"""Ingest: register a scene for a year, its cells on the grid and its thumbnail stretch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from db.store import Store
from imagery.grid import CellGrid, CellRange
from imagery.scene import Scene, SceneError, open_scene, scene_cells
from imagery.thumbnails import compute_stretch

MIN_YEAR, MAX_YEAR = 2015, 2100  # Sentinel-2A launched in June 2015


def check_year(year: int) -> int:
    """The year, or ValueError when no Sentinel-2 composite can exist for it."""
    if not MIN_YEAR <= int(year) <= MAX_YEAR:
        raise ValueError(f"year {year} is outside {MIN_YEAR}..{MAX_YEAR} (Sentinel-2 era)")
    return int(year)


def scene_paths_key(paths: Sequence[Path]) -> list[str]:
    """The stored form of a scene's file list (absolute, resolved paths)."""
    return [str(Path(p).resolve()) for p in paths]


def ingest_scene(
    store: Store,
    grid: CellGrid,
    paths: str | Path | Sequence[str | Path],
    year: int,
    *,
    bands: Sequence[str] | None = None,
    expect_dtype: str | None = None,
    offset: float | None = None,
) -> dict[str, Any]:
    """Validate a scene, then register it and the grid cells it covers in one transaction.

    Everything that can fail (reading, band checks, stretch) happens before the database is
    touched, so a bad file changes nothing. ``offset`` is the DN offset (see
    :func:`imagery.scene.open_scene`). Returns the stored scene row.
    """
    year = check_year(year)
    scene = open_scene(paths, bands=bands, expect_dtype=expect_dtype, offset=offset)
    cells = scene_cells(scene, grid)
    if cells.n_cells == 0:
        raise ValueError(f"{scene.name}: covers no cell of the grid")
    stretch = compute_stretch(scene)
    cell_ids = grid.cell_ids_in(cells)
    rows, cols = grid.row_col(cell_ids)
    lons, lats = grid.cell_centres_lonlat(cell_ids)
    with store.atomic():
        store.add_cells(zip(cell_ids, rows, cols, lons, lats, strict=True))
        scene_id = store.add_scene(_scene_record(scene, year, cells, stretch))
    return store.scene(scene_id)


def _scene_record(scene: Scene, year: int, cells: CellRange, stretch: dict) -> dict[str, Any]:
    return {
        "year": year,
        "name": scene.name,
        "paths": scene_paths_key(scene.paths),
        "bands": list(scene.bands),
        "crs": str(scene.crs),
        "row0": cells.row0, "row1": cells.row1, "col0": cells.col0, "col1": cells.col1,
        "stretch": {band: [float(lo), float(hi)] for band, (lo, hi) in stretch.items()},
        "synthetic": int(scene.synthetic),
    }


def open_stored_scene(record: dict[str, Any]) -> Scene:
    """Re-open a scene from its database row, with the band names it was ingested with.

    The files' own band names are used when they agree with the row (e.g. a 13-band L1C file
    whose B10 was dropped); otherwise the stored names are passed as the band option.
    """
    paths = record["paths"]
    target = paths if len(paths) > 1 else paths[0]
    try:
        scene = open_scene(target)
        if list(scene.bands) == list(record["bands"]):
            return scene
    except SceneError:
        pass
    return open_scene(target, bands=record["bands"])


def cells_of_year(store: Store, grid: CellGrid, year: int) -> np.ndarray:
    """Ids of every cell covered by a scene of ``year`` (ValueError when the year has none)."""
    scenes = store.scenes(year)
    if not scenes:
        raise ValueError(f"no scene for {year}: ingest one with `run.py ingest FILE --year {year}`")
    ids = [grid.cell_ids_in(scene_cell_range(record)) for record in scenes]
    return np.unique(np.concatenate(ids))


def scene_cell_range(record: dict[str, Any]) -> CellRange:
    """The cell range of a stored scene."""
    return CellRange(record["row0"], record["row1"], record["col0"], record["col1"])
