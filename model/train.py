"""Train the FCN on patch labels and package it as a ModelBundle.

Choices, so a reader need not infer them from the code:

* **Split**: by geography. Whole spatial groups (e.g. 10 x 10 km blocks of cells, or any integer
  group ids chosen by the caller) go to validation; neighbouring cells never straddle the split.
  Validation gets both classes whenever some group can provide them. A caller may give the
  validation indices instead (``validation``: e.g. the installation's fixed validation blocks).
* **Memory**: patches come from a ``PatchSource`` (an in-memory array, or the imagery store read
  batch by batch: ``pipeline.training.StorePatches``); training holds one batch at a time.
* **Normalisation**: per-band mean and standard deviation of the valid (non-NaN) pixels of the
  training split (a seeded sample of at most ``BAND_SAMPLE_PATCHES`` patches), stored inside the
  model. NaN pixels are filled with the band mean (0 after the normalisation), batch by batch,
  exactly as ``ModelBundle.mine_probability`` does when scoring.
* **Balance**: class weights, not oversampling. Each class gets total weight N/2 (inverse class
  frequency), multiplied by the caller's ``sample_weight`` and by ``hard_negative_weight`` for
  hard negatives (background patches a reviewer corrected from a false alarm). Weights keep an
  epoch at N patches, which matters on CPU when background outnumbers mines many times over.
* **Augmentation**: each patch gets a random element of the dihedral group (one of four 90-degree
  rotations, optionally mirrored) every epoch, in numpy, batch by batch; mines have no preferred
  orientation and patches are square.
* **Loss**: the training model is FCN -> crop the margin (MARGIN_PX / STRIDE blocks per side) ->
  ``TopFractionMean`` -> binary cross-entropy against the patch label; see model/reduce.py.
  Adam, early stopping on validation loss (``PATIENCE`` epochs without a drop of ``MIN_DELTA``)
  with the best weights restored.
* **Dense supervision** where masks exist: a source whose patches carry per-block targets
  (``BlockSource``: the mask fraction of each STRIDE x STRIDE output block of the cell interior,
  and a weight per block, the share of its pixels the mask covers) adds ``dense_weight`` x the
  per-block binary cross-entropy of the FCN's cropped map against those fractions
  (``BlockCrossEntropy``), class-weighted like the cell loss; a patch without targets has block
  weights 0 and only the cell loss. Early stopping then watches the validation *cell* loss, so
  it means the same with and without masks. ``depth`` None ("auto") builds 4 convolutions when
  this loss is used (and the kernel's reach allows it), else the seed's 3: the combination
  ranked held-out Brazil tailings cells better in ``bench/detector.py`` (in-memory cells), but
  not through the installation's path (``bench/real_data.py``), so ``dense_weight`` is 0 unless
  a caller asks for it.
* **Threshold**: ``max_f1`` picks the score threshold that maximises F1 on validation (a cell is
  a mine when score >= threshold); with fewer than ``min_per_class`` of either class in
  validation it falls back to 0.5 and says so in the metrics. Validation scores are computed
  through the same numpy path as scene scoring. The F1 at the chosen threshold is therefore
  optimistic; average precision and ROC AUC do not depend on it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import keras
import numpy as np

from imagery.bands import parse_band_list
from model.bundle import ModelBundle, check_version
from model.fcn import (
    DEPTH,
    DEPTHS,
    DROPOUT,
    KERNEL,
    KERNELS,
    MARGIN_PX,
    MINE_CHANNEL,
    STRIDE,
    WIDTHS,
    build_fcn,
    receptive_reach_px,
)
from model.reduce import REDUCTION, TOP_FRACTION, TopFractionMean
from model.score import patch_scores

THRESHOLD_STRATEGIES = ("max_f1", "fixed")
#: Threshold used by the "fixed" strategy and whenever validation is too small.
DEFAULT_THRESHOLD = 0.5
#: Most training patches read to compute the per-band normalisation (a seeded random sample).
BAND_SAMPLE_PATCHES = 1024
#: The depth "auto" picks when training patches carry per-block mask targets.
DENSE_DEPTH = 4
#: Probabilities are clipped to [BCE_EPSILON, 1 - BCE_EPSILON] in the per-block loss.
BCE_EPSILON = 1e-7
#: Early stopping: training ends after this many epochs without the monitored validation loss
#: improving by at least MIN_DELTA, and the best epoch's weights are restored; ``epochs``
#: (TRAIN_EPOCHS) is only the maximum.
PATIENCE = 5
#: The smallest drop of the monitored validation loss that counts as an improvement.
MIN_DELTA = 0.002


@dataclass
class TrainConfig:
    """Training parameters (validated on construction)."""

    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3
    patience: int = PATIENCE
    val_fraction: float = 0.25
    seed: int = 0
    augment: bool = True
    balance: bool = True
    min_per_class: int = 2
    hard_negative_weight: float = 1.0
    threshold_strategy: str = "max_f1"
    verbose: bool = False
    widths: tuple[int, int, int] = WIDTHS
    dropout: float = DROPOUT
    kernel: int = KERNEL
    #: Hidden convolutions, 3 (the seed's) or 4; None ("auto"): DENSE_DEPTH when some training
    #: patch has per-block mask targets and the kernel's reach at that depth fits the margin,
    #: else 3 (``fcn_depth``).
    depth: int | None = None
    #: Weight of the per-block loss on patches with mask targets (0: the cell loss only, the
    #: default, as the DENSE_LOSS_WEIGHT setting's).
    dense_weight: float = 0.0
    #: At most this many batches per epoch, for training and validation (None: all of them).
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig: {message}")

        check(int(self.epochs) == self.epochs and self.epochs >= 1,
              f"epochs must be >= 1, got {self.epochs}")
        check(int(self.batch_size) == self.batch_size and self.batch_size >= 1,
              f"batch_size must be >= 1, got {self.batch_size}")
        check(0 < self.learning_rate < 1,
              f"learning_rate must be in (0, 1), got {self.learning_rate}")
        check(int(self.patience) == self.patience and self.patience >= 0,
              f"patience must be >= 0, got {self.patience}")
        check(0 <= self.val_fraction < 1,
              f"val_fraction must be in [0, 1), got {self.val_fraction}")
        check(int(self.min_per_class) == self.min_per_class and self.min_per_class >= 1,
              f"min_per_class must be >= 1, got {self.min_per_class}")
        check(self.hard_negative_weight > 0,
              f"hard_negative_weight must be > 0, got {self.hard_negative_weight}")
        check(self.threshold_strategy in THRESHOLD_STRATEGIES,
              f"threshold_strategy must be one of {', '.join(THRESHOLD_STRATEGIES)}, "
              f"got {self.threshold_strategy!r}")
        check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        check(self.kernel in KERNELS, f"kernel must be one of {KERNELS}, got {self.kernel}")
        check(self.depth is None or self.depth in DEPTHS,
              f"depth must be None (auto) or one of {DEPTHS}, got {self.depth}")
        check(self.depth is None or receptive_reach_px(self.kernel, self.depth) <= MARGIN_PX,
              f"kernel {self.kernel} at depth {self.depth} reaches beyond the {MARGIN_PX} px "
              "context margin")
        check(math.isfinite(self.dense_weight) and self.dense_weight >= 0,
              f"dense_weight must be finite and >= 0, got {self.dense_weight}")
        check(self.steps_per_epoch is None or (int(self.steps_per_epoch) == self.steps_per_epoch
                                               and self.steps_per_epoch >= 1),
              f"steps_per_epoch must be None or >= 1, got {self.steps_per_epoch}")
        self.widths = tuple(int(w) for w in self.widths)
        check(len(self.widths) == 3 and min(self.widths) > 0,
              f"widths must be three positive integers, got {self.widths}")
        self.epochs, self.batch_size = int(self.epochs), int(self.batch_size)
        self.patience, self.min_per_class = int(self.patience), int(self.min_per_class)


@dataclass
class TrainResult:
    """A trained bundle, the per-epoch history (loss, val_loss, auc, val_auc), its metrics and
    the indices of the patches they were measured on (empty when nothing validated)."""

    bundle: ModelBundle
    history: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    validation_idx: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


# --------------------------------------------------------------------------------------------
# split
def geographic_split(
    groups: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split patch indices into (train, validation) by whole groups.

    Groups are taken in a seeded random order until validation holds about ``val_fraction`` of the
    patches; training always keeps at least one group. Then, if validation lacks a class that
    another training group has (and training would keep that class), the smallest such group moves
    to validation; if training lacks a class, the smallest validation group with it moves back.
    Returns sorted int64 index arrays.
    """
    groups = np.asarray(groups)
    labels = np.asarray(labels)
    if groups.shape != labels.shape or groups.ndim != 1:
        raise ValueError(
            f"groups {groups.shape} and labels {labels.shape} must be 1-D of equal length"
        )
    n = len(groups)
    all_idx = np.arange(n, dtype=np.int64)
    if n == 0 or val_fraction <= 0:
        return all_idx, np.empty(0, dtype=np.int64)
    uniq, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    if len(uniq) < 2:
        return all_idx, np.empty(0, dtype=np.int64)
    n_groups = len(uniq)
    # class counts per group: (n_groups, 2)
    per_class = np.zeros((n_groups, 2), dtype=np.int64)
    np.add.at(per_class, (inverse, labels.astype(np.int64)), 1)

    rng = np.random.default_rng(seed)
    in_val = np.zeros(n_groups, dtype=bool)
    target = val_fraction * n
    count = 0
    for g in rng.permutation(n_groups):
        if count >= target:
            break
        if count + sizes[g] >= n:  # would empty the training split
            continue
        in_val[g] = True
        count += sizes[g]

    for cls in (0, 1):
        if per_class[in_val, cls].sum() == 0:
            train_total = per_class[~in_val, cls].sum()
            candidates = [g for g in np.flatnonzero(~in_val)
                          if 0 < per_class[g, cls] < train_total and (~in_val).sum() > 1]
            if candidates:
                in_val[min(candidates, key=lambda g: (sizes[g], g))] = True
    for cls in (0, 1):
        if per_class[~in_val, cls].sum() == 0:
            candidates = [g for g in np.flatnonzero(in_val) if per_class[g, cls] > 0]
            if candidates:
                in_val[min(candidates, key=lambda g: (sizes[g], g))] = False

    val_mask = in_val[inverse]
    return all_idx[~val_mask], all_idx[val_mask]


