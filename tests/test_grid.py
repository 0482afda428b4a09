"""The fixed cell grid: ids, footprints, equal area, pixel alignment."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Geod

from imagery.grid import CellGrid


def test_ids_round_trip_and_lookup(grid):
    cell = grid.cell_at_lonlat(29.2, -25.9)
    row, col = grid.row_col(cell)
    assert grid.cell_id(row, col) == cell
    lon, lat = grid.cell_centres_lonlat(np.array([cell]))
    assert abs(lon[0] - 29.2) < 0.011 and abs(lat[0] + 25.9) < 0.01
    assert grid.cell_at_lonlat(float(lon[0]), float(lat[0])) == cell


def test_cells_cover_one_square_kilometre_on_the_ground(grid):
    cell = grid.cell_at_lonlat(29.2, -25.9)
    footprint = grid.cell_polygon_lonlat(cell, densify=8)
    area, _ = Geod(ellps="WGS84").geometry_area_perimeter(footprint)
    assert abs(abs(area) - 1e6) < 1e4  # equal-area grid: 1 km² within 1 %


def test_ranges_and_pixel_transform(grid):
    bounds = grid.cell_bounds(grid.cell_id(10, 20))
    cells = grid.cells_covering(bounds)
    assert (cells.row0, cells.row1, cells.col0, cells.col1) == (10, 11, 20, 21)
    wider = grid.cells_covering((bounds[0] + 1, bounds[1] - 1500, bounds[2] + 10, bounds[3]))
    assert (wider.n_rows, wider.n_cols) == (3, 2)
    assert list(grid.cell_ids_in(wider))[:2] == [grid.cell_id(10, 20), grid.cell_id(10, 21)]
    pr, pc = grid.cell_pixel_origin(grid.cell_id(10, 20))
    transform = grid.pixel_transform(pr, pc)
    assert (transform.c, transform.f) == (bounds[0], bounds[3])


def test_grid_validation():
    with pytest.raises(ValueError, match="whole number"):
        CellGrid(cell_size_m=1000, pixel_size_m=30)
    with pytest.raises(ValueError, match="projected"):
        CellGrid(crs="EPSG:4326")
    assert CellGrid(pixel_size_m=50).cell_px == 20
