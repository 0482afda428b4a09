"""The initial training set, built as the seed study built it.

Cells that intersect a mine polygon are mines; an equal number of random cells away from every
polygon (at least ``min_gap_cells`` cells from any of them) are background. Only cells covered by
a scene of the year are candidates, so every label can be read from imagery.

Given the installation's ``data_dir``, both also store the year's per-pixel truth as its mask
layer (``imagery.masks``: the mask rasters themselves, or the polygons rasterised over the seeded
cells only, mine and background), which training uses for dense supervision when
``DENSE_LOSS_WEIGHT`` > 0 (``pipeline.training.StorePatches``). Without it no mask layer is
written or replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely

from db.store import Store
from imagery.grid import CellGrid
from imagery.masks import (
    mask_cell_fractions,
    mask_raster_blocks,
    polygon_blocks,
    write_mask_layer,
)
from imagery.vectors import read_polygons
from pipeline.ingest import cells_of_year, check_year


@dataclass(frozen=True)
class SeedLabels:
    """What ``seed_labels_from_polygons`` stored."""

    year: int
    source: str
    polygons: int
    mines: int
    background: int


def mine_cells(grid: CellGrid, candidates: np.ndarray, polygons: np.ndarray) -> np.ndarray:
    """The candidate cells whose footprint intersects any polygon (grid CRS)."""
    boxes = _cell_boxes(grid, candidates)
    tree = shapely.STRtree(polygons)
    hit_boxes, _ = tree.query(boxes, predicate="intersects")
    return np.unique(candidates[hit_boxes])


def _cell_boxes(grid: CellGrid, cell_ids: np.ndarray) -> np.ndarray:
    x, y = grid.cell_centres(cell_ids)
    half = grid.cell_size_m / 2
    return shapely.box(x - half, y - half, x + half, y + half)


def seed_labels_from_polygons(
    store: Store,
    grid: CellGrid,
    mines_file: str | Path,
    year: int,
    *,
    background_per_mine: float = 1.0,
    min_gap_cells: int = 2,
    seed: int = 0,
    repair: bool = False,
    data_dir: Path | None = None,
) -> SeedLabels:
    """Label the year's cells from a mine-polygon file and replace that year's seed labels
    (and, with ``data_dir``, the year's mask layer: the polygons over the seeded cells)."""
    year = check_year(year)
    layer = read_polygons(mines_file, to_crs=grid.crs, repair=repair)
    candidates = cells_of_year(store, grid, year)
    mines = mine_cells(grid, candidates, layer.geometries)
    if mines.size == 0:
        raise ValueError(f"{Path(mines_file).name}: no polygon touches a cell of the {year} scenes")
    near = mine_cells(grid, candidates, shapely.buffer(layer.geometries,
                                                       min_gap_cells * grid.cell_size_m))
    far = np.setdiff1d(candidates, near, assume_unique=True)
    wanted = round(mines.size * background_per_mine)
    if far.size == 0:
        raise ValueError(f"no background cell lies {min_gap_cells} cells away from every mine "
                         f"polygon in the {year} scenes")
    background = np.random.default_rng(seed).choice(far, size=min(wanted, far.size), replace=False)
    source = Path(mines_file).name
    labels = [(int(c), "mine") for c in mines] + [(int(c), "background") for c in background]
    if data_dir is not None:
        seeded = np.sort(np.concatenate([mines, background]).astype(np.int64))
        write_mask_layer(data_dir, grid, year, polygon_blocks(grid, layer.geometries, seeded),
                         source=f"polygons of {source}")
    store.labels.replace_seed_labels(year, labels, source)
    return SeedLabels(year=year, source=source, polygons=len(layer), mines=int(mines.size),
                      background=int(background.size))


#: Share of a cell that must be mask (e.g. tailings) for the cell to count as a mine: 5 % of a
#: 1-km cell is 5 ha, the size of a small tailings dam. Cells with some mask below this share
#: are ambiguous and left unlabelled; cells with none are background.
MIN_MASK_FRACTION = 0.05


def fraction_label(share: float, min_fraction: float = MIN_MASK_FRACTION) -> str | None:
    """A cell's label from the share of it that is mine: 'mine' from ``min_fraction`` up,
    'background' at 0, None (ambiguous) in between."""
    if share >= min_fraction:
        return "mine"
    return "background" if share == 0 else None


def cell_labels_from_masks(
    grid: CellGrid, mask_paths: Sequence[str | Path], *, min_fraction: float = MIN_MASK_FRACTION,
    min_valid_fraction: float = 0.5,
) -> dict[int, str]:
    """Cell id -> 'mine' / 'background' from binary mask rasters (ambiguous cells left out).

    A cell is a mine when at least ``min_fraction`` of its mask pixels are 1, background when none
    are; only cells at least ``min_valid_fraction`` covered by a mask count. Where masks overlap,
    a mine verdict wins.
    """
    labels: dict[int, str] = {}
    for path in mask_paths:
        cell_ids, fraction, valid = mask_cell_fractions(path, grid)
        for cell_id, share, covered in zip(cell_ids, fraction, valid, strict=True):
            if covered < min_valid_fraction or np.isnan(share):
                continue
            label = fraction_label(share, min_fraction)
            if label == "mine":
                labels[int(cell_id)] = label
            elif label == "background":
                labels.setdefault(int(cell_id), label)
    return labels


def seed_labels_from_masks(
    store: Store, grid: CellGrid, mask_paths: Sequence[str | Path], year: int, *,
    min_fraction: float = MIN_MASK_FRACTION, source: str = "masks", data_dir: Path | None = None,
) -> SeedLabels:
    """Replace the year's seed labels with per-cell labels from mask rasters (and, with
    ``data_dir``, the year's mask layer with the rasters warped onto the grid)."""
    year = check_year(year)
    candidates = set(cells_of_year(store, grid, year).tolist())
    labels = {c: label for c, label in cell_labels_from_masks(
        grid, mask_paths, min_fraction=min_fraction).items() if c in candidates}
    mines = sum(label == "mine" for label in labels.values())
    if mines == 0 or mines == len(labels):
        raise ValueError(f"the masks give {mines} mine and {len(labels) - mines} background cells "
                         f"in the {year} scenes: both classes are needed")
    if data_dir is not None:
        write_mask_layer(data_dir, grid, year, mask_raster_blocks(grid, mask_paths),
                         source=f"{len(mask_paths)} mask rasters ({source})")
    store.labels.replace_seed_labels(year, sorted(labels.items()), source)
    return SeedLabels(year=year, source=source, polygons=len(mask_paths), mines=mines,
                      background=len(labels) - mines)
