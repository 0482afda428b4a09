"""Train a model version from the labels in the store.

Labels come from ``Store.training_labels()``: the seed labels (from mine polygons) with every
review label on top (a review overrides the seed label of the same cell-year). A reviewed
background cell that the parent model scored above its threshold is a *hard negative* (a corrected
false positive) and weighs ``HARD_NEGATIVE_WEIGHT`` in the loss. Patches are read from the mosaic
of each label's year with the FCN's context margin, and split for validation by geography
(blocks of ``BLOCK_CELLS`` x ``BLOCK_CELLS`` cells), never at random.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from db.store import Store
from imagery.grid import CellGrid
from model.bundle import ModelBundle, load_bundle, save_bundle
from model.fcn import MARGIN_PX
from model.train import TrainConfig, TrainResult, train_bundle
from pipeline.ingest import year_mosaic
from pipeline.settings import Settings

#: Called after each epoch with (epoch, epochs, logs).
EpochProgress = Callable[[int, int, dict], None]
#: Side of the spatial blocks that go whole to training or validation, in cells (10 km).
BLOCK_CELLS = 10


@dataclass
class LabelledPatches:
    """Pixels of labelled cells with their labels, spatial groups and hard-negative flags."""

    pixels: np.ndarray        # (N, cp + 2m, cp + 2m, B) float32 DN, NaN where invalid
    labels: np.ndarray        # (N,) int8, 1 = mine
    groups: np.ndarray        # (N,) int64 spatial block ids
    cell_ids: np.ndarray      # (N,) int64
    years: np.ndarray         # (N,) int64
    sources: list[str]        # 'seed' or 'review'
    hard_negative: np.ndarray  # (N,) bool
    skipped: int              # labels with no scene or too few valid pixels


def spatial_groups(cell_ids: np.ndarray, block_cells: int = BLOCK_CELLS) -> np.ndarray:
    """Block id of each cell: cells in the same ``block_cells`` square share one."""
    rows, cols = CellGrid.row_col(np.asarray(cell_ids, dtype=np.int64))
    return (rows // block_cells) * 1_000_000 + cols // block_cells


def default_bands(store: Store, years: Sequence[int]) -> tuple[str, ...]:
    """Bands shared by every scene of ``years``, in the first scene's order."""
    scenes = [s for year in years for s in store.scenes(year)]
    if not scenes:
        raise ValueError(f"no scene for year(s) {', '.join(map(str, years))}")
    shared = [b for b in scenes[0]["bands"] if all(b in s["bands"] for s in scenes)]
    if not shared:
        raise ValueError("the scenes of these years share no band")
    return tuple(shared)


def hard_negative_keys(store: Store, parent: dict[str, Any] | None) -> set[tuple[int, int]]:
    """(cell, year) of reviewed background cells that the parent model called mines."""
    if parent is None:
        return set()
    keys = set()
    for row in store.reviewed_labels():
        if row["label"] != "background":
            continue
        score = store.score(row["cell_id"], row["year"], parent["version"])
        if score and score["score"] is not None and score["score"] >= parent["threshold"]:
            keys.add((row["cell_id"], row["year"]))
    return keys


def collect_patches(
    store: Store,
    settings: Settings,
    label_rows: Sequence[dict[str, Any]],
    bands: Sequence[str],
    *,
    min_valid_fraction: float,
    hard_negatives: set[tuple[int, int]] = frozenset(),
) -> LabelledPatches:
    """Read the pixels of every labelled cell from the mosaic of its year (no warp)."""
    by_year: dict[int, list[dict[str, Any]]] = {}
    for row in label_rows:
        by_year.setdefault(int(row["year"]), []).append(row)
    kept_pixels, kept_rows = [], []
    for year, rows in sorted(by_year.items()):
        if not store.scenes(year):
            continue
        ids = np.array([int(r["cell_id"]) for r in rows], dtype=np.int64)
        pixels, valid = year_mosaic(settings, year).read_cells(ids, margin_px=MARGIN_PX,
                                                              bands=bands)
        for i, row in enumerate(rows):
            if valid[i] >= min_valid_fraction:
                kept_pixels.append(pixels[i])
                kept_rows.append(row)
    return _as_patches(kept_pixels, kept_rows, len(label_rows), settings.grid, bands,
                       hard_negatives)


