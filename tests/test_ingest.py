"""Ingest into the imagery store: one seamless mosaic per year from files in two UTM zones,
adding files later, all-or-nothing on a broken file, resuming after an interruption."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

import imagery.store as store_module
from db.store import Store
from imagery.bands import L2A_10_20M_BANDS, SEED_BANDS, band_from_filename, normalise_band_name
from imagery.scene import SceneError
from imagery.store import BLOCK_CELLS, MosaicError, open_year, year_dir
from pipeline.ingest import cells_of_year, ingest_files
from pipeline.settings import load_settings
from tests.conftest import SHARED_DATA

#: A fast installation: 50 m grid pixels (20 px cells, 320 px blocks); one ingest thread, so an
#: interruption falls after a known number of warped blocks (threads are tested on their own).
FAST = {"PIXEL_SIZE_M": 50.0, "INGEST_THREADS": 1}
#: Around 24 E, 29.5 S: the boundary between UTM zones 34S (west) and 35S (east).
LON0, LAT0 = 23.95, -29.50
SOURCE_PX = 20.0


def field(band: int, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """A smooth, band-dependent DN field defined on the ground, whatever the file's CRS."""
    return (1500 + 60 * band + 700 * np.sin((lon - 23.9) * 40.0) * np.cos((lat + 29.4) * 30.0)
            + 2000 * (lon - 23.9))


def write_utm(path, crs: str, lon: float, lat: float, width_km: float, height_km: float,
              *, bands=SEED_BANDS, dtype: str = "uint16", **profile):
    """A 20 m GeoTIFF in ``crs`` whose top-left corner is at (lon, lat), sampling :func:`field`."""
    to_utm = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    to_geo = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    x0, y0 = (round(v / SOURCE_PX) * SOURCE_PX for v in to_utm.transform(lon, lat))
    width, height = int(width_km * 1000 / SOURCE_PX), int(height_km * 1000 / SOURCE_PX)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    glon, glat = to_geo.transform(x0 + cols * SOURCE_PX, y0 - rows * SOURCE_PX)
    data = np.stack([field(b, glon, glat) for b in range(len(bands))])
    path.parent.mkdir(parents=True, exist_ok=True)
    options = dict(driver="GTiff", width=width, height=height, count=len(bands), dtype=dtype,
                   crs=crs, transform=from_origin(x0, y0, SOURCE_PX, SOURCE_PX), nodata=0,
                   tiled=True, blockxsize=128, blockysize=128)
    options.update(profile)
    with rasterio.open(path, "w", **options) as ds:
        ds.write(np.clip(data, 1, 10_000).astype(dtype))
        ds.descriptions = tuple(bands)
    return path


@pytest.fixture
def settings(tmp_path):
    return load_settings({"DATA_DIR": str(tmp_path / "instance"), **FAST}, environ={})


@pytest.fixture
def store(settings):
    with Store(settings.database_path) as opened:
        yield opened


def counts(store: Store) -> dict[str, int]:
    return {table: store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("cells", "scenes", "scene_files")}


def snapshot(settings, year: int) -> dict[str, int]:
    """Every file of the year's store folder with its mtime (ns)."""
    root = year_dir(settings.data_dir, year)
    return {p.name: p.stat().st_mtime_ns for p in root.iterdir()} if root.exists() else {}


def two_zone_files(folder):
    """West file in UTM 34S; east file in 35S overlapping it by ~1 km; a 35S file adjacent south."""
    west = write_utm(folder / "a_west.tif", "EPSG:32734", LON0, LAT0, 6, 5)
    east = write_utm(folder / "b_east.tif", "EPSG:32735", LON0 + 0.05, LAT0, 6, 5)
    south_lat = LAT0 - 5000 / 110_900  # about 5 km further south: adjacent to the east file
    south = write_utm(folder / "c_south.tif", "EPSG:32735", LON0 + 0.05, south_lat, 6, 4)
    return [west, east, south]