# --------------------------------------------------------------------------------------------
# data
@runtime_checkable
class PatchSource(Protocol):
    """Labelled patches read on demand, so that training never holds them all in memory.

    ``read(indices)`` returns float32 (len(indices), patch_px, patch_px, n_bands) DN with NaN where
    invalid, in the order of ``indices``. ``locality`` (N,) int64 orders patches so that
    neighbours in that order are cheap to read together (e.g. same year and store block).
    """

    patch_px: int
    n_bands: int
    locality: np.ndarray

    def __len__(self) -> int: ...

    def read(self, indices: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class BlockSource(PatchSource, Protocol):
    """A PatchSource whose patches may carry per-block targets (dense supervision from a mask).

    ``has_blocks`` (N,) bool marks the patches with targets. ``read_blocks(indices)`` returns
    float32 (targets, weights), each (len(indices), k, k) with k = cell_px / STRIDE (the FCN's
    output grid over the cell interior, the margin cropped): the mask fraction of each
    STRIDE x STRIDE pixel block, and the block's weight in [0, 1] (the share of its pixels the
    mask covers; 0 everywhere for a patch without targets).
    """

    has_blocks: np.ndarray

    def read_blocks(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def block_side(patch_px: int) -> int:
    """k: output blocks per side of a patch's cell interior (patch minus the margins)."""
    return (patch_px - 2 * MARGIN_PX) // STRIDE


def check_blocks(targets: np.ndarray, weights: np.ndarray, n: int, k: int) -> None:
    """ValueError unless targets and weights are finite (n, k, k) arrays with values in [0, 1]."""
    for name, arr in (("block targets", targets), ("block weights", weights)):
        if np.shape(arr) != (n, k, k):
            raise ValueError(f"{name} must have shape ({n}, {k}, {k}), got {np.shape(arr)}")
        if not np.all((arr >= 0) & (arr <= 1)):
            raise ValueError(f"{name} must lie in [0, 1] (NaN is not allowed)")


class ArrayPatches:
    """A BlockSource over an in-memory (N, P, P, B) array (tests, simulations, benchmarks), with
    optional per-block ``blocks`` = (targets, weights), each (N, k, k) (see BlockSource)."""

    def __init__(self, pixels: np.ndarray,
                 blocks: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        if not isinstance(pixels, np.ndarray) or pixels.ndim != 4:
            raise ValueError(f"pixels must be a (N, P, P, B) array, got shape {np.shape(pixels)}")
        if pixels.shape[1] != pixels.shape[2]:
            raise ValueError(f"training patches must be square, got {pixels.shape[1]} x "
                             f"{pixels.shape[2]}")
        self.pixels = pixels
        self.patch_px, self.n_bands = int(pixels.shape[1]), int(pixels.shape[3])
        self.locality = np.arange(len(pixels), dtype=np.int64)
        k = block_side(self.patch_px)
        if blocks is None:
            self.blocks = None
            self.has_blocks = np.zeros(len(pixels), dtype=bool)
        else:
            targets, weights = (np.asarray(b, dtype=np.float32) for b in blocks)
            check_blocks(targets, weights, len(pixels), k)
            self.blocks = (targets, weights)
            self.has_blocks = weights.reshape(len(pixels), -1).any(axis=1)

    def __len__(self) -> int:
        return len(self.pixels)

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self.pixels[np.asarray(indices, dtype=np.int64)]

    def read_blocks(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        if self.blocks is None:
            k = block_side(self.patch_px)
            zeros = np.zeros((len(indices), k, k), dtype=np.float32)
            return zeros, zeros.copy()
        return self.blocks[0][indices], self.blocks[1][indices]


def has_block_targets(source: PatchSource) -> np.ndarray:
    """(N,) bool: the patches of ``source`` with per-block targets (none unless a BlockSource)."""
    if isinstance(source, BlockSource):
        return np.asarray(source.has_blocks, dtype=bool)
    return np.zeros(len(source), dtype=bool)


def as_source(pixels: np.ndarray | PatchSource) -> PatchSource:
    """``pixels`` itself when it is a PatchSource, else an ArrayPatches over the array."""
    return pixels if isinstance(pixels, PatchSource) else ArrayPatches(pixels)


def local_order(source: PatchSource, idx: np.ndarray) -> np.ndarray:
    """``idx`` sorted by the source's locality (stable), so that chunks read few blocks."""
    idx = np.asarray(idx, dtype=np.int64)
    return idx[np.argsort(source.locality[idx], kind="stable")]


def band_statistics(
    source: np.ndarray | PatchSource, idx: np.ndarray, chunk: int = 32,
    max_patches: int = BAND_SAMPLE_PATCHES, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std (float64) of the finite pixels of patches ``idx``.

    At most ``max_patches`` of them (a seeded random sample when there are more) are read, in
    chunks of ``chunk``, so the cost and memory are bounded whatever the number of labels.
    """
    source = as_source(source)
    idx = np.asarray(idx, dtype=np.int64)
    if len(idx) > max_patches:
        idx = np.random.default_rng(seed).choice(idx, size=max_patches, replace=False)
    idx = local_order(source, idx)
    n_bands = source.n_bands
    total = np.zeros(n_bands)
    total_sq = np.zeros(n_bands)
    count = np.zeros(n_bands)
    for start in range(0, len(idx), chunk):
        x = source.read(idx[start:start + chunk]).astype(np.float64).reshape(-1, n_bands)
        ok = np.isfinite(x)
        x = np.where(ok, x, 0.0)
        total += x.sum(axis=0)
        total_sq += (x * x).sum(axis=0)
        count += ok.sum(axis=0)
    if np.any(count == 0):
        raise ValueError("some band has no valid pixel in the training patches")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    return mean, std


def source_scores(bundle: ModelBundle, source: np.ndarray | PatchSource,
                  idx: np.ndarray | None = None, *, batch_size: int = 64) -> np.ndarray:
    """Cell score of patches ``idx`` (default: all) of a source, read chunk by chunk, float32.

    The same numpy path as scene scoring (``model.score.patch_scores``); memory is one chunk.
    """
    source = as_source(source)
    idx = np.arange(len(source), dtype=np.int64) if idx is None else np.asarray(idx, np.int64)
    order = np.argsort(source.locality[idx], kind="stable")
    out = np.empty(len(idx), dtype=np.float32)
    for start in range(0, len(idx), batch_size):
        pos = order[start:start + batch_size]
        out[pos] = patch_scores(bundle, source.read(idx[pos]), batch_size=batch_size)
    return out


def _fill(x: np.ndarray, fill: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(x)
    if not bad.any():
        return x.astype(np.float32, copy=False)
    return np.where(bad, fill, x).astype(np.float32)


def dihedral_draws(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(rot90 counts in 0..3, mirror flags) for ``n`` patches: one random dihedral transform each."""
    return rng.integers(0, 4, size=n), rng.random(n) < 0.5


def apply_dihedral(x: np.ndarray, ks: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """Rotate each square array ``x[i]`` (axes 1, 2 of x) by ``ks[i]`` quarter turns, then mirror
    it left-right where ``flips[i]``; patches and their block targets get the same draws."""
    out = np.empty_like(x)
    for i in range(len(x)):
        patch = np.rot90(x[i], int(ks[i]), axes=(0, 1))
        out[i] = patch[:, ::-1] if flips[i] else patch
    return out


def augment_batch(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply a random dihedral transform (rot90 k in 0..3, optional mirror) to each square patch."""
    return apply_dihedral(x, *dihedral_draws(len(x), rng))


class _PatchSequence(keras.utils.PyDataset):
    """Batches of (filled, optionally augmented) patches, labels and weights, read per batch.

    Each epoch the indices are taken in the source's locality order from a random offset and cut
    into batches, and the batches are shuffled: a batch reads few store blocks, yet batch
    contents and their order change from epoch to epoch. Only one batch is in memory at a time.
    With ``dense`` the targets are a dict: ``cell_score`` labels and ``blocks``, the source's
    (n, k, k, 2) block targets and weights (``read_blocks``), transformed with their patches;
    the sample weights then weigh both outputs.
    """

    def __init__(self, source: PatchSource, labels, weights, idx, fill, batch_size, *,
                 augment: bool, shuffle: bool, seed: int, dense: bool = False) -> None:
        super().__init__()
        self.source, self.labels, self.weights, self.dense = source, labels, weights, dense
        self.idx = local_order(source, idx)
        self.fill = fill.astype(np.float32)
        self.batch_size = batch_size
        self.augment, self.shuffle = augment, shuffle
        self.rng = np.random.default_rng(seed)
        self.batches = self._cut()

    def _cut(self) -> list[np.ndarray]:
        n, size = len(self.idx), self.batch_size
        if not self.shuffle or n <= size:
            return [self.idx[i:i + size] for i in range(0, n, size)]
        offset = int(self.rng.integers(0, size))
        rolled = np.roll(self.idx, -offset)
        batches = [rolled[i:i + size] for i in range(0, n, size)]
        return [batches[i] for i in self.rng.permutation(len(batches))]

    def __len__(self) -> int:
        return math.ceil(len(self.idx) / self.batch_size)

    def __getitem__(self, i: int):
        sel = self.batches[i]
        x = _fill(self.source.read(sel), self.fill)
        y = self.labels[sel].astype(np.float32).reshape(-1, 1)
        if not self.dense:
            if self.augment:
                x = augment_batch(x, self.rng)
            if self.weights is None:
                return x, y
            return x, y, self.weights[sel].astype(np.float32)
        blocks = np.stack(self.source.read_blocks(sel), axis=-1).astype(np.float32)
        if self.augment:
            ks, flips = dihedral_draws(len(x), self.rng)
            x, blocks = apply_dihedral(x, ks, flips), apply_dihedral(blocks, ks, flips)
        targets = {"cell_score": y, "blocks": blocks}
        if self.weights is None:
            return x, targets
        w = self.weights[sel].astype(np.float32)
        return x, targets, {"cell_score": w, "blocks": w}

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.batches = self._cut()


def training_model(fcn: keras.Model, patch_px: int, q: float = TOP_FRACTION, *,
                   dense: bool = False) -> keras.Model:
    """FCN -> crop the margin -> TopFractionMean: one mine score per (patch_px)^2 patch.

    With ``dense`` the outputs are a dict: ``cell_score`` (N, 1) and ``blocks`` (N, k, k), the
    cropped mine-probability map that ``BlockCrossEntropy`` compares with the mask targets.
    """
    crop = MARGIN_PX // STRIDE
    inputs = keras.Input(shape=(patch_px, patch_px, fcn.input_shape[-1]), name="patch")
    prob = fcn(inputs)
    cropped = keras.layers.Cropping2D(crop, name="crop_margin")(prob)
    score = TopFractionMean(q, channel=MINE_CHANNEL, name="cell_score")(cropped)
    if not dense:
        return keras.Model(inputs, score, name="minewatch_trainer")
    blocks = keras.layers.Identity(name="blocks")(cropped[..., MINE_CHANNEL])
    return keras.Model(inputs, {"cell_score": score, "blocks": blocks}, name="minewatch_trainer")


class BlockCrossEntropy(keras.losses.Loss):
    """Per-block binary cross-entropy of a (N, k, k) mine-probability map against mask targets.

    ``y_true`` (N, k, k, 2): [..., 0] the mask fraction of each block, [..., 1] its weight. The
    loss of one patch is sum(weight x BCE) / (k x k): the mean block BCE for a patch its mask
    covers whole, 0 for a patch without targets. Keras then applies the sample (class) weight.
    """

    def __init__(self, name: str = "block_cross_entropy", **kwargs) -> None:
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        target, weight = y_true[..., 0], y_true[..., 1]
        p = keras.ops.clip(keras.ops.cast(y_pred, "float32"), BCE_EPSILON, 1.0 - BCE_EPSILON)
        bce = -(target * keras.ops.log(p) + (1.0 - target) * keras.ops.log(1.0 - p))
        return keras.ops.mean(weight * bce, axis=(1, 2))


def fcn_depth(config: TrainConfig, dense: bool) -> int:
    """The depth to build: ``config.depth``, or for None ("auto") DENSE_DEPTH when the training
    patches carry block targets and the kernel's reach at that depth fits the margin, else 3."""
    if config.depth is not None:
        return config.depth
    if dense and receptive_reach_px(config.kernel, DENSE_DEPTH) <= MARGIN_PX:
        return DENSE_DEPTH
    return DEPTH


# --------------------------------------------------------------------------------------------
# metrics
def choose_threshold(
    y: np.ndarray, scores: np.ndarray, config: TrainConfig
) -> tuple[float, str | None]:
    """(threshold, reason for falling back or None)."""
    y, scores = np.asarray(y), np.asarray(scores, dtype=np.float64)
    if config.threshold_strategy == "fixed":
        return DEFAULT_THRESHOLD, None
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos < config.min_per_class or n_neg < config.min_per_class:
        return DEFAULT_THRESHOLD, (
            f"validation has {n_pos} mine and {n_neg} background patches "
            f"(< {config.min_per_class} of a class): threshold {DEFAULT_THRESHOLD}"
        )
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, scores)
    p, r = precision[:-1], recall[:-1]
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    best = float(thresholds[int(np.argmax(f1))])
    # Any threshold in (next lower validation score, best] gives the same validation F1; take the
    # middle of that gap rather than its edge, so a saturated score of 1.0 does not become a
    # threshold that a new mine scoring 0.9999 would miss.
    below = scores[scores < best]
    return (float((best + below.max()) / 2.0) if len(below) else best), None


def validation_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Precision, recall, F1, AP, ROC AUC and the confusion matrix at ``threshold``."""
    from sklearn.metrics import (
        average_precision_score,
        confusion_matrix,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y = np.asarray(y, dtype=np.int64)
    pred = (np.asarray(scores) >= threshold).astype(np.int64)
    both = len(np.unique(y)) == 2
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    return {
        "threshold": float(threshold),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "accuracy": float((pred == y).mean()) if len(y) else None,
        "average_precision": float(average_precision_score(y, scores)) if both else None,
        "roc_auc": float(roc_auc_score(y, scores)) if both else None,
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "n_val": int(len(y)),
        "n_val_mine": int((y == 1).sum()),
        "n_val_background": int((y == 0).sum()),
    }


# --------------------------------------------------------------------------------------------
# training
def _validate_inputs(source: PatchSource, labels, groups, bands, sample_weight, hard_negatives,
                     config):
    n, h, b = len(source), source.patch_px, source.n_bands
    cp = h - 2 * MARGIN_PX
    if cp <= 0 or cp % STRIDE:
        raise ValueError(
            f"patch side {h} px must be a cell of a multiple of {STRIDE} px plus a margin of "
            f"{MARGIN_PX} px on each side"
        )
    if b != len(bands):
        raise ValueError(
            f"pixels have {b} bands but {len(bands)} band names were given ({', '.join(bands)})"
        )
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if labels.shape != (n,) or groups.shape != (n,):
        raise ValueError(f"labels {labels.shape} and groups {groups.shape} must both be ({n},)")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        raise ValueError("labels contain NaN or infinite values")
    if not np.all(np.isin(labels, (0, 1))):
        found = sorted(set(labels.tolist()))[:5]
        raise ValueError(f"labels must be 0 (background) or 1 (mine), got {found}")
    labels = labels.astype(np.int64)
    n_pos, n_neg = int(labels.sum()), int(n - labels.sum())
    if n_pos < config.min_per_class or n_neg < config.min_per_class:
        raise ValueError(
            f"training needs at least {config.min_per_class} mine and {config.min_per_class} "
            f"background patches, got {n_pos} mine and {n_neg} background"
        )
    for name, arr in (("sample_weight", sample_weight), ("hard_negatives", hard_negatives)):
        if arr is not None and np.shape(arr) != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {np.shape(arr)}")
    if sample_weight is not None:
        sw = np.asarray(sample_weight, dtype=np.float64)
        if not np.all(np.isfinite(sw)) or np.any(sw < 0):
            raise ValueError("sample_weight must be finite and >= 0")
    return labels, groups, cp


def _given_split(validation: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) sorted int64 indices from the caller's validation indices."""
    val_idx = np.unique(np.asarray(validation, dtype=np.int64))
    if len(val_idx) and (val_idx[0] < 0 or val_idx[-1] >= n):
        raise ValueError(f"validation indices must lie in [0, {n}), got {val_idx[0]}..{val_idx[-1]}")
    return np.setdiff1d(np.arange(n, dtype=np.int64), val_idx), val_idx


def sample_weights(labels: np.ndarray, idx: np.ndarray, config: TrainConfig,
                   sample_weight: np.ndarray | None = None,
                   hard_negatives: np.ndarray | None = None) -> np.ndarray:
    """Per-patch training weights: class balance x caller weight x hard-negative weight.

    Normalised to mean 1 over ``idx`` so the learning rate means the same whatever the weights.
    """
    w = np.ones(len(labels), dtype=np.float64)
    if sample_weight is not None:
        w *= np.asarray(sample_weight, dtype=np.float64)
    if hard_negatives is not None:
        w[np.asarray(hard_negatives, dtype=bool) & (labels == 0)] *= config.hard_negative_weight
    if config.balance:
        for cls in (0, 1):
            members = idx[labels[idx] == cls]
            mass = w[members].sum()
            if mass > 0:
                w[members] *= (len(idx) / 2.0) / mass
    mean = w[idx].mean()
    return (w / mean if mean > 0 else w).astype(np.float32)


def _compiled_trainer(fcn: keras.Model, patch_px: int, config: TrainConfig,
                      dense: bool) -> keras.Model:
    """The training model, compiled: the cell loss alone, or with ``dense`` the cell loss plus
    ``config.dense_weight`` x the block loss (Keras logs them as ``cell_score_loss`` and
    ``blocks_loss``, their weighted sum as ``loss``)."""
    trainer = training_model(fcn, patch_px, dense=dense)
    optimizer = keras.optimizers.Adam(config.learning_rate)
    if not dense:
        trainer.compile(optimizer=optimizer, loss=keras.losses.BinaryCrossentropy(),
                        metrics=[keras.metrics.AUC(name="auc")])
        return trainer
    trainer.compile(
        optimizer=optimizer,
        loss={"cell_score": keras.losses.BinaryCrossentropy(), "blocks": BlockCrossEntropy()},
        loss_weights={"cell_score": 1.0, "blocks": config.dense_weight},
        metrics={"cell_score": [keras.metrics.AUC(name="auc")]},
    )
    return trainer


class _Progress(keras.callbacks.Callback):
    def __init__(self, progress: Callable[[int, int, dict], None], epochs: int) -> None:
        super().__init__()
        self.progress, self.epochs = progress, epochs

    def on_epoch_end(self, epoch, logs=None):
        self.progress(epoch + 1, self.epochs, {k: float(v) for k, v in (logs or {}).items()})


def train_bundle(
    pixels: np.ndarray | PatchSource,
    labels: np.ndarray,
    groups: np.ndarray,
    bands: Sequence[str],
    config: TrainConfig | None = None,
    *,
    version: str,
    parent: str | None = None,
    sample_weight: np.ndarray | None = None,
    hard_negatives: np.ndarray | None = None,
    validation: np.ndarray | None = None,
    training_info: dict[str, Any] | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
) -> TrainResult:
    """Train an FCN on labelled patches and return it as a bundle with validation metrics.

    ``pixels``: (N, cp + 2 MARGIN_PX, cp + 2 MARGIN_PX, B) float32 DN, NaN where invalid (as
    imagery.store.YearMosaic.read_cells returns them), either in memory or as a PatchSource that
    reads them batch by batch (training then holds one batch, never all patches); a
    ``BlockSource`` with per-block mask targets adds the dense loss on the patches that have
    them (``config.dense_weight``; ``config.depth`` None then builds DENSE_DEPTH); ``labels``:
    (N,) 0/1; ``groups``: (N,) integer spatial group ids for the geographic split; ``bands``: names of the B bands.
    ``hard_negatives``: optional (N,) bool, background patches weighted by
    ``config.hard_negative_weight``. ``validation``: optional indices of the validation patches
    (e.g. fixed validation blocks); without it a geographic split of ``groups`` chooses them.
    ``training_info`` (label sources, years...) is stored in the
    sidecar. ``progress(epoch, epochs, logs)`` is called after every epoch.
    """
    config = config or TrainConfig()
    check_version(version)
    bands = parse_band_list(bands)
    source = as_source(pixels)
    labels, groups, cp = _validate_inputs(source, labels, groups, bands, sample_weight,
                                          hard_negatives, config)
    started = time.perf_counter()
    patch_px = source.patch_px
    if validation is None:
        train_idx, val_idx = geographic_split(groups, labels, config.val_fraction, config.seed)
        split = "geographic"
    else:
        train_idx, val_idx = _given_split(validation, len(labels))
        split = "given"
    if len(train_idx) == 0 or labels[train_idx].min() == labels[train_idx].max():
        raise ValueError(f"the {split} split left a single class in training; give more groups")
    mean, std = band_statistics(source, train_idx, seed=config.seed)
    has_blocks = has_block_targets(source)
    dense = config.dense_weight > 0 and bool(has_blocks[train_idx].any())
    depth = fcn_depth(config, dense)

    fcn = build_fcn(bands, mean, std, seed=config.seed, widths=config.widths,
                    dropout=config.dropout, kernel=config.kernel, depth=depth)
    trainer = _compiled_trainer(fcn, patch_px, config, dense)
    weights = sample_weights(labels, train_idx, config, sample_weight, hard_negatives)
    train_data = _PatchSequence(source, labels, weights, train_idx, mean, config.batch_size,
                                augment=config.augment, shuffle=True, seed=config.seed,
                                dense=dense)
    has_val = len(val_idx) > 0
    val_data = (_PatchSequence(source, labels, None, val_idx, mean, max(config.batch_size, 64),
                               augment=False, shuffle=False, seed=config.seed, dense=dense)
                if has_val else None)
    monitor = ("val_" if has_val else "") + ("cell_score_loss" if dense else "loss")
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(monitor=monitor, mode="min", patience=config.patience,
                                      min_delta=MIN_DELTA, restore_best_weights=True)
    ]
    if progress is not None:
        callbacks.append(_Progress(progress, config.epochs))
    steps = config.steps_per_epoch
    fit = trainer.fit(train_data, validation_data=val_data, epochs=config.epochs,
                      steps_per_epoch=min(steps, len(train_data)) if steps else None,
                      validation_steps=min(steps, len(val_data)) if steps and val_data else None,
                      callbacks=callbacks, verbose=2 if config.verbose else 0)
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    train_seconds = time.perf_counter() - started

    bundle = ModelBundle(model=fcn, version=version, parent=parent, bands=bands,
                         mean=mean.tolist(), std=std.tolist(), reduction=REDUCTION)
    if has_val:
        y_val = labels[val_idx]
        s_val = source_scores(bundle, source, val_idx)
        threshold, fallback = choose_threshold(y_val, s_val, config)
        metrics = validation_metrics(y_val, s_val, threshold)
    else:
        threshold, fallback = DEFAULT_THRESHOLD, "no validation split (fewer than two groups)"
        metrics = validation_metrics(np.empty(0), np.empty(0), threshold)
    losses = history.get(monitor, [])
    best_epoch = int(np.argmin(losses)) + 1 if losses else 0
    metrics.update({
        "threshold_strategy": config.threshold_strategy if fallback is None else "fallback",
        "threshold_note": fallback,
        "split": split,
        "n_train": int(len(train_idx)),
        "n_train_mine": int(labels[train_idx].sum()),
        "n_train_background": int(len(train_idx) - labels[train_idx].sum()),
        "n_groups": int(len(np.unique(groups))),
        "n_val_groups": int(len(np.unique(groups[val_idx]))),
        "epochs_run": len(losses),
        "best_epoch": best_epoch,
        f"best_{monitor}": float(min(losses)) if losses else None,
        "train_seconds": round(train_seconds, 2),
    })
    training = {
        **(training_info or {}),
        "counts": {
            "patches": int(len(labels)),
            "mine": int(labels.sum()),
            "background": int(len(labels) - labels.sum()),
            "hard_negatives": int(np.sum(hard_negatives)) if hard_negatives is not None else 0,
            "train": int(len(train_idx)),
            "val": int(len(val_idx)),
        },
        "cell_px": int(cp),
        "patch_px": int(patch_px),
        "balance": "class weights (inverse class frequency)" if config.balance else "none",
        "augmentation": "random rot90 + mirror per patch per epoch" if config.augment else "none",
        "depth": depth,
        "dense_supervision": {
            "used": dense,
            "weight": config.dense_weight if dense else 0.0,
            "train_patches_with_mask": int(has_blocks[train_idx].sum()),
            "val_patches_with_mask": int(has_blocks[val_idx].sum()),
        },
        "config": asdict(config),
    }
    bundle.threshold = threshold
    bundle.metrics = metrics
    bundle.training = training
    return TrainResult(bundle=bundle, history=history, metrics=metrics,
                       validation_idx=val_idx if has_val else np.empty(0, dtype=np.int64))
