"""Reading vector layers (mine polygons, territories, protected areas) with pyogrio + shapely.

GeoJSON, GeoPackage and shapefiles all go through GDAL/OGR (pyogrio). Every failure is a
``VectorError`` whose message names the file and the problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import shapely
from pyproj import CRS, Transformer

POLYGONAL = ("Polygon", "MultiPolygon")


class VectorError(ValueError):
    """A vector file that cannot be used (missing, unreadable, empty, invalid geometries)."""


@dataclass(frozen=True)
class VectorLayer:
    """Geometries (shapely array, in ``crs``) and their attribute columns."""

    path: Path
    crs: str
    geometries: np.ndarray
    attributes: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.geometries)

    def column(self, name: str, default: Any = None) -> list[Any]:
        """Values of an attribute column, or ``default`` for every feature when it is absent."""
        values = self.attributes.get(name)
        return [default] * len(self) if values is None else list(values)


def read_polygons(
    path: str | Path,
    *,
    to_crs: str,
    columns: Sequence[str] | None = None,
    layer: str | int | None = None,
    repair: bool = False,
) -> VectorLayer:
    """Read the polygons of a vector file, reprojected to ``to_crs``.

    A file without a CRS is refused (except GeoJSON, which is WGS84 by definition). Invalid
    geometries are an error naming the first few features and the reason, unless ``repair`` is
    set (then ``shapely.make_valid`` mends them). Empty geometries are dropped; a file with no
    polygon left is an error.
    """
    path = Path(path)
    name = path.name
    if not path.exists():
        raise VectorError(f"{name}: no such file")
    if path.is_file() and path.stat().st_size == 0:
        raise VectorError(f"{name}: the file is empty (0 bytes)")
    try:
        meta, _, wkb, field_data = pyogrio.raw.read(path, layer=layer, columns=columns)
    except Exception as error:  # pyogrio raises several GDAL-derived types
        raise VectorError(f"{name}: not a readable vector file ({error})") from error
    crs = meta.get("crs") or ("EPSG:4326" if path.suffix.lower() in (".geojson", ".json") else None)
    if crs is None:
        raise VectorError(f"{name}: the layer has no CRS; add a .prj or save it with one")
    if wkb is None or len(wkb) == 0:
        raise VectorError(f"{name}: the layer has no features")
    geometries = shapely.from_wkb(wkb)
    keep = ~(shapely.is_missing(geometries) | shapely.is_empty(geometries))
    geometries = geometries[keep]
    attributes = {
        str(field): np.asarray(values)[keep]
        for field, values in zip(meta["fields"], field_data, strict=True)
    }
    kinds = set(shapely.get_type_id(geometries).tolist())
    if not geometries.size or not kinds <= {3, 6}:  # Polygon, MultiPolygon
        found = sorted({g.geom_type for g in geometries[:50]})
        raise VectorError(f"{name}: expected polygons, found {', '.join(found) or 'no geometry'}")
    geometries = _checked_validity(name, geometries, repair)
    geometries = _reprojected(geometries, crs, to_crs)
    return VectorLayer(path=path, crs=to_crs, geometries=geometries, attributes=attributes)


def _checked_validity(name: str, geometries: np.ndarray, repair: bool) -> np.ndarray:
    invalid = np.flatnonzero(~shapely.is_valid(geometries))
    if invalid.size == 0:
        return geometries
    if repair:
        mended = geometries.copy()
        mended[invalid] = shapely.make_valid(geometries[invalid])
        return mended
    reasons = "; ".join(
        f"feature {int(i)}: {shapely.is_valid_reason(geometries[i])}" for i in invalid[:3]
    )
    more = f" and {invalid.size - 3} more" if invalid.size > 3 else ""
    raise VectorError(f"{name}: {invalid.size} invalid geometries ({reasons}{more}); "
                      "fix them or pass --repair")


def _reprojected(geometries: np.ndarray, src: str, dst: str) -> np.ndarray:
    if CRS.from_user_input(src) == CRS.from_user_input(dst):
        return geometries
    transformer = Transformer.from_crs(src, dst, always_xy=True)
    return shapely.transform(
        geometries, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))
    )
