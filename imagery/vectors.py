"""Reading vector layers (mine polygons, territories, protected areas) with pyogrio + shapely.

GeoJSON, GeoPackage, shapefiles, KML and zipped files all go through GDAL/OGR (pyogrio). Every
failure is a ``VectorError`` whose message names the file and the problem (and the feature, by
its 0-based position in the layer, where one is to blame); GDAL's and pyogrio's own warnings,
which carry full paths, stay off the screen.

Geometries are checked twice: in the file's CRS (readable, finite, in range for a geographic
CRS, valid) and again after reprojection to the grid CRS (finite and valid there too: a polygon
valid in degrees can self-intersect once projected). ``repair`` mends invalid geometries with
``shapely.make_valid`` and keeps only their polygonal parts, so a repair never turns a polygon
into a line or a point; a feature with no polygonal part left is refused.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import shapely
from pyogrio.util import vsi_path
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError, ProjError

from imagery.grid import CellGrid
from imagery.validate import quiet_gdal

POLYGONAL = ("Polygon", "MultiPolygon")
#: shapely type ids of Polygon and MultiPolygon.
POLYGONAL_IDS = (3, 6)
#: shapely type ids of Point, Polygon, MultiPoint and MultiPolygon (what ``read_features`` takes).
POINT_OR_POLYGON_IDS = (0, 3, 4, 6)
#: GDAL's CSV open options for a table of lon/lat columns (e.g. an export's ``lon``, ``lat``).
CSV_LONLAT = {"X_POSSIBLE_NAMES": "lon,longitude", "Y_POSSIBLE_NAMES": "lat,latitude"}
#: Feature problems listed in one error before "and N more".
SHOWN = 3


class VectorError(ValueError):
    """A vector file that cannot be used (missing, unreadable, empty, invalid geometries)."""


@dataclass(frozen=True)
class VectorLayer:
    """Geometries (shapely array, in ``crs``) and their attribute columns."""

    path: Path
    crs: str
    geometries: np.ndarray
    attributes: dict[str, np.ndarray]
    #: Each feature's 0-based position in the layer (features without a geometry are dropped).
    positions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.geometries)

    def column(self, name: str, default: Any = None) -> list[Any]:
        """Values of an attribute column, or ``default`` for every feature when it is absent."""
        values = self.attributes.get(name)
        return [default] * len(self) if values is None else list(values)


@contextmanager
def _quiet() -> Iterator[None]:
    """quiet_gdal plus pyogrio's warnings and log lines (they name full paths)."""
    logger = logging.getLogger("pyogrio")
    level = logger.level
    with quiet_gdal(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logger.setLevel(logging.CRITICAL + 1)
        try:
            yield
        finally:
            logger.setLevel(level)


@contextmanager
def gdal_source(path: Path) -> Iterator[str]:
    """A name GDAL opens ``path`` by, whatever characters its file name holds.

    pyogrio reads ``!`` as an archive separator and ``.zip`` as an archive; a zip is handed to
    GDAL as ``/vsizip/`` directly, and any other path pyogrio would rewrite is opened through a
    temporary link (with its same-stem sidecars, e.g. a shapefile's .shx and .dbf).
    """
    text = str(path.resolve())
    if path.suffix.lower() == ".zip":
        yield f"/vsizip/{text}"
        return
    if vsi_path(text) == text:
        yield text
        return
    with tempfile.TemporaryDirectory(prefix="minewatch-vector-") as folder:
        for sibling in path.parent.glob("*"):
            if sibling.stem == path.stem or sibling.name.startswith(path.name):
                os.symlink(sibling.resolve(), Path(folder) / ("layer" + sibling.name[len(path.stem):]))
        yield str(Path(folder) / ("layer" + path.suffix))


def _short(error: BaseException, *texts: str) -> str:
    """The first line of a library error with full paths taken out."""
    message = (str(error).splitlines() or [type(error).__name__])[0]
    for text in sorted(texts, key=len, reverse=True):
        message = message.replace(text, "the file")
    return message


def _listed(indices: Sequence[int], reason: Any) -> str:
    """ "feature 3: why; feature 7: why and 2 more" for the first few of ``indices``."""
    shown = "; ".join(f"feature {int(i)}: {reason(int(i))}" for i in indices[:SHOWN])
    more = f" and {len(indices) - SHOWN} more" if len(indices) > SHOWN else ""
    return shown + more


def _pick_layer(name: str, source: str, layer: str | None) -> str | None:
    """The layer to read: ``layer`` (checked), the only one, or an error listing them."""
    try:
        layers = [str(row[0]) for row in pyogrio.list_layers(source)]
    except Exception as error:  # pyogrio raises several GDAL-derived types
        raise VectorError(f"{name}: not a readable vector file "
                          f"({_short(error, source)})") from error
    if layer is not None:
        if layer not in layers:
            raise VectorError(f"{name}: no layer {layer!r} (layers: {', '.join(layers) or 'none'})")
        return layer
    if len(layers) > 1:
        raise VectorError(f"{name} has {len(layers)} layers ({', '.join(layers)}): "
                          "choose one with --layer NAME")
    return None


def _read(path: Path, layer: str | None, columns: Sequence[str] | None,
          open_options: dict[str, str] | None = None) -> tuple[dict[str, Any], Any, list[Any]]:
    """(meta, wkb, field data) of the layer, read quietly; VectorError when unreadable."""
    with _quiet(), gdal_source(path) as source:
        chosen = _pick_layer(path.name, source, layer)
        try:
            meta, _, wkb, field_data = pyogrio.raw.read(source, layer=chosen, columns=columns,
                                                        **(open_options or {}))
        except Exception as error:  # pyogrio raises several GDAL-derived types
            raise VectorError(f"{path.name}: not a readable vector file "
                              f"({_short(error, source, str(path))})") from error
    return meta, wkb, field_data


def _geometries(name: str, wkb: Any, repair: bool) -> np.ndarray:
    """shapely geometries from WKB; an unreadable one (e.g. an unclosed ring) is an error
    naming it, or, with ``repair``, mended the way shapely fixes WKB."""
    try:
        return shapely.from_wkb(wkb, on_invalid="fix" if repair else "raise")
    except shapely.errors.GEOSException:
        pass
    bad = []
    for i, item in enumerate(wkb):
        try:
            shapely.from_wkb(item)
        except shapely.errors.GEOSException as error:
            bad.append((i, _short(error)))
    reasons = dict(bad)
    raise VectorError(f"{name}: {len(bad)} unreadable geometries "
                      f"({_listed([i for i, _ in bad], reasons.get)}); fix them or pass --repair")


def _check_finite(name: str, geometries: np.ndarray, where: str) -> None:
    """Refuse coordinates that are NaN or infinite (``where``: in the file, after projection)."""
    bad = [i for i, g in enumerate(geometries)
           if not np.isfinite(shapely.get_coordinates(g)).all()]
    if bad:
        raise VectorError(f"{name}: {len(bad)} geometries with non-finite coordinates {where} "
                          f"({_listed(bad, lambda i: 'NaN or infinite coordinate')})")


def _check_range(name: str, geometries: np.ndarray, crs: CRS) -> None:
    """In a geographic CRS, longitudes must lie in -180..180 and latitudes in -90..90."""
    if not crs.is_geographic:
        return
    bad = []
    for i, g in enumerate(geometries):
        xy = shapely.get_coordinates(g)
        if xy.size and (np.abs(xy[:, 0]).max() > 180 or np.abs(xy[:, 1]).max() > 90):
            bad.append(i)
    if bad:
        raise VectorError(f"{name}: {len(bad)} geometries outside longitude -180..180 / latitude "
                          f"-90..90 ({_listed(bad, lambda i: _bounds_text(geometries[i]))}); "
                          "is the file's CRS right?")


def _bounds_text(geometry: Any) -> str:
    x0, y0, x1, y1 = shapely.bounds(geometry)
    return f"spans x {x0:g}..{x1:g}, y {y0:g}..{y1:g}"


def polygonal_part(geometry: Any) -> Any:
    """The Polygon / MultiPolygon parts of a geometry (e.g. of make_valid's collection), or an
    empty polygon when it has none."""
    parts = [p for p in shapely.get_parts(geometry) if p.geom_type in POLYGONAL]
    polygons = [q for p in parts for q in shapely.get_parts(p)]
    if not polygons:
        return shapely.Polygon()
    return polygons[0] if len(polygons) == 1 else shapely.MultiPolygon(polygons)


def _checked_validity(name: str, geometries: np.ndarray, repair: bool, where: str = "") -> np.ndarray:
    """Valid geometries: invalid ones are an error, or with ``repair`` mended to their polygonal
    part (a feature that mends to nothing polygonal is an error)."""
    try:
        invalid = np.flatnonzero(~shapely.is_valid(geometries))
    except shapely.errors.GEOSException as error:
        raise VectorError(f"{name}: geometries cannot be checked{where} ({_short(error)})") from error
    if invalid.size == 0:
        return geometries
    if not repair:
        raise VectorError(f"{name}: {invalid.size} invalid geometries{where} ("
                          f"{_listed(invalid, lambda i: shapely.is_valid_reason(geometries[i]))}); "
                          "fix them or pass --repair")
    mended, lost = geometries.copy(), []
    for i in invalid.tolist():
        try:
            mended[i] = polygonal_part(shapely.make_valid(geometries[i]))
        except shapely.errors.GEOSException:
            mended[i] = shapely.Polygon()
        if mended[i].is_empty or mended[i].area <= 0:
            lost.append(i)
    if lost:
        raise VectorError(f"{name}: {len(lost)} geometries{where} have no area left once repaired "
                          f"({_listed(lost, lambda i: 'repairs to a line, point or nothing')}); "
                          "fix or remove them")
    return mended


def _reprojected(name: str, geometries: np.ndarray, src: CRS, dst: str) -> np.ndarray:
    if src == CRS.from_user_input(dst):
        return geometries
    try:
        transformer = Transformer.from_crs(src, dst, always_xy=True)
        return shapely.transform(
            geometries, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))
    except (ProjError, CRSError, shapely.errors.GEOSException) as error:
        raise VectorError(f"{name}: the geometries cannot be projected to {dst} "
                          f"({_short(error)})") from error


