"""The README's first five minutes as a test (issue 16): in a fresh working folder the real CLI
builds a small demo into the default, relative data folder (`run.py demo --if-empty`, as `make
run` does), `run.py serve` serves it with waitress, and Debian's chromium finds every picture of
the review card, the triage grid and the map decoded, and an export download arriving; the
server's log holds no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, LAUNCH_ARGS, MARKS, screenshots_module

pytestmark = MARKS

RUN_PY = Path(__file__).resolve().parents[1] / "run.py"
#: The smallest demo that still seeds both classes and validates the first model, in few epochs.
SIZE_KM, EPOCHS = 8, 2
START_S = 60
#: How every loaded <img> under a selector decoded: [src, naturalWidth] each, once all settled.
DECODED = """async (selector) => {
  const imgs = [...document.querySelectorAll(selector)];
  await Promise.all(imgs.map((img) => img.complete ? null : new Promise((done) => {
    img.addEventListener("load", done); img.addEventListener("error", done); })));
  return imgs.map((img) => [img.getAttribute("src"), img.naturalWidth]);
}"""


def cli_environment() -> dict[str, str]:
    """This environment without any MINEWATCH_* setting (so the data folder is ./instance)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINEWATCH_")}
    return {**env, "MINEWATCH_TRAIN_EPOCHS": str(EPOCHS)}


def assert_decoded(page, selector: str) -> None:
    images = page.evaluate(DECODED, selector)
    assert images and all(width > 0 for _, width in images), images


def check_pages(page, url: str) -> None:
    """The review card, the triage grid, the map tiles and an export, as a user finds them."""
    page.goto(url + "/review")
    page.wait_for_selector("#card-form")
    assert_decoded(page, "#card img")
    page.goto(url + "/triage")
    page.wait_for_selector("#grid-form")
    assert_decoded(page, ".triage-grid img:not([loading=lazy])")
    page.goto(url + "/map")
    page.wait_for_selector("#map[data-tiles]:not([data-tiles='0'])")
    assert_decoded(page, ".leaflet-tile-pane img.leaflet-tile-loaded")
    page.goto(url + "/exports")
    page.select_option(".export-form select[name=format]", label="csv (export)")
    page.click(".export-form button[type=submit]")
    link = page.wait_for_selector("a[href$='/download']", timeout=60_000)
    with page.expect_download() as download:
        link.click()
    data = Path(download.value.path()).read_bytes()
    assert download.value.suggested_filename.endswith(".csv") and data.startswith(b"cell_id,")
    assert len(data.splitlines()) > 1


def test_make_run_in_a_fresh_folder_shows_every_picture(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    env = cli_environment()
    demo = subprocess.run([sys.executable, str(RUN_PY), "demo", "--size-km", str(SIZE_KM),
                           "--if-empty"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert (tmp_path / "instance" / "minewatch.db").exists()
    shots = screenshots_module()
    port, log = shots.free_port(), tmp_path / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, str(RUN_PY), "serve", "--port", str(port)],
                                  cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            shots.wait_until_up(url + "/login", server, START_S)
        except (RuntimeError, TimeoutError) as error:
            raise AssertionError(f"{error}:\n{log.read_text()}") from error
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            try:
                check_pages(browser.new_page(viewport={"width": 1360, "height": 900}), url)
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(10)
    served = log.read_text()
    assert "MineWatch on http://127.0.0.1" in served and "Traceback" not in served, served
