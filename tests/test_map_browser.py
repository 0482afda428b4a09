"""The map page in a real browser (Debian's chromium through Playwright): Leaflet from static/,
no request leaves the machine, cells are drawn, and clicking one opens its review card."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.territory import load_territory
from imagery.grid import CellGrid
from labeller import create_app
from tests.browser import CHROMIUM, LAUNCH_ARGS, MARKS, served
from tests.test_analysis_status import A, block_polygon, build_db, write_polygons

pytestmark = MARKS


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