def _crs_of(name: str, meta: dict[str, Any], path: Path) -> CRS:
    crs = meta.get("crs") or ("EPSG:4326" if path.suffix.lower() in (".geojson", ".json", ".kml")
                              else None)
    if crs is None:
        raise VectorError(f"{name}: the layer has no CRS; add a .prj or save it with one")
    try:
        return CRS.from_user_input(crs)
    except CRSError as error:
        raise VectorError(f"{name}: the layer's CRS is not understood ({_short(error)})") from error


def read_polygons(
    path: str | Path,
    *,
    to_crs: str,
    columns: Sequence[str] | None = None,
    layer: str | None = None,
    repair: bool = False,
) -> VectorLayer:
    """Read the polygons of a vector file, reprojected to ``to_crs``.

    A file with several layers needs ``layer`` (the error lists them). A file without a CRS is
    refused (except GeoJSON and KML, which are WGS84 by definition). Unreadable, non-finite,
    out-of-range or invalid geometries are an error naming the first few features and the
    reason, before and after reprojection, unless ``repair`` is set (then invalid ones are
    mended to their polygonal part; see the module doc). Empty geometries are dropped; a file
    with no polygon left is an error.
    """
    return _read_layer(Path(path), to_crs, columns, layer, repair, POLYGONAL_IDS, "polygons")


