"""Tests for imagery.validate through open_scene / read_pixels: every refusal with a real bad file.

Each test writes its broken or non-Sentinel-2 raster with rasterio / GDAL in a tmp folder and
checks the one-line SceneError that names the file and the problem.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.shutil
import shapely
from affine import Affine
from rasterio.rpc import RPC

import imagery.validate as validate_module
from imagery.bands import SEED_BANDS
from imagery.grid import CellGrid
from imagery.scene import SceneError, open_scene, read_pixels, scene_cells
from imagery.validate import (
    BANDS_HINT,
    SAMPLE_GRID,
    SAMPLE_WINDOW,
    check_header,
    quiet_gdal,
    sample_bands,
)

#: The real data folder (../shared/data next to the repository), absent in a plain checkout.
SHARED_DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
RGB = ["B2", "B3", "B4"]
#: 100 x 100 px of 10 m: exactly one cell's area, the smallest scene accepted.
SIDE = 100


def dn(rng: np.random.Generator, bands: int = 3, side: int = SIDE) -> np.ndarray:
    return rng.integers(100, 5000, size=(bands, side, side)).astype(np.uint16)


def refused(path, match: str, **kwargs) -> str:
    """Open ``path``, expect a one-line SceneError matching ``match``; return the message."""
    with pytest.raises(SceneError, match=match) as info:
        open_scene(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def cell_window(scene, grid: CellGrid) -> tuple[int, int, int, int]:
    """(row, col, height, width) in grid pixels of the cells the scene covers."""
    cells = scene_cells(scene, grid)
    cp = grid.cell_px
    return cells.row0 * cp, cells.col0 * cp, cells.n_rows * cp, cells.n_cols * cp


# not a raster, or not one raster -----------------------------------------------------------------
def test_text_file_is_not_a_raster(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("cloud-free composite, 2022\n" * 20)
    refused(path, r"^notes\.tif: not a raster GDAL can read \(")


def test_shapefile_is_not_a_raster(tmp_path):
    path = tmp_path / "mines.shp"
    pyogrio.raw.write(path, np.array([shapely.to_wkb(shapely.box(25.0, -30.0, 25.1, -29.9))]),
                      [np.array([1])], ["id"], crs="EPSG:4326", geometry_type="Polygon",
                      driver="ESRI Shapefile")
    refused(path, r"^mines\.shp: not a raster GDAL can read")


def test_netcdf_container_of_subdatasets(make_geotiff, rng, tmp_path):
    source = make_geotiff("for_nc.tif", dn(rng), descriptions=RGB)
    container = tmp_path / "bands.nc"
    rasterio.shutil.copy(source, container, driver="netCDF")  # one variable per band
    refused(container, r"^bands\.nc: a container of 3 subdatasets \(netCDF\), not one raster")


def test_zipped_dem_and_gdal_virtual_paths(make_geotiff, rng, tmp_path):
    dem = make_geotiff("dem.tif", rng.normal(1200, 300, (SIDE, SIDE)).astype(np.float32),
                       transform=Affine(30.0, 0, 540_000, 0, -30.0, 6_700_000))
    archive = tmp_path / "dem.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(dem, "dem.tif")
    refused(archive, r"^dem\.zip: an archive, not a raster; unpack it")
    refused(f"/vsizip/{archive}/dem.tif", r"^dem\.tif: GDAL virtual paths .* are not read")
    # unpacked, the DEM is still refused: one unnamed band is no Sentinel-2 band set
    refused(dem, r"^dem\.tif: 1 band\(s\) without Sentinel-2 band names, and no Sentinel-2 band "
                 r"set has 1 .*--bands cannot help")
    refused(dem, r"^dem\.tif: the --bands option names B4, which is no Sentinel-2 band set",
            bands=["B4"])


# georeferencing and CRS --------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:The given matrix:rasterio.errors.NotGeoreferencedWarning")
def test_no_geotransform(make_geotiff, rng):
    path = make_geotiff("plain.tif", dn(rng), crs=None, transform=Affine.identity(),
                        descriptions=RGB)
    refused(path, r"^plain\.tif: has no georeferencing \(no geotransform\)")


def test_no_crs(make_geotiff, rng):
    path = make_geotiff("nocrs.tif", dn(rng), crs=None, descriptions=RGB)
    refused(path, r"^nocrs\.tif: raster has no CRS")


@pytest.mark.filterwarnings("ignore:The given matrix:rasterio.errors.NotGeoreferencedWarning")
def test_vrt_georeferenced_by_gcps_only(make_geotiff, rng, tmp_path):
    source = make_geotiff("raw.tif", dn(rng, 1), crs=None, transform=Affine.identity())
    vrt = tmp_path / "gcps.vrt"
    vrt.write_text(f"""<VRTDataset rasterXSize="{SIDE}" rasterYSize="{SIDE}">
  <GCPList Projection="EPSG:32735">
    <GCP Id="1" Pixel="0" Line="0" X="540000" Y="6700000"/>
    <GCP Id="2" Pixel="{SIDE}" Line="0" X="541000" Y="6700050"/>
    <GCP Id="3" Pixel="0" Line="{SIDE}" X="540030" Y="6699000"/>
  </GCPList>
  <VRTRasterBand dataType="UInt16" band="1">
    <Description>B4</Description>
    <SimpleSource><SourceFilename relativeToVRT="1">{source.name}</SourceFilename>
      <SourceBand>1</SourceBand></SimpleSource>
  </VRTRasterBand>
