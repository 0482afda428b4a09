"""pipeline.training: patches streamed from the imagery store, the label snapshot in the sidecar,
hard negatives that outlive the model that taught them."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from db.store import Store
from model.fcn import MARGIN_PX
from model.train import TrainConfig
from pipeline.ingest import ingest_files, year_mosaic
from pipeline.scoring import score_year
from pipeline.seeds import seed_labels_from_polygons
from pipeline.settings import load_settings
from pipeline.training import (
    LABEL_LIST_MAX_ROWS,
    StorePatches,
    collect_patches,
    hard_negative_keys,
    label_snapshot,
    load_model,
    snapshot_hash,
    train_model,
    write_label_list,
)
from tests.territory import write_territory

FAST = {"PIXEL_SIZE_M": 50.0, "FCN_WIDTHS": "4,8,8", "TRAIN_EPOCHS": 2}


@pytest.fixture
def settings(tmp_path):
    return load_settings({"DATA_DIR": str(tmp_path / "instance"), **FAST}, environ={})


@pytest.fixture
def store(settings):
    with Store(settings.database_path) as opened:
        yield opened


@pytest.fixture
def seeded(store, settings, tmp_path):
    """Two years of the same territory (different textures), seed labels on both."""
    for year, shift in ((2020, 1), (2021, 0)):
        territory = write_territory(tmp_path / f"data{year}", size_km=8, n_mines=8,
                                    year_shift=shift)
        ingest_files(store, settings, [territory.scene], year)
        seed_labels_from_polygons(store, settings.grid, territory.mines, year)
    return store


def test_store_patches_read_what_the_mosaic_holds(seeded, settings):
    rows = seeded.training_labels()
    patches = collect_patches(seeded, settings, rows, ("B4", "B8", "B11"),
                              min_valid_fraction=settings.MIN_VALID_FRACTION)
    source = patches.pixels
    assert isinstance(source, StorePatches) and len(source) == len(rows) - patches.skipped
    assert source.patch_px == settings.grid.cell_px + 2 * MARGIN_PX and source.n_bands == 3
    picks = np.array([len(source) - 1, 0, len(source) // 2])
    got = source.read(picks)
    for i, k in enumerate(picks):
        want, _ = year_mosaic(settings, int(patches.years[k])).read_cells(
            [patches.cell_ids[k]], margin_px=MARGIN_PX, bands=("B4", "B8", "B11"))
        np.testing.assert_array_equal(got[i], want[0])
    # locality: year first, then store block, then cell
    order = np.argsort(source.locality)
    assert np.all(np.diff(patches.years[order]) >= 0)
    assert sorted(source.locality.tolist()) == list(range(len(source)))


def test_the_sidecar_records_exactly_which_labels_trained_the_model(seeded, settings):
    record, result = train_model(seeded, settings, config=TrainConfig(epochs=1, widths=(4, 8, 8)))
    labels = record["training"]["labels"]
    rows = seeded.training_labels()
    used = len(rows) - record["training"]["skipped_no_imagery"]
    assert labels["mine"] + labels["background"] == used > 0
    listed = settings.models_dir / labels["list_file"]
    assert listed.name == "m0001.labels.csv"
    with open(listed, newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["cell_id", "year", "label", "source"] and len(table) - 1 == used
    snapshot = [(int(c), int(y), lab, src) for c, y, lab, src in table[1:]]
    assert sum(row[2] == "mine" for row in snapshot) == labels["mine"]
    every = {(r["cell_id"], r["year"], r["label"], r["source"]) for r in rows}
    assert set(snapshot) <= every
    assert snapshot == sorted(snapshot) and snapshot_hash(snapshot) == labels["sha256"]
    sidecar = json.loads((settings.models_dir / "m0001.json").read_text())
    assert sidecar["training"]["labels"]["sha256"] == labels["sha256"]
    # one review more changes the hash of the next model's snapshot
    cell = rows[0]
    seeded.record_label(cell["cell_id"], cell["year"],
                        "background" if cell["label"] == "mine" else "mine", "ann")
    record2, _ = train_model(seeded, settings, config=TrainConfig(epochs=1, widths=(4, 8, 8)))
    assert record2["training"]["labels"]["sha256"] != labels["sha256"]


def test_a_large_snapshot_keeps_its_hash_but_no_list(tmp_path):
    snapshot = [(i, 2021, "background", "seed") for i in range(LABEL_LIST_MAX_ROWS + 1)]
    assert write_label_list(tmp_path, "m0001", snapshot) is None
    assert not list(tmp_path.iterdir())
    assert write_label_list(tmp_path, "m0001", snapshot[:3]) == "m0001.labels.csv"
    assert len(snapshot_hash(snapshot)) == 64


def test_a_lesson_outlives_the_model_that_taught_it(seeded, settings):
    """A rejected prediction of model 1 weighs as a hard negative for model 3 even though
    model 2 no longer predicts it."""
    train_model(seeded, settings, config=TrainConfig(epochs=1, widths=(4, 8, 8)))
    first = load_model(seeded)
    score_year(seeded, settings, first, 2021)
    top = seeded.queue_candidates("m0001", 2021, "score", "ann", 1)[0]
    top_score = top["score"]
    seeded.db.execute("UPDATE models SET threshold = ? WHERE version = 'm0001'",
                      [top_score - 1e-6])  # make sure model 1 called this cell a mine
    seeded.record_label(top["cell_id"], 2021, "background", "ann", score_shown=top_score,
                        model_version_shown="m0001")
    assert hard_negative_keys(seeded) == {(top["cell_id"], 2021)}
    record2, _ = train_model(seeded, settings, config=TrainConfig(epochs=1, widths=(4, 8, 8)))
    seeded.db.execute("UPDATE models SET threshold = 1.0 WHERE version = ?",
                      [record2["version"]])  # model 2 predicts nothing
    score_year(seeded, settings, load_model(seeded, record2["version"]), 2021)
    assert hard_negative_keys(seeded, seeded.model(record2["version"])) == \
        {(top["cell_id"], 2021)}
    record3, _ = train_model(seeded, settings, config=TrainConfig(epochs=1, widths=(4, 8, 8)))
    assert record3["training"]["hard_negatives"] == 1
    assert record3["training"]["counts"]["hard_negatives"] == 1
    patches = collect_patches(seeded, settings, seeded.training_labels(), first.bands,
                              min_valid_fraction=0.5, hard_negatives=hard_negative_keys(seeded))
    flagged = np.flatnonzero(patches.hard_negative)
    assert [(int(patches.cell_ids[i]), int(patches.years[i])) for i in flagged] == \
        [(top["cell_id"], 2021)]
    assert label_snapshot(patches)[0][0] <= label_snapshot(patches)[-1][0]