def test_files_in_two_utm_zones_make_one_seamless_mosaic(store, settings, tmp_path):
    files = two_zone_files(tmp_path / "src")
    seen: list[float] = []
    result = ingest_files(store, settings, files, 2021, progress=seen.append)
    assert result.files == 3 and len(store.scenes.scenes(2021)) == 1
    row = store.scenes.scenes(2021)[0]
    assert row["paths"] == ["imagery/2021"] and row["bands"] == list(SEED_BANDS)
    assert {f["path"] for f in store.scenes.scene_files(2021)} == {str(p) for p in files}
    assert {f["crs"] for f in store.scenes.scene_files(2021)} == {"EPSG:32734", "EPSG:32735"}
    assert sum(seen) == pytest.approx(result.area_km2) and result.area_km2 > 0
    mosaic = open_year(settings.data_dir, settings.grid, 2021)
    assert all(b.row0 % BLOCK_CELLS == 0 and b.col0 % BLOCK_CELLS == 0 for b in mosaic.blocks())

    reference = tmp_path / "reference"
    ref_settings = load_settings({"DATA_DIR": str(reference), **FAST}, environ={})
    whole = write_utm(tmp_path / "ref" / "whole.tif", "EPSG:32735", LON0, LAT0, 12, 9)
    with Store(ref_settings.database_path) as ref_store:
        ingest_files(ref_store, ref_settings, [whole], 2021)
    ref = open_year(ref_settings.data_dir, ref_settings.grid, 2021)

    grid = settings.grid
    # the west file ends near 24.012 E (east file from 24.0 E); the south file starts 5 km down
    for lon, lat in ((24.011, LAT0 - 0.02), (LON0 + 0.08, LAT0 - 5000 / 110_900)):
        cell = grid.cell_at_lonlat(lon, lat)
        r, c = grid.cell_pixel_origin(cell)
        pixels, valid = mosaic.read(r, c, grid.cell_px, grid.cell_px)
        expected, ref_valid = ref.read(r, c, grid.cell_px, grid.cell_px)
        assert valid.all() and ref_valid.all(), f"cell {cell} on a seam lacks pixels"
        assert np.abs(pixels - expected).max() <= 15.0  # warp tolerance (DN of ~1500-3000)
    assert cell in set(cells_of_year(store, grid, 2021).tolist())
    assert counts(store)["cells"] == len(np.concatenate(
        [mosaic.valid_cells(b) for b in mosaic.blocks()]))
    with rasterio.open(mosaic.root / "mosaic.vrt") as vrt:
        assert vrt.count == 12 and vrt.crs.to_epsg() == 6933 and vrt.descriptions[0] == "B1"


def test_a_file_added_later_rebuilds_only_its_blocks(store, settings, tmp_path):
    first = write_utm(tmp_path / "one.tif", "EPSG:32735", 25.0, -29.0, 5, 5)
    ingest_files(store, settings, [first], 2021)
    before = snapshot(settings, 2021)
    far = write_utm(tmp_path / "two.tif", "EPSG:32735", 25.6, -29.0, 5, 5)
    result = ingest_files(store, settings, [far], 2021)
    after = snapshot(settings, 2021)
    old_blocks = {n for n in before if n.endswith(".tif")}
    assert all(after[n] == before[n] for n in old_blocks)  # untouched blocks kept their files
    assert result.blocks == len({n for n in after if n.endswith(".tif")} - old_blocks) > 0
    assert len(store.scenes.scenes(2021)) == 1 and len(store.scenes.scene_files(2021)) == 2
    row = store.scenes.scenes(2021)[0]
    mosaic = open_year(settings.data_dir, settings.grid, 2021)
    assert (row["row0"], row["row1"], row["col0"], row["col1"]) == tuple(
        getattr(mosaic.cell_range(), k) for k in ("row0", "row1", "col0", "col1"))
    assert mosaic.cell_range().n_cols > 50  # the bounding range now spans both files


