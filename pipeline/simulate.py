"""Active learning measured with a simulated reviewer (issue 5): does the queue pay off?

A simulated reviewer (the *oracle*, reviewer name ``oracle``) works through the app's real review
queue in a temporary data folder: the same queue code (``pipeline.review.next_cards``, i.e.
``Leases.queue_candidates`` plus leases), the same label store (``Labels.record_label`` with
``source='simulation'``), the same training (``pipeline.training``: ``Labels.training_labels``,
``hard_negative_keys``, ``train_from_patches``, ``register_model``) and the same scores in the
store (``Scores.write_scores``) that the app reads. Each round the oracle labels a batch of cells
from the queue, a new model version is trained on the seed plus every label and made active, and
the cells are re-scored.

Choices, so that a reader need not infer them from the code:

* **Oracle.** For a folder laid out like ``tailings_rgb_brazil/`` (``img/img_N.tif``,
  ``mask/mask_N.tif``, ``manifest.csv``) a cell is a mine when at least ``MIN_MASK_FRACTION``
  (5 %) of it is tailings mask: 5 % of a 1-km cell is 5 ha, the size of a small tailings dam.
  Cells with some mask but less than 5 % are ambiguous (a sliver of a dam cut by the cell edge);
  the oracle answers ``skip`` for them, as an unsure reviewer would, and a skip still costs a
  label. Cells with no mask pixel are background. For ``--data demo`` the oracle answers from the
  demo generator's truth (``imagery.demo.truth_mine_fraction``, active mine components) with the
  same 5 % rule.
* **Geographic test split.** Whole patches (the demo: 5 x 5 km blocks) are held out, the same
  ones for every strategy and seed (``split_seed``); a folder with ``groups.csv`` (``id,group``:
  patches that overlap or lie < 1 km apart share a group) holds out whole groups instead. Cells
  touching a test cell (one grid cell around the test split) are left out of the training split,
  so at least 1 km lies between the two. Their cells are never scored into the store,
  so the queue can never serve them and the oracle never labels them; every round's model is
  evaluated on their unambiguous cells. Ambiguous cells are left out of the evaluation.
* **Seed set.** ``seed_per_class`` mine and background cells drawn from the training split (per
  seed; the same for every strategy of a seed), stored as seed labels. The round-0 model trained
  on them is shared by every strategy of the seed.
* **Scoring.** Re-scoring whole scenes each round would dominate the run time, so the cells of the
  training split are read once from the year's mosaic (``imagery.store.YearMosaic.read_cells``
  with the FCN's margin) and scored with ``model.score.patch_scores`` (the scene-scoring path:
  same fill, crop and top-fraction reduction) and written through ``Scores.write_scores``; the queue reads those rows.
* **Strategies** (``STRATEGIES``): ``random``; ``uncertainty`` (closeness of the score to the model threshold,
  the store's ``uncertainty`` column, *without* spatial de-duplication: ``Leases.queue_candidates``
  and ``Leases.lease_cells`` directly); ``uncertainty-dedup`` (``next_cards``, which skips cells
  adjacent to one already in the batch); ``score`` (highest score first); ``mc-dropout`` (the
  uncertainty column holds the standard deviation of the cell score over Monte-Carlo dropout
  passes, ``model.score.mc_dropout_scores``; no de-dup, so it compares with ``uncertainty``);
  ``mixed`` (``Leases.queue_candidates``' mixed order: half uncertain, a quarter top score, a
  quarter random for an unbiased look at precision; with de-dup).
* **Metrics per round** on the test split: average precision (AP), precision at recall 0.9, and
  precision and recall at the model's threshold; in the unlabelled training split: cells predicted
  as mines whose truth is background (false positives left for reviewers). ``labels`` counts the
  oracle's decisions (skips included), not the seed labels.
* **Labels to target.** The labels a strategy needs for its mean AP (over seeds) to reach a
  target, interpolated linearly between rounds; the default target is the mean AP that random
  reaches after its last round. The ratio is random's labels divided by the strategy's (2.0:
  half the labels).
* **Training on few labels.** A round-1 model sees a few dozen labels: at a fixed epoch count it
  would get a handful of gradient steps, so each model gets about ``train_steps`` steps (batches of
  ``train_batch``; epochs between ``epochs`` and ``max_epochs``), no early stopping (the validation
  loss of a few patches is too noisy to stop on) and the max-F1 threshold only when validation
  holds at least ``MIN_VAL_PER_CLASS`` cells of each class (else 0.5, which class weights make
  the balanced choice).
* **Model tuning**, on the training split only: a geographic inner split of the training split
  (all its unambiguous cells labelled) compares class weights, augmentation and, with ``--full``,
  hard-negative weights; the threshold strategy (max-F1 on the model's own validation split, or
  0.5) is chosen on the inner validation split. The tuned configuration trains every model.
"""

from __future__ import annotations

import csv
import math
import random
import shutil
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from db.store import Store
from imagery.bands import BandMismatchError, parse_band_list
from imagery.grid import CellGrid, CellRange
from imagery.masks import mask_cell_fractions
from imagery.scene import SceneError, open_scene, scene_cells
from model.fcn import MARGIN_PX
from model.reduce import threshold_closeness
from model.train import TrainConfig, geographic_split, validation_metrics
from pipeline.ingest import ingest_files, year_mosaic
from pipeline.patch_split import read_groups
from pipeline.review import next_cards
from pipeline.seeds import MIN_MASK_FRACTION
from pipeline.settings import Settings, load_settings
from pipeline.training import (
    LabelledPatches,
    hard_negative_keys,
    label_summary,
    register_model,
    spatial_groups,
    train_from_patches,
)

#: Reviewer name of the simulated reviewer; label events carry source SOURCE.
ORACLE = "oracle"
SOURCE = "simulation"
#: Year the folder patches are ingested as (the Brazil patches are 2021 yearly medians).
FOLDER_YEAR = 2021
#: Side of the demo territory's held-out blocks, in cells.
DEMO_BLOCK_CELLS = 5
LEASE_SECONDS = 300.0
#: Validation cells per class below which a model keeps the 0.5 threshold.
MIN_VAL_PER_CLASS = 5
Echo = Callable[[str], None]


class SimulationError(ValueError):
    """Input the simulation cannot run on (the message says why, in one line)."""


