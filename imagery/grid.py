"""The fixed 1-km cell grid.

One grid per installation, in an equal-area CRS (EPSG:6933, EASE-Grid 2.0 global, by default), so
that a cell has the same id in every scene and every year and every cell covers the same area.
Cells are numbered by row (north to south) and column (west to east) from the grid origin;
``cell_id = row * ID_STRIDE + col``. Pixels are numbered the same way at ``pixel_size_m``: global
pixel ``(pr, pc)`` belongs to cell ``(pr // cell_px, pc // cell_px)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer
from shapely.geometry import Polygon

#: Multiplier that packs (row, col) into one integer id; larger than any column index.
ID_STRIDE = 100_000


@dataclass(frozen=True)
class CellRange:
    """A rectangle of cells: rows ``row0 <= r < row1`` and columns ``col0 <= c < col1``."""

    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def n_rows(self) -> int:
        return self.row1 - self.row0

    @property
    def n_cols(self) -> int:
        return self.col1 - self.col0

    @property
    def n_cells(self) -> int:
        return max(self.n_rows, 0) * max(self.n_cols, 0)


@dataclass(frozen=True)
class CellGrid:
    """A grid of square cells of ``cell_size_m`` in ``crs``, sampled at ``pixel_size_m``.

    The default origin is the upper-left corner of EASE-Grid 2.0 global, rounded out to whole km.
    """

    crs: str = "EPSG:6933"
    cell_size_m: float = 1000.0
    pixel_size_m: float = 10.0
    origin_x: float = -17_368_000.0
    origin_y: float = 7_315_000.0

    def __post_init__(self) -> None:
        if self.cell_size_m <= 0 or self.pixel_size_m <= 0:
            raise ValueError("cell and pixel sizes must be positive")
        ratio = self.cell_size_m / self.pixel_size_m
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(
                f"cell size {self.cell_size_m} m is not a whole number of "
                f"{self.pixel_size_m} m pixels"
            )
        crs = CRS.from_user_input(self.crs)
        if not crs.is_projected or crs.axis_info[0].unit_name not in ("metre", "meter"):
            raise ValueError(f"grid CRS {self.crs} must be projected in metres")

    @property
    def cell_px(self) -> int:
        """Pixels along one side of a cell."""
        return round(self.cell_size_m / self.pixel_size_m)

    @cached_property
    def _to_lonlat(self) -> Transformer:
        return Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)

    @cached_property
    def _from_lonlat(self) -> Transformer:
        return Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)

    # ids ---------------------------------------------------------------------------------------
    @staticmethod
    def cell_id(row: int | np.ndarray, col: int | np.ndarray) -> int | np.ndarray:
        """Pack a (row, col) pair (or arrays of them) into cell ids."""
        return row * ID_STRIDE + col

    @staticmethod
    def row_col(cell_id: int | np.ndarray) -> tuple[int | np.ndarray, int | np.ndarray]:
        """Unpack cell ids into (row, col)."""
        return cell_id // ID_STRIDE, cell_id % ID_STRIDE

    # geometry ----------------------------------------------------------------------------------
    def cell_bounds(self, cell_id: int) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of a cell in the grid CRS."""
        row, col = self.row_col(cell_id)
        minx = self.origin_x + col * self.cell_size_m
        maxy = self.origin_y - row * self.cell_size_m
        return (minx, maxy - self.cell_size_m, minx + self.cell_size_m, maxy)

    def cell_polygon_lonlat(self, cell_id: int, densify: int = 4) -> Polygon:
        """The cell's footprint in lon/lat (edges densified so curved edges stay close)."""
        minx, miny, maxx, maxy = self.cell_bounds(cell_id)
        t = np.linspace(0.0, 1.0, densify + 1)[:-1]
        xs = np.concatenate([minx + t * (maxx - minx), np.full_like(t, maxx),
                             maxx - t * (maxx - minx), np.full_like(t, minx)])
        ys = np.concatenate([np.full_like(t, miny), miny + t * (maxy - miny),
                             np.full_like(t, maxy), maxy - t * (maxy - miny)])
        lon, lat = self._to_lonlat.transform(xs, ys)
        return Polygon(zip(lon, lat, strict=True))

    def cell_centres(self, cell_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centres of cells in the grid CRS (x, y)."""
        rows, cols = self.row_col(np.asarray(cell_ids, dtype=np.int64))
        x = self.origin_x + (cols + 0.5) * self.cell_size_m
        y = self.origin_y - (rows + 0.5) * self.cell_size_m
        return x, y

    def cell_centres_lonlat(self, cell_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centres of cells as (lon, lat) arrays."""
        x, y = self.cell_centres(cell_ids)
        lon, lat = self._to_lonlat.transform(x, y)
        return np.asarray(lon), np.asarray(lat)

    def cell_at_lonlat(self, lon: float, lat: float) -> int:
        """The id of the cell that contains a lon/lat point."""
        x, y = self._from_lonlat.transform(lon, lat)
        col = math.floor((x - self.origin_x) / self.cell_size_m)
        row = math.floor((self.origin_y - y) / self.cell_size_m)
        return int(self.cell_id(row, col))

    def cells_covering(self, bounds: tuple[float, float, float, float]) -> CellRange:
        """The smallest range of cells that covers ``bounds`` (minx, miny, maxx, maxy, grid CRS)."""
        minx, miny, maxx, maxy = bounds
        eps = 1e-6
        col0 = math.floor((minx - self.origin_x) / self.cell_size_m + eps)
        col1 = math.ceil((maxx - self.origin_x) / self.cell_size_m - eps)
        row0 = math.floor((self.origin_y - maxy) / self.cell_size_m + eps)
        row1 = math.ceil((self.origin_y - miny) / self.cell_size_m - eps)
        return CellRange(row0, row1, col0, col1)

    def cell_ids_in(self, cells: CellRange) -> np.ndarray:
        """All cell ids of a range, row-major, as int64."""
        rows, cols = np.meshgrid(np.arange(cells.row0, cells.row1, dtype=np.int64),
                                 np.arange(cells.col0, cells.col1, dtype=np.int64), indexing="ij")
        return self.cell_id(rows, cols).ravel()

    # pixels ------------------------------------------------------------------------------------
    def pixel_transform(self, pixel_row: int, pixel_col: int) -> Affine:
        """Affine transform of a raster whose top-left pixel is global pixel (row, col)."""
        return Affine(self.pixel_size_m, 0.0, self.origin_x + pixel_col * self.pixel_size_m,
                      0.0, -self.pixel_size_m, self.origin_y - pixel_row * self.pixel_size_m)

    def cell_pixel_origin(self, cell_id: int) -> tuple[int, int]:
        """Global pixel (row, col) of a cell's top-left pixel."""
        row, col = self.row_col(cell_id)
        return int(row) * self.cell_px, int(col) * self.cell_px