def test_overlap_keeps_stored_pixels_and_fills_only_missing_ones(store, settings, tmp_path):
    first = write_utm(tmp_path / "first.tif", "EPSG:32735", 25.0, -29.0, 4, 4)
    ingest_files(store, settings, [first], 2021)
    mosaic = open_year(settings.data_dir, settings.grid, 2021)
    block = mosaic.blocks()[0]
    cp, side = settings.grid.cell_px, BLOCK_CELLS * settings.grid.cell_px
    kept, kept_valid = mosaic.read(block.row0 * cp, block.col0 * cp, side, side)
    brighter = write_utm(tmp_path / "second.tif", "EPSG:32735", 24.99, -28.99, 6, 6,
                         bands=SEED_BANDS)
    with rasterio.open(brighter, "r+") as ds:
        ds.write(ds.read() + 500)
    ingest_files(store, settings, [brighter], 2021)
    now, now_valid = mosaic.read(block.row0 * cp, block.col0 * cp, side, side)
    assert np.array_equal(now[kept_valid], kept[kept_valid])  # stored pixels keep their values
    assert now_valid.sum() > kept_valid.sum()                 # the new file filled the rest


def test_a_different_band_set_is_refused(store, settings, tmp_path):
    ingest_files(store, settings, [write_utm(tmp_path / "a.tif", "EPSG:32735", 25.0, -29.0, 3, 3)],
                 2021)
    before, files = counts(store), snapshot(settings, 2021)
    other = write_utm(tmp_path / "b.tif", "EPSG:32735", 25.0, -29.0, 3, 3,
                      bands=("B2", "B3", "B4", "B8"))
    with pytest.raises(SceneError, match="differ from the 2021 mosaic's bands"):
        ingest_files(store, settings, [other], 2021)
    assert counts(store) == before and snapshot(settings, 2021) == files


def corrupt_middle_tile(path) -> None:
    """Overwrite the compressed bytes of a tile in the middle of a GeoTIFF with garbage."""
    with rasterio.open(path) as ds:
        rows, cols = ds.block_shapes[0]
        bx, by = ds.width // cols // 2, ds.height // rows // 2
        offset = int(ds.get_tag_item(f"BLOCK_OFFSET_{bx}_{by}", "TIFF", bidx=1))
        size = int(ds.get_tag_item(f"BLOCK_SIZE_{bx}_{by}", "TIFF", bidx=1))
    with open(path, "r+b") as out:
        out.seek(offset)
        out.write(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())


def test_a_corrupt_file_found_mid_call_leaves_store_and_database_unchanged(
        store, settings, tmp_path):
    ingest_files(store, settings, [write_utm(tmp_path / "a.tif", "EPSG:32735", 25.0, -29.0, 4, 4)],
                 2021)
    before, files = counts(store), snapshot(settings, 2021)
    good = write_utm(tmp_path / "b.tif", "EPSG:32735", 25.6, -29.0, 4, 4)
    bad = write_utm(tmp_path / "c.tif", "EPSG:32735", 25.0, -29.1, 6, 6, compress="deflate")
    corrupt_middle_tile(bad)
    with pytest.raises(SceneError, match="c.tif: pixels cannot be decoded"):
        ingest_files(store, settings, [good, bad], 2021)
    assert counts(store) == before and snapshot(settings, 2021) == files


def test_threads_warp_the_same_blocks_as_one_thread(tmp_path):
    source = write_utm(tmp_path / "wide.tif", "EPSG:32735", 25.0, -29.0, 24, 6)
    blocks = {}
    for threads in (1, 2):
        settings = load_settings({"DATA_DIR": str(tmp_path / f"t{threads}"), **FAST,
                                  "INGEST_THREADS": threads}, environ={})
        with Store(settings.database_path) as store:
            seen: list[float] = []
            result = ingest_files(store, settings, [source], 2021, progress=seen.append)
        assert sum(seen) == pytest.approx(result.area_km2) and len(seen) == result.blocks
        mosaic = open_year(settings.data_dir, settings.grid, 2021)
        blocks[threads] = {b: mosaic.read_tile(b, 0).pixels for b in mosaic.blocks()}
    assert blocks[1].keys() == blocks[2].keys() and len(blocks[1]) >= 3
    for block, pixels in blocks[1].items():
        np.testing.assert_array_equal(pixels, blocks[2][block])