@dataclass(frozen=True)
class Strategy:
    """How a simulated reviewer's batch is drawn from the queue."""

    name: str
    queue: str          # Leases.queue_candidates strategy
    dedup: bool         # through next_cards (spatial de-dup) or straight from the store
    mc_dropout: bool = False
    help: str = ""


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("random", "random", True, help="uniform random order"),
    Strategy("uncertainty", "uncertainty", False, help="closeness to the threshold, no de-dup"),
    Strategy("uncertainty-dedup", "uncertainty", True, help="closeness to the threshold, adjacent cells de-duplicated"),
    Strategy("score", "score", True, help="highest score first"),
    Strategy("mc-dropout", "uncertainty", False, mc_dropout=True,
             help="std of the score over Monte-Carlo dropout passes, no de-dup"),
    Strategy("mixed", "mixed", True, help="1/2 uncertain, 1/4 top score, 1/4 random; de-dup"),
)}

#: Columns of curves.csv, one row per (strategy, seed, round).
CURVE_COLUMNS: tuple[str, ...] = (
    "strategy", "seed", "round", "labels", "labels_mine", "labels_background", "labels_skip",
    "model_version", "threshold", "test_ap", "test_precision_at_recall_90", "test_precision",
    "test_recall", "pool_predicted_mines", "pool_false_positives_left", "hard_negatives",
    "train_seconds",
)


@dataclass
class SimConfig:
    """Parameters of a simulation (validated on construction)."""

    rounds: int = 4
    batch: int = 40
    seeds: tuple[int, ...] = (0, 1, 2)
    seed_per_class: int = 5
    strategies: tuple[str, ...] = tuple(STRATEGIES)
    test_fraction: float = 0.25
    split_seed: int = 0
    epochs: int = 8              # fewest epochs; small label sets get more (train_steps)
    train_steps: int = 80        # gradient steps aimed at per model, whatever the label count
    max_epochs: int = 20
    train_batch: int = 16
    widths: tuple[int, int, int] = (8, 16, 16)
    kernel: int = 3              # 5 learns more from all labels but is erratic on 10-130 labels
    hard_negative_weight: float = 2.0
    mc_samples: int = 8
    bands: tuple[str, ...] | None = None
    min_fraction: float = MIN_MASK_FRACTION
    search: str = "small"        # none | small | full
    ceiling: bool = True         # also train on every training-split label (the best case)
    target_ap: float | None = None
    demo_size_km: int = 20

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise SimulationError(message)

        check(self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}")
        check(self.batch >= 1, f"batch must be >= 1, got {self.batch}")
        self.seeds = tuple(int(s) for s in self.seeds)
        check(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds),
              f"seeds must be distinct, got {self.seeds}")
        check(self.seed_per_class >= 2, f"seed_per_class must be >= 2, got {self.seed_per_class}")
        self.strategies = tuple(self.strategies)
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        check(not unknown, f"unknown strategy {', '.join(unknown)}; choose from "
                           f"{', '.join(STRATEGIES)}")
        check(len(self.strategies) >= 1, "no strategy to simulate")
        check(0 < self.test_fraction < 1, f"test_fraction must be in (0, 1), got {self.test_fraction}")
        check(self.search in ("none", "small", "full"),
              f"search must be none, small or full, got {self.search!r}")
        check(0 < self.min_fraction <= 1, f"min_fraction must be in (0, 1], got {self.min_fraction}")
        check(self.mc_samples >= 2, f"mc_samples must be >= 2, got {self.mc_samples}")
        if self.bands is not None:
            try:
                self.bands = tuple(parse_band_list(self.bands))
            except ValueError as error:
                raise SimulationError(str(error)) from error


def preset(full: bool = False, *, rounds: int | None = None, batch: int | None = None,
           seeds: int | None = None, strategies: str | None = None, epochs: int | None = None,
           bands: str | None = None, target_ap: float | None = None) -> SimConfig:
    """The default run (a few minutes on 2 CPU cores: 3 seeds x 2 rounds of 60 labels, an
    8-16-16 FCN trained for about 50 steps, a small search) or ``full`` (5 seeds x 6 rounds of 40
    labels, the seed's 32-64-64 FCN, a larger search); given options override either."""
    return SimConfig(
        rounds=rounds or (6 if full else 2), batch=batch or (40 if full else 60),
        train_steps=120 if full else 50,
        seeds=tuple(range(seeds or (5 if full else 3))),
        strategies=tuple(strategies.split(",")) if strategies else tuple(STRATEGIES),
        epochs=epochs or (15 if full else 8), widths=(32, 64, 64) if full else (8, 16, 16),
        bands=tuple(bands.split(",")) if bands else None, search="full" if full else "small",
        target_ap=target_ap)


# ------------------------------------------------------------------------------------------------
# data: the territory, its cells, pixels and truth
@dataclass
class Territory:
    """Every scorable cell of the data, read once: pixels, truth and held-out unit."""

    name: str
    year: int
    bands: tuple[str, ...]
    base_db: Path                  # a store with the year ingested (copied for each run)
    cell_ids: np.ndarray           # (N,) int64
    scene_ids: np.ndarray          # (N,) int64 mosaic row (scene id) each cell was read from
    valid_fraction: np.ndarray     # (N,) float32
    pixels: np.ndarray             # (N, cp + 2m, cp + 2m, B) float32 DN
    fraction: np.ndarray           # (N,) truth mine fraction, NaN where unknown
    unit: np.ndarray               # (N,) int64 patch (or block) id for the test split
    min_fraction: float = MIN_MASK_FRACTION
    index: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {int(c): i for i, c in enumerate(self.cell_ids)}

    def truth(self, idx: np.ndarray | None = None) -> np.ndarray:
        """Oracle answer per cell: 1 mine, 0 background, -1 skip (ambiguous or unknown)."""
        f = self.fraction if idx is None else self.fraction[idx]
        out = np.full(len(f), -1, dtype=np.int8)
        known = np.isfinite(f)
        out[known & (f >= self.min_fraction)] = 1
        out[known & (f == 0)] = 0
        return out


class Oracle:
    """The simulated reviewer: answers 'mine', 'background' or 'skip' from ground truth."""

    def __init__(self, territory: Territory) -> None:
        self.territory = territory

    def answer(self, cell_id: int) -> str:
        i = self.territory.index.get(int(cell_id))
        if i is None:
            return "skip"
        value = int(self.territory.truth(np.array([i]))[0])
        return {1: "mine", 0: "background"}.get(value, "skip")


