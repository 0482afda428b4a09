"""Protected areas: load them, and count the mine points and mining area inside each.

Names and designations come from the file's attributes when present (WDPA's ``NAME`` and
``DESIG_ENG``, or ``name``/``designation``, compared case-insensitively); a file without names
gets "unnamed area 1", "unnamed area 2", ... in file order, and the load says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from analysis.area import area_km2
from analysis.status import MinePoints
from analysis.territory import dissolved, find_field
from db.store import Store
from imagery.grid import CellGrid
from imagery.vectors import VectorError, read_polygons

NAME_FIELDS: tuple[str, ...] = ("name", "name_eng", "orig_name", "wdpa_name", "nom", "nombre")
DESIGNATION_FIELDS: tuple[str, ...] = ("desig_eng", "designation", "desig", "desig_type",
                                       "iucn_cat", "type")


@dataclass(frozen=True)
class ProtectedLoad:
    """What loading protected areas did."""

    count: int
    name_field: str | None
    designation_field: str | None
    unnamed: int
    area_km2: float
    notes: list[str] = field(default_factory=list)


def _pick(layer, wanted: str | None, candidates: tuple[str, ...]) -> str | None:
    if wanted:
        found = find_field(layer, wanted)
        if found is None:
            raise ValueError(f"{layer.path.name}: no attribute {wanted!r} "
                             f"(attributes: {', '.join(layer.attributes) or 'none'})")
        return found
    for name in candidates:
        found = find_field(layer, name)
        if found is not None:
            return found
    return None


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()


def load_protected_areas(store: Store, grid: CellGrid, path: str | Path, *,
                         name_field: str | None = None, designation_field: str | None = None,
                         repair: bool = False, layer: str | None = None) -> ProtectedLoad:
    """Read protected-area polygons (any CRS; reprojected to the grid's) and replace the stored
    ones in one transaction, once every area and the total are computed. Errors name the file
    and change nothing."""
    path = Path(path)
    layer = read_polygons(path, to_crs=grid.crs, repair=repair, layer=layer)
    name_col = _pick(layer, name_field, NAME_FIELDS)
    desig_col = _pick(layer, designation_field, DESIGNATION_FIELDS)
    names = [_text(v) for v in layer.column(name_col, None)]
    designations = [_text(v) or None for v in layer.column(desig_col, None)]
    rows, unnamed = [], 0
    for index, (geometry, name, designation) in enumerate(
            zip(layer.geometries, names, designations, strict=True), start=1):
        if not name:
            unnamed += 1
            name = f"unnamed area {index}"
        area = area_km2(geometry)
        if not np.isfinite(area) or area <= 0:
            raise VectorError(f"{path.name}: feature {index - 1} has no measurable area ({area})")
        rows.append({"name": name, "designation": designation, "source": str(path),
                     "geometry": shapely.to_wkb(geometry), "area_km2": area})
    total = area_km2(dissolved(path.name, layer.geometries))
    store.territory.replace_protected_areas(rows)
    notes = []
    if name_col is None:
        notes.append(f"{path.name} has no name attribute (looked for {', '.join(NAME_FIELDS)}): "
                     f"the areas are called \"unnamed area 1\" to \"unnamed area {len(rows)}\"")
    elif unnamed:
        notes.append(f"{unnamed} areas of {path.name} have no name: called \"unnamed area N\" "
                     "(N = their position in the file)")
    if desig_col is None:
        notes.append(f"{path.name} has no designation attribute: designations left empty")
    return ProtectedLoad(len(rows), name_col, desig_col, unnamed, total, notes)


@dataclass(frozen=True)
class ProtectedArea:
    id: int
    name: str
    designation: str | None
    area_km2: float
    geometry: BaseGeometry


def protected_areas(store: Store) -> list[ProtectedArea]:
    """The stored protected areas, geometries in the grid CRS."""
    return [ProtectedArea(row["id"], row["name"], row["designation"], row["area_km2"],
                          shapely.from_wkb(row["geometry"])) for row in store.territory.protected_areas()]


@dataclass(frozen=True)
class ProtectedHits:
    """Mine points and mining area inside protected areas, per area and in all of them."""

    rows: list[dict[str, Any]]   # one per area: name, designation, area_km2, points, mining_km2
    points_inside: int           # mine points inside any protected area (counted once)
    mining_km2_inside: float     # mining area inside the union of the protected areas
    mining_km2_total: float

    @property
    def share(self) -> float | None:
        """Share of the mining area that lies inside protected areas."""
        return self.mining_km2_inside / self.mining_km2_total if self.mining_km2_total else None


def protected_hits(areas: list[ProtectedArea], points: MinePoints,
                   mining: BaseGeometry) -> ProtectedHits:
    """Count mine points inside each area (a point on the edge counts) and intersect the
    dissolved mining area with each (areas may overlap; the totals count overlaps once)."""
    rows, any_inside = [], np.zeros(len(points), dtype=bool)
    shapely.prepare(mining)
    for area in areas:
        shapely.prepare(area.geometry)
        inside = shapely.intersects_xy(area.geometry, points.x, points.y)
        any_inside |= inside
        rows.append({"id": area.id, "name": area.name, "designation": area.designation,
                     "area_km2": area.area_km2, "points": int(inside.sum()),
                     "mining_km2": area_km2(shapely.intersection(mining, area.geometry))})
    union = shapely.union_all([a.geometry for a in areas]) if areas else None
    inside_km2 = area_km2(shapely.intersection(mining, union)) if union is not None else 0.0
    return ProtectedHits(rows, int(any_inside.sum()), inside_km2, area_km2(mining))
