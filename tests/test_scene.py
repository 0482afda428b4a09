"""Tests for imagery.scene: opening, validating and warping real (tiny) GeoTIFFs onto the grid."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer

from imagery.bands import L1C_BANDS, SEED_BANDS, BandMismatchError
from imagery.grid import CellGrid
from imagery.scene import (
    Scene,
    SceneError,
    open_scene,
    read_pixels,
    scene_cells,
    scene_grid_bounds,
)

#: The real data folder (../shared/data next to the repository), absent in a plain checkout.
SHARED_DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
#: The make_geotiff fixture's default CRS and origin (UTM 35S, near Jagersfontein).
UTM35S = "EPSG:32735"
UTM35S_ORIGIN = (540_000.0, 6_700_000.0)

#: The grid cell whose top-left corner anchors the grid-aligned test scenes (near 25.4 E, 29.8 S).
LON, LAT = 25.4, -29.8


def base_cell(grid: CellGrid) -> tuple[int, int]:
    """(row, col) of the cell at LON, LAT."""
    return tuple(int(v) for v in grid.row_col(grid.cell_at_lonlat(LON, LAT)))


def aligned_scene(make_geotiff, grid: CellGrid, array: np.ndarray, *, name: str = "aligned.tif",
                  cell_offset: tuple[int, int] = (0, 0), **kwargs) -> tuple[Path, int, int]:
    """Write ``array`` in the grid CRS with pixels exactly on grid pixels; return path, pr, pc."""
    row, col = base_cell(grid)
    pr = (row + cell_offset[0]) * grid.cell_px
    pc = (col + cell_offset[1]) * grid.cell_px
    path = make_geotiff(name, array, crs=grid.crs, transform=grid.pixel_transform(pr, pc),
                        **kwargs)
    return path, pr, pc


def random_dn(rng: np.random.Generator, bands: int, height: int, width: int) -> np.ndarray:
    return rng.integers(100, 5000, size=(bands, height, width)).astype(np.uint16)


# opening and band names -------------------------------------------------------------------------
def test_band_descriptions_are_parsed(make_geotiff, rng):
    path = make_geotiff("desc.tif", random_dn(rng, 4, 20, 20),
                        descriptions=["B02", "B03", "B04", "B08"],
                        tags={"MINEWATCH_SYNTHETIC": "yes"})
    scene = open_scene(path)
    assert isinstance(scene, Scene)
    assert scene.bands == ("B2", "B3", "B4", "B8")
    assert scene.band_sources == ((0, 1), (0, 2), (0, 3), (0, 4))
    assert scene.dn_scale == 1.0
    assert scene.synthetic is True
    assert scene.nodata == (None,)
    assert scene.name == "desc.tif"
    assert scene.paths == (path,)
    assert "32735" in scene.crs
    assert scene.bounds == pytest.approx((540_000, 6_699_800, 540_200, 6_700_000))


def test_bands_option_wins_and_must_match_the_count(make_geotiff, rng):
    path = make_geotiff("opt.tif", random_dn(rng, 4, 10, 10), descriptions=["B2", "B3", "B4", "B8"])
    assert open_scene(path, bands=["B04", "b3", "B2", "B8A"]).bands == ("B4", "B3", "B2", "B8A")
    assert open_scene(path).synthetic is False
    with pytest.raises(SceneError, match=r"opt\.tif.*3 bands.*has 4"):
        open_scene(path, bands=("B4", "B3", "B2"))


def test_undescribed_files_by_band_count(make_geotiff, rng):
    seed = open_scene(make_geotiff("twelve.tif", random_dn(rng, 12, 8, 8)))
    assert seed.bands == SEED_BANDS
    l1c = open_scene(make_geotiff("thirteen.tif", random_dn(rng, 13, 8, 8)))
    assert l1c.bands == SEED_BANDS
    assert (0, 11) not in l1c.band_sources  # B10 is band 11 of an L1C stack (after B9)
    assert l1c.band_sources[9] == (0, 10)  # B9
    assert l1c.band_sources[-2:] == ((0, 12), (0, 13))
    with pytest.raises(SceneError, match=r"five\.tif: 5 bands.*pass bands"):
        open_scene(make_geotiff("five.tif", random_dn(rng, 5, 8, 8)))


def test_described_13_band_file_drops_b10(make_geotiff, rng):
    data = np.stack([np.full((6, 6), 100 * (i + 1), np.uint16) for i in range(13)])
    descriptions = [b.replace("B", "B0") if len(b) == 2 else b for b in L1C_BANDS]
    path, pr, pc = aligned_scene(make_geotiff, CellGrid(), data, descriptions=descriptions)
    scene = open_scene(path)
    assert scene.bands == SEED_BANDS
    pixels, valid = read_pixels(scene, CellGrid(), pr + 2, pc + 2, 2, 2)
    assert valid.all()
    expected = [100 * (L1C_BANDS.index(b) + 1) for b in SEED_BANDS]
    np.testing.assert_allclose(pixels[0, 0], expected, atol=0.01)


def write_native_bands(make_geotiff, folder: str, *, crs: str = UTM35S) -> dict[str, np.ndarray]:
    """Write all 13 bands of a 2 x 2 km UTM scene, one file each at native 10 / 20 / 60 m."""
    x0, y0 = UTM35S_ORIGIN
    arrays = {}
    for index, band in enumerate(L1C_BANDS):
        res = {"B2": 10, "B3": 10, "B4": 10, "B8": 10, "B1": 60, "B9": 60, "B10": 60}.get(band, 20)
        n = math.ceil(2000 / res)
        if band == "B11":
            # 200 m blocks (10 x 10 pixels of 20 m), each with its own value
            blocks = np.arange(100, dtype=np.uint16).reshape(10, 10) * 10 + 1000
            data = np.kron(blocks, np.ones((10, 10), np.uint16))
        else:
            data = np.full((n, n), 100 * (index + 1), np.uint16)
        arrays[band] = data
        number = band[1:].zfill(2) if band != "B8A" else "8A"
        make_geotiff(f"{folder}/s2_B{number}.jp2", data, crs=crs,
                     transform=Affine(res, 0.0, x0, 0.0, -res, y0))
    return arrays


def test_per_band_native_files_are_stacked_at_10m(make_geotiff, tmp_path, grid):
    arrays = write_native_bands(make_geotiff, "native")
    by_folder = open_scene(tmp_path / "native")
    files = sorted((tmp_path / "native").iterdir(), reverse=True)
    by_list = open_scene(files)
    assert by_folder.bands == by_list.bands == SEED_BANDS
    assert by_folder.name == "native"
    assert len(by_folder.paths) == 13 and len(by_folder.band_sources) == 12
    assert all(by_folder.paths[p].name != "s2_B10.jp2" for p, _ in by_folder.band_sources)

    cells = scene_cells(by_folder, grid)
    assert 4 <= cells.n_cells <= 9
    cp = grid.cell_px
    pixels, valid = read_pixels(by_folder, grid, cells.row0 * cp, cells.col0 * cp,
                                cells.n_rows * cp, cells.n_cols * cp)
    assert pixels.shape == (cells.n_rows * cp, cells.n_cols * cp, 12)
    assert pixels.dtype == np.float32 and valid.dtype == bool
    # about 2 km x 2 km of 10 m pixels are valid
    assert 0.8 * 200 * 200 < valid.sum() < 1.1 * 200 * 200

    # a 20 m B11 block and a 60 m B1 pixel land where they should on the 10 m grid
    to_grid = Transformer.from_crs(UTM35S, grid.crs, always_xy=True)
    x0, y0 = UTM35S_ORIGIN
    for (bi, bj) in ((2, 3), (7, 5)):
        x, y = to_grid.transform(x0 + 200 * bj + 100, y0 - 200 * bi - 100)
        gr = math.floor((grid.origin_y - y) / grid.pixel_size_m)
        gc = math.floor((x - grid.origin_x) / grid.pixel_size_m)
        value, ok = read_pixels(by_list, grid, gr, gc, 1, 1, bands=["B11", "B1", "B8A"])
        assert ok[0, 0]
        assert value[0, 0, 0] == pytest.approx(arrays["B11"][bi * 10, bj * 10], abs=0.01)
        assert value[0, 0, 1] == pytest.approx(100.0, abs=0.01)
        assert value[0, 0, 2] == pytest.approx(100.0 * (L1C_BANDS.index("B8A") + 1), abs=0.01)


def test_per_band_files_must_share_a_crs(make_geotiff, rng):
    a = make_geotiff("mixed/s2_B02.tif", random_dn(rng, 1, 10, 10))
    b = make_geotiff("mixed/s2_B03.tif", random_dn(rng, 1, 10, 10), crs="EPSG:32734")
    with pytest.raises(SceneError, match=r"s2_B03\.tif: CRS .*32734.*differs"):
        open_scene([a, b])


def test_per_band_files_need_band_names(make_geotiff, rng):
    a = make_geotiff("names/red.tif", random_dn(rng, 1, 10, 10))
    b = make_geotiff("names/green.tif", random_dn(rng, 1, 10, 10), descriptions=["B03"])
    with pytest.raises(SceneError, match=r"red\.tif: band name not found"):
        open_scene([a, b])
    assert open_scene([a, b], bands=["B4", "B3"]).bands == ("B3", "B4")


def test_scene_in_lonlat_lands_in_the_right_cells(make_geotiff, grid):
    res = 1e-4
    west, north = 25.40, -29.80
    data = np.full((200, 400), 1000, np.uint16)
    data[:, 200:] = 3000  # east half (from 25.42 E)
    path = make_geotiff("lonlat.tif", data, crs="EPSG:4326", descriptions=["B4"],
                        transform=Affine(res, 0.0, west, 0.0, -res, north))
    scene = open_scene(path)
    minx, miny, maxx, maxy = scene_grid_bounds(scene, grid)
    assert minx < maxx and miny < maxy
    cells = scene_cells(scene, grid)
    ids = grid.cell_ids_in(cells)
    pixels, fraction = cell_reads(scene, grid, ids, margin_px=0)
    seen = {1000: 0, 3000: 0}
    for cell_id, cell_pixels, frac in zip(ids, pixels, fraction, strict=True):
        lon0, lat0, lon1, lat1 = grid.cell_polygon_lonlat(int(cell_id)).bounds
        inside = west <= lon0 and lon1 <= west + 0.04 and north - 0.02 <= lat0 and lat1 <= north
        if not inside:
            continue
        assert frac == 1.0
        if lon1 < 25.42:
            expected = 1000
        elif lon0 > 25.42:
            expected = 3000
        else:
            continue
        assert float(np.mean(cell_pixels)) == pytest.approx(expected, abs=0.01)
        seen[expected] += 1
    assert seen[1000] >= 1 and seen[3000] >= 1
    # cells partly off the scene are partly valid
    assert 0.0 < fraction.min() < 1.0


def test_float_reflectance_is_scaled_to_dn(make_geotiff, grid):
    reflectance = np.full((3, 20, 20), 0.25, np.float32)
    path, pr, pc = aligned_scene(make_geotiff, grid, reflectance, name="refl.tif",
                                 descriptions=["B2", "B3", "B4"])
    scene = open_scene(path)
    assert scene.dn_scale == 10000.0
    pixels, valid = read_pixels(scene, grid, pr + 5, pc + 5, 4, 4)
    assert valid.all()
    np.testing.assert_allclose(pixels, 2500.0, rtol=1e-5)

    dn_floats, pr, pc = aligned_scene(make_geotiff, grid, reflectance * 10000, name="dnf.tif",
                                      descriptions=["B2", "B3", "B4"])
    assert open_scene(dn_floats).dn_scale == 1.0
    with pytest.raises(SceneError, match=r"dnf\.tif: float data where uint16 is declared"):
        open_scene(dn_floats, expect_dtype="uint16")


def cell_reads(scene: Scene, grid: CellGrid, cell_ids, *, margin_px: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Each cell warped with ``margin_px`` of context: (N, side, side, B) pixels and the (N,)
    valid fraction of each cell's interior."""
    cp = grid.cell_px
    side = cp + 2 * margin_px
    pixels, fraction = [], []
    for cell_id in cell_ids:
        r, c = grid.cell_pixel_origin(int(cell_id))
        cell, valid = read_pixels(scene, grid, r - margin_px, c - margin_px, side, side)
        pixels.append(cell)
        fraction.append(valid[margin_px:margin_px + cp, margin_px:margin_px + cp].mean())
    return np.stack(pixels), np.array(fraction)