def _as_patches(
    pixels: list[np.ndarray], rows: list[dict[str, Any]], n_asked: int, grid: CellGrid,
    bands: Sequence[str], hard_negatives: set[tuple[int, int]],
) -> LabelledPatches:
    side = grid.cell_px + 2 * MARGIN_PX
    cell_ids = np.array([r["cell_id"] for r in rows], dtype=np.int64)
    years = np.array([r["year"] for r in rows], dtype=np.int64)
    hard = np.array([(int(c), int(y)) in hard_negatives for c, y in zip(cell_ids, years,
                                                                         strict=True)], dtype=bool)
    return LabelledPatches(
        pixels=np.stack(pixels) if pixels else np.empty((0, side, side, len(bands)), np.float32),
        labels=np.array([r["label"] == "mine" for r in rows], dtype=np.int8),
        groups=spatial_groups(cell_ids),
        cell_ids=cell_ids,
        years=years,
        sources=[r["source"] for r in rows],
        hard_negative=hard,
        skipped=n_asked - len(rows),
    )


def train_config(settings: Settings, **overrides: Any) -> TrainConfig:
    """The training configuration an installation's settings ask for."""
    values: dict[str, Any] = {"epochs": settings.TRAIN_EPOCHS, "widths": settings.fcn_widths,
                              "kernel": settings.FCN_KERNEL,
                              "hard_negative_weight": settings.HARD_NEGATIVE_WEIGHT}
    values.update(overrides)
    return TrainConfig(**values)


def train_from_patches(
    patches: LabelledPatches,
    bands: Sequence[str],
    settings: Settings,
    *,
    version: str,
    parent: str | None,
    training_info: dict[str, Any],
    config: TrainConfig | None = None,
    progress: EpochProgress | None = None,
) -> TrainResult:
    """Fit a model version on labelled patches (both classes needed)."""
    return train_bundle(
        patches.pixels, patches.labels, patches.groups, tuple(bands),
        config or train_config(settings),
        version=version, parent=parent, hard_negatives=patches.hard_negative,
        training_info=training_info, progress=progress,
    )


def label_summary(patches: LabelledPatches) -> dict[str, Any]:
    """Counts of the labels a model was trained on, by source, for the sidecar and cycles page."""
    seed = np.array([s == "seed" for s in patches.sources], dtype=bool)
    mine = patches.labels == 1
    return {
        "n": int(len(patches.labels)),
        "seed_mines": int((seed & mine).sum()),
        "seed_background": int((seed & ~mine).sum()),
        "review_mines": int((~seed & mine).sum()),
        "review_background": int((~seed & ~mine).sum()),
        "hard_negatives": int(patches.hard_negative.sum()),
        "skipped_no_imagery": int(patches.skipped),
        "years": sorted({int(y) for y in patches.years}),
    }


def register_model(store: Store, settings: Settings, bundle: ModelBundle, *,
                   activate: bool) -> dict[str, Any]:
    """Save a bundle into the models folder and record it in the store."""
    path = save_bundle(bundle, settings.models_dir)
    store.add_model(
        {
            "version": bundle.version, "parent": bundle.parent, "path": str(path),
            "bands": list(bundle.bands), "threshold": bundle.threshold,
            "metrics": bundle.metrics, "training": bundle.training,
        },
        activate=activate,
    )
    return store.model(bundle.version)


def load_model(store: Store, version: str | None = None) -> ModelBundle:
    """The bundle of ``version``, or of the active model."""
    record = store.model(version) if version else store.active_model()
    if record is None:
        raise ValueError(f"unknown model version {version}" if version else
                         "no active model: train one with `run.py train --mines FILE --year YEAR`")
    return load_bundle(record["path"])


def train_model(
    store: Store,
    settings: Settings,
    *,
    years: Sequence[int] | None = None,
    bands: Sequence[str] | None = None,
    activate: bool = True,
    config: TrainConfig | None = None,
    progress: EpochProgress | None = None,
) -> tuple[dict[str, Any], TrainResult]:
    """Train a new version from every training label of ``years`` (default: all) and register it.

    The parent is the active model, if any; its reviewed false positives become hard negatives.
    """
    rows = [r for r in store.training_labels() if years is None or r["year"] in years]
    if not rows:
        raise ValueError("no training labels: run `run.py train --mines FILE --year YEAR` to seed "
                         "them from mine polygons, or review cells first")
    label_years = sorted({r["year"] for r in rows})
    parent = store.active_model()
    bands = tuple(bands) if bands else (tuple(parent["bands"]) if parent
                                        else default_bands(store, label_years))
    patches = collect_patches(
        store, settings, rows, bands, min_valid_fraction=settings.MIN_VALID_FRACTION,
        hard_negatives=hard_negative_keys(store, parent),
    )
    version = store.next_model_version()
    result = train_from_patches(
        patches, bands, settings, version=version,
        parent=parent["version"] if parent else None,
        training_info=label_summary(patches), config=config, progress=progress,
    )
    record = register_model(store, settings, result.bundle, activate=activate)
    return record, result