def _patch_number(path: Path) -> str:
    return path.stem.rsplit("_", 1)[-1]


def folder_pairs(data: Path) -> list[tuple[str, Path, Path]]:
    """(number, image, mask) of a folder laid out like ``tailings_rgb_brazil/``.

    ``img/img_N.tif`` is matched with ``mask/mask_N.tif`` by N; ``manifest.csv`` must exist and,
    when it has an ``id`` column, names the patches used.
    """
    data = Path(data)
    if not data.is_dir():
        raise SimulationError(f"{data}: no such data folder")
    for part in ("img", "mask"):
        if not (data / part).is_dir():
            raise SimulationError(f"{data}: no {part}/ folder (expected img/, mask/ and "
                                  "manifest.csv as in tailings_rgb_brazil/)")
    manifest = data / "manifest.csv"
    if not manifest.is_file():
        raise SimulationError(f"{data}: no manifest.csv")
    images = {_patch_number(p): p for p in (data / "img").glob("*.tif")}
    masks = {_patch_number(p): p for p in (data / "mask").glob("*.tif")}
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    wanted = [str(r["id"]).strip() for r in rows if r.get("id")] if rows and "id" in rows[0] \
        else sorted(images)
    if not wanted:
        raise SimulationError(f"{data}: no image patch (img/*.tif or manifest ids)")
    pairs = []
    for number in sorted(wanted, key=lambda n: (len(n), n)):
        if number not in images:
            raise SimulationError(f"{data}: manifest id {number} has no img/img_{number}.tif")
        if number not in masks:
            raise SimulationError(f"{data}: img/{images[number].name} has no "
                                  f"mask/mask_{number}.tif")
        pairs.append((number, images[number], masks[number]))
    return pairs


def _folder_units(data: Path, numbers: list[str]) -> list[int]:
    """The held-out unit of each patch: its ``groups.csv`` group when the folder has one (patch
    numbers missing there are an error), else the patch number (or its position)."""
    if not (data / "groups.csv").is_file():
        return [int(n) if n.isdigit() else i for i, n in enumerate(numbers)]
    try:
        groups = read_groups(data / "groups.csv")
    except ValueError as error:
        raise SimulationError(str(error)) from error
    missing = [n for n in numbers if not n.isdigit() or int(n) not in groups]
    if missing:
        raise SimulationError(f"{data / 'groups.csv'}: no group for patch(es) "
                              f"{', '.join(missing[:5])}")
    return [groups[int(n)] for n in numbers]


def _read_year_cells(store: Store, settings: Settings, year: int, bands: tuple[str, ...],
                     footprints: list[tuple[CellRange, int]]) -> dict[str, np.ndarray]:
    """Pixels of every cell of the year's mosaic with enough valid pixels; each cell's ``unit``
    is that of the first footprint (cell range, unit) that contains it."""
    mosaic = year_mosaic(settings, year)
    ids = np.concatenate([mosaic.valid_cells(b) for b in mosaic.blocks()])
    pixels, valid = mosaic.read_cells(ids, margin_px=MARGIN_PX, bands=bands)
    keep = valid >= settings.MIN_VALID_FRACTION
    if not keep.any():
        raise SimulationError("no cell of the data has enough valid pixels to be scored")
    ids, valid, pixels = ids[keep], valid[keep], pixels[keep]
    rows, cols = settings.grid.row_col(ids)
    unit = np.full(ids.size, -1, dtype=np.int64)
    for cells, number in reversed(footprints):
        inside = ((rows >= cells.row0) & (rows < cells.row1)
                  & (cols >= cells.col0) & (cols < cells.col1))
        unit[inside] = number
    return {
        "cell_ids": ids,
        "valid_fraction": valid.astype(np.float32),
        "scene_ids": np.full(ids.size, store.scenes.scenes(year)[0]["id"], dtype=np.int64),
        "unit": unit,
        "pixels": pixels,
    }


def _check_bands(asked: tuple[str, ...] | None, available: Sequence[str], name: str
                 ) -> tuple[str, ...]:
    if asked is None:
        return tuple(available)
    missing = [b for b in asked if b not in available]
    if missing:
        raise SimulationError(f"{name} has bands {', '.join(available)}; the simulation asked for "
                              f"{', '.join(asked)} ({', '.join(missing)} missing)")
    return asked


def load_folder(data: Path, work: Path, config: SimConfig, echo: Echo) -> Territory:
    """Ingest a tailings_rgb_brazil-like folder into a base store and read its cells and truth."""
    pairs = folder_pairs(data)
    settings = _settings(work / "base", config)
    year = FOLDER_YEAR
    fractions: dict[int, float] = {}
    with Store(settings.database_path) as store:
        try:
            scenes = [open_scene(image) for _, image, _ in pairs]
            record = ingest_files(store, settings, [image for _, image, _ in pairs], year).scene
        except (SceneError, BandMismatchError) as error:
            raise SimulationError(str(error).splitlines()[0]) from error
        bands = _check_bands(config.bands, record["bands"], Path(data).name)
        echo(f"{Path(data).name}: {len(pairs)} patches ingested, bands {','.join(bands)}; "
             "reading cells once")
        units = _folder_units(Path(data), [n for n, _, _ in pairs])
        footprints = [(scene_cells(scene, settings.grid), unit)
                      for scene, unit in zip(scenes, units, strict=True)]
        cells = _read_year_cells(store, settings, year, bands, footprints)
    for _, _, mask in pairs:
        try:
            ids, share, covered = mask_cell_fractions(mask, settings.grid)
        except SceneError as error:
            raise SimulationError(str(error).splitlines()[0]) from error
        for cell_id, f, c in zip(ids, share, covered, strict=True):
            if c >= 0.5 and np.isfinite(f):
                fractions[int(cell_id)] = max(float(f), fractions.get(int(cell_id), 0.0))
    fraction = np.array([fractions.get(int(c), np.nan) for c in cells["cell_ids"]])
    return Territory(name=Path(data).name, year=year, bands=bands, base_db=settings.database_path,
                     fraction=fraction, min_fraction=config.min_fraction, **cells)