# every SceneError --------------------------------------------------------------------------------
def test_missing_and_empty_files(tmp_path):
    with pytest.raises(SceneError, match=r"nowhere\.tif: file not found"):
        open_scene(tmp_path / "nowhere.tif")
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(SceneError, match=r"empty\.tif: file is empty"):
        open_scene(empty)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(SceneError, match=r"nothing: directory holds no"):
        open_scene(tmp_path / "nothing")


@pytest.mark.parametrize("tiled", [False, True])
def test_truncated_file(make_geotiff, rng, tiled):
    kwargs = {"tiled": True, "blockxsize": 64, "blockysize": 64} if tiled else {}
    path = make_geotiff("cut.tif", random_dn(rng, 3, 200, 200),
                        descriptions=["B2", "B3", "B4"], **kwargs)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SceneError, match=r"cut\.tif: .*truncated|cut\.tif: not a readable"):
        open_scene(path)


def test_garbage_bytes(tmp_path):
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"this is not a GeoTIFF at all " * 50)
    with pytest.raises(SceneError, match=r"junk\.tif: not a readable GeoTIFF \("):
        open_scene(junk)


def test_no_crs(make_geotiff, rng):
    path = make_geotiff("nocrs.tif", random_dn(rng, 3, 10, 10), crs=None,
                        descriptions=["B2", "B3", "B4"])
    with pytest.raises(SceneError, match=r"nocrs\.tif: raster has no CRS"):
        open_scene(path)