def test_a_rerun_after_an_interrupted_call_resumes(store, settings, tmp_path, monkeypatch):
    source = write_utm(tmp_path / "wide.tif", "EPSG:32735", 25.0, -29.0, 24, 6)
    warps: list[int] = []
    real = store_module.read_pixels

    def counting(*args, **kwargs):
        warps.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, "read_pixels", counting)

    class Killed(Exception):
        pass

    def kill_after_two_blocks(km2: float) -> None:
        if len(warps) == 2:
            raise Killed

    with pytest.raises(Killed):
        ingest_files(store, settings, [source], 2021, progress=kill_after_two_blocks)
    assert counts(store)["scenes"] == 0 and not snapshot(settings, 2021)
    with pytest.raises(MosaicError, match="no imagery for 2021"):
        open_year(settings.data_dir, settings.grid, 2021)
    result = ingest_files(store, settings, [source], 2021)
    n_blocks = len(open_year(settings.data_dir, settings.grid, 2021).blocks())
    assert n_blocks >= 3 and result.blocks == n_blocks
    assert len(warps) == n_blocks  # 2 before the kill + the rest, none warped twice
    staging = settings.data_dir / "imagery" / ".staging" / "2021"
    assert not [p for p in staging.iterdir() if p.is_dir()]  # staged blocks are gone


def test_one_ingest_per_year_at_a_time(store, settings, tmp_path):
    import fcntl

    source = write_utm(tmp_path / "a.tif", "EPSG:32735", 25.0, -29.0, 3, 3)
    lock = settings.data_dir / "imagery" / ".staging" / "2021" / ".lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(SceneError, match="another ingest of 2021 is running"):
            ingest_files(store, settings, [source], 2021)
        ingest_files(store, settings, [source], 2022)  # another year is free
    assert ingest_files(store, settings, [source], 2021).blocks > 0


VIRGINIA = SHARED_DATA / "s2_scene_virginia"


@pytest.mark.shared_data
@pytest.mark.skipif(not VIRGINIA.is_dir(), reason="../shared/data/s2_scene_virginia is absent")
def test_a_real_ten_band_l2a_stack_is_a_known_band_set(store, settings, tmp_path):
    stack = VIRGINIA / "s2_l1c_13band_20m_stack.tif"
    ten = tmp_path / "virginia_10band_20m.tif"
    with rasterio.open(stack) as src:
        picks = [i + 1 for i, name in enumerate(src.descriptions)
                 if normalise_band_name(name) in L2A_10_20M_BANDS]
        profile = {**src.profile, "count": len(picks)}
        with rasterio.open(ten, "w", **profile) as dst:
            dst.write(src.read(picks))
            dst.descriptions = tuple(src.descriptions[i - 1] for i in picks)
    native = sorted(p for p in (VIRGINIA / "per_band_native").iterdir()
                    if band_from_filename(p.stem) in L2A_10_20M_BANDS)
    assert len(picks) == len(native) == 10
    for year, source in ((2021, ten), (2022, native)):  # a 10-band file; 10 files as one stack
        record = ingest_files(store, settings, [source], year).scene
        assert record["bands"] == list(L2A_10_20M_BANDS)
    grid = settings.grid
    stacked, files = (open_year(settings.data_dir, grid, y) for y in (2021, 2022))
    block = stacked.blocks()[len(stacked.blocks()) // 2]
    r, c = grid.cell_pixel_origin(grid.cell_id(block.row0, block.col0))
    side = BLOCK_CELLS * grid.cell_px
    (a, valid_a), (b, valid_b) = stacked.read(r, c, side, side), files.read(r, c, side, side)
    both = valid_a & valid_b
    assert both.mean() > 0.5  # the same scene: band medians agree closely
    np.testing.assert_allclose(np.median(a[both], axis=0), np.median(b[both], axis=0), rtol=0.1)
