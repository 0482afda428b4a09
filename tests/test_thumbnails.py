"""Tests for imagery.thumbnails: stretches, views, context outlines and the on-disk cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagery.bands import BandMismatchError
from imagery.grid import CellGrid, CellRange
from imagery.store import (
    BLOCK_CELLS,
    MosaicError,
    YearMosaic,
    block_name,
    open_year,
    write_block,
    write_manifest,
)
from imagery.thumbnails import (
    INVALID_RGB,
    OUTLINE_RGB,
    ThumbnailCache,
    render_context,
    render_view,
    stretch_of,
)

SHARED_DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
FIVE = ("B2", "B3", "B4", "B8A", "B12")
STRETCH = {"B2": (0.0, 1000.0), "B3": (0.0, 1000.0), "B4": (0.0, 2000.0),
           "B8A": (1000.0, 3000.0), "B12": (500.0, 1500.0)}


def grid_mosaic(data_dir: Path, grid: CellGrid, array: np.ndarray, bands,
                at: tuple[float, float] = (25.4, -29.8)) -> tuple[YearMosaic, int, int]:
    """A 2021 mosaic holding ``array`` (B, H, W) from the top-left of the store block that holds
    lon/lat ``at`` (Jagersfontein); returns it and the block's top-left cell (row, col)."""
    row, col = (int(v) // BLOCK_CELLS * BLOCK_CELLS
                for v in grid.row_col(grid.cell_at_lonlat(*at)))
    block = CellRange(row, row + BLOCK_CELLS, col, col + BLOCK_CELLS)
    side = BLOCK_CELLS * grid.cell_px
    data = np.zeros((side, side, len(bands)), np.uint16)
    data[:array.shape[1], :array.shape[2]] = np.moveaxis(array, 0, -1)
    root = data_dir / "imagery" / "2021"
    write_block(root / block_name(block), grid, block, data, bands)
    write_manifest(root, grid, bands, block)
    return open_year(data_dir, grid, 2021), row, col


def constant_pixels(values: dict[str, float], shape=(10, 12)) -> np.ndarray:
    return np.stack([np.full(shape, values[b], np.float32) for b in FIVE], axis=-1)


def test_stretch_of_percentiles_skip_nan_and_fill():
    values = np.arange(1, 10_001, dtype=np.float32)
    red = values.copy()
    red[:1000] = 0  # fill value, ignored
    stretch = stretch_of({"B2": values, "B3": np.full(50, 700.0), "B4": red,
                          "B8A": np.full(5, np.nan)})
    assert stretch["B2"][0] == pytest.approx(np.percentile(values, 2), abs=1)
    assert stretch["B2"][1] == pytest.approx(np.percentile(values, 98), abs=1)
    assert stretch["B3"] == (700.0, 701.0)  # a flat band still gets high > low
    assert stretch["B4"][0] == pytest.approx(np.percentile(values[1000:], 2), abs=1)
    assert stretch["B8A"] == (0.0, 3000.0)  # no valid value: the fallback
    assert stretch_of({"B2": values}, percentiles=(10, 90))["B2"] == pytest.approx(
        (1000.9, 9000.1), abs=1)


def test_a_mosaic_sample_gives_the_stretch_of_the_whole(tmp_path, grid, rng):
    values = rng.integers(1, 10_000, size=(300, 300)).astype(np.uint16)
    mosaic, _, _ = grid_mosaic(tmp_path, grid, np.stack([values, values]), ("B2", "B3"))
    sample = mosaic.sample(("B2", "B4"), step_px=4)
    assert set(sample) == {"B2"} and 0 < sample["B2"].size < values.size  # B4 is skipped
    full = stretch_of({"B2": values.astype(np.float32)})["B2"]
    assert stretch_of(sample)["B2"] == pytest.approx(full, abs=100)  # 1 % of the range