def load_demo(work: Path, config: SimConfig, echo: Echo) -> Territory:
    """Generate the synthetic demo territory (one year) and read its cells and truth."""
    from imagery.demo import build_demo, truth_mine_fraction

    settings = _settings(work / "base", config)
    year = 2021
    echo(f"demo: generating a synthetic {config.demo_size_km} km territory for {year}")
    territory = build_demo(work / "demo", size_km=config.demo_size_km, years=(year,), seed=2021)
    with Store(settings.database_path) as store:
        record = ingest_files(store, settings, [territory.scenes[year]], year).scene
        bands = _check_bands(config.bands, record["bands"], "the demo territory")
        cells = _read_year_cells(store, settings, year, bands, [])
    rows, cols = np.divmod(cells["cell_ids"], 100_000)
    cells["unit"] = (rows // DEMO_BLOCK_CELLS) * 1_000_000 + cols // DEMO_BLOCK_CELLS
    fraction = truth_mine_fraction(territory.truth_path, settings.grid, cells["cell_ids"], year)
    return Territory(name="demo", year=year, bands=bands, base_db=settings.database_path,
                     fraction=np.asarray(fraction, dtype=np.float64),
                     min_fraction=config.min_fraction, **cells)


# ------------------------------------------------------------------------------------------------
# splits and seeds
@dataclass
class Split:
    """Indices (into the territory) of the training split (the pool) and the test split."""

    pool: np.ndarray
    test: np.ndarray


def _ring(cell_ids: np.ndarray) -> np.ndarray:
    """The cells that share an edge or a corner with ``cell_ids`` (and those cells)."""
    rows, cols = CellGrid.row_col(np.asarray(cell_ids, dtype=np.int64))
    return np.unique(np.concatenate([CellGrid.cell_id(rows + dr, cols + dc)
                                     for dr in (-1, 0, 1) for dc in (-1, 0, 1)]))


def test_split(territory: Territory, config: SimConfig) -> Split:
    """Hold out whole units (patches, groups or blocks) until ``test_fraction`` of the cells; the
    training split (pool) leaves out the cells touching a test cell; both splits must have both
    classes."""
    truth = territory.truth()
    units = np.unique(territory.unit)
    if len(units) < 2:
        raise SimulationError(f"{territory.name}: one patch only; a geographic test split needs "
                              "at least two")
    order = np.random.default_rng(config.split_seed).permutation(units)
    target = config.test_fraction * len(truth)
    chosen: list[int] = []
    count = 0
    for unit in order:
        if count >= target:
            break
        if len(chosen) + 1 == len(units):
            break
        chosen.append(int(unit))
        count += int((territory.unit == unit).sum())
    in_test = np.isin(territory.unit, chosen)
    near = np.isin(territory.cell_ids, _ring(territory.cell_ids[in_test]))
    split = Split(pool=np.flatnonzero(~in_test & ~near), test=np.flatnonzero(in_test))
    for name, idx in (("training", split.pool), ("test", split.test)):
        mines, background = int((truth[idx] == 1).sum()), int((truth[idx] == 0).sum())
        if mines == 0 or background == 0:
            raise SimulationError(
                f"{territory.name}: the {name} split has {mines} mine and {background} background "
                f"cells (mine: >= {territory.min_fraction:.0%} mask); both classes are needed")
    return split


def check_budget(territory: Territory, split: Split, config: SimConfig) -> None:
    """Refuse a simulation that asks for more labels (or seed labels) than the pool holds."""
    truth = territory.truth(split.pool)
    for cls, name in ((1, "mine"), (0, "background")):
        have = int((truth == cls).sum())
        if have < config.seed_per_class:
            raise SimulationError(
                f"{territory.name}: the training split has {have} {name} cells, fewer than the "
                f"{config.seed_per_class} seed labels asked per class (empty class?)")
    asked = config.rounds * config.batch
    left = len(split.pool) - 2 * config.seed_per_class
    if asked > left:
        raise SimulationError(
            f"{territory.name}: {config.rounds} rounds x {config.batch} labels = {asked} labels "
            f"asked, but the training split has only {left} unlabelled cells")


def seed_set(territory: Territory, split: Split, config: SimConfig, seed: int) -> list[int]:
    """Indices of the seed labels: ``seed_per_class`` random mine and background cells."""
    rng = np.random.default_rng([seed, 7])
    truth = territory.truth(split.pool)
    chosen = []
    for cls in (1, 0):
        members = split.pool[truth == cls]
        chosen.extend(rng.choice(members, size=config.seed_per_class, replace=False).tolist())
    return sorted(int(i) for i in chosen)


# ------------------------------------------------------------------------------------------------
# the loop's steps
def _settings(data_dir: Path, config: SimConfig) -> Settings:
    data_dir.mkdir(parents=True, exist_ok=True)
    return load_settings({"DATA_DIR": str(data_dir), "TRAIN_EPOCHS": config.epochs,
                          "FCN_WIDTHS": ",".join(map(str, config.widths)),
                          "FCN_KERNEL": config.kernel,
                          "HARD_NEGATIVE_WEIGHT": config.hard_negative_weight}, environ={})


def fit_config(base: TrainConfig, n_labels: int, config: SimConfig) -> TrainConfig:
    """``base`` with enough epochs for about ``config.train_steps`` steps on ``n_labels``."""
    steps_per_epoch = max(1, math.ceil((1 - base.val_fraction) * n_labels / base.batch_size))
    epochs = min(max(config.epochs, math.ceil(config.train_steps / steps_per_epoch)),
                 max(config.max_epochs, config.epochs))
    return replace(base, epochs=epochs)


def base_train_config(config: SimConfig) -> TrainConfig:
    """The training parameters every simulated model starts from (before tuning)."""
    return TrainConfig(epochs=config.epochs, widths=config.widths, kernel=config.kernel,
                       batch_size=config.train_batch,
                       patience=10_000,
                       min_per_class=min(MIN_VAL_PER_CLASS, config.seed_per_class),
                       hard_negative_weight=config.hard_negative_weight)


def copy_database(source: Path, target_dir: Path) -> None:
    """Copy an installation's database into ``target_dir`` (as minewatch.db)."""
    target_dir.mkdir(parents=True, exist_ok=True)
    # sqlite's backup API copies a consistent snapshot, WAL included.
    with sqlite3.connect(source) as src, sqlite3.connect(target_dir / "minewatch.db") as dst:
        src.backup(dst)


def train_round(store: Store, settings: Settings, territory: Territory, config: TrainConfig,
                sim: SimConfig) -> tuple[Any, float, int]:
    """Train a model version on the store's training labels, register it active.

    Returns (bundle, seconds, hard negatives). Pixels come from the territory's cache; labels,
    hard negatives, the summary and registration are the app's (``pipeline.training``).
    """
    import keras

    keras.backend.clear_session()
    rows = store.labels.training_labels()
    parent = store.models.active_model()
    hard = hard_negative_keys(store, parent)
    idx = np.array([territory.index[int(r["cell_id"])] for r in rows], dtype=np.int64)
    cell_ids = territory.cell_ids[idx]
    years = np.array([r["year"] for r in rows], dtype=np.int64)
    patches = LabelledPatches(
        pixels=territory.pixels[idx],
        labels=np.array([r["label"] == "mine" for r in rows], dtype=np.int8),
        groups=spatial_groups(cell_ids), cell_ids=cell_ids, years=years,
        sources=[r["source"] for r in rows],
        hard_negative=np.array([(int(c), int(y)) in hard for c, y in zip(cell_ids, years,
                                                                          strict=True)]),
        skipped=0)
    started = time.perf_counter()
    result = train_from_patches(patches, territory.bands, settings,
                                version=store.models.next_model_version(),
                                parent=parent["version"] if parent else None,
                                training_info={**label_summary(patches), "simulation": True},
                                config=fit_config(config, len(rows), sim))
    seconds = time.perf_counter() - started
    register_model(store, settings, result.bundle, activate=True)
    return result.bundle, seconds, int(patches.hard_negative.sum())


def score_pool(store: Store, territory: Territory, bundle: Any, pool: np.ndarray, *,
               mc_samples: int | None = None, seed: int = 0) -> np.ndarray:
    """Score the pool's cached cells and write the rows through ``Scores.write_scores``.

    The uncertainty column is the closeness of the score to the threshold, or with ``mc_samples`` the standard
    deviation of the score over Monte-Carlo dropout passes. Returns the scores.
    """
    from model.score import mc_dropout_scores, patch_scores

    scores = patch_scores(bundle, territory.pixels, pool, batch_size=128)
    if mc_samples:
        uncertainty = np.concatenate([
            mc_dropout_scores(bundle, territory.pixels[pool[i:i + 256]], mc_samples, seed=seed,
                              batch_size=128)[1] for i in range(0, len(pool), 256)])
    else:
        uncertainty = threshold_closeness(scores, bundle.threshold)
    scene_ids = territory.scene_ids[pool]
    for scene_id in np.unique(scene_ids):
        sel = scene_ids == scene_id
        store.scores.write_scores(territory.year, bundle.version, int(scene_id),
                                  territory.cell_ids[pool][sel], scores[sel], uncertainty[sel],
                                  territory.valid_fraction[pool][sel])
    return scores


def pick_batch(store: Store, strategy: Strategy, year: int, n: int) -> list[dict[str, Any]]:
    """The oracle's next ``n`` cards, leased to it, from the app's queue code."""
    if strategy.dedup:
        return next_cards(store, reviewer=ORACLE, strategy=strategy.queue, year=year, n=n,
                          lease_seconds=LEASE_SECONDS)
    version = store.models.active_model()["version"]
    with store.atomic():
        rows = store.leases.queue_candidates(version, year, strategy.queue, ORACLE, n)
        leased = set(store.leases.lease_cells([(r["cell_id"], year) for r in rows], ORACLE,
                                              LEASE_SECONDS))
    return [r for r in rows if (int(r["cell_id"]), year) in leased]


def precision_at_recall(y: np.ndarray, scores: np.ndarray, recall: float = 0.9) -> float:
    """Best precision among thresholds whose recall is at least ``recall``."""
    from sklearn.metrics import precision_recall_curve

    p, r, _ = precision_recall_curve(y, scores)
    ok = r >= recall
    return float(p[ok].max()) if ok.any() else 0.0


def test_metrics(territory: Territory, test: np.ndarray, bundle: Any) -> dict[str, float]:
    """AP, precision at recall 0.9, precision and recall at the threshold on the test split."""
    from sklearn.metrics import average_precision_score

    from model.score import patch_scores

    truth = territory.truth(test)
    keep = test[truth >= 0]
    y = truth[truth >= 0].astype(np.int64)
    scores = patch_scores(bundle, territory.pixels, keep, batch_size=128)
    at = validation_metrics(y, scores, bundle.threshold)
    return {"test_ap": float(average_precision_score(y, scores)),
            "test_precision_at_recall_90": precision_at_recall(y, scores),
            "test_precision": at["precision"], "test_recall": at["recall"]}


def pool_metrics(territory: Territory, pool: np.ndarray, scores: np.ndarray, threshold: float,
                 labelled: set[int]) -> dict[str, int]:
    """Predicted mines and false positives left among the unlabelled cells of the pool."""
    unlabelled = np.array([int(c) not in labelled for c in territory.cell_ids[pool]])
    predicted = unlabelled & (scores >= threshold)
    truth = territory.truth(pool)
    return {"pool_predicted_mines": int(predicted.sum()),
            "pool_false_positives_left": int((predicted & (truth == 0)).sum())}


def label_counts(answers: Sequence[str]) -> dict[str, int]:
    """The oracle's decisions so far, by label."""
    return {"labels": len(answers), "labels_mine": answers.count("mine"),
            "labels_background": answers.count("background"),
            "labels_skip": answers.count("skip")}


# ------------------------------------------------------------------------------------------------
# tuning on the training split
@dataclass
class Tuning:
    """The configuration chosen on the training split, and every candidate's inner-split figures."""

    config: TrainConfig
    rows: list[dict[str, Any]]


def _fit_eval(territory: Territory, train_idx: np.ndarray, eval_idx: np.ndarray,
              config: TrainConfig, sim: SimConfig, hard: np.ndarray | None = None
              ) -> tuple[Any, dict[str, Any]]:
    import keras
    from sklearn.metrics import average_precision_score

    from model.score import patch_scores
    from model.train import train_bundle

    keras.backend.clear_session()
    y = (territory.truth(train_idx) == 1).astype(np.int8)
    started = time.perf_counter()
    result = train_bundle(territory.pixels[train_idx], y,
                          spatial_groups(territory.cell_ids[train_idx]), territory.bands,
                          fit_config(config, len(train_idx), sim), version="tune",
                          hard_negatives=hard)
    seconds = time.perf_counter() - started
    y_eval = (territory.truth(eval_idx) == 1).astype(np.int64)
    scores = patch_scores(result.bundle, territory.pixels, eval_idx, batch_size=128)
    own = validation_metrics(y_eval, scores, result.bundle.threshold)
    half = validation_metrics(y_eval, scores, 0.5)
    return result.bundle, {
        "ap": float(average_precision_score(y_eval, scores)),
        "precision_at_recall_90": precision_at_recall(y_eval, scores),
        "f1_max_f1_threshold": own["f1"], "f1_threshold_0.5": half["f1"],
        "seconds": round(seconds, 1), "scores": scores,
    }


def tune(territory: Territory, split: Split, config: SimConfig, echo: Echo) -> Tuning:
    """Choose class weights, augmentation, hard-negative weight and threshold on the training
    split only (a geographic inner split of its unambiguous cells)."""
    base = base_train_config(config)
    if config.search == "none":
        return Tuning(base, [])
    truth = territory.truth(split.pool)
    clear = split.pool[truth >= 0]
    inner_train, inner_val = geographic_split(territory.unit[clear], truth[truth >= 0], 1 / 3,
                                              seed=config.split_seed + 1)
    tr, va = clear[inner_train], clear[inner_val]
    candidates: list[tuple[str, dict[str, Any]]] = [
        ("class weights + augmentation", {}),
        ("no augmentation", {"augment": False}),
        ("no class weights", {"balance": False}),
    ]
    if config.search == "full":
        candidates += [("learning rate 3e-3", {"learning_rate": 3e-3}),
                       ("no class weights, no augmentation", {"augment": False,
                                                               "balance": False})]
    rows: list[dict[str, Any]] = []
    best: tuple[float, TrainConfig, dict[str, Any]] | None = None
    for name, change in candidates:
        candidate = replace(base, **change)
        _, figures = _fit_eval(territory, tr, va, candidate, config)
        figures.pop("scores")
        rows.append({"candidate": name, **figures})
        echo(f"  tuning {name}: inner AP {figures['ap']:.3f} ({figures['seconds']} s)")
        if best is None or figures["ap"] > best[0]:
            best = (figures["ap"], candidate, figures)
    _, chosen, figures = best
    if config.search == "full":
        chosen = _tune_hard_negatives(territory, tr, va, chosen, config, rows, echo)
    strategy = ("max_f1" if figures["f1_max_f1_threshold"] >= figures["f1_threshold_0.5"]
                else "fixed")
    rows.append({"candidate": f"threshold: {strategy}",
                 "f1_max_f1_threshold": figures["f1_max_f1_threshold"],
                 "f1_threshold_0.5": figures["f1_threshold_0.5"]})
    return Tuning(replace(chosen, threshold_strategy=strategy), rows)


def _tune_hard_negatives(territory: Territory, tr: np.ndarray, va: np.ndarray,
                         chosen: TrainConfig, config: SimConfig, rows: list[dict[str, Any]],
                         echo: Echo) -> TrainConfig:
    """A parent trained on half the inner-train units flags false positives in the other half;
    children trained with those hard negatives at weights 1, 2, 4 are compared on inner-val."""
    units = np.unique(territory.unit[tr])
    first = np.isin(territory.unit[tr], units[::2])
    parent, _ = _fit_eval(territory, tr[first], va, chosen, config)
    from model.score import patch_scores

    other = tr[~first]
    flagged = patch_scores(parent, territory.pixels, other) >= parent.threshold
    hard_cells = set(other[flagged & (territory.truth(other) == 0)].tolist())
    hard = np.array([i in hard_cells for i in tr])
    best = (-1.0, chosen)
    for weight in (1.0, 2.0, 4.0):
        candidate = replace(chosen, hard_negative_weight=weight)
        _, figures = _fit_eval(territory, tr, va, candidate, config, hard=hard)
        figures.pop("scores")
        rows.append({"candidate": f"hard-negative weight {weight:g} ({len(hard_cells)} hard)",
                     **figures})
        echo(f"  tuning hard-negative weight {weight:g}: inner AP {figures['ap']:.3f}")
        if figures["ap"] > best[0]:
            best = (figures["ap"], candidate)
    return best[1]


# ------------------------------------------------------------------------------------------------
# the simulation
@dataclass
class SimResult:
    """Everything a simulation measured."""

    territory: str
    curves: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    target_ap: float
    tuning: Tuning
    ceiling: dict[str, Any] | None
    test_cells: dict[str, int]
    seconds: float
    test_cell_ids: list[int] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)