def test_duplicated_bands(make_geotiff, rng):
    path = make_geotiff("dup.tif", random_dn(rng, 3, 10, 10), descriptions=["B2", "B02", "B4"])
    with pytest.raises(SceneError, match=r"dup\.tif: band B2 appears more than once"):
        open_scene(path)
    a = make_geotiff("d1/x_B02.tif", random_dn(rng, 1, 10, 10))
    b = make_geotiff("d2/y_B02.tif", random_dn(rng, 1, 10, 10))
    with pytest.raises(SceneError, match=r"band B2 appears more than once"):
        open_scene([a, b])


def test_read_errors_are_scene_errors(make_geotiff, rng, grid):
    path, pr, pc = aligned_scene(make_geotiff, grid, random_dn(rng, 3, 20, 20),
                                 descriptions=["B2", "B3", "B4"])
    scene = open_scene(path)
    path.unlink()
    with pytest.raises(SceneError, match=r"aligned\.tif: file not found"):
        read_pixels(scene, grid, pr, pc, 10, 10)


# reading -----------------------------------------------------------------------------------------
def test_read_pixels_exact_on_aligned_scene_and_band_subset(make_geotiff, rng, grid):
    data = random_dn(rng, 3, 50, 60)
    path, pr, pc = aligned_scene(make_geotiff, grid, data, descriptions=["B2", "B3", "B4"])
    scene = open_scene(path)
    pixels, valid = read_pixels(scene, grid, pr - 5, pc - 5, 60, 70)
    assert pixels.shape == (60, 70, 3)
    assert valid[5:55, 5:65].all() and not valid[:5].any() and not valid[:, :5].any()
    assert np.isnan(pixels[0, 0]).all()
    np.testing.assert_allclose(pixels[5:55, 5:65], np.moveaxis(data, 0, -1), atol=0.01)
    subset, _ = read_pixels(scene, grid, pr, pc, 10, 10, bands=["B04", "B2"])
    np.testing.assert_allclose(subset[..., 0], data[2, :10, :10], atol=0.01)
    np.testing.assert_allclose(subset[..., 1], data[0, :10, :10], atol=0.01)
    with pytest.raises(BandMismatchError, match=r"B12.*B2, B3, B4"):
        read_pixels(scene, grid, pr, pc, 10, 10, bands=["B12"])
    # a window far from the scene is all invalid
    far, far_valid = read_pixels(scene, grid, pr + 10_000, pc, 8, 8)
    assert not far_valid.any() and np.isnan(far).all()


