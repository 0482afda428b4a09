"""Thumbnails of cards (review/thumbnails.py; the drawing is imagery/thumbnails.py): rendered once
from the store, then served from the cache; their cache keys one at a time and several at once."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from db.store import Store
from imagery.store import open_year
from imagery.thumbnails import render_view
from pipeline.settings import load_settings
from review.errors import NotFoundError, ReviewError
from review.thumbnails import thumbnail_path, thumbnail_version, thumbnail_versions

pytest.register_assert_rewrite("fixtures_app")

pytest_plugins = ["fixtures_app"]


@pytest.fixture
def store(review_db):
    with Store(review_db.database) as s:
        yield s


def test_thumbnail_rendered_once_from_the_store_then_served_from_cache(
        store, review_db, tmp_path) -> None:
    data_dir = tmp_path / "own"
    shutil.copytree(review_db.imagery, data_dir / "imagery")
    settings = load_settings({"DATA_DIR": str(data_dir), "THUMBNAIL_DIR": str(tmp_path / "t")})
    cell = review_db.cell_ids[9]
    path, key = thumbnail_path(store, settings, cell, 2021, "rgb", "cell")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(path).size == (400, 400)
    context, _ = thumbnail_path(store, settings, cell, 2021, "false", "context")
    assert Image.open(context).size == (300, 300)
    # the picture shows the stored pixels: its mean colour follows the mosaic's cell
    mosaic = open_year(data_dir, settings.grid, 2021)
    r, c = settings.grid.cell_pixel_origin(cell)
    pixels, _ = mosaic.read(r, c, settings.grid.cell_px, settings.grid.cell_px, ["B4", "B3", "B2"])
    stretch = store.scenes.scenes(2021)[0]["stretch"]
    expected = render_view(pixels, ("B4", "B3", "B2"), "rgb", stretch, size=400)
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(expected))
    shutil.rmtree(data_dir / "imagery" / "2021")
    again, again_key = thumbnail_path(store, settings, cell, 2021, "rgb", "cell")
    assert (again, again_key) == (path, key)  # a hit does not touch the store
    with pytest.raises(NotFoundError, match="cannot be read"):
        thumbnail_path(store, settings, review_db.cell_ids[10], 2021, "rgb", "cell")
    with pytest.raises(NotFoundError, match="no scene of 1999"):
        thumbnail_path(store, settings, cell, 1999, "rgb", "cell")
    with pytest.raises(ReviewError):
        thumbnail_path(store, settings, cell, 2021, "ultraviolet", "cell")


def test_thumbnail_versions_match_one_at_a_time(store, review_db) -> None:
    pairs = [(review_db.cell_ids[0], 2021), (review_db.cell_ids[5], 2021), (1, 2021),
             (review_db.cell_ids[0], 1999)]
    versions = thumbnail_versions(store, pairs)
    assert versions == {pair: thumbnail_version(store, *pair) for pair in pairs}
    assert versions[pairs[0]] is not None and versions[(1, 2021)] is None
