"""Tests for model.fcn, model.reduce and model.bundle with tiny real Keras models."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from imagery.bands import SEED_BANDS, BandMismatchError
from model.bundle import ModelBundle, ModelError, check_bands, load_bundle, save_bundle
from model.fcn import (
    MARGIN_PX,
    RECEPTIVE_FIELD_AFTER_PX,
    RECEPTIVE_FIELD_BEFORE_PX,
    STRIDE,
    build_fcn,
    normalisation_of,
)
from model.reduce import (
    REDUCTION,
    TopFractionMean,
    cell_scores,
    threshold_closeness,
    top_count,
)

TINY = (4, 8, 8)
BANDS3 = ("B4", "B8", "B11")


def tiny_bundle(bands=BANDS3, *, version="m1", seed=0, mean=None, std=None) -> ModelBundle:
    n = len(bands)
    mean = np.linspace(800, 2400, n) if mean is None else np.asarray(mean)
    std = np.linspace(200, 600, n) if std is None else np.asarray(std)
    model = build_fcn(bands, mean, std, seed=seed, widths=TINY)
    return ModelBundle(model=model, version=version, parent=None, bands=tuple(bands),
                       mean=mean.tolist(), std=std.tolist(), threshold=0.42,
                       metrics={"f1": 0.9, "confusion_matrix": {"tn": 1, "fp": 0, "fn": 0, "tp": 1}},
                       training={"counts": {"mine": 3, "background": 4}, "years": [2021]})


def random_pixels(rng, *shape) -> np.ndarray:
    return rng.uniform(0, 4000, size=shape).astype(np.float32)


# fcn ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hw", [(8, 8), (52, 36), (132, 132), (20, 100)])
def test_output_shape_any_height_and_width(hw):
    model = build_fcn(BANDS3, np.zeros(3), np.ones(3), widths=TINY)
    out = keras.ops.convert_to_numpy(model(np.zeros((2, *hw, 3), np.float32)))
    assert out.shape == (2, hw[0] // STRIDE, hw[1] // STRIDE, 2)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)


def test_seed_architecture_and_seed_reproducible():
    model = build_fcn(SEED_BANDS, np.zeros(12), np.ones(12), seed=3)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 4  # three 3x3 convolutions + the 1x1 output
    assert kinds.count("MaxPooling2D") == 2 and kinds.count("Dropout") == 1
    assert model.get_layer("classes").kernel.shape == (1, 1, 64, 2)
    assert model.input_shape == (None, None, None, 12)
    again = build_fcn(SEED_BANDS, np.zeros(12), np.ones(12), seed=3)
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(),
                                  again.get_layer("conv1").kernel.numpy())


def test_receptive_field_is_as_documented():
    # Only outputs j with 4j - 7 <= p <= 4j + 10 may change when input pixel p changes.
    model = build_fcn(("B4",), np.zeros(1), np.ones(1), widths=TINY, seed=1)
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 64, 64, 1)).astype(np.float32)
    ref = model.predict_on_batch(base)[0, :, :, 1]
    for p in (0, 13, 30, 63):
        bumped = base.copy()
        bumped[0, :, p, 0] += 50.0
        changed = np.flatnonzero(np.abs(model.predict_on_batch(bumped)[0, :, :, 1] - ref).max(0) > 0)
        for j in changed:
            assert STRIDE * j - RECEPTIVE_FIELD_BEFORE_PX <= p
            assert p <= STRIDE * j + STRIDE - 1 + RECEPTIVE_FIELD_AFTER_PX
    assert MARGIN_PX >= RECEPTIVE_FIELD_BEFORE_PX and MARGIN_PX % STRIDE == 0


def test_build_fcn_rejects_bad_normalisation():
    with pytest.raises(ValueError, match="one value per band"):
        build_fcn(BANDS3, np.zeros(2), np.ones(3))


# reduce ------------------------------------------------------------------------------------------
def test_top_count():
    assert top_count(625) == 63 and top_count(25) == 3 and top_count(1) == 1 and top_count(10) == 1


def test_cell_scores_hand_computed():
    k = 5  # 25 blocks per cell -> top 3 averaged
    prob = np.zeros((k, 2 * k), np.float32)
    prob[0, 0], prob[1, 1], prob[2, 2], prob[3, 3] = 0.9, 0.6, 0.3, 0.2  # cell (0, 0)
    prob[:, k:] = 0.5  # cell (0, 1): uniform
    scores, unc = cell_scores(prob, (1, 2), k)
    np.testing.assert_allclose(scores, [[0.6, 0.5]], atol=1e-6)
    np.testing.assert_allclose(unc, [[1 - 0.1 / 0.5, 1.0]], atol=1e-6)  # closeness to 0.5
    _, unc_at_08 = cell_scores(prob, (1, 2), k, threshold=0.8)
    np.testing.assert_allclose(unc_at_08, [[1 - 0.2 / 0.8, 1 - 0.3 / 0.8]], atol=1e-6)
    # one bright block among 25 moves the score by 1/3 only; a mine on 10 % scores fully
    one = np.zeros((k, k), np.float32)
    one[2, 2] = 1.0
    assert cell_scores(one, (1, 1), k)[0][0, 0] == pytest.approx(1 / 3)
    tenth = np.zeros((k, k), np.float32)
    tenth[0, :3] = 1.0
    assert cell_scores(tenth, (1, 1), k)[0][0, 0] == pytest.approx(1.0)


def test_threshold_closeness_orders_by_distance_to_the_threshold():
    scores = np.array([0.0, 0.2, 0.25, 0.3, 1.0, np.nan])
    close = threshold_closeness(scores, 0.25)
    np.testing.assert_allclose(close[:5], [1 - 0.25 / 0.75, 1 - 0.05 / 0.75, 1.0,
                                           1 - 0.05 / 0.75, 0.0])
    assert np.isnan(close[5])
    # most uncertain first = |score - threshold| smallest first, not |score - 0.5|
    assert list(np.argsort(-close[:5], kind="stable")) == [2, 1, 3, 0, 4]
    with pytest.raises(ValueError, match="threshold"):
        threshold_closeness(scores, 1.5)


@pytest.mark.parametrize("cp", [12, 20, 100])
def test_numpy_and_keras_reductions_agree(cp):
    k = cp // STRIDE
    rng = np.random.default_rng(cp)
    probs = rng.uniform(size=(6, k, k)).astype(np.float32)
    softmax = np.stack([1 - probs, probs], axis=-1)
    layer_scores = keras.ops.convert_to_numpy(TopFractionMean()(softmax))[:, 0]
    np_scores = cell_scores(probs, (1, 1), k)[0][:, 0, 0]
    np.testing.assert_allclose(layer_scores, np_scores, atol=1e-6)
    # a tile of 2 x 3 cells reduces to the same numbers as the cells one by one
    tile = probs.reshape(2, 3, k, k).transpose(0, 2, 1, 3).reshape(2 * k, 3 * k)
    np.testing.assert_allclose(cell_scores(tile, (2, 3), k)[0].ravel(), np_scores, atol=1e-7)


@pytest.mark.parametrize("cp", [12, 20, 100])
def test_fcn_and_reduce_for_any_cell_size(cp):
    model = build_fcn(BANDS3, np.zeros(3), np.ones(3), widths=TINY)
    side = cp + 2 * MARGIN_PX
    out = model.predict_on_batch(np.zeros((1, side, side, 3), np.float32))[0, :, :, 1]
    crop = MARGIN_PX // STRIDE
    scores, _ = cell_scores(out[crop:-crop, crop:-crop], (1, 1), cp // STRIDE)
    assert scores.shape == (1, 1) and 0 <= scores[0, 0] <= 1


def test_cell_scores_rejects_wrong_shape():
    with pytest.raises(ValueError, match="does not hold"):
        cell_scores(np.zeros((10, 10)), (2, 2), 4)


def test_top_fraction_mean_serialises():
    layer = TopFractionMean(q=0.2, channel=1)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(clone, TopFractionMean) and clone.q == 0.2


# bundle ------------------------------------------------------------------------------------------
def test_save_load_round_trip_keeps_normalisation_and_predictions(tmp_path: Path):
    bundle = tiny_bundle()
    rng = np.random.default_rng(1)
    x = random_pixels(rng, 2, 52, 52, 3)
    x[0, :5, :5, 1] = np.nan
    before = bundle.mine_probability(x)
    path = save_bundle(bundle, tmp_path / "models")
    assert path == tmp_path / "models" / "m1.keras"
    assert sorted(p.name for p in path.parent.iterdir()) == ["m1.json", "m1.keras"]
    loaded = load_bundle(path)
    mean, std = normalisation_of(loaded.model)
    np.testing.assert_allclose(mean, bundle.mean)
    np.testing.assert_allclose(std, bundle.std, rtol=1e-6)
    np.testing.assert_array_equal(loaded.mine_probability(x), before)
    again = load_bundle(tmp_path / "models" / "m1.json")
    assert again.threshold == 0.42 and again.bands == BANDS3
    assert again.training["years"] == [2021]


def test_mine_probability_fills_invalid_with_band_mean():
    bundle = tiny_bundle()
    rng = np.random.default_rng(2)
    x = random_pixels(rng, 40, 40, 3)
    x[3:9, 10:30, 2] = np.nan
    filled = x.copy()
    filled[3:9, 10:30, 2] = bundle.mean[2]
    out = bundle.mine_probability(x)
    assert out.shape == (10, 10)
    np.testing.assert_array_equal(out, bundle.mine_probability(filled))
    with pytest.raises(ValueError, match="multiples of 4"):
        bundle.mine_probability(x[:38])


def test_sidecar_contents(tmp_path: Path):
    bundle = tiny_bundle(version="v2.0", seed=1)
    bundle.parent = "v1"
    save_bundle(bundle, tmp_path)
    sidecar = json.loads((tmp_path / "v2.0.json").read_text())
    assert sidecar["version"] == "v2.0" and sidecar["parent"] == "v1"
    assert sidecar["bands"] == list(BANDS3)
    assert sidecar["normalisation"]["mean"] == pytest.approx(bundle.mean)
    assert sidecar["normalisation"]["std"] == pytest.approx(bundle.std)
    assert sidecar["threshold"] == 0.42
    assert sidecar["metrics"]["confusion_matrix"]["tp"] == 1
    assert sidecar["training"]["counts"] == {"mine": 3, "background": 4}
    assert sidecar["reduction"] == REDUCTION == "top-fraction-mean q=0.1"
    assert sidecar["stride"] == STRIDE and sidecar["margin_px"] == MARGIN_PX
    assert sidecar["architecture"] == {"kernel": 3, "depth": 3, "widths": list(TINY)}
    assert sidecar["keras_version"] == keras.__version__ and sidecar["tensorflow_version"]
    assert sidecar["created"].endswith("Z")


def test_model_errors(tmp_path: Path):
    with pytest.raises(ModelError, match="not found"):
        load_bundle(tmp_path / "nope.keras")
    path = save_bundle(tiny_bundle(), tmp_path)
    # corrupt .keras
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 3])
    with pytest.raises(ModelError, match="m1.keras"):
        load_bundle(path)
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(ModelError, match="corrupt"):
        load_bundle(path)
    path.write_bytes(good)
    sidecar_path = tmp_path / "m1.json"
    sidecar = json.loads(sidecar_path.read_text())
    # sidecar that does not match the model
    for change, message in (
        ({"bands": ["B2", "B3"]}, "lists 2 bands .B2, B3. but the model"),
        ({"normalisation": {"mean": [0, 0, 0], "std": [1, 1, 1]}}, "does not match"),
        ({"version": "other"}, "is for version"),
        ({"architecture": {"kernel": 3, "depth": 4, "widths": [4, 8, 8, 8]}},
         "sidecar architecture .* differs from the network in m1.keras"),
    ):
        sidecar_path.write_text(json.dumps({**sidecar, **change}))
        with pytest.raises(ModelError, match=message):
            load_bundle(path)
    sidecar_path.write_text("{not json")
    with pytest.raises(ModelError, match="not readable JSON"):
        load_bundle(path)
    sidecar_path.unlink()
    with pytest.raises(ModelError, match="sidecar not found"):
        load_bundle(path)


def test_check_bands_selects_by_name_and_names_both_lists():
    bundle = tiny_bundle()
    assert check_bands(bundle, SEED_BANDS) == [3, 7, 10]
    with pytest.raises(BandMismatchError) as err:
        check_bands(bundle, ("B2", "B3", "B4", "B8"))
    text = str(err.value)
    assert "B4, B8, B11" in text and "B2, B3, B4, B8" in text and "missing B11" in text


def test_bad_version_rejected():
    with pytest.raises(ValueError, match="model version"):
        tiny_bundle(version="../evil")


def test_kernel_five_fits_the_margin_and_seven_does_not():
    from model.fcn import KERNELS, receptive_field_px, receptive_reach_px

    assert receptive_field_px(3) == 18 and receptive_reach_px(3) == 7
    assert receptive_field_px(5) == 32 and receptive_reach_px(5) == 14 <= MARGIN_PX
    assert 5 in KERNELS and 7 not in KERNELS
    model = build_fcn(("B4",), np.zeros(1), np.ones(1), widths=TINY, seed=1, kernel=5)
    assert model.get_layer("conv2").kernel.shape[:2] == (5, 5)
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 64, 64, 1)).astype(np.float32)
    ref = model.predict_on_batch(base)[0, :, :, 1]
    for p in (0, 30, 63):
        bumped = base.copy()
        bumped[0, :, p, 0] += 50.0
        changed = np.flatnonzero(np.abs(model.predict_on_batch(bumped)[0, :, :, 1] - ref).max(0) > 0)
        assert all(STRIDE * j - 14 <= p <= STRIDE * j + STRIDE - 1 + 14 for j in changed)
    with pytest.raises(ValueError, match="kernel"):
        build_fcn(("B4",), np.zeros(1), np.ones(1), kernel=7)


def test_depth_four_adds_a_conv_within_the_margin():
    from model.fcn import receptive_field_px, receptive_reach_px

    assert receptive_field_px(3, 4) == 26 and receptive_reach_px(3, 4) == 11 <= MARGIN_PX
    model = build_fcn(("B4",), np.zeros(1), np.ones(1), widths=TINY, seed=1, depth=4)
    assert model.get_layer("conv4").kernel.shape == (3, 3, 8, 8)
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 64, 64, 1)).astype(np.float32)
    ref = model.predict_on_batch(base)[0, :, :, 1]
    assert ref.shape == (16, 16)
    reached = set()
    for p in range(64):
        bumped = base.copy()
        bumped[0, :, p, 0] += 50.0
        changed = np.flatnonzero(np.abs(model.predict_on_batch(bumped)[0, :, :, 1] - ref).max(0) > 0)
        assert all(STRIDE * j - 11 <= p <= STRIDE * j + STRIDE - 1 + 11 for j in changed)
        reached.update(p - STRIDE * j for j in changed)
    assert min(reached) == -11  # the documented reach is met, not only bounded
    with pytest.raises(ValueError, match="depth must be one of"):
        build_fcn(("B4",), np.zeros(1), np.ones(1), depth=5)
    with pytest.raises(ValueError, match="beyond the 16 px context margin"):
        build_fcn(("B4",), np.zeros(1), np.ones(1), kernel=5, depth=4)


def test_a_depth_four_bundle_records_and_rebuilds_its_architecture(tmp_path: Path):
    model = build_fcn(BANDS3, np.full(3, 1000.0), np.full(3, 300.0), widths=TINY, depth=4)
    bundle = ModelBundle(model=model, version="d4", parent=None, bands=BANDS3,
                         mean=[1000.0] * 3, std=[300.0] * 3)
    loaded = load_bundle(save_bundle(bundle, tmp_path))
    assert json.loads((tmp_path / "d4.json").read_text())["architecture"] == {
        "kernel": 3, "depth": 4, "widths": [4, 8, 8, 8]}
    x = random_pixels(np.random.default_rng(5), 2, 52, 52, 3)
    np.testing.assert_array_equal(loaded.mine_probability(x), bundle.mine_probability(x))