def test_render_rgb_and_false_colour():
    pixels = constant_pixels({"B2": 500, "B3": 1000, "B4": 1000, "B8A": 2000, "B12": 500})
    rgb = render_view(pixels, FIVE, "rgb", STRETCH)
    assert rgb.mode == "RGB" and rgb.size == (12, 10)
    assert rgb.getpixel((0, 0)) == (128, 255, 128)  # B4 1000/2000, B3 full, B2 half
    false = render_view(pixels, FIVE, "false", STRETCH, size=48)
    assert false.size == (48, 48)
    assert false.getpixel((47, 47)) == (0, 128, 128)  # B12 at low, B8A half, B4 half
    wide = render_view(pixels, FIVE, "rgb", STRETCH, size=(6, 5))
    assert wide.size == (6, 5)
    # values beyond the stretch are clipped, not wrapped
    bright = constant_pixels({"B2": 9000, "B3": -50, "B4": 1000, "B8A": 0, "B12": 0})
    assert render_view(bright, FIVE, "rgb", STRETCH).getpixel((3, 3)) == (128, 0, 255)
    with pytest.raises(ValueError, match="unknown view"):
        render_view(pixels, FIVE, "ndvi", STRETCH)
    with pytest.raises(ValueError, match="stretch has no entry for B12"):
        render_view(pixels, FIVE, "false", {"B4": (0, 1), "B8A": (0, 1)})


def test_invalid_pixels_are_dark_magenta():
    pixels = constant_pixels({"B2": 500, "B3": 1000, "B4": 1000, "B8A": 2000, "B12": 500})
    pixels[2, 3, 0] = np.nan  # B2 missing: invalid in rgb, fine in false colour
    image = render_view(pixels, FIVE, "rgb", STRETCH)
    assert image.getpixel((3, 2)) == INVALID_RGB
    assert image.getpixel((4, 2)) != INVALID_RGB
    assert render_view(pixels, FIVE, "false", STRETCH).getpixel((3, 2)) != INVALID_RGB


def test_three_band_mosaic_has_no_false_colour(grid, tmp_path):
    pixels = np.full((4, 4, 3), 800, np.float32)
    assert render_view(pixels, ("B2", "B3", "B4"), "rgb", STRETCH).size == (4, 4)
    with pytest.raises(BandMismatchError, match=r"false-colour view needs bands B12, B8A, B4"):
        render_view(pixels, ("B2", "B3", "B4"), "false", STRETCH)
    mosaic, row, col = grid_mosaic(tmp_path, grid, np.full((3, 100, 100), 800, np.uint16),
                                   ("B2", "B3", "B4"))
    with pytest.raises(BandMismatchError, match="missing B12, B8A"):
        ThumbnailCache(tmp_path / "cache").get(mosaic, grid.cell_id(row, col),
                                               key="s1", view="false", stretch=STRETCH)


def test_render_context_outlines_the_centre_cell():
    pixels = np.full((300, 300, 5), 0.0, np.float32)
    image = render_context(pixels, FIVE, "rgb", STRETCH, size=150)
    assert image.size == (150, 150)
    yellow = np.all(np.asarray(image) == OUTLINE_RGB, axis=-1)
    assert yellow[50, 50:100].all() and yellow[51, 50:100].all()  # 2 px top edge
    assert yellow[50:100, 99].all() and yellow[50:100, 98].all()  # 2 px right edge
    assert not yellow[52:98, 52:98].any()  # the centre itself is not painted
    assert not yellow[:49].any() and not yellow[101:].any()
    assert yellow.sum() == 4 * 2 * 50 - 4 * 4  # four 2-px edges of a 50-px square
    native = render_context(pixels, FIVE, "false", STRETCH)
    assert native.size == (300, 300) and native.getpixel((100, 150)) == OUTLINE_RGB


