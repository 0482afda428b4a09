"""Yearly Sentinel-2 median composites from Google Earth Engine, as the seed study made them.

The seed took, per year, every Sentinel-2 scene of the region with less than 20 % cloudy pixels,
kept the 12 bands of the seed set and exported their per-pixel median at 10 m. ``CompositeRequest``
holds those choices (validated), ``export_parameters`` turns one into the arguments of
``ee.batch.Export.image.toDrive`` (pure, no network), and ``start_export`` builds the composite
and starts the export task. Earth Engine needs an account and a network: ``start_export`` is the
only function here that talks to it. The exported GeoTIFFs (Earth Engine splits large regions
into several files) are then ingested with ``run.py ingest FILE... --year YEAR``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from imagery.bands import SEED_BANDS, parse_band_list

#: Earth Engine collections: top-of-atmosphere (L1C) and surface reflectance (L2A), harmonised so
#: that DN mean the same before and after the 2022 processing-baseline change.
COLLECTIONS: dict[str, str] = {
    "l1c": "COPERNICUS/S2_HARMONIZED",
    "l2a": "COPERNICUS/S2_SR_HARMONIZED",
}
#: Scene-level cloud property used by the seed's "< 20 % cloud" filter.
CLOUD_PROPERTY = "CLOUDY_PIXEL_PERCENTAGE"
#: Pixels an export may hold (Earth Engine's default is 1e8, far too few for a country).
MAX_PIXELS = 10**13
#: Side of each exported file in pixels (a multiple of the 256-px shards): 1 GB-ish per file.
FILE_DIMENSIONS = 32_768
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


class EarthEngineError(RuntimeError):
    """Earth Engine cannot be reached or refused the request."""


def utm_crs(lon: float, lat: float) -> str:
    """The EPSG code of the WGS84 UTM zone holding a point (326xx north, 327xx south)."""
    if not (-180 <= lon <= 180 and -80 <= lat <= 84):
        raise ValueError(f"({lon}, {lat}) lies outside the UTM zones")
    zone = min(int(math.floor((lon + 180) / 6)) + 1, 60)
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


@dataclass(frozen=True)
class CompositeRequest:
    """One yearly median composite of a region (``region`` in lon/lat, EPSG:4326)."""

    region: BaseGeometry
    year: int
    name: str
    max_cloud_percent: float = 20.0
    level: str = "l1c"
    bands: tuple[str, ...] = field(default=SEED_BANDS)
    scale_m: float = 10.0
    crs: str | None = None  # default: the UTM zone of the region's centre

    def __post_init__(self) -> None:
        if self.region.is_empty or self.region.geom_type not in ("Polygon", "MultiPolygon"):
            raise ValueError("the export region must be a non-empty polygon")
        minx, miny, maxx, maxy = self.region.bounds
        if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
            raise ValueError(f"the export region {self.region.bounds} is not in lon/lat degrees")
        if not 2015 <= self.year <= 2100:
            raise ValueError(f"year {self.year}: Sentinel-2 composites start in 2015")
        if not 0 < self.max_cloud_percent <= 100:
            raise ValueError(f"max cloud percent must be in (0, 100], got {self.max_cloud_percent}")
        if self.level not in COLLECTIONS:
            raise ValueError(f"level must be one of {', '.join(COLLECTIONS)}, got {self.level!r}")
        if not _NAME.match(self.name):
            raise ValueError(f"export name {self.name!r}: letters, digits, - and _ only")
        object.__setattr__(self, "bands", parse_band_list(self.bands))
        if self.crs is None:
            centre = self.region.centroid
            object.__setattr__(self, "crs", utm_crs(centre.x, centre.y))

    @property
    def collection(self) -> str:
        return COLLECTIONS[self.level]

    @property
    def date_range(self) -> tuple[str, str]:
        return f"{self.year}-01-01", f"{self.year + 1}-01-01"


def export_parameters(request: CompositeRequest, *, folder: str) -> dict[str, Any]:
    """Arguments of ``ee.batch.Export.image.toDrive`` for a request (everything but the image)."""
    return {
        "description": request.name,
        "folder": folder,
        "fileNamePrefix": request.name,
        "region": mapping(request.region),
        "scale": request.scale_m,
        "crs": request.crs,
        "maxPixels": MAX_PIXELS,
        "fileDimensions": FILE_DIMENSIONS,
        "skipEmptyTiles": True,
        "fileFormat": "GeoTIFF",
        "formatOptions": {"cloudOptimized": True},
    }


def build_composite(ee: Any, request: CompositeRequest) -> Any:
    """The ee.Image median composite of a request (``ee`` is the initialised earthengine module).

    uint16 DN (reflectance x 10,000), the request's bands in its order, clipped to the region.
    """
    region = ee.Geometry(mapping(request.region))
    return (
        ee.ImageCollection(request.collection)
        .filterBounds(region)
        .filterDate(*request.date_range)
        .filter(ee.Filter.lt(CLOUD_PROPERTY, request.max_cloud_percent))
        .select(list(request.bands))
        .median()
        .toUint16()
        .clip(region)
    )


def start_export(request: CompositeRequest, *, folder: str, project: str | None) -> str:
    """Initialise Earth Engine, start the Drive export of a request's composite; its task id."""
    import ee

    try:
        ee.Initialize(project=project)
    except Exception as error:  # the library raises EEException and google.auth errors alike
        raise EarthEngineError(f"Earth Engine is not available ({error}); run `earthengine "
                               "authenticate` and pass --project") from error
    task = ee.batch.Export.image.toDrive(build_composite(ee, request),
                                         **export_parameters(request, folder=folder))
    task.start()
    return str(task.id)


def requests_for_years(region: BaseGeometry, years: Sequence[int], *, prefix: str,
                       **options: Any) -> list[CompositeRequest]:
    """One request per year, named ``{prefix}_{year}``."""
    return [CompositeRequest(region=region, year=y, name=f"{prefix}_{y}", **options) for y in years]