def _record_round(rows: list[dict[str, Any]], territory: Territory, split: Split, bundle: Any,
                  scores: np.ndarray, *, answers: list[str], labelled: set[int], strategy: str,
                  seed: int, round_: int, seconds: float, hard: int) -> dict[str, Any]:
    row = {"strategy": strategy, "seed": seed, "round": round_, **label_counts(answers),
           "model_version": bundle.version, "threshold": round(float(bundle.threshold), 4),
           **test_metrics(territory, split.test, bundle),
           **pool_metrics(territory, split.pool, scores, bundle.threshold, labelled),
           "hard_negatives": hard, "train_seconds": round(seconds, 2)}
    rows.append(row)
    return row


def simulate_seed(territory: Territory, split: Split, config: SimConfig, train: TrainConfig,
                  seed: int, work: Path, echo: Echo) -> list[dict[str, Any]]:
    """Round 0 (seed labels) once, then every strategy's rounds from a copy of that store."""
    rows: list[dict[str, Any]] = []
    train = replace(train, seed=seed)
    seed_dir = work / f"seed{seed}"
    copy_database(territory.base_db, seed_dir)
    settings = _settings(seed_dir, config)
    with Store(settings.database_path) as store:
        seeds = seed_set(territory, split, config, seed)
        truth = territory.truth(np.array(seeds))
        store.labels.replace_seed_labels(territory.year, [
            (int(territory.cell_ids[i]), "mine" if t == 1 else "background")
            for i, t in zip(seeds, truth, strict=True)], f"simulation seed {seed}")
        bundle, seconds, _ = train_round(store, settings, territory, train, config)
        scores = score_pool(store, territory, bundle, split.pool)
        seeded = {int(territory.cell_ids[i]) for i in seeds}
        start = _record_round([], territory, split, bundle, scores, answers=[], labelled=seeded,
                              strategy="", seed=seed, round_=0, seconds=seconds, hard=0)
    echo(f"seed {seed}: round 0 on {len(seeds)} seed labels: test AP {start['test_ap']:.3f}")
    for name in config.strategies:
        strategy = STRATEGIES[name]
        random.seed(f"{seed}-{name}")  # the store's random queue order and score.rand
        run_dir = work / f"seed{seed}-{name}"
        copy_database(settings.database_path, run_dir)
        run_settings = _settings(run_dir, config)
        rows.append({**start, "strategy": name})
        with Store(run_settings.database_path) as store:
            if strategy.mc_dropout:
                score_pool(store, territory, bundle, split.pool, mc_samples=config.mc_samples,
                           seed=seed)
            current = bundle
            answers: list[str] = []
            labelled = set(seeded)
            oracle = Oracle(territory)
            for round_ in range(1, config.rounds + 1):
                cards = pick_batch(store, strategy, territory.year, config.batch)
                if not cards:
                    raise SimulationError(f"the queue ran dry after {round_ - 1} rounds")
                with store.atomic():
                    for card in cards:
                        answers.append(oracle.answer(card["cell_id"]))
                        labelled.add(int(card["cell_id"]))
                        store.labels.record_label(
                            int(card["cell_id"]), territory.year, answers[-1], ORACLE,
                            source=SOURCE, score_shown=card["score"],
                            model_version_shown=current.version,
                            request_id=f"sim-{seed}-{name}-{round_}-{card['cell_id']}")
                current, seconds, hard = train_round(store, run_settings, territory, train,
                                                     config)
                scores = score_pool(store, territory, current, split.pool,
                                    mc_samples=config.mc_samples if strategy.mc_dropout else None,
                                    seed=seed + round_)
                row = _record_round(rows, territory, split, current, scores, answers=answers,
                                    labelled=labelled, strategy=name, seed=seed, round_=round_,
                                    seconds=seconds, hard=hard)
            echo(f"seed {seed} {name:<17} {row['labels']} labels: test AP {row['test_ap']:.3f}, "
                 f"P@R0.9 {row['test_precision_at_recall_90']:.3f}, "
                 f"FP left {row['pool_false_positives_left']}")
        # Each run's models are only needed while it runs.
        shutil.rmtree(run_dir / "models", ignore_errors=True)
    return rows