def test_nodata_and_partial_coverage(make_geotiff, grid):
    cp = grid.cell_px
    data = np.full((2, cp, 2 * cp), 500, np.uint16)
    data[:, :, :50] = 0  # the left half of the first cell is nodata
    # the scene covers exactly two cells side by side: (row, col) and (row, col + 1)
    row, col = base_cell(grid)
    path = make_geotiff("nodata.tif", data, crs=grid.crs, nodata=0, descriptions=["B3", "B4"],
                        transform=grid.pixel_transform(row * cp, col * cp))
    scene = open_scene(path)
    assert scene.nodata == (0.0,)
    ids = [grid.cell_id(row, col), grid.cell_id(row, col + 1), grid.cell_id(row, col + 2),
           grid.cell_id(row + 1, col)]
    _, fraction = cell_reads(scene, grid, ids, margin_px=4)
    assert fraction[0] == pytest.approx(0.5, abs=0.03)
    assert fraction[1] == pytest.approx(1.0)
    assert fraction[2] == 0.0 and fraction[3] == 0.0

    # a scene that stops half-way across a cell
    half = make_geotiff("half.tif", np.full((1, cp, cp // 2), 700, np.uint16), crs=grid.crs,
                        descriptions=["B4"],
                        transform=grid.pixel_transform(row * cp, col * cp))
    pixels, fraction = cell_reads(open_scene(half), grid, [grid.cell_id(row, col)], margin_px=0)
    assert fraction[0] == pytest.approx(0.5, abs=0.02)
    assert np.nanmean(pixels) == pytest.approx(700.0, abs=0.01)


# the real data in ../shared/data ----------------------------------------------------------------
VIRGINIA = SHARED_DATA / "s2_scene_virginia"
BRAZIL = SHARED_DATA / "tailings_rgb_brazil" / "img"


@pytest.mark.shared_data
@pytest.mark.skipif(not VIRGINIA.is_dir(), reason="../shared/data/s2_scene_virginia is absent")
def test_real_virginia_scene(grid):
    native = open_scene(VIRGINIA / "per_band_native")
    stack = open_scene(VIRGINIA / "s2_l1c_13band_20m_stack.tif")
    for scene in (native, stack):
        assert scene.bands == SEED_BANDS
        assert scene.dn_scale == 1.0 and "32618" in scene.crs
    assert not any(native.paths[p].name == "s2_B10.jp2" for p, _ in native.band_sources)
    assert (0, 11) not in stack.band_sources
    cells = scene_cells(native, grid)
    centre = grid.cell_id((cells.row0 + cells.row1) // 2, (cells.col0 + cells.col1) // 2)
    from_native, fraction = cell_reads(native, grid, [centre], margin_px=0)
    from_stack, _ = cell_reads(stack, grid, [centre], margin_px=0)
    assert from_native.shape == (1, 100, 100, 12) and fraction[0] == 1.0
    assert 100 < float(np.nanmedian(from_native[..., 3])) < 5000
    # the 20 m stack is the same scene: band medians agree closely
    medians = np.nanmedian(from_native[0], axis=(0, 1))
    np.testing.assert_allclose(np.nanmedian(from_stack[0], axis=(0, 1)), medians, rtol=0.1)


@pytest.mark.shared_data
@pytest.mark.skipif(not BRAZIL.is_dir(), reason="../shared/data/tailings_rgb_brazil is absent")
def test_real_brazil_patch(grid):
    path = sorted(BRAZIL.glob("*.tif"))[0]
    scene = open_scene(path)  # the patches carry band descriptions B2, B3, B4
    assert scene.bands == ("B2", "B3", "B4")
    assert scene.crs == "EPSG:4326"
    assert open_scene(path, bands=("B2", "B3", "B4")).bands == scene.bands
    cells = scene_cells(scene, grid)
    assert 9 <= cells.n_cells <= 36
    ids = grid.cell_ids_in(cells)
    pixels, fraction = cell_reads(scene, grid, ids, margin_px=0)
    assert fraction.max() == 1.0
    best = int(np.argmax(fraction))
    assert 0 < float(np.nanmedian(pixels[best])) < 10000
