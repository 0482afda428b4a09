"""Tests for imagery.store: block files, the year mosaic reader, the VRT and the overlap rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

import imagery.store as store_module
from imagery.bands import BandMismatchError
from imagery.grid import CellGrid, CellRange
from imagery.store import (
    BLOCK_CELLS,
    COMPRESSION,
    NODATA,
    MosaicError,
    block_name,
    block_of_name,
    blocks_covering,
    merge_keep_existing,
    open_year,
    to_store_dn,
    write_block,
    write_manifest,
    write_vrt,
)

BANDS = ("B2", "B3", "B4")


@pytest.fixture
def grid() -> CellGrid:
    """1-km cells of 50 m pixels: cp = 20 px, blocks of 320 px."""
    return CellGrid(pixel_size_m=50.0)


def two_blocks(tmp_path, grid, rng):
    """A 2021 mosaic of two blocks side by side; returns it and their (H, 2W, B) uint16 data."""
    side = BLOCK_CELLS * grid.cell_px
    data = rng.integers(1, 10_000, size=(side, 2 * side, len(BANDS))).astype(np.uint16)
    data[:25, :, :] = 0          # a strip of no data along the top
    data[40:50, 30:60, 1] = 0    # one band invalid: the pixel is invalid
    row0, col0 = 640, 1280
    blocks = [CellRange(row0, row0 + BLOCK_CELLS, col0 + i * BLOCK_CELLS,
                        col0 + (i + 1) * BLOCK_CELLS) for i in (0, 1)]
    root = tmp_path / "imagery" / "2021"
    for i, block in enumerate(blocks):
        write_block(root / block_name(block), grid, block,
                    data[:, i * side:(i + 1) * side].copy(), BANDS)
    write_manifest(root, grid, BANDS, CellRange(row0, row0 + BLOCK_CELLS, col0,
                                                col0 + 2 * BLOCK_CELLS))
    data[(data == 0).any(axis=-1)] = 0
    return open_year(tmp_path, grid, 2021), data, (row0 * grid.cell_px, col0 * grid.cell_px)


def test_blocks_are_tiled_compressed_grid_aligned_files(tmp_path, grid, rng):
    mosaic, data, (pr, pc) = two_blocks(tmp_path, grid, rng)
    assert [block_name(b) for b in mosaic.blocks()] == ["r000640_c001280.tif",
                                                       "r000640_c001296.tif"]
    assert block_of_name("r000640_c001296.tif") == mosaic.blocks()[1]
    assert block_of_name("mosaic.vrt") is None
    with rasterio.open(mosaic.block_path(mosaic.blocks()[0])) as ds:
        assert ds.crs.to_epsg() == 6933 and ds.res == (50.0, 50.0)
        assert ds.transform == grid.pixel_transform(pr, pc)
        assert ds.block_shapes[0] == (4 * grid.cell_px, 4 * grid.cell_px)
        assert ds.compression.value.lower() == COMPRESSION and ds.nodata == NODATA
        assert ds.descriptions == BANDS and ds.dtypes[0] == "uint16"
    assert not [p for p in mosaic.root.iterdir() if p.name.startswith(".")]  # no temp files
    assert blocks_covering(CellRange(15, 17, 31, 33)) == [
        CellRange(r, r + 16, c, c + 16) for r in (0, 16) for c in (16, 32)]


def test_read_is_boundless_exact_and_crosses_blocks(tmp_path, grid, rng):
    mosaic, data, (pr, pc) = two_blocks(tmp_path, grid, rng)
    side = BLOCK_CELLS * grid.cell_px
    pixels, valid = mosaic.read(pr - 10, pc + side - 30, 80, 60)  # across both blocks, and above
    assert pixels.dtype == np.float32 and pixels.shape == (80, 60, 3)
    assert not valid[:10].any() and np.isnan(pixels[:10]).all()  # above the store: no data
    expected = data[:70, side - 30:side + 30]
    np.testing.assert_array_equal(valid[10:], (expected != 0).all(axis=-1))
    np.testing.assert_array_equal(pixels[10:][valid[10:]], expected[valid[10:]])
    assert np.isnan(pixels[~valid]).all()
    sub, _ = mosaic.read(pr + 30, pc, 5, 5, bands=["B4", "B2"])
    np.testing.assert_array_equal(sub, data[30:35, :5][..., [2, 0]].astype(np.float32))
    with pytest.raises(BandMismatchError, match="B8"):
        mosaic.read(pr, pc, 2, 2, bands=["B8"])
    far, far_valid = mosaic.read(0, 0, 3, 3)
    assert not far_valid.any() and np.isnan(far).all()


def test_read_tile_iter_tiles_and_read_cells_agree_with_read(tmp_path, grid, rng, monkeypatch):
    mosaic, data, (pr, pc) = two_blocks(tmp_path, grid, rng)
    cp = grid.cell_px
    tile = mosaic.read_tile(CellRange(641, 643, 1295, 1298), 8, bands=["B3"])
    expected, expected_valid = mosaic.read(641 * cp - 8, 1295 * cp - 8, 2 * cp + 16, 3 * cp + 16,
                                           ["B3"])
    np.testing.assert_array_equal(tile.pixels, expected)
    np.testing.assert_array_equal(tile.valid, expected_valid)
    assert tile.transform(grid) == grid.pixel_transform(641 * cp - 8, 1295 * cp - 8)

    tiles = list(mosaic.iter_tiles(tile_cells=6, margin_px=4))
    seen = [int(c) for t in tiles for c in grid.cell_ids_in(t.cells)]
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 2 * BLOCK_CELLS ** 2
    assert all(t.cells.col0 // BLOCK_CELLS == (t.cells.col1 - 1) // BLOCK_CELLS for t in tiles)
    assert len(list(mosaic.iter_tiles(tile_cells=64))) == 2  # one tile per block

    calls = []
    real = store_module.YearMosaic.read

    def counting(self, *args, **kwargs):
        calls.append(args)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(store_module.YearMosaic, "read", counting)
    ids = [grid.cell_id(645, 1281), grid.cell_id(646, 1282), grid.cell_id(645, 1300),
           grid.cell_id(700, 1281)]
    pixels, fraction = mosaic.read_cells(ids, margin_px=5, bands=["B4"])
    assert pixels.shape == (4, cp + 10, cp + 10, 1) and len(calls) == 3  # one read per block
    for i, cell_id in enumerate(ids):
        r, c = grid.cell_pixel_origin(cell_id)
        one, one_valid = real(mosaic, r - 5, c - 5, cp + 10, cp + 10, ["B4"])
        np.testing.assert_array_equal(pixels[i], one)
        assert fraction[i] == pytest.approx(one_valid[5:-5, 5:-5].mean())
    assert fraction[3] == 0.0 and fraction[:3].min() > 0.9


def test_valid_cells_come_from_the_block_tag(tmp_path, grid, rng):
    mosaic, data, _ = two_blocks(tmp_path, grid, rng)
    block = mosaic.blocks()[0]
    ids = mosaic.valid_cells(block)
    rows, _ = grid.row_col(ids)
    # the top 25 px are no data: the first row of cells (20 px) holds no valid pixel
    assert len(ids) == BLOCK_CELLS * (BLOCK_CELLS - 1)
    assert set(rows) == set(range(block.row0 + 1, block.row1))
    assert mosaic.valid_cells(CellRange(0, 16, 0, 16)).size == 0


def test_the_vrt_reads_the_whole_year_as_one_dataset(tmp_path, grid, rng):
    mosaic, data, (pr, pc) = two_blocks(tmp_path, grid, rng)
    path = write_vrt(mosaic)
    assert "relativeToVRT=\"1\">r000640_c001280.tif" in path.read_text()
    with rasterio.open(path) as vrt:
        assert vrt.count == 3 and vrt.descriptions == BANDS and vrt.crs.to_epsg() == 6933
        assert vrt.transform == grid.pixel_transform(pr, pc)
        whole = np.moveaxis(vrt.read(), 0, -1)
    np.testing.assert_array_equal(whole[(data != 0).all(axis=-1)], data[(data != 0).all(axis=-1)])


def test_open_year_errors(tmp_path, grid, rng):
    with pytest.raises(MosaicError, match="no imagery for 2019: ingest it with `run.py ingest"):
        open_year(tmp_path, grid, 2019)
    two_blocks(tmp_path, grid, rng)
    with pytest.raises(MosaicError, match="not this installation's grid"):
        open_year(tmp_path, CellGrid(), 2021)
    manifest = tmp_path / "imagery" / "2021" / "mosaic.json"
    manifest.write_text("{broken")
    with pytest.raises(MosaicError, match="unreadable"):
        open_year(tmp_path, grid, 2021)
    manifest.write_text(json.dumps({"bands": []}))
    with pytest.raises(MosaicError, match="built for grid None"):
        open_year(tmp_path, grid, 2021)


def test_store_values_and_the_overlap_rule():
    pixels = np.array([[[0.2, 5.0], [np.nan, 7.0], [70_000.0, 3.6]]], np.float32)
    valid = np.isfinite(pixels).all(axis=-1)
    stored = to_store_dn(pixels, valid)
    assert stored.tolist() == [[[1, 5], [0, 0], [65535, 4]]]  # valid is never 0; invalid all 0
    new = np.array([[[9, 9], [8, 8], [0, 0]]], np.uint16)
    merged = merge_keep_existing(stored.copy(), new)
    assert merged.tolist() == [[[1, 5], [8, 8], [65535, 4]]]  # stored pixels keep their values