def labels_to_target(labels: Sequence[float], values: Sequence[float], target: float
                     ) -> float | None:
    """Labels at which a learning curve first reaches ``target`` (linear interpolation between
    points); None when it never does."""
    labels, values = list(labels), list(values)
    for i, (x, v) in enumerate(zip(labels, values, strict=True)):
        if v >= target:
            if i == 0:
                return float(x)
            x0, v0 = labels[i - 1], values[i - 1]
            return float(x0 + (x - x0) * (target - v0) / (v - v0))
    return None


def mean_curves(curves: list[dict[str, Any]], metric: str) -> dict[str, tuple[list, list, list]]:
    """Per strategy: (labels, mean, std) of ``metric`` over seeds, by round."""
    out = {}
    for name in dict.fromkeys(r["strategy"] for r in curves):
        rounds: dict[int, list[dict[str, Any]]] = {}
        for r in curves:
            if r["strategy"] == name:
                rounds.setdefault(int(r["round"]), []).append(r)
        keys = sorted(rounds)
        out[name] = ([float(np.mean([r["labels"] for r in rounds[k]])) for k in keys],
                     [float(np.mean([r[metric] for r in rounds[k]])) for k in keys],
                     [float(np.std([r[metric] for r in rounds[k]])) for k in keys])
    return out


