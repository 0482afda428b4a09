"""pipeline.training: patches streamed from the imagery store, the label snapshot in the sidecar,
hard negatives that outlive the model that taught them."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.features import rasterize
from rasterio.transform import from_origin

from db.store import Store
from imagery.masks import (
    MASK_NODATA,
    MaskLayerError,
    block_fractions,
    mask_cell_fractions,
    mask_layer_dir,
    open_mask_layer,
)
from model.fcn import MARGIN_PX, STRIDE
from model.train import TrainConfig
from pipeline.ingest import ingest_files, year_mosaic
from pipeline.scoring import score_year
from pipeline.seeds import seed_labels_from_masks, seed_labels_from_polygons
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
from tests.territory import CRS, ORIGIN, PIXEL_M, write_territory

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
    rows = seeded.labels.training_labels()
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
    rows = seeded.labels.training_labels()
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
    seeded.labels.record_label(cell["cell_id"], cell["year"],
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
    top = seeded.leases.queue_candidates("m0001", 2021, "score", "ann", 1)[0]
    top_score = top["score"]
    seeded.db.execute("UPDATE models SET threshold = ? WHERE version = 'm0001'",
                      [top_score - 1e-6])  # make sure model 1 called this cell a mine
    seeded.labels.record_label(top["cell_id"], 2021, "background", "ann", score_shown=top_score,
                               model_version_shown="m0001")
    assert hard_negative_keys(seeded) == {(top["cell_id"], 2021)}
    record2, _ = train_model(seeded, settings, config=TrainConfig(epochs=1, widths=(4, 8, 8)))
    seeded.db.execute("UPDATE models SET threshold = 1.0 WHERE version = ?",
                      [record2["version"]])  # model 2 predicts nothing
    score_year(seeded, settings, load_model(seeded, record2["version"]), 2021)
    assert hard_negative_keys(seeded, seeded.models.model(record2["version"])) == \
        {(top["cell_id"], 2021)}
    record3, _ = train_model(seeded, settings, config=TrainConfig(epochs=1, widths=(4, 8, 8)))
    assert record3["training"]["hard_negatives"] == 1
    assert record3["training"]["counts"]["hard_negatives"] == 1
    patches = collect_patches(seeded, settings, seeded.labels.training_labels(), first.bands,
                              min_valid_fraction=0.5, hard_negatives=hard_negative_keys(seeded))
    flagged = np.flatnonzero(patches.hard_negative)
    assert [(int(patches.cell_ids[i]), int(patches.years[i])) for i in flagged] == \
        [(top["cell_id"], 2021)]
    assert label_snapshot(patches)[0][0] <= label_snapshot(patches)[-1][0]


# mask layers and dense supervision ---------------------------------------------------------------
def write_mask(territory, path, size_km: int) -> None:
    """A 10 m UTM mask GeoTIFF of the territory's mine boxes (1 inside, 0 outside)."""
    n = int(size_km * 1000 / PIXEL_M)
    transform = from_origin(*ORIGIN, PIXEL_M, PIXEL_M)
    data = rasterize(((shapely.box(*b), 1) for b in territory.mine_boxes), out_shape=(n, n),
                     transform=transform, fill=0, dtype="uint8")
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=1, dtype="uint8",
                       crs=CRS, transform=transform) as dst:
        dst.write(data, 1)


@pytest.fixture
def masked(store, settings, tmp_path):
    """One year seeded from a mask raster, with the mask layer written."""
    territory = write_territory(tmp_path / "data", size_km=8, n_mines=8)
    ingest_files(store, settings, [territory.scene], 2021)
    mask = tmp_path / "data" / "mask.tif"
    write_mask(territory, mask, 8)
    seed_labels_from_masks(store, settings.grid, [mask], 2021, data_dir=settings.data_dir)
    return store, mask, territory