def test_cache_renders_once_from_the_store_and_hits_without_it(grid, tmp_path):
    cp = grid.cell_px
    data = np.stack([np.full((3 * cp, 3 * cp), v, np.uint16) for v in (500, 1000, 1000)])
    mosaic, row, col = grid_mosaic(tmp_path, grid, data, ("B2", "B3", "B4"))
    cache = ThumbnailCache(tmp_path / "thumbs")
    centre = grid.cell_id(row + 1, col + 1)
    stretch = stretch_of(mosaic.sample())
    cell = cache.get(mosaic, centre, key="scene 7", view="rgb", kind="cell",
                     stretch=stretch, size=64)
    assert cell == cache.path_for("scene 7", centre, "rgb", "cell")
    assert cell.parent.name == "scene_7" and cell.suffix == ".png"
    with Image.open(cell) as image:
        assert image.size == (64, 64) and image.mode == "RGB"
    context = cache.get(mosaic, centre, key="scene 7", view="rgb", kind="context",
                        stretch={"B2": (0, 1000), "B3": (0, 1000), "B4": (0, 2000)})
    with Image.open(context) as image:
        assert image.size == (3 * cp, 3 * cp)
        assert image.getpixel((150, 150)) == (128, 255, 128)
        assert image.getpixel((100, 150)) == OUTLINE_RGB
    # no temporary files are left behind
    assert sorted(p.name for p in cell.parent.iterdir()) == sorted([cell.name, context.name])

    before = cell.stat().st_mtime_ns
    for path in mosaic.root.iterdir():
        path.unlink()  # a hit must not read the store
    assert cache.get(mosaic, centre, key="scene 7", view="rgb", kind="cell",
                     stretch=stretch, size=64) == cell
    assert cell.stat().st_mtime_ns == before
    with pytest.raises(MosaicError, match="no imagery for 2021"):
        open_year(tmp_path, grid, 2021)
    other = cache.get(mosaic, centre, key="other", view="rgb", kind="cell", stretch=stretch)
    with Image.open(other) as image:  # a miss reads the store: its blocks are gone
        assert image.getpixel((5, 5)) == INVALID_RGB


def test_cache_paths_are_validated(tmp_path):
    cache = ThumbnailCache(tmp_path)
    assert cache.path_for("a/../b", 12, "false", "context", "webp").name == "12_context_false.webp"
    assert cache.path_for("a/../b", 12, "false", "context").parent.parent == tmp_path
    with pytest.raises(ValueError, match="unknown kind"):
        cache.path_for("k", 1, "rgb", "big")
    with pytest.raises(ValueError, match="unknown view"):
        cache.path_for("k", 1, "swir", "cell")
    with pytest.raises(ValueError, match="unknown format"):
        cache.path_for("k", 1, "rgb", "cell", fmt="gif")
    with pytest.raises(ValueError, match="no usable characters"):
        cache.path_for("..", 1, "rgb", "cell")


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED_DATA / "tailings_rgb_brazil" / "img").is_dir(),
                    reason="../shared/data/tailings_rgb_brazil is absent")
def test_real_brazil_patch_thumbnail(grid, tmp_path):
    import rasterio
    from rasterio.warp import Resampling, reproject

    path = sorted((SHARED_DATA / "tailings_rgb_brazil" / "img").glob("*.tif"))[0]
    with rasterio.open(path) as src:  # warp the patch onto one store block, as ingest would
        lon, lat = src.lnglat()
        row, col = (int(v) // BLOCK_CELLS * BLOCK_CELLS for v in grid.row_col(
            grid.cell_at_lonlat(lon, lat)))
        side = BLOCK_CELLS * grid.cell_px
        block = np.zeros((src.count, side, side), np.float32)
        reproject(rasterio.band(src, list(range(1, src.count + 1))), block,
                  dst_transform=grid.pixel_transform(row * grid.cell_px, col * grid.cell_px),
                  dst_crs=grid.crs, dst_nodata=0, resampling=Resampling.bilinear)
        bands = ("B2", "B3", "B4")[:src.count]
    mosaic, _, _ = grid_mosaic(tmp_path, grid, block.clip(0, 10_000).astype(np.uint16), bands,
                               at=(lon, lat))
    stretch = stretch_of(mosaic.sample())
    assert set(stretch) == {"B2", "B3", "B4"}
    assert all(0 < low < high < 10_000 for low, high in stretch.values())
    centre = grid.cell_at_lonlat(lon, lat)
    out = ThumbnailCache(tmp_path).get(mosaic, centre, key="brazil", view="rgb",
                                       kind="context", stretch=stretch, size=240)
    with Image.open(out) as image:
        array = np.asarray(image)
    assert array.shape == (240, 240, 3)
    assert array[100:140, 100:140].std() > 3  # real texture, not a flat fill