def summarise(curves: list[dict[str, Any]], target_ap: float | None = None
              ) -> tuple[list[dict[str, Any]], float]:
    """Per strategy: labels to reach the target AP, ratio to random, final-round means."""
    ap = mean_curves(curves, "test_ap")
    if target_ap is None:  # what random reaches at its last round (else the first strategy)
        target_ap = ap["random" if "random" in ap else next(iter(ap))][1][-1]
    reference = labels_to_target(*ap["random"][:2], target_ap) if "random" in ap else None
    last_round = max(int(r["round"]) for r in curves)
    summary = []
    for name, (labels, mean, _) in ap.items():
        needed = labels_to_target(labels, mean, target_ap)
        final = [r for r in curves if r["strategy"] == name and int(r["round"]) == last_round]
        row = {"strategy": name, "labels_to_target": None if needed is None else round(needed, 1),
               "ratio_vs_random": (round(reference / needed, 2) if needed and reference
                                   else None),
               "mean_ap_over_rounds": round(float(np.mean(mean[1:] or mean)), 4)}
        for key in ("test_ap", "test_precision_at_recall_90", "test_precision", "test_recall",
                    "pool_false_positives_left", "labels_mine", "labels_skip"):
            values = [float(r[key]) for r in final]
            row[key] = round(float(np.mean(values)), 4)
            row[f"{key}_std"] = round(float(np.std(values)), 4)
        summary.append(row)
    return summary, float(target_ap)


def winner(summary: list[dict[str, Any]]) -> str:
    """The strategy needing the fewest labels to the target (unreached counts as infinity), ties
    broken by the mean AP over rounds."""
    return min(summary, key=lambda r: (r["labels_to_target"] if r["labels_to_target"] is not None
                                       else math.inf, -r["mean_ap_over_rounds"]))["strategy"]