</VRTDataset>""")
    refused(vrt, r"^gcps\.vrt: georeferenced by 3 ground control points only; warp it")


@pytest.mark.filterwarnings("ignore:The given matrix:rasterio.errors.NotGeoreferencedWarning")
def test_georeferenced_by_rpcs_only(make_geotiff, rng):
    path = make_geotiff("rpc.tif", dn(rng), crs=None, transform=Affine.identity(),
                        descriptions=RGB)
    coefficients = [0.0] * 20
    with rasterio.open(path, "r+") as ds:
        ds.rpcs = RPC(height_off=1000, height_scale=500, lat_off=-29.8, lat_scale=0.01,
                      line_den_coeff=[1.0] + coefficients[1:], line_num_coeff=coefficients,
                      line_off=50, line_scale=50, long_off=25.4, long_scale=0.01,
                      samp_den_coeff=[1.0] + coefficients[1:], samp_num_coeff=coefficients,
                      samp_off=50, samp_scale=50)
    refused(path, r"^rpc\.tif: georeferenced by RPCs only; orthorectify it first")


def test_rotated_transform(make_geotiff, rng):
    path = make_geotiff("rotated.tif", dn(rng), descriptions=RGB,
                        transform=Affine(10.0, 2.0, 540_000, 2.0, -10.0, 6_700_000))
    refused(path, r"^rotated\.tif: rotated or sheared geotransform")


def test_south_up_raster(make_geotiff, rng):
    path = make_geotiff("south_up.tif", dn(rng), descriptions=RGB,
                        transform=Affine(10.0, 0.0, 540_000, 0.0, 10.0, 6_699_000))
    refused(path, r"^south_up\.tif: south-up raster \(positive y pixel size 10\)")


@pytest.mark.parametrize("crs, match", [
    ("IAU_2015:49900", r"CRS 'Mars \(2015\) - Sphere / Ocentric' is not on Earth"),
    ('LOCAL_CS["site grid",UNIT["metre",1]]', r"CRS 'site grid' is not a geographic or projected CRS on Earth"),
])
def test_crs_not_on_earth(make_geotiff, rng, crs, match):
    transform = Affine(0.0001, 0, 10.0, 0, -0.0001, 10.0) if crs.startswith("IAU") else None
    path = make_geotiff("elsewhere.tif", dn(rng), crs=crs, transform=transform,
                        descriptions=RGB)
    refused(path, r"^elsewhere\.tif: " + match)


def test_geographic_bounds_off_the_earth(make_geotiff, rng):
    path = make_geotiff("off_earth.tif", dn(rng), crs="EPSG:4326", descriptions=RGB,
                        transform=Affine(0.0001, 0, 200.0, 0, -0.0001, 95.0))
    refused(path, r"^off_earth\.tif: bounds .* lie off the Earth")


def test_projected_bounds_that_cannot_reach_the_grid(make_geotiff, rng):
    path = make_geotiff("far_utm.tif", dn(rng), descriptions=RGB,
                        transform=Affine(10.0, 0, 5.0e7, 0, -10.0, 6_700_000))
    refused(path, r"^far_utm\.tif: its bounds cannot be transformed to the grid CRS EPSG:6933")


def test_whole_world_raster(make_geotiff):
    world = np.full((12, 180, 360), 1000, np.uint16)
    path = make_geotiff("world.tif", world, crs="EPSG:4326",
                        transform=Affine(1.0, 0, -180.0, 0, -1.0, 90.0))
    refused(path, r"^world\.tif: 111,\d{3} m pixels are coarser than Sentinel-2's 60 m; "
                  r"--bands cannot change this")


# pixel size, extent, declared size ---------------------------------------------------------------
def test_300m_pixels_refused_even_with_bands(make_geotiff, rng):
    path = make_geotiff("coarse.tif", dn(rng, 12, 20), descriptions=list(SEED_BANDS),
                        transform=Affine(300.0, 0, 540_000, 0, -300.0, 6_700_000))
    refused(path, r"^coarse\.tif: 300 m pixels are coarser than Sentinel-2's 60 m")
    refused(path, r"^coarse\.tif: 300 m pixels", bands=list(SEED_BANDS))


def test_landsat_like_30m_seven_bands(make_geotiff, rng):
    path = make_geotiff("landsat.tif", dn(rng, 7),
                        transform=Affine(30.0, 0, 540_000, 0, -30.0, 6_700_000))
    refused(path, r"^landsat\.tif: 7 band\(s\) without Sentinel-2 band names.*--bands cannot help")
    refused(path, r"^landsat\.tif: the --bands option names B1,B2,B3,B4,B5,B6,B7, which is no "
                  r"Sentinel-2 band set \(known: ", bands=["B1", "B2", "B3", "B4", "B5", "B6", "B7"])


def test_smaller_than_one_cell(make_geotiff, rng):
    path = make_geotiff("tiny.tif", dn(rng, 3, 40), descriptions=RGB)
    refused(path, r"^tiny\.tif: covers 0\.160 km2 \(40 x 40 px\), less than one 1-km cell")


def test_declared_size_above_the_limit_is_refused_before_any_read(tmp_path, monkeypatch):
    path = tmp_path / "huge.tif"
    with rasterio.open(path, "w", driver="GTiff", width=200_000, height=200_000, count=1,
                       dtype="uint16", crs="EPSG:32735", tiled=True, blockxsize=512,
                       blockysize=512, sparse_ok=True,
                       transform=Affine(10.0, 0, 540_000, 0, -10.0, 6_700_000)) as ds:
        ds.set_band_description(1, "B4")
    assert path.stat().st_size < 4_000_000  # a sparse header: no pixel data written

    def no_read(*args, **kwargs):
        raise AssertionError("pixels were read")

    monkeypatch.setattr(validate_module, "_read_sample", no_read)
    start = time.perf_counter()
    refused(path, r"^huge\.tif: declares 200,000 x 200,000 px x 1 band\(s\) = "
                  r"40,000,000,000 px per band, 74\.5 GiB uncompressed; the limits are "
                  r"4,294,967,296 px per band and 256 GiB per file")
    assert time.perf_counter() - start < 5.0


# data types and value ranges ---------------------------------------------------------------------
def test_8bit_refused_and_bands_cannot_help(make_geotiff, rng):
    hillshade = rng.integers(0, 255, (1, SIDE, SIDE)).astype(np.uint8)
    path = make_geotiff("hillshade.tif", hillshade, nodata=0)
    message = refused(path, r"^hillshade\.tif: uint8 data: 8-bit data cannot hold",
                      bands=["B4"])
    assert message.endswith("--bands cannot change this")


def test_complex_refused(make_geotiff, rng):
    path = make_geotiff("complex.tif", dn(rng).astype(np.complex64), descriptions=RGB)
    refused(path, r"^complex\.tif: complex64 data: complex values are not reflectance")


def test_wide_integers_accepted_in_range_refused_beyond(make_geotiff, rng):
    ok = make_geotiff("u32.tif", dn(rng).astype(np.uint32), descriptions=RGB)
    assert open_scene(ok).dn_scale == 1.0
    big = dn(rng).astype(np.int32)
    big[0, :10, :10] = 900_000
    path = make_geotiff("i32.tif", big, descriptions=RGB)
    refused(path, r"^i32\.tif: values 100\.\.900000 lie outside Sentinel-2's DN range 0\.\.65,535")


def test_float_reflectance_converted_and_float_elevation_refused(make_geotiff, rng):
    reflectance = rng.uniform(0.01, 0.6, (3, SIDE, SIDE)).astype(np.float64)
    assert open_scene(make_geotiff("refl.tif", reflectance, descriptions=RGB)).dn_scale == 10000
    heights = rng.uniform(70_000, 90_000, (3, SIDE, SIDE)).astype(np.float32)
    refused(make_geotiff("heights.tif", heights, descriptions=RGB),
            r"^heights\.tif: values .* lie outside Sentinel-2's DN range")


# band names and band sets ------------------------------------------------------------------------
def test_unnamed_bands_hint_names_the_cli_option(make_geotiff, rng):
    path = make_geotiff("rgb.tif", dn(rng))
    message = refused(path, r"^rgb\.tif: 3 band\(s\) without Sentinel-2 band names; if it is a "
                            r"Sentinel-2 composite, name them in file order")
    assert f"`{BANDS_HINT}`" in message and "bands=(" not in message
    assert BANDS_HINT.startswith("run.py ingest") and "--bands B2,B3,B4" in BANDS_HINT
    # following the hint works for a file that otherwise looks like Sentinel-2
    assert open_scene(path, bands=RGB).bands == tuple(RGB)


def test_band_names_that_form_no_sentinel2_set(make_geotiff, rng):
    path = make_geotiff("pair.tif", dn(rng, 2), descriptions=["B8", "B12"])
    refused(path, r"^pair\.tif: has bands B8,B12, which is no Sentinel-2 band set")
    generic = make_geotiff("generic.tif", dn(rng), descriptions=["Band 1", "Band 2", "Band 3"])
    refused(generic, r"^generic\.tif: 3 band\(s\) without Sentinel-2 band names")


def test_band1_file_name_is_not_b1(make_geotiff, rng, tmp_path):
    folder = tmp_path / "landsat"
    for number in (1, 2, 3):
        make_geotiff(folder / f"LC08_scene_band{number}.tif", dn(rng, 1))
    refused(folder, r"^LC08_scene_band1\.tif, LC08_scene_band2\.tif, LC08_scene_band3\.tif: no "
                    r"Sentinel-2 band name in the file name")
    refused(folder / "LC08_scene_band1.tif", r"^LC08_scene_band1\.tif: 1 band\(s\) without")
    # Sentinel-2 product naming, with and without the L2A resolution suffix, is read
    product = tmp_path / "product"
    for band in ("B02_10m", "B03_10m", "B04_10m"):
        make_geotiff(product / f"T35JNK_20220105T080000_{band}.jp2", dn(rng, 1))
    assert open_scene(product).bands == tuple(RGB)


# valid pixels and nodata -------------------------------------------------------------------------
def test_band_without_a_valid_pixel(make_geotiff, rng):
    data = dn(rng, 12)
    data[4] = 0  # B5 all nodata
    path = make_geotiff("twelve.tif", data, nodata=0)
    refused(path, r"^twelve\.tif: band B5 has no valid pixel \(all nodata / 0\) where the other "
                  r"bands have data")


def test_file_without_a_valid_pixel(make_geotiff):
    path = make_geotiff("empty.tif", np.full((3, SIDE, SIDE), 7, np.uint16), nodata=7,
                        descriptions=RGB)
    refused(path, r"^empty\.tif: no valid pixel in a sample of 30,000 ")


def test_zero_filled_edges_without_nodata_tag_are_nodata(make_geotiff, rng, grid):
    data = dn(rng, 3, 200)
    data[:, :, :50] = 0  # a zero-filled swath edge, no nodata tag
    path = make_geotiff("edges.tif", data, descriptions=RGB, crs=grid.crs,
                        transform=grid.pixel_transform(330_000, 250_000))
    scene = open_scene(path)
    assert scene.nodata == (0.0,)
    assert scene.notes == ("edges.tif: no nodata tag; 0 is taken as no data (Sentinel-2's "
                           "no-data value)",)
    pixels, valid = read_pixels(scene, grid, 330_000, 250_000, 200, 200)
    assert not valid[:, :50].any() and valid[:, 50:].all()
    assert np.isnan(pixels[:, :50]).all() and float(np.nanmin(pixels)) >= 100


def test_large_band_is_sampled_sparsely(make_geotiff, rng):
    side = 1100  # above FULL_SAMPLE_SIDE, no overviews: a grid of small windows
    path = make_geotiff("large.tif", dn(rng, 3, side), descriptions=RGB, tiled=True,
                        blockxsize=256, blockysize=256)
    with rasterio.open(path) as ds:
        samples = sample_bands(ds, path, 0.0)
    assert [s.n_sampled for s in samples] == [SAMPLE_GRID ** 2 * SAMPLE_WINDOW ** 2] * 3
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([2, 4, 8])
    with rasterio.open(path) as ds:  # with overviews: one decimated read of at most 256 px
        samples = sample_bands(ds, path, 0.0)
    assert all(s.n_sampled <= 256 * 256 and s.n_valid == s.n_sampled for s in samples)


# blocks that cannot be decoded -------------------------------------------------------------------
def _tiled_scene(make_geotiff, rng, grid, name: str) -> tuple[Path, object]:
    path = make_geotiff(name, dn(rng, 3, 512), descriptions=RGB, crs=grid.crs, tiled=True,
                        blockxsize=128, blockysize=128, compress="deflate",
                        transform=grid.pixel_transform(330_000, 250_000))
    return path, open_scene(path)


def test_corrupt_block_fails_read_pixels_naming_the_file(make_geotiff, rng, grid):
    path, scene = _tiled_scene(make_geotiff, rng, grid, "corrupt.tif")
    data = path.read_bytes()
    middle = len(data) // 2
    path.write_bytes(data[:middle] + bytes(range(256)) * 8 + data[middle + 2048:])
    with pytest.raises(SceneError, match=r"^corrupt\.tif: pixels cannot be decoded \(corrupt\.tif, "
                                         r"band \d: IReadBlock failed"):
        read_pixels(scene, grid, 330_000, 250_000, 512, 512)
    refused(path, r"^corrupt\.tif: pixels cannot be decoded")


def test_truncated_file_fails_read_pixels_naming_the_file(make_geotiff, rng, grid):
    path, scene = _tiled_scene(make_geotiff, rng, grid, "cut.tif")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(SceneError, match=r"^cut\.tif: (not a raster GDAL can read|pixels cannot "
                                         r"be decoded)"):
        read_pixels(scene, grid, 330_000, 250_000, 512, 512)


# the processing-baseline offset ------------------------------------------------------------------
def _offset_scene(make_geotiff, grid, name: str, values=(1500, 1000, 900), **kwargs):
    data = np.stack([np.full((SIDE, SIDE), v, np.uint16) for v in values])
    return make_geotiff(name, data, descriptions=RGB, crs=grid.crs, nodata=0,
                        transform=grid.pixel_transform(330_000, 250_000), **kwargs)


@pytest.mark.parametrize("tags", [
    {"BOA_ADD_OFFSET_B2": "-1000", "BOA_ADD_OFFSET_B3": "-1000", "BOA_ADD_OFFSET_B4": "-1000"},
    {"RADIO_ADD_OFFSET": "-1000"},
    {"PROCESSING_BASELINE": "05.09"},
])
def test_offset_from_metadata_is_applied_and_clipped(make_geotiff, grid, tags):
    scene = open_scene(_offset_scene(make_geotiff, grid, "esa.tif", tags=tags))
    assert scene.dn_offset == -1000.0
    pixels, valid = read_pixels(scene, grid, 330_000, 250_000, SIDE, SIDE)
    assert valid.all()
    np.testing.assert_allclose(pixels[50, 50], [500.0, 1.0, 1.0])  # kept >= 1: still valid


def test_offset_from_band_offsets_and_old_baseline(make_geotiff, grid):
    path = _offset_scene(make_geotiff, grid, "offsets.tif")
    with rasterio.open(path, "r+") as ds:
        ds.offsets = (-1000.0, -1000.0, -1000.0)
    assert open_scene(path).dn_offset == -1000.0
    old = _offset_scene(make_geotiff, grid, "old.tif", tags={"PROCESSING_BASELINE": "02.09"})
    assert open_scene(old).dn_offset == 0.0


def test_offset_option(make_geotiff, grid):
    plain = _offset_scene(make_geotiff, grid, "plain.tif")
    assert open_scene(plain).dn_offset == 0.0
    scene = open_scene(plain, offset=-1000)
    pixels, _ = read_pixels(scene, grid, 330_000, 250_000, 2, 2)
    np.testing.assert_allclose(pixels[0, 0], [500.0, 1.0, 1.0])
    tagged = _offset_scene(make_geotiff, grid, "tagged.tif", tags={"BOA_ADD_OFFSET_B2": "-1000"})
    assert open_scene(tagged, offset=-1000).dn_offset == -1000.0
    refused(tagged, r"^tagged\.tif: --offset 0 contradicts the file's BOA_ADD_OFFSET", offset=0)
    mixed = _offset_scene(make_geotiff, grid, "mixed.tif",
                          tags={"BOA_ADD_OFFSET_B2": "-1000", "BOA_ADD_OFFSET_B3": "0"})
    refused(mixed, r"^mixed\.tif: bands declare different DN offsets \(-1000, 0\)")


# no library text with paths on screen ------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:The given matrix:rasterio.errors.NotGeoreferencedWarning")
def test_no_library_warning_or_path_reaches_the_screen(make_geotiff, rng, tmp_path, capfd,
                                                       caplog):
    caplog.set_level(logging.DEBUG)
    bad = [
        make_geotiff("nogeo.tif", dn(rng), crs=None, transform=Affine.identity()),
        make_geotiff("u8.tif", dn(rng).astype(np.uint8)),
        tmp_path / "text.tif",
    ]
    (tmp_path / "text.tif").write_text("not a raster")
    container = tmp_path / "container.nc"  # GDAL's netCDF driver warns "no geotransform" on open
    rasterio.shutil.copy(make_geotiff("for_nc.tif", dn(rng)), container, driver="netCDF")
    bad.append(container)
    messages = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path in bad:
            with pytest.raises(SceneError) as info:
                open_scene(path)
            messages.append(str(info.value))
        path, scene = _tiled_scene(make_geotiff, rng, CellGrid(), "broken.tif")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] + bytes(range(256)) * 8
                         + data[len(data) // 2 + 2048:])
        with pytest.raises(SceneError) as info:
            read_pixels(scene, CellGrid(), 330_000, 250_000, 512, 512)
        messages.append(str(info.value))
    assert caught == []
    out, err = capfd.readouterr()
    folder = str(tmp_path)
    assert folder not in out and folder not in err
    assert not any(folder in record.getMessage() for record in caplog.records
                   if record.levelno >= logging.WARNING)
    assert all(folder not in message for message in messages)


def test_quiet_gdal_nests_across_threads_and_restores():
    logger = logging.getLogger("rasterio")
    before, filters = logger.level, list(warnings.filters)
    barrier = threading.Barrier(4)

    def work() -> None:
        with quiet_gdal():
            barrier.wait()
            with quiet_gdal():
                assert logger.level > logging.CRITICAL
            barrier.wait()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert logger.level == before and warnings.filters == filters


# the real data in ../shared/data: accepted --------------------------------------------------------
VIRGINIA = SHARED_DATA / "s2_scene_virginia"
BIGEARTHNET = SHARED_DATA / "s2_patches_bigearthnet"
BRAZIL = SHARED_DATA / "tailings_rgb_brazil" / "img"


@pytest.mark.shared_data
@pytest.mark.skipif(not (VIRGINIA.is_dir() and BIGEARTHNET.is_dir() and BRAZIL.is_dir()),
                    reason="../shared/data (Virginia, BigEarthNet, Brazil) is absent")
def test_real_sentinel2_files_are_accepted():
    for path in sorted(VIRGINIA.glob("*.tif")) + [VIRGINIA / "per_band_native"]:
        assert open_scene(path).bands == SEED_BANDS, path.name
    for folder in sorted(p for p in BIGEARTHNET.iterdir() if p.is_dir()):
        assert open_scene(folder).bands == SEED_BANDS, folder.name
    for path in sorted(BRAZIL.glob("*.tif")):
        scene = open_scene(path)
        assert scene.bands == tuple(RGB) and scene.dn_offset == 0.0, path.name
        with rasterio.open(path) as ds:
            assert check_header(ds, path) < 11.0
