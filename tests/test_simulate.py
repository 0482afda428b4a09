"""The active-learning simulation (pipeline/simulate.py) on a tiny generated tailings folder.

The folder is laid out like ``tailings_rgb_brazil/``: small real 3-band (B2, B3, B4) GeoTIFFs in
EPSG:4326 at ~10 m with bright squares (the "tailings") and matching binary masks, plus a
manifest. A tiny FCN runs 2 rounds x 2 strategies x 1 seed.
"""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from pipeline.simulate import (
    CURVE_COLUMNS,
    ORACLE,
    SOURCE,
    SimConfig,
    SimulationError,
    labels_to_target,
    run_simulation,
    summarise,
    write_outputs,
)

DEG = 8.93e-5  # ~10 m at the equator, as the Brazil patches
SIDE = 300     # px: ~2.7 km, a few 1-km cells per patch


def write_folder(root: Path, n_patches: int = 6, *, mines: bool = True, seed: int = 5) -> Path:
    """A tailings_rgb_brazil-like folder: img/img_N.tif, mask/mask_N.tif, manifest.csv."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    (root / "mask").mkdir()
    rows = []
    for n in range(1, n_patches + 1):
        left, top = -44.0 + 0.1 * n, -20.0 - 0.05 * (n % 2)
        transform = Affine(DEG, 0.0, left, 0.0, -DEG, top)
        img = rng.normal(600, 60, size=(3, SIDE, SIDE)).clip(1, None)
        mask = np.zeros((SIDE, SIDE), dtype=np.uint8)
        if mines:
            for _ in range(3):
                r, c = rng.integers(0, SIDE - 60, size=2)
                mask[r:r + 60, c:c + 60] = 1
        if mines:
            img[:, mask == 1] = np.array([[2500], [2800], [3000]])
        profile = {"driver": "GTiff", "width": SIDE, "height": SIDE, "crs": "EPSG:4326",
                   "transform": transform}
        with rasterio.open(root / "img" / f"img_{n}.tif", "w", count=3, dtype="uint16",
                           **profile) as ds:
            ds.write(img.astype(np.uint16))
            for band, name in enumerate(("B2", "B3", "B4"), start=1):
                ds.set_band_description(band, name)
        with rasterio.open(root / "mask" / f"mask_{n}.tif", "w", count=1, dtype="uint8",
                           **profile) as ds:
            ds.write(mask[None])
        rows.append({"id": n, "width": SIDE, "height": SIDE, "left": left,
                     "bottom": top - SIDE * DEG, "right": left + SIDE * DEG, "top": top,
                     "mask_fraction": round(float(mask.mean()), 4)})
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def tiny(**changes) -> SimConfig:
    """A tiny, fast simulation: 2 rounds x 2 strategies x 1 seed, a 4-8-8 FCN, no search."""
    values = dict(rounds=2, batch=4, seeds=(0,), seed_per_class=2,
                  strategies=("uncertainty", "mixed"), epochs=1, train_steps=4, max_epochs=2,
                  widths=(4, 8, 8), mc_samples=2, search="none", ceiling=False,
                  test_fraction=0.3)
    values.update(changes)
    return SimConfig(**values)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("data") / "tailings")


@pytest.fixture(scope="module")
def simulated(folder, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    config = tiny()
    result = run_simulation(folder, work, config)
    files = write_outputs(result, work / "out", config)
    return result, work, files


def test_labels_go_through_the_store_as_simulation(simulated) -> None:
    result, work, _ = simulated
    for name in ("uncertainty", "mixed"):
        with sqlite3.connect(work / f"seed0-{name}" / "minewatch.db") as db:
            events = db.execute("SELECT reviewer, source, kind, label FROM label_events").fetchall()
            leases = db.execute("SELECT count(*) FROM leases").fetchone()[0]
            models = db.execute("SELECT count(*) FROM models").fetchone()[0]
        assert len(events) == 2 * 4
        assert {(r, s, k) for r, s, k, _ in events} == {(ORACLE, SOURCE, "label")}
        assert {label for *_, label in events} <= {"mine", "background", "skip"}
        assert leases == 0  # every served card was decided
        assert models == 1 + 2  # round 0 plus one per round


def test_test_split_is_never_labelled_or_queued(simulated) -> None:
    result, work, _ = simulated
    test = set(result.test_cell_ids)
    assert test
    for name in ("uncertainty", "mixed"):
        with sqlite3.connect(work / f"seed0-{name}" / "minewatch.db") as db:
            labelled = {c for (c,) in db.execute("SELECT cell_id FROM label_events")}
            seeded = {c for (c,) in db.execute("SELECT cell_id FROM seed_labels")}
            scored = {c for (c,) in db.execute("SELECT cell_id FROM scores")}
        assert labelled and not labelled & test
        assert not seeded & test
        assert not scored & test  # never scored into the store, so never in the queue


def test_curves_csv_has_a_row_per_strategy_seed_and_round(simulated) -> None:
    _, _, files = simulated
    with files["curves"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CURVE_COLUMNS
    assert len(rows) == 2 * 1 * 3
    assert sorted((r["strategy"], int(r["round"]), int(r["labels"])) for r in rows) == [
        ("mixed", 0, 0), ("mixed", 1, 4), ("mixed", 2, 8),
        ("uncertainty", 0, 0), ("uncertainty", 1, 4), ("uncertainty", 2, 8)]
    for r in rows:
        assert 0 <= float(r["test_ap"]) <= 1
    assert files["plot"].stat().st_size > 10_000
    assert files["summary"].exists() and files["tuning"].exists()


def test_labels_to_target_and_ratio_on_a_hand_made_curve() -> None:
    labels = [0, 40, 80, 120]
    assert labels_to_target(labels, [0.3, 0.4, 0.5, 0.6], 0.5) == 80
    assert labels_to_target(labels, [0.3, 0.5, 0.6, 0.7], 0.55) == pytest.approx(60)
    assert labels_to_target(labels, [0.3, 0.4, 0.4, 0.45], 0.5) is None
    assert labels_to_target(labels, [0.6, 0.6, 0.7, 0.8], 0.5) == 0
    curves = []
    for name, aps in (("random", (0.3, 0.4, 0.5, 0.6)), ("uncertainty", (0.3, 0.5, 0.6, 0.7)),
                      ("score", (0.3, 0.35, 0.4, 0.45))):
        for seed, shift in ((0, -0.01), (1, 0.01)):
            for round_, ap in enumerate(aps):
                curves.append({"strategy": name, "seed": seed, "round": round_,
                               "labels": 40 * round_, "test_ap": ap + shift,
                               **dict.fromkeys(("test_precision_at_recall_90", "test_precision",
                                                "test_recall", "pool_false_positives_left",
                                                "labels_mine", "labels_skip"), 0.0)})
    summary, target = summarise(curves, target_ap=0.5)
    by = {r["strategy"]: r for r in summary}
    assert target == 0.5
    assert by["random"]["labels_to_target"] == 80 and by["random"]["ratio_vs_random"] == 1.0
    assert by["uncertainty"]["labels_to_target"] == 40
    assert by["uncertainty"]["ratio_vs_random"] == 2.0
    assert by["score"]["labels_to_target"] is None and by["score"]["ratio_vs_random"] is None
    _, default_target = summarise(curves)
    assert default_target == pytest.approx(0.6)  # random's final mean AP


@pytest.mark.parametrize(("make", "config", "message"), [
    (lambda tmp: tmp / "absent", tiny(), "no such data folder"),
    (lambda tmp: write_folder(tmp / "clean", 4, mines=False), tiny(), "both classes"),
    (None, tiny(rounds=50, batch=40), "labels asked"),
    (None, tiny(bands=("B8",)), "B8 missing"),
])
def test_bad_input_stops_with_one_clear_line(make, config, message, folder, tmp_path) -> None:
    data = folder if make is None else make(tmp_path)
    with pytest.raises(SimulationError, match=message) as error:
        run_simulation(data, tmp_path / "work", config)
    assert "\n" not in str(error.value)


def test_a_folder_without_masks_is_refused(folder, tmp_path) -> None:
    broken = tmp_path / "broken"
    (broken / "img").mkdir(parents=True)
    (broken / "mask").mkdir()
    (broken / "manifest.csv").write_text("id\n1\n")
    (broken / "img" / "img_1.tif").write_bytes((folder / "img" / "img_1.tif").read_bytes())
    with pytest.raises(SimulationError, match="has no mask/mask_1.tif"):
        run_simulation(broken, tmp_path / "work", tiny())
    with pytest.raises(SimulationError, match="unknown strategy"):
        tiny(strategies=("alphabetical",))


def test_test_split_keeps_units_whole_and_a_cell_between_test_and_pool(tmp_path) -> None:
    from imagery.grid import CellGrid
    from pipeline.simulate import Territory, test_split

    rows, cols = np.meshgrid(np.arange(10), np.arange(12), indexing="ij")
    ids = CellGrid.cell_id(rows.ravel(), cols.ravel()).astype(np.int64)
    unit = (cols.ravel() // 3).astype(np.int64)  # four 10 x 3 blocks side by side
    fraction = np.where(rows.ravel() % 4 == 0, 0.5, 0.0)  # mines in every block
    n = ids.size
    territory = Territory(name="grid", year=2021, bands=("B2",), base_db=tmp_path / "x.db",
                          cell_ids=ids, scene_ids=np.ones(n, np.int64),
                          valid_fraction=np.ones(n, np.float32),
                          pixels=np.zeros((n, 1, 1, 1), np.float32), fraction=fraction, unit=unit)
    for split_seed in range(4):
        split = test_split(territory, tiny(test_fraction=0.3, split_seed=split_seed))
        assert not set(unit[split.pool]) & set(unit[split.test])
        test_rc = np.stack(CellGrid.row_col(ids[split.test]), axis=1)
        pool_rc = np.stack(CellGrid.row_col(ids[split.pool]), axis=1)
        chebyshev = np.abs(test_rc[:, None, :] - pool_rc[None, :, :]).max(axis=2)
        assert chebyshev.min() >= 2  # one whole cell (1 km) between test and training cells
        left_out = np.setdiff1d(np.arange(n), np.concatenate([split.pool, split.test]))
        out_rc = np.stack(CellGrid.row_col(ids[left_out]), axis=1)
        near = np.abs(out_rc[:, None, :] - test_rc[None, :, :]).max(axis=2).min(axis=1)
        assert len(left_out) >= 10 and (near == 1).all()  # only the ring around the test split


def test_folder_units_are_groups_when_the_folder_has_groups_csv(tmp_path) -> None:
    from pipeline.simulate import _folder_units

    assert _folder_units(tmp_path, ["3", "7"]) == [3, 7]
    (tmp_path / "groups.csv").write_text("id,group\n3,0\n7,0\n9,1\n")
    assert _folder_units(tmp_path, ["3", "7", "9"]) == [0, 0, 1]
    with pytest.raises(SimulationError, match="no group for patch"):
        _folder_units(tmp_path, ["3", "8"])
    (tmp_path / "groups.csv").write_text("id\n3\n")
    with pytest.raises(SimulationError, match="missing column"):
        _folder_units(tmp_path, ["3"])
