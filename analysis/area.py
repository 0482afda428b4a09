"""Mining area: a buffer around each mine point, dissolved, measured in an equal-area CRS.

The grid CRS (EPSG:6933 by default) is equal-area, so an area measured in it is a true area on the
ground; a buffer of ``buffer_m`` metres drawn in it has the area of a true circle of that radius
(its shape is stretched by the projection's local scale, a few percent in southern Africa).
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

#: Segments per quarter circle of a buffer: the polygon's area is 0.16 % short of the circle's.
QUAD_SEGS = 16


def mining_area(x: np.ndarray, y: np.ndarray, buffer_m: float) -> BaseGeometry:
    """The union of ``buffer_m`` buffers around points (x, y) in a metric CRS (empty: no points)."""
    if buffer_m <= 0:
        raise ValueError(f"the buffer must be positive, got {buffer_m} m")
    points = shapely.points(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    if points.size == 0:
        return shapely.MultiPolygon()
    return shapely.union_all(shapely.buffer(points, buffer_m, quad_segs=QUAD_SEGS))


def area_km2(geometry: BaseGeometry | None) -> float:
    """Area of a geometry in a metric equal-area CRS, in km²."""
    return 0.0 if geometry is None or geometry.is_empty else float(geometry.area) / 1e6
