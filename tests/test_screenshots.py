"""docs/screenshots.py in a quick form: the tests' small installation (real scenes in the imagery
store, scores, a database) served by `run.py serve` and photographed in Debian's chromium; three
small palette PNGs come out. (The full script only adds `run.py demo` in front, which
tests/test_synthetic.py covers.)"""

from __future__ import annotations

import pytest
from PIL import Image

from tests.browser import MARKS, screenshots_module

pytest.register_assert_rewrite("tests.fixtures_app")
pytestmark = MARKS
pytest_plugins = ["tests.fixtures_app"]


def test_screenshots_of_a_served_installation(tmp_path, review_db):
    pytest.importorskip("playwright.sync_api")
    shots = screenshots_module()
    with shots.serving(review_db.database.parent) as url:
        written = shots.capture(url, tmp_path / "img")
    assert [png.name for png in written] == ["review.png", "triage.png", "map.png"]
    for png in written:
        with Image.open(png) as image:
            assert image.width == shots.VIEWPORT["width"] and image.height >= 500
            assert image.mode == "P"  # shrunk to a palette
        assert png.stat().st_size < 400_000
