"""Tests for model.score: tiles, whole year mosaics (real GeoTIFFs warped into a store) scored the
way pipeline.scoring.score_year scores them (its local runner, block by block), seams, coverage,
MC dropout."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.transform import from_origin

from imagery.bands import SEED_BANDS, BandMismatchError
from imagery.grid import CellGrid, CellRange
from imagery.scene import Scene, Tile, open_scene, scene_cells
from imagery.store import (
    BLOCK_CELLS,
    YearMosaic,
    block_name,
    block_valid_cells,
    blocks_covering,
    ids_range,
    open_year,
    warp_into_block,
    write_block,
    write_manifest,
)
from model.bundle import ModelBundle, check_bands
from model.fcn import MARGIN_PX, build_fcn
from model.score import CellScores, mc_dropout_scores, patch_scores, score_tile
from pipeline.scoring import ScoringOptions, YearRecipe, local_runner

BANDS3 = ("B4", "B8", "B11")
UTM35S = "EPSG:32735"
ORIGIN = (540_000.0, 6_700_000.0)


@pytest.fixture
def coarse_grid() -> CellGrid:
    """1-km cells of 50 m pixels: cp = 20 px, so scenes of tens of km stay small."""
    return CellGrid(pixel_size_m=50.0)


def make_bundle(bands=BANDS3, *, dropout=0.5, seed=0) -> ModelBundle:
    n = len(bands)
    mean, std = np.full(n, 1500.0), np.full(n, 500.0)
    model = build_fcn(bands, mean, std, seed=seed, widths=(4, 8, 8), dropout=dropout)
    # sharpen the untrained network so scores spread over (0, 1) and seams would show
    layer = model.get_layer("classes")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 8.0, bias])
    return ModelBundle(model=model, version="s1", parent=None, bands=tuple(bands),
                       mean=mean.tolist(), std=std.tolist())


def textured(rng, bands: int, height: int, width: int) -> np.ndarray:
    """uint16 DN with blobs bigger than a pixel, so bilinear warps keep structure."""
    coarse = rng.uniform(300, 4000, size=(bands, height // 4 + 2, width // 4 + 2))
    up = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)[:, :height, :width]
    return (up + rng.normal(0, 100, size=up.shape)).clip(1, 10000).astype(np.uint16)


def write_scene(make_geotiff, rng, grid: CellGrid, *, km: int, aligned: bool,
                nodata_hole=False, name="scene.tif"):
    """A 12-band uint16 scene of km x km at the grid's pixel size, nodata 0.

    ``aligned``: in the grid CRS with pixels exactly on grid pixels (offset by half a cell so the
    edge cells are partly empty), so reading is exact whatever the window; otherwise in UTM 35S.
    """
    n = int(km * 1000 / grid.pixel_size_m)
    data = textured(rng, 12, n, n)
    if nodata_hole:
        data[:, n // 3: 2 * n // 3, n // 3: 2 * n // 3] = 0
    if aligned:
        row, col = (int(v) for v in grid.row_col(grid.cell_at_lonlat(25.4, -29.8)))
        half = grid.cell_px // 2
        crs, transform = grid.crs, grid.pixel_transform(row * grid.cell_px + half,
                                                        col * grid.cell_px + half)
    else:
        crs, transform = UTM35S, from_origin(*ORIGIN, grid.pixel_size_m, grid.pixel_size_m)
    path = make_geotiff(name, data, crs=crs, transform=transform, descriptions=list(SEED_BANDS),
                        nodata=0, tiled=True, blockxsize=128, blockysize=128)
    return open_scene(path)


def as_mosaic(scene: Scene, grid: CellGrid, data_dir) -> YearMosaic:
    """The scene warped into a 2021 mosaic under ``data_dir`` (ingest without the database)."""
    root = data_dir / "imagery" / "2021"
    side = BLOCK_CELLS * grid.cell_px
    ids = []
    for block in blocks_covering(scene_cells(scene, grid)):
        data = warp_into_block(np.zeros((side, side, len(scene.bands)), np.uint16), [scene], grid,
                               block, scene.bands)
        if data.any():
            write_block(root / block_name(block), grid, block, data, scene.bands)
            ids.append(block_valid_cells(root / block_name(block), grid, block))
    write_manifest(root, grid, scene.bands, ids_range(grid, np.concatenate(ids)))
    return open_year(data_dir, grid, 2021)


def score_mosaic(bundle: ModelBundle, mosaic: YearMosaic, grid: CellGrid, *,
                 fcn_tile_cells: int = 4) -> CellScores:
    """Every block of the 2021 mosaic scored as score_year scores it (the local runner)."""
    recipe = YearRecipe(year=2021, grid=grid, data_dir=str(mosaic.root.parents[1]), scene_id=1)
    run = local_runner(ScoringOptions(fcn_tile_cells=fcn_tile_cells))
    return CellScores.concat([scores for _, scores in run(bundle, recipe, mosaic.blocks())])


def fake_tile(rng, cells: CellRange, cp: int, bands: int, margin=MARGIN_PX) -> Tile:
    h, w = cells.n_rows * cp + 2 * margin, cells.n_cols * cp + 2 * margin
    pixels = rng.uniform(200, 3000, size=(h, w, bands)).astype(np.float32)
    return Tile(cells=cells, margin_px=margin, pixels=pixels, valid=np.ones((h, w), bool))


# one tile, no files ------------------------------------------------------------------------------
def test_score_tile_matches_cell_by_cell_patches(coarse_grid):
    rng = np.random.default_rng(0)
    bundle = make_bundle()
    cells = CellRange(100, 103, 200, 204)
    tile = fake_tile(rng, cells, 20, 3)
    result = score_tile(bundle, tile, coarse_grid)
    assert result.cell_ids.dtype == np.int64 and result.scores.dtype == np.float32
    np.testing.assert_array_equal(result.cell_ids, coarse_grid.cell_ids_in(cells))
    # the same cells cut out as (cp + 2m)^2 patches and scored one by one
    side = 20 + 2 * MARGIN_PX
    patches = np.stack([tile.pixels[r * 20:r * 20 + side, c * 20:c * 20 + side]
                        for r in range(3) for c in range(4)])
    np.testing.assert_allclose(result.scores, patch_scores(bundle, patches), atol=1e-5)
    assert np.all((result.uncertainty >= 0) & (result.uncertainty <= 1))
    np.testing.assert_array_equal(result.valid_fraction, 1.0)


def test_low_coverage_cells_get_nan(coarse_grid):
    rng = np.random.default_rng(1)
    bundle = make_bundle()
    tile = fake_tile(rng, CellRange(0, 2, 0, 2), 20, 3)
    m = MARGIN_PX
    tile.valid[m:m + 20, m:m + 14] = False  # cell (0, 0): 30 % valid
    tile.pixels[m:m + 20, m:m + 14] = np.nan
    tile.valid[m:m + 20, m + 20:m + 26] = False  # cell (0, 1): 70 % valid
    result = score_tile(bundle, tile, coarse_grid, min_valid_fraction=0.5)
    np.testing.assert_allclose(result.valid_fraction, [0.3, 0.7, 1.0, 1.0])
    assert np.isnan(result.scores[0]) and np.isnan(result.uncertainty[0])
    assert np.all(np.isfinite(result.scores[1:]))


def test_the_runner_reads_each_block_in_the_model_bands_and_scores_it_whole(coarse_grid,
                                                                          monkeypatch):
    rng = np.random.default_rng(2)
    bundle = make_bundle()
    blocks = [CellRange(0, 2, 0, 3), CellRange(2, 3, 0, 3)]
    tiles = {b: fake_tile(rng, b, 20, 3) for b in blocks}
    seen = []

    class FakeSource:
        bands = SEED_BANDS

        def read_tile(self, cells, margin_px, bands=None):
            seen.append((cells, margin_px, tuple(bands)))
            return tiles[cells]

    monkeypatch.setattr(YearRecipe, "open", lambda self: FakeSource())
    recipe = YearRecipe(year=2021, grid=coarse_grid, data_dir="unused", scene_id=1)
    parts = list(local_runner(ScoringOptions(fcn_tile_cells=2))(bundle, recipe, blocks))
    assert seen == [(b, MARGIN_PX, BANDS3) for b in blocks]
    assert [(block, len(p)) for block, p in parts] == [(blocks[0], 6), (blocks[1], 3)]
    # 2-cell FCN passes over a 3-cell-wide block score as one pass over the whole block
    whole, passes = score_tile(bundle, tiles[blocks[0]], coarse_grid), parts[0][1]
    order = np.argsort(passes.cell_ids)
    np.testing.assert_array_equal(passes.cell_ids[order], whole.cell_ids)
    np.testing.assert_allclose(passes.scores[order], whole.scores, atol=1e-5)


# real GeoTIFFs, warped into a store --------------------------------------------------------------
def test_twelve_band_mosaic_scored_by_three_band_model(make_geotiff, coarse_grid, tmp_path):
    rng = np.random.default_rng(3)
    scene = write_scene(make_geotiff, rng, coarse_grid, km=6, aligned=True)
    assert scene.bands == SEED_BANDS
    mosaic = as_mosaic(scene, coarse_grid, tmp_path)
    bundle = make_bundle(BANDS3)
    result = score_mosaic(bundle, mosaic, coarse_grid)
    cells = scene_cells(scene, coarse_grid)
    assert len(result) == len(mosaic.blocks()) * BLOCK_CELLS ** 2 == len(np.unique(result.cell_ids))
    assert set(result.cell_ids[result.valid_fraction > 0]) <= set(coarse_grid.cell_ids_in(cells))
    inside = result.valid_fraction >= 0.5
    assert inside.sum() >= 16
    assert np.all(np.isfinite(result.scores[inside])) and np.all(np.isnan(result.scores[~inside]))
    # the same cells, read as patches in the model's bands by name, score the same
    ids = result.cell_ids[inside][:5]
    patches, _ = mosaic.read_cells(ids, margin_px=MARGIN_PX, bands=BANDS3)
    np.testing.assert_allclose(patch_scores(bundle, patches), result.scores[inside][:5],
                               atol=1e-5)
    # a model that needs a band this mosaic cannot provide (B10 is always dropped): the check
    # score_year makes before reading a block
    needs_b10 = make_bundle(("B2", "B3"))
    needs_b10.bands = ("B2", "B10")
    with pytest.raises(BandMismatchError, match="B2, B10 but the scene has B1, B2"):
        check_bands(needs_b10, mosaic.bands)


def test_utm_scene_is_scored_whole(make_geotiff, coarse_grid, tmp_path):
    rng = np.random.default_rng(6)
    scene = write_scene(make_geotiff, rng, coarse_grid, km=8, aligned=False)
    mosaic = as_mosaic(scene, coarse_grid, tmp_path)
    result = score_mosaic(make_bundle(), mosaic, coarse_grid, fcn_tile_cells=3)
    held = result.cell_ids[result.valid_fraction > 0]
    assert set(held) <= set(coarse_grid.cell_ids_in(scene_cells(scene, coarse_grid)))
    full = result.valid_fraction == 1.0
    assert full.sum() >= 25 and np.all(np.isfinite(result.scores[full]))


def test_blocks_in_8_cell_passes_score_like_one_64_cell_tile(make_geotiff, coarse_grid, tmp_path):
    rng = np.random.default_rng(4)
    scene = write_scene(make_geotiff, rng, coarse_grid, km=20, aligned=True, nodata_hole=True)
    mosaic = as_mosaic(scene, coarse_grid, tmp_path)
    assert len(mosaic.blocks()) > 1  # 64-cell tiles read across block files
    bundle = make_bundle(BANDS3)
    cells = mosaic.cell_range()
    assert cells.n_rows <= 64 and cells.n_cols <= 64
    small = score_mosaic(bundle, mosaic, coarse_grid, fcn_tile_cells=8)
    large = score_tile(bundle, mosaic.read_tile(cells, MARGIN_PX, bundle.bands), coarse_grid)
    small, large = (small.subset(np.isin(small.cell_ids, large.cell_ids)),
                    large.subset(np.isin(large.cell_ids, small.cell_ids)))
    order_s, order_l = np.argsort(small.cell_ids), np.argsort(large.cell_ids)
    np.testing.assert_array_equal(small.cell_ids[order_s], large.cell_ids[order_l])
    np.testing.assert_array_equal(small.valid_fraction[order_s], large.valid_fraction[order_l])
    s, lg = small.scores[order_s], large.scores[order_l]
    np.testing.assert_array_equal(np.isnan(s), np.isnan(lg))
    assert np.isfinite(s).sum() > 200 and np.isnan(s).sum() > 20  # hole + edges are NaN
    assert np.nanstd(s) > 0.01  # scores vary, so agreement means something
    np.testing.assert_allclose(s, lg, atol=1e-5, equal_nan=True)


def test_mc_dropout_scores():
    rng = np.random.default_rng(5)
    bundle = make_bundle(dropout=0.5)
    patches = rng.uniform(200, 3000, size=(4, 20 + 2 * MARGIN_PX, 20 + 2 * MARGIN_PX, 3))
    mean, std = mc_dropout_scores(bundle, patches.astype(np.float32), n_samples=6)
    assert mean.shape == std.shape == (4,) and np.all(std > 0)
    again, _ = mc_dropout_scores(bundle, patches.astype(np.float32), n_samples=6)
    np.testing.assert_allclose(mean, again, atol=1e-6)
    with pytest.raises(ValueError, match="n_samples"):
        mc_dropout_scores(bundle, patches, n_samples=0)