def run_simulation(data: str | Path, work: Path, config: SimConfig, *,
                   echo: Echo = lambda message: None) -> SimResult:
    """Load the data, tune on the training split, simulate every strategy and seed."""
    started = time.perf_counter()
    work = Path(work)
    if str(data) == "demo":
        territory = load_demo(work, config, echo)
    else:
        territory = load_folder(Path(data), work, config, echo)
    split = test_split(territory, config)
    check_budget(territory, split, config)
    truth = territory.truth()
    test_cells = {"mine": int((truth[split.test] == 1).sum()),
                  "background": int((truth[split.test] == 0).sum()),
                  "ambiguous": int((truth[split.test] == -1).sum())}
    echo(f"{len(split.pool)} training-split cells ({int((truth[split.pool] == 1).sum())} mine, "
         f"{int((truth[split.pool] == -1).sum())} ambiguous), {len(split.test)} test cells in "
         f"{len(np.unique(territory.unit[split.test]))} held-out units ({test_cells})")
    tuning = tune(territory, split, config, echo)
    ceiling = None
    if config.ceiling:
        clear = split.pool[territory.truth(split.pool) >= 0]
        bundle, figures = _fit_eval(territory, clear, split.test[truth[split.test] >= 0],
                                    tuning.config, config)
        ceiling = {"labels": int(len(clear)), **test_metrics(territory, split.test, bundle),
                   "threshold": round(float(bundle.threshold), 4),
                   "train_seconds": figures["seconds"]}
        echo(f"every training-split label ({len(clear)}): test AP {ceiling['test_ap']:.3f}, "
             f"precision {ceiling['test_precision']:.3f}, recall {ceiling['test_recall']:.3f}")
    curves: list[dict[str, Any]] = []
    for seed in config.seeds:
        curves += simulate_seed(territory, split, config, tuning.config, seed, work, echo)
    summary, target = summarise(curves, config.target_ap)
    return SimResult(territory=territory.name, curves=curves, summary=summary, target_ap=target,
                     tuning=tuning, ceiling=ceiling, test_cells=test_cells,
                     seconds=time.perf_counter() - started,
                     test_cell_ids=[int(c) for c in territory.cell_ids[split.test]])


# ------------------------------------------------------------------------------------------------
# outputs
def write_outputs(result: SimResult, out: Path, config: SimConfig) -> dict[str, Path]:
    """curves.csv, summary.csv, tuning.csv and learning_curves.png under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"curves": out / "curves.csv", "summary": out / "summary.csv",
             "tuning": out / "tuning.csv", "plot": out / "learning_curves.png"}
    _write_csv(files["curves"], result.curves, CURVE_COLUMNS)
    _write_csv(files["summary"], result.summary, tuple(result.summary[0]))
    tuning_rows = result.tuning.rows or [{"candidate": "none (search off)"}]
    columns = tuple(dict.fromkeys(k for r in tuning_rows for k in r))
    _write_csv(files["tuning"], tuning_rows + [{"candidate": "chosen: " + str(
        {k: v for k, v in asdict(result.tuning.config).items()
         if k in ("augment", "balance", "hard_negative_weight", "threshold_strategy",
                  "learning_rate", "epochs", "widths", "kernel")})}], columns)
    plot_curves(result, files["plot"], config)
    result.files = files
    return files


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(result: SimResult, path: Path, config: SimConfig) -> None:
    """Three panels (test AP, precision at recall 0.9, false positives left) against labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("test_ap", "test-split average precision"),
              ("test_precision_at_recall_90", "test-split precision at recall 0.9"),
              ("pool_false_positives_left", "false positives left among predicted mines\n"
                                            "(unlabelled training-split cells)"))
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    colours = dict(zip(STRATEGIES, ("#555555", "#1f77b4", "#17becf", "#d62728", "#9467bd",
                                    "#2ca02c"), strict=True))
    for ax, (metric, title) in zip(axes, panels, strict=True):
        for name, (labels, mean, std) in mean_curves(result.curves, metric).items():
            mean_a, std_a = np.array(mean), np.array(std)
            ax.plot(labels, mean_a, marker="o", lw=2 if name == "random" else 1.6,
                    ls="--" if name == "random" else "-", color=colours.get(name), label=name)
            ax.fill_between(labels, mean_a - std_a, mean_a + std_a, alpha=0.12,
                            color=colours.get(name))
        if metric == "test_ap":
            ax.axhline(result.target_ap, color="black", lw=0.8, ls=":")
            ax.annotate(f"target AP {result.target_ap:.3f}", (0, result.target_ap),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
            if result.ceiling:
                ax.axhline(result.ceiling["test_ap"], color="#ff7f0e", lw=0.8, ls="-.")
                ax.annotate(f"all {result.ceiling['labels']} training labels: "
                            f"{result.ceiling['test_ap']:.3f}", (0, result.ceiling["test_ap"]),
                            textcoords="offset points", xytext=(4, -11), fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("labels spent by the simulated reviewer (skips included)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Active learning on {result.territory}: mean ± std over seeds "
                 f"{', '.join(map(str, config.seeds))}; batch {config.batch}, "
                 f"{2 * config.seed_per_class} seed labels; test split: {result.test_cells}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(result: SimResult) -> str:
    """The summary as a Markdown table."""
    lines = [f"target: test AP {result.target_ap:.3f}",
             "",
             "| strategy | labels to target | x fewer than random | final AP | P@R0.9 | "
             "precision | recall | FP left | mines labelled | skips |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result.summary:
        needed = "not reached" if r["labels_to_target"] is None else f"{r['labels_to_target']:.0f}"
        ratio = "–" if r["ratio_vs_random"] is None else f"{r['ratio_vs_random']:.2f}"
        lines.append(
            f"| {r['strategy']} | {needed} | {ratio} | {r['test_ap']:.3f} ± {r['test_ap_std']:.3f}"
            f" | {r['test_precision_at_recall_90']:.3f} | {r['test_precision']:.3f} | "
            f"{r['test_recall']:.3f} | {r['pool_false_positives_left']:.0f} | "
            f"{r['labels_mine']:.0f} | {r['labels_skip']:.0f} |")
    if result.ceiling:
        c = result.ceiling
        lines += ["", f"all {c['labels']} training-split labels: test AP {c['test_ap']:.3f}, "
                      f"precision {c['test_precision']:.3f}, recall {c['test_recall']:.3f}, "
                      f"P@R0.9 {c['test_precision_at_recall_90']:.3f} "
                      f"(threshold {c['threshold']:.3f})"]
    return "\n".join(lines)


def simulate_command(data: str | Path, out: Path, config: SimConfig, *, echo: Echo = print,
                     work: Path | None = None) -> SimResult:
    """Run a simulation in a temporary data folder, write its files and print its table."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="minewatch-sim-") as tmp:
        result = run_simulation(data, Path(work or tmp), config, echo=echo)
    write_outputs(result, out, config)
    echo(format_table(result))
    echo(f"winner: {winner(result.summary)}; run time {result.seconds:.0f} s; files: "
         + ", ".join(str(p) for p in result.files.values()))
    return result
