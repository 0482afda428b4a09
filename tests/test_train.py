"""Tests for model.train: geographic split, weights, and a tiny real training run."""

from __future__ import annotations

import numpy as np
import pytest

from model.bundle import load_bundle, save_bundle
from model.fcn import MARGIN_PX, STRIDE
from model.score import patch_scores
from model.train import (
    ArrayPatches,
    BlockCrossEntropy,
    TrainConfig,
    _PatchSequence,
    augment_batch,
    band_statistics,
    choose_threshold,
    fcn_depth,
    geographic_split,
    sample_weights,
    source_scores,
    train_bundle,
)

BANDS3 = ("B4", "B8", "B11")
CP = 20  # a 1-km cell at 50 m pixels keeps the toy problem small
SIDE = CP + 2 * MARGIN_PX
FAST = dict(epochs=8, patience=8, batch_size=16, learning_rate=3e-3, widths=(4, 8, 8))


def toy_patches(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dark noisy patches; mines carry a bright 6 x 6 px block somewhere in the cell interior."""
    rng = np.random.default_rng(seed)
    x = rng.normal(1200, 150, size=(n, SIDE, SIDE, 3)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.int64)
    for i in np.flatnonzero(y):
        r, c = rng.integers(MARGIN_PX, MARGIN_PX + CP - 6, size=2)
        x[i, r:r + 6, c:c + 6] += 2500
    x[::7, :4, :4] = np.nan  # some invalid pixels
    groups = np.arange(n) // 4  # blocks of four neighbouring cells
    return x, y, groups


# split -------------------------------------------------------------------------------------------
def test_geographic_split_keeps_groups_whole_and_both_classes():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 30, size=300)
    labels = (rng.random(300) < 0.1).astype(int)
    for seed in range(5):
        train, val = geographic_split(groups, labels, 0.25, seed)
        assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 300
        assert not set(groups[train]) & set(groups[val])
        assert set(labels[val]) == {0, 1} and set(labels[train]) == {0, 1}
        assert 0.1 < len(val) / 300 < 0.45


def test_geographic_split_finds_the_only_group_with_a_class():
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    labels = np.array([0, 0, 0, 0, 0, 1, 0, 0, 1, 1])
    for seed in range(6):
        train, val = geographic_split(groups, labels, 0.2, seed)
        assert set(labels[val]) == {0, 1} and set(labels[train]) == {0, 1}


def test_geographic_split_single_group_has_no_validation():
    train, val = geographic_split(np.zeros(5, int), np.array([0, 1, 0, 1, 0]), 0.25, 0)
    assert len(train) == 5 and len(val) == 0


# config, weights, augmentation -------------------------------------------------------------------
def test_train_config_validation():
    assert TrainConfig().epochs == 40 and TrainConfig().threshold_strategy == "max_f1"
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="val_fraction"):
        TrainConfig(val_fraction=1.0)
    with pytest.raises(ValueError, match="threshold_strategy"):
        TrainConfig(threshold_strategy="best")


def test_sample_weights_balance_classes_and_hard_negatives():
    labels = np.array([1, 0, 0, 0, 0, 0, 0, 0])
    idx = np.arange(8)
    w = sample_weights(labels, idx, TrainConfig())
    assert w[labels == 1].sum() == pytest.approx(w[labels == 0].sum())
    assert w.mean() == pytest.approx(1.0)
    hard = np.zeros(8, bool)
    hard[1] = True
    w = sample_weights(labels, idx, TrainConfig(hard_negative_weight=3.0), hard_negatives=hard)
    assert w[1] == pytest.approx(3 * w[2])
    assert w[labels == 1].sum() == pytest.approx(w[labels == 0].sum())


def test_augment_batch_is_a_dihedral_transform():
    x = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1)
    out = augment_batch(x, np.random.default_rng(0))
    variants = []
    for k in range(4):
        r = np.rot90(x[0], k, axes=(0, 1))
        variants += [r, r[:, ::-1]]
    assert any(np.array_equal(out[0], v) for v in variants)


def test_threshold_falls_back_when_validation_is_small():
    threshold, note = choose_threshold(np.array([1, 0, 0]), np.array([0.9, 0.1, 0.2]),
                                       TrainConfig())
    assert threshold == 0.5 and "1 mine" in note
    threshold, note = choose_threshold(np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.3, 0.1]),
                                       TrainConfig())
    assert note is None and 0.3 < threshold <= 0.8


# training ----------------------------------------------------------------------------------------
def test_train_bundle_learns_bright_vs_dark(tmp_path):
    x, y, groups = toy_patches(96)
    epochs_seen = []
    result = train_bundle(
        x, y, groups, BANDS3, TrainConfig(**FAST), version="toy-1",
        training_info={"sources": {"seed": 96}, "years": [2021]},
        progress=lambda epoch, total, logs: epochs_seen.append((epoch, total)),
    )
    m = result.metrics
    assert m["average_precision"] > 0.9 and m["roc_auc"] > 0.9
    assert set(m["confusion_matrix"]) == {"tn", "fp", "fn", "tp"}
    assert sum(m["confusion_matrix"].values()) == m["n_val"] > 0
    assert m["n_val"] + m["n_train"] == 96 and m["n_val_mine"] > 0 and m["n_val_background"] > 0
    assert 0 < m["threshold"] < 1 and m["f1"] > 0.8
    assert len(result.history["loss"]) == m["epochs_run"] == len(epochs_seen)
    assert "val_loss" in result.history and "val_auc" in result.history
    bundle = result.bundle
    assert bundle.metrics == m and bundle.threshold == m["threshold"]
    assert bundle.training["sources"] == {"seed": 96}
    assert bundle.training["counts"]["mine"] == 48 and bundle.training["cell_px"] == CP
    # normalisation came from the training pixels and travels with the model
    assert 1200 < bundle.mean[0] < 1500 and bundle.std[0] > 100
    loaded = load_bundle(save_bundle(bundle, tmp_path))
    np.testing.assert_allclose(patch_scores(loaded, x[:10]), patch_scores(bundle, x[:10]))


def test_train_bundle_rejects_single_class_and_bad_shapes():
    x, y, groups = toy_patches(12)
    with pytest.raises(ValueError, match="at least 2 mine and 2 background patches, got 0 mine"):
        train_bundle(x, np.zeros(12, int), groups, BANDS3, TrainConfig(**FAST), version="bad")
    with pytest.raises(ValueError, match="labels must be 0"):
        train_bundle(x, y * 2, groups, BANDS3, TrainConfig(**FAST), version="bad")
    with pytest.raises(ValueError, match="4 band names"):
        train_bundle(x, y, groups, ("B2",) + BANDS3, TrainConfig(**FAST), version="bad")
    with pytest.raises(ValueError, match="margin"):
        train_bundle(x[:, :-2, :-2], y, groups, BANDS3, TrainConfig(**FAST), version="bad")


# streaming ---------------------------------------------------------------------------------------
class CountingPatches(ArrayPatches):
    """An in-memory PatchSource that records how many patches each read asked for."""

    def __init__(self, pixels: np.ndarray, locality: np.ndarray | None = None) -> None:
        super().__init__(pixels)
        if locality is not None:
            self.locality = locality
        self.reads: list[int] = []

    def read(self, indices: np.ndarray) -> np.ndarray:
        self.reads.append(len(indices))
        return super().read(indices)


def test_training_reads_its_patch_source_one_batch_at_a_time():
    x, y, groups = toy_patches(96)
    source = CountingPatches(x)
    result = train_bundle(source, y, groups, BANDS3,
                          TrainConfig(**{**FAST, "epochs": 3, "patience": 3}), version="toy-s")
    assert max(source.reads) <= 64  # a training batch (16), a validation batch or chunk (64)
    n_val = result.metrics["n_val"]
    # three epochs of every training patch, three of validation, band statistics, scoring (and
    # whatever Keras peeks at to learn the batch shapes)
    expected = 3 * (96 - n_val) + 3 * n_val + (96 - n_val) + n_val
    assert expected <= sum(source.reads) <= expected + 64
    assert result.metrics["average_precision"] > 0.8
    limited = CountingPatches(x)
    train_bundle(limited, y, groups, BANDS3,
                 TrainConfig(**{**FAST, "epochs": 1, "steps_per_epoch": 2}), version="toy-l")
    assert limited.reads.count(16) <= 2 + 6  # two training batches, then statistics chunks


def test_band_statistics_read_a_bounded_sample():
    rng = np.random.default_rng(1)
    x = rng.normal(1000, 50, size=(200, SIDE, SIDE, 3)).astype(np.float32)
    source = CountingPatches(x)
    mean, std = band_statistics(source, np.arange(200), chunk=8, max_patches=24)
    assert sum(source.reads) == 24 and max(source.reads) <= 8
    np.testing.assert_allclose(mean, 1000, rtol=0.01)
    np.testing.assert_allclose(std, 50, rtol=0.05)
    full_mean, _ = band_statistics(x, np.arange(200))
    np.testing.assert_allclose(mean, full_mean, rtol=0.01)


def test_batches_keep_neighbours_together_and_change_every_epoch():
    n, size = 64, 8
    x = np.zeros((n, SIDE, SIDE, 3), np.float32)
    locality = np.random.default_rng(0).permutation(n)  # e.g. store block order
    seq = _PatchSequence(CountingPatches(x, locality), np.zeros(n), None, np.arange(n),
                         np.zeros(3), size, augment=False, shuffle=True, seed=0)
    first = [sorted(locality[b].tolist()) for b in seq.batches]
    assert sorted(v for b in first for v in b) == list(range(n))  # every patch once per epoch
    spans = [b[-1] - b[0] for b in first]
    assert sum(span >= size for span in spans) <= 1  # only the batch that wraps around is wide
    seq.on_epoch_end()
    assert [sorted(locality[b].tolist()) for b in seq.batches] != first


def test_source_scores_match_patch_scores_in_order():
    x, y, groups = toy_patches(40)
    result = train_bundle(x, y, groups, BANDS3, TrainConfig(**{**FAST, "epochs": 1}),
                          version="toy-o")
    locality = np.arange(40)[::-1].copy()
    idx = np.array([5, 30, 2, 17])
    np.testing.assert_allclose(source_scores(result.bundle, CountingPatches(x, locality), idx,
                                             batch_size=3),
                               patch_scores(result.bundle, x, idx), atol=1e-6)


def test_a_given_validation_set_replaces_the_geographic_split():
    x, y, groups = toy_patches(48)
    val = np.arange(40, 48)
    result = train_bundle(x, y, groups, BANDS3, TrainConfig(**{**FAST, "epochs": 1}),
                          version="toy-v", validation=val)
    m = result.metrics
    assert m["split"] == "given" and m["n_val"] == 8 and m["n_train"] == 40
    assert m["n_val_mine"] == 4
    with pytest.raises(ValueError, match=r"validation indices must lie in \[0, 48\)"):
        train_bundle(x, y, groups, BANDS3, TrainConfig(**FAST), version="bad",
                     validation=np.array([3, 48]))
    with pytest.raises(ValueError, match="given split left a single class"):
        train_bundle(x, y, groups, BANDS3, TrainConfig(**FAST), version="bad",
                     validation=np.flatnonzero(y == 1))


# dense supervision -------------------------------------------------------------------------------
K = CP // STRIDE  # output blocks per side of the toy cell


def toy_blocks(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-block targets of toy_patches: the bright pixels' share of each 4 x 4 px block of the
    cell interior, every block covered (weight 1) on mine patches and on every third background
    patch; the rest have no mask (weight 0)."""
    inner = x[:, MARGIN_PX:MARGIN_PX + CP, MARGIN_PX:MARGIN_PX + CP, 0]
    bright = (np.nan_to_num(inner) > 2500).astype(np.float32)
    targets = bright.reshape(len(x), K, STRIDE, K, STRIDE).mean(axis=(2, 4))
    has = (y == 1) | (np.arange(len(x)) % 3 == 0)
    weights = np.repeat(has.astype(np.float32), K * K).reshape(len(x), K, K)
    return targets, weights


def test_block_cross_entropy_is_the_weighted_mean_block_bce():
    p = np.full((2, 2, 2), 0.25, np.float32)
    targets = np.array([[[1, 0], [0, 0.5]], [[1, 1], [1, 1]]], np.float32)
    weights = np.array([[[1, 1], [1, 0]], [[0, 0], [0, 0]]], np.float32)
    got = np.asarray(BlockCrossEntropy(reduction=None)(np.stack([targets, weights], -1), p))
    want = (-np.log(0.25) - 2 * np.log(0.75)) / 4  # three covered blocks of four; 1 - 0.25 twice
    np.testing.assert_allclose(got, [want, 0.0], rtol=1e-5)  # no mask, no block loss


def test_array_patches_check_and_read_block_targets():
    x, y, _ = toy_patches(6)
    targets, weights = toy_blocks(x, y)
    source = ArrayPatches(x, (targets, weights))
    assert source.has_blocks.tolist() == [True, True, False, True, False, True]
    got_t, got_w = source.read_blocks(np.array([3, 1]))
    np.testing.assert_array_equal(got_t, targets[[3, 1]])
    np.testing.assert_array_equal(got_w, weights[[3, 1]])
    assert not ArrayPatches(x).has_blocks.any()
    assert not ArrayPatches(x).read_blocks(np.arange(2))[1].any()
    with pytest.raises(ValueError, match=r"block targets must have shape \(6, 5, 5\)"):
        ArrayPatches(x, (targets[:, :4], weights))
    with pytest.raises(ValueError, match=r"block weights must lie in \[0, 1\]"):
        ArrayPatches(x, (targets, weights * 2))


def test_dense_batches_turn_targets_with_their_patches():
    x, y, _ = toy_patches(16)
    targets, weights = toy_blocks(x, y)
    seq = _PatchSequence(ArrayPatches(x, (targets, weights)), y, np.ones(16), np.arange(16),
                         np.zeros(3), 16, augment=True, shuffle=False, seed=3, dense=True)
    xb, yb, wb = seq[0]
    assert set(yb) == set(wb) == {"cell_score", "blocks"}
    blocks = yb["blocks"]
    assert blocks.shape == (16, K, K, 2)
    np.testing.assert_array_equal(wb["blocks"], wb["cell_score"])
    # the bright square moved with its targets: recomputing them from the turned patch agrees
    again, _ = toy_blocks(xb, y)
    np.testing.assert_allclose(blocks[..., 0], again)
    np.testing.assert_array_equal(blocks[..., 1], weights)  # all-equal weights per patch


def test_dense_training_adds_the_block_loss_and_builds_depth_four(tmp_path):
    x, y, groups = toy_patches(48)
    targets, weights = toy_blocks(x, y)
    config = TrainConfig(**{**FAST, "epochs": 2}, dense_weight=1.0)
    dense = train_bundle(ArrayPatches(x, (targets, weights)), y, groups, BANDS3, config,
                         version="toy-dense")
    plain = train_bundle(ArrayPatches(x), y, groups, BANDS3, config, version="toy-plain")
    info = dense.bundle.training
    assert info["depth"] == 4 and info["dense_supervision"]["used"]
    n_train = dense.metrics["n_train"]
    has = weights.reshape(48, -1).any(axis=1)
    assert (info["dense_supervision"]["train_patches_with_mask"]
            + info["dense_supervision"]["val_patches_with_mask"]) == has.sum() < 48
    assert 0 < info["dense_supervision"]["train_patches_with_mask"] <= n_train
    h = dense.history
    assert min(h["blocks_loss"]) > 0 and "val_cell_score_loss" in h
    # the optimised loss is the cell loss plus weight x the block loss (Keras averages each over
    # the epoch's batches on its own, so the sum matches to about a percent, not exactly)
    np.testing.assert_allclose(h["loss"][0], h["cell_score_loss"][0] + h["blocks_loss"][0],
                               rtol=2e-2)
    assert plain.bundle.training["depth"] == 3 and "blocks_loss" not in plain.history
    assert not plain.bundle.training["dense_supervision"]["used"]
    # a depth-4 model saves, loads (its sidecar records the architecture) and scores
    loaded = load_bundle(save_bundle(dense.bundle, tmp_path))
    assert loaded.model.get_layer("conv4") is not None
    np.testing.assert_allclose(patch_scores(loaded, x[:6]), patch_scores(dense.bundle, x[:6]),
                               rtol=1e-5)


def test_depth_and_dense_weight_settle_the_network():
    assert fcn_depth(TrainConfig(), dense=True) == 4
    assert fcn_depth(TrainConfig(), dense=False) == 3
    assert fcn_depth(TrainConfig(kernel=5), dense=True) == 3  # 5 x 5 at depth 4 overreaches
    assert fcn_depth(TrainConfig(depth=3), dense=True) == 3
    assert fcn_depth(TrainConfig(depth=4), dense=False) == 4
    with pytest.raises(ValueError, match="depth must be None"):
        TrainConfig(depth=5)
    with pytest.raises(ValueError, match="kernel 5 at depth 4"):
        TrainConfig(kernel=5, depth=4)
    with pytest.raises(ValueError, match="dense_weight"):
        TrainConfig(dense_weight=-1)


def test_zero_dense_weight_the_default_trains_the_cell_loss_only():
    x, y, groups = toy_patches(24)
    assert TrainConfig().dense_weight == 0.0
    result = train_bundle(ArrayPatches(x, toy_blocks(x, y)), y, groups, BANDS3,
                          TrainConfig(**{**FAST, "epochs": 1}), version="toy-0")
    assert result.bundle.training["depth"] == 3 and "blocks_loss" not in result.history
    assert not result.bundle.training["dense_supervision"]["used"]


def test_training_stops_once_validation_stops_improving():
    """A learning rate too small to move the validation loss by MIN_DELTA: training ends PATIENCE
    epochs after the first one, far below the most epochs."""
    from model.train import MIN_DELTA, PATIENCE

    x, y, groups = toy_patches(48)
    seen: list[int] = []
    config = TrainConfig(**{**FAST, "epochs": 30, "patience": PATIENCE, "learning_rate": 1e-9})
    result = train_bundle(x, y, groups, BANDS3, config, version="toy-stop",
                          progress=lambda epoch, epochs, logs: seen.append(epoch))
    assert result.metrics["epochs_run"] == PATIENCE + 1 == len(seen) and seen[-1] < 30
    losses = result.history["val_loss"]
    assert max(losses) - min(losses) < MIN_DELTA
