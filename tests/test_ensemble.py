"""Tests for model.ensemble with tiny real Keras FCNs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.ensemble import FcnEnsemble, load_ensemble
from model.fcn import MINE_CHANNEL, build_fcn

TINY = (4, 8, 8)
BANDS = ("B2", "B3", "B4")


def tiny_fcn(seed: int, kernel: int = 3, depth: int = 3):
    return build_fcn(BANDS, np.full(3, 900.0), np.full(3, 300.0), seed=seed, widths=TINY,
                     kernel=kernel, depth=depth)


@pytest.fixture
def pixels() -> np.ndarray:
    return np.random.default_rng(3).uniform(0, 3000, (2, 24, 32, 3)).astype(np.float32)


def mine_map(model, x: np.ndarray) -> np.ndarray:
    return model.predict(x, verbose=0)[..., MINE_CHANNEL]


def test_mean_and_std_are_over_members(pixels) -> None:
    members = [tiny_fcn(0), tiny_fcn(1), tiny_fcn(2, kernel=5)]
    mean, std = FcnEnsemble(members).predict(pixels)
    maps = np.stack([mine_map(m, pixels) for m in members])
    assert mean.shape == (2, 6, 8)
    np.testing.assert_allclose(mean, maps.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(std, maps.std(axis=0), atol=1e-6)
    assert std.max() > 0  # differently initialised members disagree


def test_four_flips_equal_manual_flips(pixels) -> None:
    model = tiny_fcn(4, depth=4)
    manual = [mine_map(model, pixels),
              mine_map(model, pixels[:, :, ::-1])[:, :, ::-1],
              mine_map(model, pixels[:, ::-1])[:, ::-1],
              mine_map(model, pixels[:, ::-1, ::-1])[:, ::-1, ::-1]]
    mean, std = FcnEnsemble([model], flips=4).predict(pixels)
    np.testing.assert_allclose(mean, np.mean(manual, axis=0), atol=1e-6)
    np.testing.assert_allclose(std, np.std(manual, axis=0), atol=1e-6)
    one, zero = FcnEnsemble([model], flips=1).predict(pixels)
    np.testing.assert_allclose(one, manual[0], atol=1e-6)
    assert not zero.any()


def test_saved_ensemble_loads_and_predicts_the_same(pixels, tmp_path: Path) -> None:
    ensemble = FcnEnsemble([tiny_fcn(0), tiny_fcn(1)], flips=2)
    ensemble.save(tmp_path / "ens")
    loaded = load_ensemble(tmp_path / "ens")
    assert loaded.flips == 2 and len(loaded.members) == 2
    for a, b in zip(ensemble.predict(pixels), loaded.predict(pixels), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda: FcnEnsemble([]), "at least one member"),
    (lambda: FcnEnsemble([tiny_fcn(0)], flips=3), "flips must be one of"),
    (lambda: FcnEnsemble([tiny_fcn(0), build_fcn(("B4",), [1.0], [1.0], widths=TINY)]),
     "different band counts"),
])
def test_bad_ensembles_are_refused(make, message) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_input_off_the_stride_is_refused() -> None:
    with pytest.raises(ValueError, match="multiples of 4"):
        FcnEnsemble([tiny_fcn(0)]).predict(np.zeros((1, 10, 12, 3), np.float32))


def test_a_broken_folder_gives_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an ensemble manifest"):
        load_ensemble(tmp_path)
    (tmp_path / "ensemble.json").write_text('{"members": ["member_0.keras"], "flips": 1}')
    (tmp_path / "member_0.keras").write_bytes(b"not a keras file")
    with pytest.raises(ValueError, match="cannot load ensemble member"):
        load_ensemble(tmp_path)
