"""Tests for the imagery under the map: imagery.tiles (rio-tiler rendering, disk cache),
pipeline.tiles (modes, cache key) and the /tiles route and map page through the Flask test client,
on the 12-band scenes of fixtures_app ingested into a real imagery store."""

from __future__ import annotations

import io
import json
import re
import shutil
import time
from html import unescape
from pathlib import Path

import morecantile
import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.warp import transform_bounds

pytest.register_assert_rewrite("fixtures_app")
from fixtures_app import COL0, N_COLS, N_ROWS, ROW0, add_account, login, write_scene  # noqa: E402

from db.store import Store  # noqa: E402
from imagery.store import open_year  # noqa: E402
from imagery.thumbnails import render_view  # noqa: E402
from imagery.tiles import (  # noqa: E402
    MAX_ZOOM,
    TRANSPARENT_PNG,
    TileCache,
    mode_problem,
    native_zoom,
    tile_in_range,
)
from labeller import create_app  # noqa: E402
from pipeline.ingest import ingest_files  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402
from pipeline.tiles import TileNotFound, map_tile, tile_key, year_modes  # noqa: E402

pytest_plugins = ["fixtures_app"]

TMS = morecantile.tms.get("WebMercatorQuad")
ZOOM = 14  # a tile of about 2 km: wholly inside the 8 x 8 km test scene at its centre


