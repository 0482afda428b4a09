"""The territory from the real Natural Earth boundaries of South Africa, Lesotho and Eswatini."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis.territory import load_territory
from db.store import Store
from imagery.grid import CellGrid

BOUNDARIES = Path(__file__).parents[1] / ".." / "shared" / "data" / "boundaries"
NE10M = BOUNDARIES / "zaf_lso_swz_ne10m_mainland.geojson"

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not NE10M.exists(), reason=f"real boundaries not found at {NE10M}"),
]

#: Maseru (Lesotho), Johannesburg (South Africa), Mbabane (Eswatini), Gaborone (Botswana).
PLACES = {"maseru": (27.48, -29.31), "johannesburg": (28.05, -26.20),
          "mbabane": (31.14, -26.32), "gaborone": (25.91, -24.65)}


@pytest.fixture
def store(tmp_path):
    grid = CellGrid()
    with Store(tmp_path / "mw.db") as opened:
        cells = []
        for lon, lat in PLACES.values():
            cell = grid.cell_at_lonlat(lon, lat)
            clon, clat = grid.cell_centres_lonlat(np.asarray([cell]))
            cells.append((cell, *grid.row_col(cell), float(clon[0]), float(clat[0])))
        opened.cells.add_cells(cells)
        yield opened


def inside(store: Store) -> set[str]:
    grid = CellGrid()
    kept = {r[0] for r in store.db.execute("SELECT cell_id FROM territory_cells WHERE inside = 1")}
    return {name for name, (lon, lat) in PLACES.items() if grid.cell_at_lonlat(lon, lat) in kept}


def test_lesotho_is_a_hole_in_south_africa(store):
    done = load_territory(store, CellGrid(), NE10M, where="iso3=ZAF")
    assert done.name == "South Africa"
    assert 1.20e6 < done.area_km2 < 1.24e6            # South Africa: about 1.22 million km²
    assert inside(store) == {"johannesburg"}
    done = load_territory(store, CellGrid(), NE10M, where="iso3=ZAF,LSO")
    assert done.name == "South Africa + Lesotho" and done.cells_inside == 2
    assert inside(store) == {"johannesburg", "maseru"}
    done = load_territory(store, CellGrid(), NE10M, where="name=Eswatini")
    assert inside(store) == {"mbabane"}
    done = load_territory(store, CellGrid(), NE10M)   # every feature
    assert done.n_features == 3 and inside(store) == {"johannesburg", "maseru", "mbabane"}