def test_seeding_from_masks_stores_a_grid_aligned_mask_layer(masked, settings):
    store, mask, _ = masked
    layer = open_mask_layer(settings.data_dir, settings.grid, 2021)
    assert layer is not None and layer.source == "1 mask rasters (masks)"
    cell_ids, fraction, covered = mask_cell_fractions(mask, settings.grid)
    cells = layer.read_cells(cell_ids)
    assert cells.shape == (len(cell_ids), settings.grid.cell_px, settings.grid.cell_px)
    # GDAL's nearest-neighbour warp may pick another source pixel for a grid pixel on a mask
    # edge when the destination window differs (the cell range here, the store block there):
    # (measured: up to 4 pixels of a cell's 400); a layer one cell or one pixel row off would
    # differ by far more along every mine's edge
    stored_covered = (cells != MASK_NODATA).mean(axis=(1, 2))
    np.testing.assert_allclose(stored_covered, covered, atol=0.02)
    seen = covered > 0
    stored_fraction = (cells[seen] == 1).sum(axis=(1, 2)) / (cells[seen] != MASK_NODATA).sum(
        axis=(1, 2))
    np.testing.assert_allclose(stored_fraction, fraction[seen], atol=0.02)
    mines = {r["cell_id"] for r in store.labels.seed_labels(2021) if r["label"] == "mine"}
    assert mines and all(stored_fraction[list(cell_ids[seen]).index(c)] >= 0.05 for c in mines)
    # a cell far outside the mask reads as no mask
    assert (layer.read_cells([cell_ids.max() + 50]) == MASK_NODATA).all()


def test_polygon_seeds_mask_exactly_the_seeded_cells(store, settings, tmp_path):
    territory = write_territory(tmp_path / "data", size_km=8, n_mines=8)
    ingest_files(store, settings, [territory.scene], 2021)
    seed_labels_from_polygons(store, settings.grid, territory.mines, 2021,
                              data_dir=settings.data_dir)
    layer = open_mask_layer(settings.data_dir, settings.grid, 2021)
    seeds = store.labels.seed_labels(2021)
    cells = layer.read_cells([r["cell_id"] for r in seeds])
    assert (cells != MASK_NODATA).all()  # every seeded cell is covered whole
    for row, cell in zip(seeds, cells, strict=True):
        assert (cell == 1).any() == (row["label"] == "mine")
    # pixel by pixel: the stored 1s are the grid pixels whose centre lies in a mine box
    grid, cp = settings.grid, settings.grid.cell_px
    to_utm = Transformer.from_crs(grid.crs, CRS, always_xy=True)
    agree = []
    for row, cell in zip(seeds, cells, strict=True):
        r0, c0 = grid.cell_pixel_origin(row["cell_id"])
        rr, cc = np.mgrid[0:cp, 0:cp]
        t = grid.pixel_transform(r0, c0)
        x, y = t.c + (cc + 0.5) * t.a, t.f + (rr + 0.5) * t.e
        ux, uy = to_utm.transform(x, y)
        inside = np.zeros((cp, cp), dtype=bool)
        for x0, y0, x1, y1 in territory.mine_boxes:
            inside |= (ux >= x0) & (ux <= x1) & (uy >= y0) & (uy <= y1)
        agree.append((inside == (cell == 1)).mean())
    assert min(agree) > 0.97  # only pixels on a polygon's edge may differ
    # unseeded cells hold no mask
    seeded_ids = {r["cell_id"] for r in seeds}
    other = next(c for c in range(min(seeded_ids), max(seeded_ids)) if c not in seeded_ids
                 and grid.row_col(c)[0] == grid.row_col(min(seeded_ids))[0])
    assert (layer.read_cells([other]) == MASK_NODATA).all()


