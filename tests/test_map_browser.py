"""The map page in a real browser (Debian's chromium through Playwright): Leaflet from static/,
no request leaves the machine, the year's imagery loads as tiles from the app, cells are drawn,
and clicking one opens its review card."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.territory import load_territory
from imagery.grid import CellGrid
from labeller import create_app
from tests.browser import CHROMIUM, LAUNCH_ARGS, MARKS, served
from tests.test_analysis_status import A, block_polygon, build_db, write_polygons

pytest.register_assert_rewrite("tests.fixtures_app")
from tests.fixtures_app import COL0, N_COLS, N_ROWS, ROW0  # noqa: E402

pytestmark = MARKS
pytest_plugins = ["tests.fixtures_app"]


@pytest.fixture
def server(tmp_path):
    with build_db(tmp_path / "minewatch.db") as store:
        load_territory(store, CellGrid(), write_polygons(
            tmp_path / "t.geojson", [block_polygon(1, 10, 0, 10)], "EPSG:4326", driver="GeoJSON"))
    with served(create_app({"DATA_DIR": str(tmp_path), "SECRET_KEY": "test"})) as url:
        yield url


def test_click_a_cell_opens_the_review_card(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    lon, lat = CellGrid().cell_centres_lonlat(np.asarray([A]))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            remote = []
            page.on("request", lambda r: remote.append(r.url)
                    if not r.url.startswith(server) and not r.url.startswith("data:") else None)
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text)
                    if "Content Security Policy" in m.text else None)
            page.goto(server + "/map?year=2021&status=all")
            page.wait_for_selector("#map[data-loaded='90']")  # no eval: the CSP forbids it
            assert "90 cells" in page.inner_text("#map-count")
            assert "confirmed" in page.inner_text("#map-legend")
            # the status filter reloads the cells
            page.select_option("#map-status", "mines")
            page.wait_for_selector("#map[data-loaded='3']")
            page.wait_for_timeout(300)              # no debounced reload still on its way
            page.wait_for_load_state("networkidle")
            point = page.evaluate(f"(() => {{ const p = minewatchMap.latLngToContainerPoint("
                                  f"[{lat[0]}, {lon[0]}]); return [p.x, p.y]; }})()")
            box = page.locator("#map").bounding_box()
            with page.expect_request(lambda r: "/review?" in r.url) as request:
                page.mouse.click(box["x"] + point[0], box["y"] + point[1])
            assert request.value.url == f"{server}/review?cell={A}&year=2021"
            assert remote == [], remote          # offline: no tiles, no CDN
            assert violations == [], violations  # Leaflet works under the app's CSP
        finally:
            browser.close()


@pytest.fixture
def imagery_server(app_config):
    """The app over fixtures_app's database and its real imagery store (2020 and 2021)."""
    with served(create_app(app_config)) as url:
        yield url


def test_imagery_tiles_load_from_the_app_under_the_cells(imagery_server):
    sync_api = pytest.importorskip("playwright.sync_api")
    server = imagery_server
    cell = CellGrid().cell_id(ROW0 + N_ROWS // 2, COL0 + N_COLS // 2)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            remote: list[str] = []
            tiles: list[tuple[str, int, str]] = []
            page.on("request", lambda r: remote.append(r.url)
                    if not r.url.startswith(server) and not r.url.startswith("data:") else None)
            page.on("response", lambda r: tiles.append(
                (r.url, r.status, r.headers.get("content-type", ""))) if "/tiles/" in r.url
                else None)
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text)
                    if "Content Security Policy" in m.text else None)
            page.goto(f"{server}/map?year=2021&cell={cell}")
            page.wait_for_selector("#map[data-imagery='2021/natural']")
            page.wait_for_selector("#map[data-tiles]:not([data-tiles='0'])")
            page.wait_for_selector("#map[data-loaded]:not([data-loaded='0'])")
            assert page.locator(".leaflet-tile-pane img.leaflet-tile-loaded").count() > 0
            natural = [t for t in tiles if "/tiles/2021/natural/14/" in t[0]]
            assert natural and all(status == 200 and kind == "image/png"
                                   for _, status, kind in natural), tiles
            # the one switch changes the year's colour mode: new tiles, and the cells reload
            page.select_option("#map-layer", "2021/false")
            page.wait_for_selector("#map[data-imagery='2021/false']")
            page.wait_for_selector("#map[data-tiles]:not([data-tiles='0'])")
            page.wait_for_selector("#map[data-loaded]:not([data-loaded='0'])")
            assert any("/tiles/2021/false/14/" in t[0] and t[1] == 200 for t in tiles), tiles
            page.select_option("#map-layer", "2020/none")
            page.wait_for_selector("#map[data-imagery='none']")
            assert page.locator(".leaflet-tile-pane img").count() == 0
            assert remote == [], remote          # offline: every tile comes from the app
            assert violations == [], violations
        finally:
            browser.close()
