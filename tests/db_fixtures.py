"""Shared by the tests of db/: a store of ten cells (fixture ``store``), a model, a scene."""

from __future__ import annotations

import pytest

from db.store import Store


@pytest.fixture
def store(tmp_path):
    """A fresh store holding cells 1..10 (row 0, columns 1..10)."""
    with Store(tmp_path / "mw.db") as opened:
        opened.cells.add_cells([(c, 0, c, 29.0 + c / 100, -25.9) for c in range(1, 11)])
        yield opened


def add_model(store: Store, version: str = "m0001", threshold: float = 0.5, activate=True):
    """Register (and by default activate) a model of three bands."""
    store.models.add_model({"version": version, "parent": None, "path": f"/models/{version}.keras",
                            "bands": ["B2", "B3", "B4"], "threshold": threshold,
                            "metrics": {"ap": 0.9}, "training": {"n": 4}}, activate=activate)


def add_scene(store: Store) -> int:
    """Register the one 2020 scene of cells (0, 0)..(0, 10); returns its id."""
    return store.scenes.add_scene({"year": 2020, "name": "s.tif", "paths": ["/data/s.tif"],
                                   "bands": ["B2", "B3", "B4"], "crs": "EPSG:32735", "row0": 0,
                                   "row1": 1, "col0": 0, "col1": 11, "stretch": {"B4": [0, 3000]},
                                   "synthetic": 1})