def test_reseeding_replaces_the_layer_and_a_broken_one_says_so(masked, settings, tmp_path):
    store, mask, territory = masked
    first = sorted(p.name for p in mask_layer_dir(settings.data_dir, 2021).iterdir())
    seed_labels_from_polygons(store, settings.grid, territory.mines, 2021,
                              data_dir=settings.data_dir)
    layer = open_mask_layer(settings.data_dir, settings.grid, 2021)
    assert layer.source == "polygons of mines.geojson" and first
    staging = mask_layer_dir(settings.data_dir, 2021).parent / ".staging"
    assert not staging.exists() or not any(staging.iterdir())
    assert open_mask_layer(settings.data_dir, settings.grid, 2020) is None
    (mask_layer_dir(settings.data_dir, 2021) / "layer.json").write_text("{not json")
    with pytest.raises(MaskLayerError, match="2021 mask layer: .*layer.json is unreadable"):
        open_mask_layer(settings.data_dir, settings.grid, 2021)
    other = load_settings({"DATA_DIR": str(settings.data_dir), "PIXEL_SIZE_M": 20.0},
                          environ={})
    (mask_layer_dir(settings.data_dir, 2021) / "layer.json").write_text(
        json.dumps({"grid": {}, "block_cells": 16}))
    with pytest.raises(MaskLayerError, match="not this installation's grid"):
        open_mask_layer(other.data_dir, other.grid, 2021)


def test_cells_with_an_agreeing_mask_get_block_targets(masked, settings):
    store, _, _ = masked
    rows = store.labels.training_labels()
    mine = next(r for r in rows if r["label"] == "mine")
    store.labels.record_label(mine["cell_id"], 2021, "background", "ann")  # a reviewer overrules it
    rows = store.labels.training_labels()
    off = collect_patches(store, settings, rows, ("B4", "B8", "B11"),
                          min_valid_fraction=settings.MIN_VALID_FRACTION)
    assert not off.pixels.has_blocks.any()  # DENSE_LOSS_WEIGHT 0 (default): no mask is read
    settings = load_settings({"DATA_DIR": str(settings.data_dir), **FAST,
                              "DENSE_LOSS_WEIGHT": 1.0}, environ={})
    patches = collect_patches(store, settings, rows, ("B4", "B8", "B11"),
                              min_valid_fraction=settings.MIN_VALID_FRACTION)
    source = patches.pixels
    overruled = int(np.flatnonzero(patches.cell_ids == mine["cell_id"])[0])
    assert not source.has_blocks[overruled]
    assert source.has_blocks.sum() == len(patches.labels) - 1
    k = settings.grid.cell_px // STRIDE
    picks = np.array([overruled, *np.flatnonzero(source.has_blocks)[:5]])
    targets, weights = source.read_blocks(picks)
    assert targets.shape == weights.shape == (len(picks), k, k)
    assert not weights[0].any() and not targets[0].any()  # no dense loss for it
    layer = open_mask_layer(settings.data_dir, settings.grid, 2021)
    want_t, want_w = block_fractions(layer.read_cells(patches.cell_ids[picks[1:]]), STRIDE)
    np.testing.assert_array_equal(targets[1:], want_t)
    np.testing.assert_array_equal(weights[1:], want_w)
    for i, p in enumerate(picks[1:], start=1):
        assert (targets[i].max() > 0) == bool(patches.labels[p])


def test_the_real_training_path_uses_the_masks(masked, settings):
    store, _, _ = masked
    dense_settings = load_settings({"DATA_DIR": str(settings.data_dir), **FAST,
                                    "DENSE_LOSS_WEIGHT": 1.0}, environ={})
    record, result = train_model(store, dense_settings)
    training = record["training"]
    assert training["depth"] == 4 and training["dense_supervision"]["used"]
    dense = training["dense_supervision"]
    assert training["mask_targets"] == dense["train_patches_with_mask"] + \
        dense["val_patches_with_mask"] and dense["train_patches_with_mask"] > 0
    assert "blocks_loss" in result.history
    bundle = load_model(store, settings=settings)
    assert bundle.model.get_layer("conv4") is not None
    done = score_year(store, settings, bundle, 2021)
    assert done.scored > 0
    # the defaults train the seed's way: depth 3, no block loss, same labels
    record2, result2 = train_model(store, settings)
    assert record2["training"]["depth"] == 3 and "blocks_loss" not in result2.history
    assert not record2["training"]["dense_supervision"]["used"]
