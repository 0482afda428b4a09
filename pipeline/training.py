"""Train a model version from the labels in the store.

Labels come from ``Labels.training_labels()``: the seed labels (from mine polygons) with every
effective review label on top (a review overrides the seed label of the same cell-year; the
effective label is a lead's adjudication, else the agreed or current label, and a cell-year whose
two reviewers disagree without adjudication is left out). Every lesson is kept: a reviewed
background cell that *any* model version predicted as a mine (the store's ``hard_negatives``
table) stays a *hard negative* and weighs ``HARD_NEGATIVE_WEIGHT`` in the loss
of every later model, and every confirmed mine stays a positive. Patches stream from the mosaic of
each label's year with the FCN's context margin (``StorePatches``: one batch in memory at a time),
and are split for validation by geography (blocks of ``BLOCK_CELLS`` x ``BLOCK_CELLS`` cells),
never at random: the reviewed labels in the installation's fixed validation blocks
(``validation_block``, the same blocks every cycle) validate, every other label trains; while
those blocks hold too few reviewed labels, a geographic split of all labels validates instead.

With ``DENSE_LOSS_WEIGHT`` > 0 (0 by default: off), where a label's year has a mask layer
(``imagery.masks``, written when seeds come from mask rasters or polygons) that covers the cell
(at least ``MIN_VALID_FRACTION`` of it) and agrees with the label (a mine cell has mask pixels, a
background cell none), the cell also gets per-block targets: the mask fraction of each
STRIDE x STRIDE block of its interior, the FCN's output grid (dense supervision; see
model/train.py). Other cells (no mask there, or a reviewer overruled it) train on the cell loss
only.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from db.store import Store
from imagery.grid import CellGrid
from imagery.masks import MASK_NODATA, MaskLayer, block_fractions, open_mask_layer
from imagery.store import BLOCK_CELLS as STORE_BLOCK_CELLS
from imagery.store import YearMosaic
from model.bundle import ModelBundle, bundle_paths, load_bundle, save_bundle
from model.fcn import MARGIN_PX, STRIDE
from model.train import (
    PatchSource,
    TrainConfig,
    TrainResult,
    block_side,
    geographic_split,
    has_block_targets,
    train_bundle,
)
from pipeline.ingest import year_mosaic
from pipeline.settings import Settings

#: Called after each epoch with (epoch, epochs, logs).
EpochProgress = Callable[[int, int, dict], None]
#: Side of the spatial blocks that go whole to training or validation, in cells (10 km).
BLOCK_CELLS = 10
#: Cells whose validity one pass of ``StorePatches.from_rows`` reads at a time (one band each).
VALIDITY_CHUNK = 1024
#: Fewest reviewed labels of each class in the fixed validation blocks for them to validate.
MIN_VALIDATION_PER_CLASS = 2
#: A model's label list is written next to it (``{version}.labels.csv``) up to this many labels;
#: above, the sidecar keeps the counts and the content hash only.
LABEL_LIST_MAX_ROWS = 200_000


class StorePatches:
    """A ``model.train.BlockSource`` over labelled cell-years, read from the imagery store.

    ``read(indices)`` reads those cells of each year's mosaic with ``YearMosaic.read_cells``
    (grouped by store block); ``locality`` orders cells by year, store block and cell id, so a
    training batch of neighbours in that order reads one or two blocks. ``read_blocks(indices)``
    reads the same cells of each year's mask layer and turns them into per-block targets for
    the cells marked in ``has_blocks`` (see ``mask_targets``; zero weights for the others).
    """

    def __init__(self, settings: Settings, cell_ids: np.ndarray, years: np.ndarray,
                 bands: Sequence[str], has_blocks: np.ndarray | None = None,
                 mask_layers: Mapping[int, MaskLayer] | None = None) -> None:
        self.cell_ids = np.asarray(cell_ids, dtype=np.int64)
        self.years = np.asarray(years, dtype=np.int64)
        self.bands = tuple(bands)
        self.settings = settings
        self.patch_px = settings.grid.cell_px + 2 * MARGIN_PX
        self.n_bands = len(self.bands)
        self.has_blocks = (np.zeros(len(self.cell_ids), dtype=bool) if has_blocks is None
                           else np.asarray(has_blocks, dtype=bool))
        if self.has_blocks.shape != self.cell_ids.shape:
            raise ValueError(f"has_blocks must have shape {self.cell_ids.shape}, "
                             f"got {self.has_blocks.shape}")
        rows, cols = CellGrid.row_col(self.cell_ids)
        order = np.lexsort((self.cell_ids, cols // STORE_BLOCK_CELLS, rows // STORE_BLOCK_CELLS,
                            self.years))
        self.locality = np.empty(len(order), dtype=np.int64)
        self.locality[order] = np.arange(len(order))
        self._mosaics: dict[int, YearMosaic] = {}
        self._layers: dict[int, MaskLayer] = dict(mask_layers or {})

    def __len__(self) -> int:
        return len(self.cell_ids)

    def mosaic(self, year: int) -> YearMosaic:
        """The year's mosaic, opened once."""
        if year not in self._mosaics:
            self._mosaics[year] = year_mosaic(self.settings, year)
        return self._mosaics[year]

    def mask_layer(self, year: int) -> MaskLayer:
        """The year's mask layer, opened once (ValueError when the year has none)."""
        if year not in self._layers:
            layer = year_mask_layer(self.settings, year)
            if layer is None:
                raise ValueError(f"{year} has no mask layer (was it removed during training?)")
            self._layers[year] = layer
        return self._layers[year]

    def read(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.patch_px, self.patch_px, self.n_bands), np.float32)
        years = self.years[indices]
        for year in np.unique(years):
            at = np.flatnonzero(years == year)
            out[at], _ = self.mosaic(int(year)).read_cells(
                self.cell_ids[indices[at]], margin_px=MARGIN_PX, bands=self.bands)
        return out

    def read_blocks(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        k = block_side(self.patch_px)
        targets = np.zeros((len(indices), k, k), dtype=np.float32)
        weights = np.zeros((len(indices), k, k), dtype=np.float32)
        wanted = self.has_blocks[indices]
        years = self.years[indices]
        for year in np.unique(years[wanted]):
            at = np.flatnonzero(wanted & (years == year))
            targets[at], weights[at] = block_fractions(
                self.mask_layer(int(year)).read_cells(self.cell_ids[indices[at]]), STRIDE)
        return targets, weights


@dataclass
class LabelledPatches:
    """Labelled cells with their pixels (in memory or streamed), spatial groups and flags."""

    pixels: np.ndarray | PatchSource  # (N, cp + 2m, cp + 2m, B) float32 DN, NaN where invalid
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


def validation_block(groups: np.ndarray, share: float) -> np.ndarray:
    """Whether each spatial block (``spatial_groups`` id) is one of the fixed validation blocks.

    A block validates when the first 8 bytes of sha256("minewatch-validation-block:<id>"), read as
    a fraction of 2**64, fall below ``share``: the choice depends only on the block id and the
    share, so it is the same in every cycle (and every installation with the same grid), and
    about ``share`` of the blocks of any region validate.
    """
    if not 0 <= share < 1:
        raise ValueError(f"the validation block share must be in [0, 1), got {share}")
    out = np.zeros(len(groups), dtype=bool)
    for g in np.unique(groups):
        digest = hashlib.sha256(f"minewatch-validation-block:{int(g)}".encode()).digest()
        if int.from_bytes(digest[:8], "big") / 2.0 ** 64 < share:
            out[groups == g] = True
    return out


def fixed_validation(patches: LabelledPatches, share: float,
                     min_per_class: int = MIN_VALIDATION_PER_CLASS) -> np.ndarray | None:
    """Indices of the reviewed patches in the fixed validation blocks, or None when they hold
    fewer than ``min_per_class`` of either class, or leave fewer than that of either class to
    train on (training then splits by geography).

    Those reviewed labels validate (early stopping, the threshold, the cycle's figures); every
    other label trains, the seed labels of validation blocks included (so a small territory inside
    one validation block still trains).
    """
    review = np.array([src == "review" for src in patches.sources], dtype=bool)
    idx = np.flatnonzero(validation_block(patches.groups, share) & review)
    rest = np.delete(patches.labels, idx)
    for labels in (patches.labels[idx], rest):
        if min(int((labels == 1).sum()), int((labels == 0).sum())) < min_per_class:
            return None
    return idx


def default_bands(store: Store, years: Sequence[int]) -> tuple[str, ...]:
    """Bands shared by every scene of ``years``, in the first scene's order."""
    scenes = [s for year in years for s in store.scenes.scenes(year)]
    if not scenes:
        raise ValueError(f"no scene for year(s) {', '.join(map(str, years))}")
    shared = [b for b in scenes[0]["bands"] if all(b in s["bands"] for s in scenes)]
    if not shared:
        raise ValueError("the scenes of these years share no band")
    return tuple(shared)


def hard_negative_keys(store: Store, parent: dict[str, Any] | None = None) -> set[tuple[int, int]]:
    """(cell, year) of every hard negative kept in the store, after recording the parent's.

    The parent model's predictions of already-rejected cells are added to the store's
    ``hard_negatives`` first (``Labels.record_predicted_rejections``); rejections of the model a
    reviewer was shown are recorded as they happen.
    """
    if parent is not None:
        store.labels.record_predicted_rejections(parent["version"])
    return {(r["cell_id"], r["year"]) for r in store.labels.hard_negatives()}


def collect_patches(
    store: Store,
    settings: Settings,
    label_rows: Sequence[dict[str, Any]],
    bands: Sequence[str],
    *,
    min_valid_fraction: float,
    hard_negatives: set[tuple[int, int]] = frozenset(),
    mask_layers: Mapping[int, MaskLayer] | None = None,
) -> LabelledPatches:
    """Labelled cells whose mosaic holds enough valid pixels, streamed from the store.

    Validity is read first, one band and ``VALIDITY_CHUNK`` cells at a time; the pixels
    themselves are read later, batch by batch, by the returned ``StorePatches``. With
    ``DENSE_LOSS_WEIGHT`` > 0 the cells with mask targets are found too (``mask_targets``).
    ``mask_layers`` (year -> layer, e.g. one staged but not yet stored) stand in for the years'
    stored mask layers.
    """
    by_year: dict[int, list[dict[str, Any]]] = {}
    for row in label_rows:
        by_year.setdefault(int(row["year"]), []).append(row)
    kept_rows = []
    for year, rows in sorted(by_year.items()):
        if not store.scenes.scenes(year):
            continue
        fraction = valid_fractions(year_mosaic(settings, year),
                                   np.array([int(r["cell_id"]) for r in rows], dtype=np.int64),
                                   bands[0])
        kept_rows.extend(row for row, f in zip(rows, fraction, strict=True)
                         if f >= min_valid_fraction)
    cell_ids = np.array([r["cell_id"] for r in kept_rows], dtype=np.int64)
    years = np.array([r["year"] for r in kept_rows], dtype=np.int64)
    labels = np.array([r["label"] == "mine" for r in kept_rows], dtype=np.int8)
    has_blocks = (mask_targets(settings, cell_ids, years, labels, min_covered=min_valid_fraction,
                               mask_layers=mask_layers)
                  if settings.DENSE_LOSS_WEIGHT > 0 else None)
    return LabelledPatches(
        pixels=StorePatches(settings, cell_ids, years, bands, has_blocks, mask_layers),
        labels=labels,
        groups=spatial_groups(cell_ids),
        cell_ids=cell_ids,
        years=years,
        sources=[r["source"] for r in kept_rows],
        hard_negative=np.array([(int(r["cell_id"]), int(r["year"])) in hard_negatives
                                and r["label"] == "background" for r in kept_rows], dtype=bool),
        skipped=len(label_rows) - len(kept_rows),
    )


def year_mask_layer(settings: Settings, year: int,
                    mask_layers: Mapping[int, MaskLayer] | None = None) -> MaskLayer | None:
    """The year's layer in ``mask_layers``, else its stored mask layer (None: it has none)."""
    if mask_layers and int(year) in mask_layers:
        return mask_layers[int(year)]
    return open_mask_layer(settings.data_dir, settings.grid, int(year))


def mask_targets(settings: Settings, cell_ids: np.ndarray, years: np.ndarray,
                 labels: np.ndarray, *, min_covered: float,
                 mask_layers: Mapping[int, MaskLayer] | None = None) -> np.ndarray:
    """(N,) bool: the labelled cells that get per-block mask targets.

    A cell does when its year has a mask layer that covers at least ``min_covered`` of the cell
    and agrees with its label: a mine cell has mask pixels, a background cell none (a reviewer
    who overruled the mask, or a mine the mask misses, leaves the cell to the cell loss alone).
    Read ``VALIDITY_CHUNK`` cells at a time.
    """
    out = np.zeros(len(cell_ids), dtype=bool)
    for year in np.unique(years):
        layer = year_mask_layer(settings, int(year), mask_layers)
        if layer is None:
            continue
        at = np.flatnonzero(years == year)
        for start in range(0, len(at), VALIDITY_CHUNK):
            part = at[start:start + VALIDITY_CHUNK]
            out[part] = _agrees(layer, cell_ids[part], labels[part], min_covered)
    return out


def _agrees(layer: MaskLayer, cell_ids: np.ndarray, labels: np.ndarray,
            min_covered: float) -> np.ndarray:
    cells = layer.read_cells(cell_ids).reshape(len(cell_ids), -1)
    covered = (cells != MASK_NODATA).mean(axis=1)
    has_feature = (cells == 1).any(axis=1)
    return (covered >= min_covered) & (has_feature == (np.asarray(labels) == 1))


def valid_fractions(mosaic: YearMosaic, cell_ids: np.ndarray, band: str) -> np.ndarray:
    """Share of valid pixels in each cell's interior (one band read, in chunks of cells)."""
    out = np.zeros(len(cell_ids), dtype=np.float32)
    order = np.argsort(cell_ids, kind="stable")
    for start in range(0, len(order), VALIDITY_CHUNK):
        at = order[start:start + VALIDITY_CHUNK]
        _, out[at] = mosaic.read_cells(cell_ids[at], margin_px=0, bands=[band])
    return out


def trained(patches: LabelledPatches, validation: np.ndarray | None = None) -> np.ndarray:
    """Bool (N,): the patches that are fitted (all but the ``validation`` indices)."""
    mask = np.ones(len(patches.labels), dtype=bool)
    if validation is not None:
        mask[validation] = False
    return mask


def label_snapshot(patches: LabelledPatches,
                   validation: np.ndarray | None = None) -> list[tuple[int, int, str, str]]:
    """The labels a model is fitted on (all but ``validation``), sorted:
    (cell_id, year, 'mine'|'background', source)."""
    keep = trained(patches, validation)
    return sorted(
        (int(c), int(y), "mine" if lab else "background", str(src))
        for c, y, lab, src, k in zip(patches.cell_ids, patches.years, patches.labels,
                                     patches.sources, keep, strict=True) if k
    )


def snapshot_hash(snapshot: Sequence[tuple[int, int, str, str]]) -> str:
    """sha256 of the snapshot's CSV lines ("cell_id,year,label,source\n" each, sorted)."""
    digest = hashlib.sha256()
    for row in snapshot:
        digest.update((",".join(map(str, row)) + "\n").encode())
    return digest.hexdigest()


def write_label_list(models_dir: Path, version: str,
                     snapshot: Sequence[tuple[int, int, str, str]]) -> str | None:
    """Write ``{version}.labels.csv`` next to the model (up to ``LABEL_LIST_MAX_ROWS`` rows).

    Returns the file name, or None when the snapshot is too large to list (its hash remains).
    """
    if len(snapshot) > LABEL_LIST_MAX_ROWS:
        return None
    path = bundle_paths(Path(models_dir), version)[0].with_suffix(".labels.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["cell_id", "year", "label", "source"])
        writer.writerows(snapshot)
    tmp.replace(path)
    return path.name


def train_config(settings: Settings, **overrides: Any) -> TrainConfig:
    """The training configuration an installation's settings ask for."""
    values: dict[str, Any] = {"epochs": settings.TRAIN_EPOCHS, "widths": settings.fcn_widths,
                              "kernel": settings.FCN_KERNEL, "depth": settings.fcn_depth,
                              "dense_weight": settings.DENSE_LOSS_WEIGHT,
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
    validation: np.ndarray | None = None,
) -> TrainResult:
    """Fit a model version on labelled patches (both classes needed), validated on the
    ``validation`` indices (``fixed_validation``) or, when None, on a geographic split."""
    return train_bundle(
        patches.pixels, patches.labels, patches.groups, tuple(bands),
        config or train_config(settings),
        version=version, parent=parent, hard_negatives=patches.hard_negative,
        validation=validation, training_info=training_info, progress=progress,
    )


def label_summary(patches: LabelledPatches,
                  validation: np.ndarray | None = None) -> dict[str, Any]:
    """Counts of the labels a model is fitted on (all but ``validation``), by source, for the
    sidecar and cycles page; ``validation_reviews``: the reviewed labels that validate it."""
    keep = trained(patches, validation)
    seed = np.array([s == "seed" for s in patches.sources], dtype=bool)
    mine = patches.labels == 1
    return {
        "n": int(keep.sum()),
        "seed_mines": int((keep & seed & mine).sum()),
        "seed_background": int((keep & seed & ~mine).sum()),
        "review_mines": int((keep & ~seed & mine).sum()),
        "review_background": int((keep & ~seed & ~mine).sum()),
        "hard_negatives": int((keep & patches.hard_negative).sum()),
        "mask_targets": int((keep & has_block_targets(patches.pixels)).sum()),
        "validation_reviews": int((~keep).sum()),
        "skipped_no_imagery": int(patches.skipped),
        "years": sorted({int(y) for y in patches.years}),
    }


def training_info(patches: LabelledPatches, settings: Settings, version: str,
                  validation: np.ndarray | None = None) -> dict[str, Any]:
    """``label_summary`` plus exactly which labels ``version`` is fitted on, for its sidecar.

    ``labels``: count per class, the sha256 of the sorted snapshot (``snapshot_hash``) and the
    name of the label list written next to the model (None above ``LABEL_LIST_MAX_ROWS``).
    """
    snapshot = label_snapshot(patches, validation)
    mines = sum(row[2] == "mine" for row in snapshot)
    return {
        **label_summary(patches, validation),
        "labels": {
            "mine": mines,
            "background": len(snapshot) - mines,
            "sha256": snapshot_hash(snapshot),
            "list_file": write_label_list(settings.models_dir, version, snapshot),
        },
    }


def register_model(store: Store, settings: Settings, bundle: ModelBundle, *,
                   activate: bool, pending: bool = False) -> dict[str, Any]:
    """Save a bundle into the models folder and record it in the store (its path relative to
    DATA_DIR when the models folder lies inside it). A ``pending`` model is a cycle's that is
    not finished yet (see ``Models.add_model``)."""
    path = save_bundle(bundle, settings.models_dir)
    store.models.add_model(
        {
            "version": bundle.version, "parent": bundle.parent,
            "path": settings.stored_path(path),
            "bands": list(bundle.bands), "threshold": bundle.threshold,
            "metrics": bundle.metrics, "training": bundle.training,
        },
        activate=activate, pending=pending,
    )
    return store.models.model(bundle.version)


def model_file(store: Store, record: dict[str, Any], settings: Settings | None = None) -> Path:
    """Where a model row's ``.keras`` file lies: a relative path is relative to DATA_DIR
    (``settings``), or, without settings, to the database's folder (the default DATA_DIR)."""
    stored = Path(record["path"])
    if settings is not None:
        return settings.data_path(stored)
    return stored if stored.is_absolute() else store.path.parent / stored


def load_model(store: Store, version: str | None = None, *,
               settings: Settings | None = None) -> ModelBundle:
    """The bundle of ``version``, or of the active model (see ``model_file`` for its path)."""
    record = store.models.ready_model(version) if version else store.models.active_model()
    if record is None:
        raise ValueError(f"unknown model version {version}" if version else
                         "no active model: train one with `run.py train --mines FILE --year YEAR`")
    return load_bundle(model_file(store, record, settings))


def train_model(
    store: Store,
    settings: Settings,
    *,
    years: Sequence[int] | None = None,
    bands: Sequence[str] | None = None,
    activate: bool = True,
    config: TrainConfig | None = None,
    progress: EpochProgress | None = None,
    labels: Sequence[dict[str, Any]] | None = None,
    mask_layers: Mapping[int, MaskLayer] | None = None,
    commit: Callable[[], Any] | None = None,
) -> tuple[dict[str, Any], TrainResult]:
    """Train a new version from every training label of ``years`` (default: all) and register it.

    The parent is the active model, if any; its predictions of rejected cells join the store's
    hard negatives, all of which weigh as such. ``labels`` (rows like
    ``Labels.training_labels()``'s) and ``mask_layers`` (see ``collect_patches``) stand in for
    the stored ones, e.g. seed labels not stored yet; ``commit`` runs in the transaction that
    registers the model, only once training succeeded (e.g. to store those seed labels).
    What training needs is checked before it starts (``check_trainable``).
    """
    config = config or train_config(settings)
    rows = [r for r in (store.labels.training_labels() if labels is None else labels)
            if years is None or r["year"] in years]
    if not rows:
        raise ValueError("no training labels: run `run.py train --mines FILE --year YEAR` to seed "
                         "them from mine polygons, or review cells first")
    label_years = sorted({r["year"] for r in rows})
    parent = store.models.active_model()
    bands = tuple(bands) if bands else (tuple(parent["bands"]) if parent
                                        else default_bands(store, label_years))
    patches = collect_patches(
        store, settings, rows, bands, min_valid_fraction=settings.MIN_VALID_FRACTION,
        hard_negatives=hard_negative_keys(store, parent), mask_layers=mask_layers,
    )
    validation = fixed_validation(patches, settings.VALIDATION_BLOCK_SHARE)
    check_trainable(patches, config, validation)
    version = store.models.next_model_version()
    result = train_from_patches(
        patches, bands, settings, version=version,
        parent=parent["version"] if parent else None,
        training_info=training_info(patches, settings, version, validation), config=config,
        progress=progress, validation=validation,
    )
    with store.atomic():
        if commit is not None:
            commit()
        record = register_model(store, settings, result.bundle, activate=activate)
    return record, result


def check_trainable(patches: LabelledPatches, config: TrainConfig,
                    validation: np.ndarray | None) -> None:
    """ValueError, before anything is trained or written, when the labelled cells with imagery
    cannot train and validate a model: too few of a class, or (without fixed validation) a
    geographic split that leaves nothing to validate on, or one class only to train on."""
    mines = int(patches.labels.sum())
    background = len(patches.labels) - mines
    skipped = f" ({patches.skipped} labels lack imagery)" if patches.skipped else ""
    if min(mines, background) < config.min_per_class:
        raise ValueError(f"training needs at least {config.min_per_class} mine and "
                         f"{config.min_per_class} background cells with imagery, got {mines} mine "
                         f"and {background} background{skipped}")
    if validation is not None:
        return
    train_idx, val_idx = geographic_split(patches.groups, patches.labels, config.val_fraction,
                                          config.seed)
    if len(val_idx) == 0 or len(np.unique(patches.labels[train_idx])) < 2:
        blocks = len(np.unique(patches.groups))
        raise ValueError(f"the {mines} mine and {background} background cells lie in {blocks} "
                         f"block(s) of {BLOCK_CELLS} x {BLOCK_CELLS} cells, too few to train on "
                         "some and validate on others: label a larger area (more mine polygons "
                         "or scenes)")
