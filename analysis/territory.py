"""The territory: a polygon that clips queues, reports, maps and exports.

A cell belongs to the territory when its CENTRE lies inside (or on the edge of) the territory
polygon. Loading a territory dissolves the chosen features (e.g. South Africa + Lesotho) into one
geometry in the grid CRS, stores it, and classifies every cell; cells ingested later are
classified by ``refresh_territory_cells`` (the report, map and export call it first).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from analysis import AnalysisError
from analysis.area import area_km2
from db.store import Store
from imagery.grid import CellGrid
from imagery.vectors import VectorError, VectorLayer, polygonal_part, read_polygons, where_text


@dataclass(frozen=True)
class TerritoryLoad:
    """What loading a territory did."""

    name: str
    source: str
    selection: str
    n_features: int
    area_km2: float
    cells_inside: int
    cells_outside: int


def parse_selection(where: str) -> tuple[str, list[str]]:
    """``"iso3=ZAF,LSO"`` -> ("iso3", ["ZAF", "LSO"])."""
    field, sep, values = where.partition("=")
    wanted = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not field.strip() or not wanted:
        raise AnalysisError(f"feature filter {where!r} must look like FIELD=VALUE[,VALUE...], "
                            "e.g. iso3=ZAF,LSO")
    return field.strip(), wanted


def find_field(layer: VectorLayer, name: str) -> str | None:
    """The layer's attribute called ``name``, compared case-insensitively."""
    for field in layer.attributes:
        if field.casefold() == name.casefold():
            return field
    return None


def select_features(layer: VectorLayer, where: str | None) -> tuple[np.ndarray, list[str]]:
    """Indexes of the features matching ``FIELD=V1,V2`` (case-insensitive), and their labels.

    Every listed value must match at least one feature, so a typo is an error, not a silently
    smaller territory.
    """
    name_field = find_field(layer, "name")
    names = [str(v) for v in layer.column(name_field)] if name_field else []
    if where is None:
        return np.arange(len(layer)), names
    field, wanted = parse_selection(where)
    actual = find_field(layer, field)
    if actual is None:
        raise AnalysisError(f"{layer.path.name}: no attribute {field!r} to select features by "
                            f"(attributes: {', '.join(layer.attributes) or 'none'})")
    values = [str(v).strip() for v in layer.column(actual)]
    folded = [v.casefold() for v in values]
    missing = [w for w in wanted if w.casefold() not in folded]
    if missing:
        raise AnalysisError(f"{layer.path.name}: no feature with {actual} = {', '.join(missing)} "
                            f"(values: {', '.join(sorted(set(values))[:20])})")
    keep = np.flatnonzero(np.isin(folded, [w.casefold() for w in wanted]))
    return keep, [names[i] for i in keep] if names else [values[i] for i in keep]


def cells_inside(grid: CellGrid, geometry: BaseGeometry, cell_ids: np.ndarray) -> np.ndarray:
    """Whether each cell's centre lies inside (or on the edge of) ``geometry`` (grid CRS)."""
    ids = np.asarray(cell_ids, dtype=np.int64)
    if ids.size == 0:
        return np.zeros(0, dtype=bool)
    x, y = grid.cell_centres(ids)
    shapely.prepare(geometry)
    return shapely.intersects_xy(geometry, x, y)


def load_territory(store: Store, grid: CellGrid, path: str | Path, *, where: str | None = None,
                   name: str | None = None, repair: bool = False,
                   layer: str | None = None) -> TerritoryLoad:
    """Read a territory file (any CRS; reprojected to the grid's), keep the features selected by
    ``where`` (``FIELD=V1,V2``), dissolve them, store the territory and classify every cell.

    Replaces the territory loaded before, in one transaction. Errors (missing, empty or invalid
    file, no matching feature, no ingested cell inside while there is imagery) name the file and
    change nothing.
    """
    path = Path(path)
    polygons = read_polygons(path, to_crs=grid.crs, repair=repair, layer=layer)
    keep, labels = select_features(polygons, where)
    geometry = dissolved(path.name, polygons.geometries[keep])
    area = area_km2(geometry)
    if geometry.is_empty or not np.isfinite(area) or area <= 0:
        raise VectorError(f"{path.name}: the territory has no area")
    ids = np.asarray(store.cells.cell_ids(), dtype=np.int64)
    inside = cells_inside(grid, geometry, ids)
    if ids.size and not inside.any():
        raise VectorError(f"{path.name}: no ingested cell lies inside the territory "
                          f"({where_text(grid, polygons.geometries[keep], ids)})")
    label = name or (" + ".join(dict.fromkeys(labels)) if labels and len(labels) <= 6 else path.stem)
    record = {"name": label, "source": str(path), "selection": where or "", "crs": grid.crs,
              "geometry": shapely.to_wkb(geometry), "area_km2": area, "n_features": int(len(keep))}
    store.territory.replace_territory(record, zip(ids.tolist(), inside.tolist(), strict=True))
    return TerritoryLoad(label, str(path), where or "", int(len(keep)), area,
                         int(inside.sum()), int(ids.size - inside.sum()))


def dissolved(name: str, geometries: np.ndarray) -> BaseGeometry:
    """The union of valid polygons, made valid (polygonal parts only) when the union is not;
    VectorError naming the file when GEOS cannot dissolve them."""
    try:
        geometry = shapely.union_all(geometries)
        return geometry if shapely.is_valid(geometry) else polygonal_part(shapely.make_valid(geometry))
    except shapely.errors.GEOSException as error:
        raise VectorError(f"{name}: the polygons cannot be dissolved ({error})") from error


def territory_geometry(store: Store) -> BaseGeometry | None:
    """The loaded territory in the grid CRS, or None."""
    row = store.territory.territory()
    return None if row is None else shapely.from_wkb(row["geometry"])


def refresh_territory_cells(store: Store, grid: CellGrid) -> int:
    """Classify cells added since the territory was loaded; returns how many were classified."""
    territory = territory_geometry(store)
    if territory is None:
        return 0
    ids = np.asarray(store.territory.unclassified_cells(), dtype=np.int64)
    if ids.size:
        inside = cells_inside(grid, territory, ids)
        store.territory.classify_cells(zip(ids.tolist(), inside.tolist(), strict=True))
    return int(ids.size)