def centre_tile(grid, z: int = ZOOM) -> morecantile.Tile:
    """The map tile over the centre of the test scene."""
    centre = grid.cell_id(ROW0 + N_ROWS // 2, COL0 + N_COLS // 2)
    lon, lat = grid.cell_centres_lonlat(np.asarray([centre]))
    return TMS.tile(float(lon[0]), float(lat[0]), z)


def decode(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (256, 256)
    return np.asarray(image.convert("RGBA"))


def map_config(html: str) -> dict:
    """The JSON configuration the map page hands to static/map.js."""
    match = re.search(r"data-config='([^']*)'", html)
    assert match, "no map configuration in the page"
    return json.loads(unescape(match.group(1)))


def url(year: int, mode: str, tile: morecantile.Tile) -> str:
    return f"/tiles/{year}/{mode}/{tile.z}/{tile.x}/{tile.y}.png"


@pytest.fixture
def own_data(tmp_path: Path, review_db) -> Path:
    """A DATA_DIR with its own (writable) copy of the imagery store and database."""
    data = tmp_path / "own"
    shutil.copytree(review_db.imagery, data / "imagery")
    shutil.copy(review_db.database, data / "minewatch.db")
    return data


def write_rgb_scene(path: Path, grid) -> Path:
    """A 3-band (B2, B3, B4) uint16 GeoTIFF over the test cells: imagery with no B12."""
    minx, _, _, maxy = grid.cell_bounds(int(grid.cell_id(ROW0, COL0)))
    rng = np.random.default_rng(7)
    with rasterio.open(path, "w", driver="GTiff", count=3, height=200, width=200,
                       dtype="uint16", crs=grid.crs, nodata=0,
                       transform=Affine(20.0, 0.0, minx, 0.0, -20.0, maxy)) as ds:
        ds.write(rng.integers(300, 1500, size=(3, 200, 200)).astype("uint16"))
        ds.descriptions = ("B2", "B3", "B4")
    return path


# imagery.tiles ---------------------------------------------------------------------------------
def test_tile_range_and_mode_problems() -> None:
    assert tile_in_range(0, 0, 0) and tile_in_range(MAX_ZOOM, 2 ** MAX_ZOOM - 1, 0)
    assert not tile_in_range(2, 4, 0) and not tile_in_range(MAX_ZOOM + 1, 0, 0)
    assert not tile_in_range(-1, 0, 0)
    assert not tile_in_range(16, 0, 0, max_zoom=15) and tile_in_range(15, 0, 0, max_zoom=15)
    assert mode_problem(("B2", "B3", "B4"), "natural") is None
    assert "B12" in mode_problem(("B2", "B3", "B4"), "false")
    with pytest.raises(ValueError, match="unknown mode"):
        mode_problem(("B4",), "sepia")
    assert decode(TRANSPARENT_PNG)[..., 3].max() == 0


def test_tile_matches_the_thumbnail_stretch(app, client, review_db) -> None:
    settings = app.config["SETTINGS"]
    tile = centre_tile(settings.grid)
    response = client.get(url(2021, "natural", tile))
    assert response.status_code == 200 and response.mimetype == "image/png"
    rgba = decode(response.data)
    assert (rgba[..., 3] == 255).all()                 # wholly inside the scene
    # the same area read from the store and drawn by the thumbnails' own code and stretch
    with Store(review_db.database) as store:
        stretch = store.scenes.scenes(2021)[0]["stretch"]
    mosaic = open_year(settings.data_dir, settings.grid, 2021)
    west, south, east, north = transform_bounds("EPSG:3857", settings.grid.crs,
                                                *TMS.xy_bounds(tile), densify_pts=21)
    t = settings.grid.pixel_transform(0, 0)
    col0, row0 = ~t @ (west, north)
    col1, row1 = ~t @ (east, south)
    pixels, _ = mosaic.read(round(row0), round(col0), round(row1 - row0), round(col1 - col0),
                            ["B4", "B3", "B2"])
    expected = np.asarray(render_view(pixels, ("B4", "B3", "B2"), "rgb", stretch))
    tile_mean = rgba[..., :3].reshape(-1, 3).mean(axis=0)
    assert np.abs(tile_mean - expected.reshape(-1, 3).mean(axis=0)).max() < 6, tile_mean
    assert rgba[..., :3].std() > 5                     # a picture, not a flat colour
    false = decode(client.get(url(2021, "false", tile)).data)
    assert (false[..., 3] == 255).all() and not np.array_equal(false, rgba)


def test_tile_outside_the_imagery_is_transparent(client, app) -> None:
    far = client.get("/tiles/2021/natural/14/0/0.png")
    assert far.status_code == 200 and far.mimetype == "image/png"
    assert decode(far.data)[..., 3].max() == 0
    # a zoomed-out tile holds the scene in a few pixels, the rest transparent
    wide = decode(client.get(url(2021, "natural", centre_tile(app.config["SETTINGS"].grid, 9)))
                  .data)
    assert 0 < (wide[..., 3] == 255).sum() < 0.05 * 256 * 256
    # nothing is read or written for a tile outside the mosaic's bounds
    assert not list((app.config["SETTINGS"].data_dir / "tiles").glob("2021/natural/*/14/0/0.png"))


@pytest.mark.parametrize("path", [
    "/tiles/2021/natural/23/0/0.png",                  # beyond MAX_ZOOM
    "/tiles/2021/natural/2/4/0.png",                   # x beyond 2**z
    "/tiles/2021/natural/2/0/9.png",
    "/tiles/2021/natural/\u0661\u0664/0/0.png",        # Arabic-Indic digits
    "/tiles/2021/natural/-1/0/0.png",
    "/tiles/2021/sepia/14/0/0.png",                    # unknown mode
    "/tiles/1999/natural/14/0/0.png",                  # unknown year
    "/tiles/2021/natural/14/0/0.jpg",
])
def test_bad_tiles_are_404(client, path) -> None:
    assert client.get(path).status_code == 404


def test_second_request_is_served_from_the_disk_cache(app, client, monkeypatch) -> None:
    tile = centre_tile(app.config["SETTINGS"].grid)
    first = client.get(url(2021, "natural", tile))
    cached = list((app.config["SETTINGS"].data_dir / "tiles" / "2021" / "natural").glob(
        f"*/{tile.z}/{tile.x}/{tile.y}.png"))
    assert len(cached) == 1 and cached[0].read_bytes() == first.data

    def no_rio_tiler(*args, **kwargs):
        raise AssertionError("rio-tiler called on a cache hit")

    monkeypatch.setattr("imagery.tiles.Reader", no_rio_tiler)
    second = client.get(url(2021, "natural", tile))
    assert second.status_code == 200 and second.data == first.data
    # no leftover temporary file from the atomic write
    assert [p.name for p in cached[0].parent.iterdir()] == [cached[0].name]


def test_tile_url_with_its_key_is_cached_forever_by_browsers(app, client) -> None:
    settings = app.config["SETTINGS"]
    with Store(settings.database_path) as store:
        key = year_modes(store, settings, 2021)["natural"]["key"]
    tile = centre_tile(settings.grid)
    versioned = client.get(url(2021, "natural", tile) + f"?v={key}")
    assert versioned.cache_control.immutable and versioned.cache_control.max_age > 3600
    assert not client.get(url(2021, "natural", tile)).cache_control.immutable


# pipeline.tiles --------------------------------------------------------------------------------
def test_reingest_or_new_stretch_changes_the_key(own_data: Path, tmp_path: Path) -> None:
    settings = load_settings({"DATA_DIR": str(own_data)}, environ={})
    tile = centre_tile(settings.grid)
    with Store(settings.database_path) as store:
        path, key = map_tile(store, settings, 2021, "natural", tile.z, tile.x, tile.y)
        scene = store.scenes.scenes(2021)[0]
        assert tile_key(settings, scene) == key and f"/{key}/" in path.as_posix()
        changed = {**scene, "stretch": {**scene["stretch"], "B4": [1.0, 2.0]}}
        assert tile_key(settings, changed) != key
        ingest_files(store, settings, [write_scene(tmp_path / "again.tif", settings.grid, 5)],
                     2021)
        new_path, new_key = map_tile(store, settings, 2021, "natural", tile.z, tile.x, tile.y)
    assert new_key != key and new_path != path and new_path.exists()


def test_false_colour_unavailable_for_an_rgb_only_year(own_data: Path, tmp_path: Path) -> None:
    settings = load_settings({"DATA_DIR": str(own_data)}, environ={})
    tile = centre_tile(settings.grid)
    with Store(settings.database_path) as store:
        scene = ingest_files(store, settings, [write_rgb_scene(tmp_path / "rgb.tif", settings.grid)],
                             2019).scene
        ids = store.cells.cells_in_range(scene["row0"], scene["row1"], scene["col0"], scene["col1"])
        store.scores.write_scores(2019, "m0001", scene["id"], ids, [0.3] * len(ids), [0.5] * len(ids),
                                  [1.0] * len(ids))
        modes = year_modes(store, settings, 2019)
        assert modes["natural"]["problem"] is None and modes["natural"]["key"]
        assert "B12" in modes["false"]["problem"] and modes["false"]["key"] is None
        with pytest.raises(TileNotFound, match="no false-colour imagery"):
            map_tile(store, settings, 2019, "false", tile.z, tile.x, tile.y)
        assert "no imagery for 1999" in year_modes(store, settings, 1999)["natural"]["problem"]
    client = create_app({"DATA_DIR": str(own_data), "SECRET_KEY": "t", "TESTING": True}
                        ).test_client()
    assert client.get(url(2019, "false", tile)).status_code == 404
    assert (decode(client.get(url(2019, "natural", tile)).data)[..., 3] == 255).any()
    page = client.get("/map?year=2019").get_data(as_text=True)
    assert 'value="2019/false" disabled' in page and "unavailable: no B12" in page
    assert 'value="2019/natural"  selected' in page


def test_zoom_is_capped_at_the_imagery_resolution() -> None:
    # 10 m pixels: zoom 15 has 4.8 m tile pixels (under half a pixel), zoom 14 9.6 m
    assert native_zoom(10.0) == 15 and native_zoom(20.0) == 14 and native_zoom(50.0) == 13
    assert native_zoom(1e-6) == MAX_ZOOM and native_zoom(1e9) == 0


def test_a_tile_deeper_than_the_imagery_is_refused(app, client) -> None:
    settings = app.config["SETTINGS"]
    assert client.get(url(2021, "natural", centre_tile(settings.grid, 15))).status_code == 200
    deeper = client.get(url(2021, "natural", centre_tile(settings.grid, 16)))
    assert deeper.status_code == 404 and "zooms 0-15" in deeper.get_data(as_text=True)
    assert not list((settings.data_dir / "tiles").glob("2021/natural/*/16"))
    assert map_config(client.get("/map").get_data(as_text=True))["maxNativeZoom"] == 15


def test_a_full_cache_evicts_the_least_recently_used_tiles(app, review_db, tmp_path) -> None:
    settings = app.config["SETTINGS"]
    with Store(review_db.database) as store:
        stretch = store.scenes.scenes(2021)[0]["stretch"]
    mosaic = open_year(settings.data_dir, settings.grid, 2021)
    centre = centre_tile(settings.grid, 15)
    tiles = [(15, centre.x + dx, centre.y) for dx in (-1, 0, 1)]
    sizes = [TileCache(tmp_path / "free").get(mosaic, "natural", *t, key="k", stretch=stretch)
             .stat().st_size for t in tiles]
    cache = TileCache(tmp_path / "capped", max_bytes=sum(sizes) - 1)
    get = lambda t: cache.get(mosaic, "natural", *t, key="k", stretch=stretch)  # noqa: E731
    first, second = get(tiles[0]), get(tiles[1])
    time.sleep(0.05)                          # file times tick in a few ms
    assert get(tiles[0]) == first             # a hit: the first tile is now the most recent
    time.sleep(0.05)
    third = get(tiles[2])                     # over the cap: the least recently used goes
    assert first.exists() and third.exists() and not second.exists()
    assert cache.size() == sizes[0] + sizes[2] <= 0.9 * cache.max_bytes
    assert get(tiles[1]).exists()             # rendered again on its next request
    assert cache.size() <= cache.max_bytes


def test_tile_cache_rejects_unsafe_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cache key"):
        TileCache(tmp_path).path_for(2021, "natural", "../up", 1, 0, 0)


# the map page and roles ------------------------------------------------------------------------
def test_map_page_offers_each_year_and_mode_with_its_tile_url(client) -> None:
    page = client.get("/map?year=2021&mode=false")
    html = page.get_data(as_text=True)
    assert 'value="2021/false"  selected' in html and 'value="2020/natural"' in html
    tiles = map_config(html)["tiles"]
    assert tiles["2021/false"].startswith("/tiles/2021/false/{z}/{x}/{y}.png?v=s")
    assert set(tiles) == {"2020/natural", "2020/false", "2021/natural", "2021/false"}
    cells_only = client.get("/map?year=2020&mode=none").get_data(as_text=True)
    assert 'value="2020/none" selected' in cells_only
    assert 'value="2021/natural"  selected' in client.get("/map?mode=sepia").get_data(as_text=True)


def test_map_opens_on_a_cell_and_the_card_links_there(client, review_db) -> None:
    cell = review_db.cell_ids[9]
    focus = map_config(client.get(f"/map?year=2021&cell={cell}").get_data(as_text=True))["focus"]
    assert focus["cell_id"] == cell and focus["zoom"] == 14
    assert focus["geometry"]["type"] == "Polygon" and -30 < focus["lat"] < -29
    assert "unknown cell 7" in client.get("/map?cell=7").get_data(as_text=True)
    card = client.get(f"/review?cell={cell}&year=2021").get_data(as_text=True)
    assert f'href="/map?year=2021&amp;cell={cell}"' in card


def test_roles_reviewer_reads_tiles_anonymous_does_not(app) -> None:
    add_account(app, "someone")
    tile = centre_tile(app.config["SETTINGS"].grid)
    anonymous = app.test_client().get(url(2021, "natural", tile))
    assert anonymous.status_code == 302 and "/login?next=" in anonymous.location
    reviewer = app.test_client()
    login(reviewer, "rita", "reviewer")
    assert reviewer.get(url(2021, "natural", tile)).status_code == 200


def test_a_corrupt_block_is_a_clear_404_and_nothing_is_cached(own_data: Path) -> None:
    for block in (own_data / "imagery" / "2021").glob("r*.tif"):
        block.write_bytes(block.read_bytes()[:4096])     # truncated
    app = create_app({"DATA_DIR": str(own_data), "SECRET_KEY": "t", "TESTING": True})
    tile = centre_tile(app.config["SETTINGS"].grid)
    response = app.test_client().get(url(2021, "natural", tile))
    assert response.status_code == 404
    assert "2021 mosaic: map tile" in response.get_data(as_text=True)
    assert not list((own_data / "tiles").rglob("*.png"))
