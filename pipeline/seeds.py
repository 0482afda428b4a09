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
from typing import Any

import numpy as np
import shapely

from db.store import Store
from imagery.grid import CellGrid
from imagery.masks import (
    MaskLayer,
    commit_mask_layer,
    discard_mask_layer,
    mask_cell_fractions,
    mask_raster_blocks,
    polygon_blocks,
    stage_mask_layer,
    write_mask_layer,
)
from imagery.vectors import read_polygons, where_text
from model.train import TrainResult
from pipeline.ingest import cells_of_year, check_year
from pipeline.settings import Settings
from pipeline.training import train_model


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


@dataclass(frozen=True)
class SeedPlan:
    """Seed labels drawn from mine polygons, checked but not stored yet."""

    year: int
    source: str
    polygons: np.ndarray     # the mine polygons, grid CRS
    mines: np.ndarray        # cell ids
    background: np.ndarray   # cell ids

    @property
    def labels(self) -> list[tuple[int, str]]:
        """(cell_id, label) pairs, as ``Labels.replace_seed_labels`` takes them."""
        return ([(int(c), "mine") for c in self.mines]
                + [(int(c), "background") for c in self.background])

    @property
    def summary(self) -> SeedLabels:
        """What storing the plan stores."""
        return SeedLabels(year=self.year, source=self.source, polygons=len(self.polygons),
                          mines=int(self.mines.size), background=int(self.background.size))

    def stage_masks(self, grid: CellGrid, data_dir: Path) -> MaskLayer:
        """The polygons over the seeded cells, staged as the year's mask layer."""
        seeded = np.sort(np.concatenate([self.mines, self.background]).astype(np.int64))
        return stage_mask_layer(data_dir, grid, self.year,
                                polygon_blocks(grid, self.polygons, seeded),
                                source=f"polygons of {self.source}")


def plan_seed_labels(
    store: Store,
    grid: CellGrid,
    mines_file: str | Path,
    year: int,
    *,
    background_per_mine: float = 1.0,
    min_gap_cells: int = 2,
    seed: int = 0,
    repair: bool = False,
    layer: str | None = None,
) -> SeedPlan:
    """Read a mine-polygon file and draw the year's seed labels from it (nothing is stored).

    Errors (an unusable file, no polygon over the year's cells, no background cell far enough
    from every polygon) name the file and where it and the imagery lie.
    """
    year = check_year(year)
    polygons = read_polygons(mines_file, to_crs=grid.crs, repair=repair, layer=layer).geometries
    source = Path(mines_file).name
    candidates = cells_of_year(store, grid, year)
    mines = mine_cells(grid, candidates, polygons)
    if mines.size == 0:
        raise ValueError(f"{source}: no polygon touches a cell of the {year} scenes "
                         f"({where_text(grid, polygons, candidates)})")
    near = mine_cells(grid, candidates, shapely.buffer(polygons, min_gap_cells * grid.cell_size_m))
    far = np.setdiff1d(candidates, near, assume_unique=True)
    if far.size == 0:
        raise ValueError(f"no background cell lies {min_gap_cells} cells away from every mine "
                         f"polygon of {source} in the {year} scenes")
    wanted = round(mines.size * background_per_mine)
    background = np.random.default_rng(seed).choice(far, size=min(wanted, far.size), replace=False)
    return SeedPlan(year=year, source=source, polygons=polygons, mines=mines,
                    background=background)


def seed_labels_from_polygons(
    store: Store, grid: CellGrid, mines_file: str | Path, year: int, *,
    data_dir: Path | None = None, **options: Any,
) -> SeedLabels:
    """Label the year's cells from a mine-polygon file (``plan_seed_labels`` with ``options``)
    and replace that year's seed labels (and, with ``data_dir``, the year's mask layer: the
    polygons over the seeded cells, staged first and moved into place once the labels are
    stored)."""
    plan = plan_seed_labels(store, grid, mines_file, year, **options)
    staged = plan.stage_masks(grid, data_dir) if data_dir is not None else None
    try:
        store.labels.replace_seed_labels(plan.year, plan.labels, plan.source)
    except BaseException:
        if staged is not None:
            discard_mask_layer(data_dir, staged)
        raise
    if staged is not None:
        commit_mask_layer(data_dir, staged)
    return plan.summary


def train_on_polygons(
    store: Store, settings: Settings, plan: SeedPlan, **train: Any,
) -> tuple[dict[str, Any], TrainResult]:
    """Train a model (``train_model``, keyword arguments ``train``) on the store's labels with
    ``plan``'s seed labels in place of the year's, and its polygons as the year's mask layer.

    All or nothing: the mask layer is staged, the model trains on the staged labels and layer,
    and only once it succeeded are the seed labels replaced, in the transaction that registers
    the model, and the staged layer moved into place; a failure leaves both as they were.
    """
    staged = plan.stage_masks(settings.grid, settings.data_dir)
    try:
        rows = store.labels.training_labels_with_seeds(plan.year, plan.labels, plan.source)
        record, result = train_model(
            store, settings, years=[plan.year], labels=rows, mask_layers={plan.year: staged},
            commit=lambda: store.labels.replace_seed_labels(plan.year, plan.labels, plan.source),
            **train)
    except BaseException:
        discard_mask_layer(settings.data_dir, staged)
        raise
    commit_mask_layer(settings.data_dir, staged)
    return record, result


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