def read_features(path: str | Path, *, to_crs: str, layer: str | None = None,
                  repair: bool = False) -> VectorLayer:
    """Read the points and polygons of a vector file, reprojected to ``to_crs``: every check of
    ``read_polygons`` (a point is valid when finite). A CSV is read as points from its lon/lat
    columns (``CSV_LONLAT``, WGS84); lines are refused."""
    path = Path(path)
    csv = path.suffix.lower() == ".csv"
    return _read_layer(path, to_crs, None, layer, repair, POINT_OR_POLYGON_IDS,
                       "points or polygons" + (" (a CSV needs lon and lat columns)" if csv else ""),
                       CSV_LONLAT if csv else None)


def _read_layer(path: Path, to_crs: str, columns: Sequence[str] | None, layer: str | None,
                repair: bool, kinds_allowed: Sequence[int], expected: str,
                open_options: dict[str, str] | None = None) -> VectorLayer:
    """``read_polygons``'s reading and checks, for geometries of the shapely type ids
    ``kinds_allowed`` (``expected`` names them in the error)."""
    name = path.name
    if not path.exists():
        raise VectorError(f"{name}: no such file")
    if path.is_file() and path.stat().st_size == 0:
        raise VectorError(f"{name}: the file is empty (0 bytes)")
    meta, wkb, field_data = _read(path, layer, columns, open_options)
    if wkb is None and open_options is not None:
        wkb = [None] * len(field_data[0]) if field_data else None
    crs = _crs_of(name, meta, path) if open_options is None else CRS.from_epsg(4326)
    if wkb is None or len(wkb) == 0:
        raise VectorError(f"{name}: the layer has no features")
    with _quiet(), np.errstate(invalid="ignore"):
        geometries = _geometries(name, wkb, repair)
    keep = ~(shapely.is_missing(geometries) | shapely.is_empty(geometries))
    kinds = set(shapely.get_type_id(geometries[keep]).tolist())
    if not keep.any() or not kinds <= set(kinds_allowed):
        found = sorted({g.geom_type for g in geometries[keep][:50]})
        raise VectorError(f"{name}: expected {expected}, found {', '.join(found) or 'no geometry'}")
    geometries[~keep] = shapely.Polygon()  # checked as placeholders, so errors give file positions
    _check_finite(name, geometries, "in the file")
    _check_range(name, geometries, crs)
    geometries = _checked_validity(name, geometries, repair)
    geometries = _reprojected(name, geometries, crs, to_crs)
    _check_finite(name, geometries, f"after projection to {to_crs}")
    geometries = _checked_validity(name, geometries, repair, f" after projection to {to_crs}")
    attributes = {
        str(field): np.asarray(values)[keep]
        for field, values in zip(meta["fields"], field_data, strict=True)
    }
    return VectorLayer(path=path, crs=to_crs, geometries=geometries[keep], attributes=attributes,
                       positions=np.flatnonzero(keep))


def _span(lon: np.ndarray, lat: np.ndarray) -> str:
    return (f"lon {np.min(lon):.3f}..{np.max(lon):.3f}, lat {np.min(lat):.3f}..{np.max(lat):.3f}")


def where_text(grid: CellGrid, geometries: np.ndarray, cell_ids: np.ndarray) -> str:
    """Where polygons (grid CRS) and cells lie, in lon/lat: for an error saying they miss each
    other, e.g. "the file covers lon 29.000..29.010, lat -26.000..-25.990; the imagery lon ..."."""
    x0, y0, x1, y1 = shapely.total_bounds(geometries)
    corners = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(
        [x0, x1, x0, x1], [y0, y0, y1, y1])
    text = f"the file covers {_span(*corners)}"
    ids = np.asarray(cell_ids, dtype=np.int64)
    if ids.size == 0:
        return f"{text}; no imagery is ingested"
    return f"{text}; the imagery {_span(*grid.cell_centres_lonlat(ids))}"
