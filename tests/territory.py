"""A tiny real territory for pipeline tests: a 12-band UTM GeoTIFF with bright tailings-like
squares (the mines) on textured grassland, and the GeoJSON polygons of those mines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

from imagery.bands import SEED_BANDS

CRS = "EPSG:32735"
ORIGIN = (700_000.0, 7_140_000.0)  # UTM 35S, near eMalahleni
PIXEL_M = 10.0
#: Typical yearly-median DN per band for grassland and for a tailings surface.
GRASS = np.array([400, 450, 650, 700, 1100, 1900, 2200, 2400, 2500, 2500, 2600, 1800])
TAILINGS = np.array([1800, 2000, 2300, 2600, 2800, 2900, 3000, 3100, 3200, 3200, 4200, 3900])


@dataclass(frozen=True)
class Territory:
    scene: Path
    mines: Path
    mine_boxes: list[tuple[float, float, float, float]]  # UTM


def write_territory(folder: Path, *, size_km: int = 6, seed: int = 0, n_mines: int = 5,
                    year_shift: int = 0, bands: Sequence[str] = SEED_BANDS) -> Territory:
    """Write ``scene.tif`` (the seed's 12 bands, or ``bands`` of them in that order) and
    ``mines.geojson`` into ``folder``; ``year_shift`` moves nothing but changes the texture, as
    another year's composite would."""
    rng = np.random.default_rng(seed + year_shift)
    n = int(size_km * 1000 / PIXEL_M)
    texture = rng.normal(1.0, 0.06, size=(n, n))
    data = GRASS[:, None, None] * texture[None]
    boxes = []
    layout = np.random.default_rng(seed)
    for _ in range(n_mines):
        side = int(layout.integers(30, 60))
        r, c = (int(v) for v in layout.integers(10, n - side - 10, size=2))
        data[:, r:r + side, c:c + side] = TAILINGS[:, None, None] * texture[None, r:r + side, c:c + side]
        x0, y0 = ORIGIN[0] + c * PIXEL_M, ORIGIN[1] - (r + side) * PIXEL_M
        boxes.append((x0, y0, x0 + side * PIXEL_M, y0 + side * PIXEL_M))
    folder.mkdir(parents=True, exist_ok=True)
    scene = folder / "scene.tif"
    picks = [SEED_BANDS.index(band) for band in bands]
    with rasterio.open(scene, "w", driver="GTiff", width=n, height=n, count=len(picks), dtype="uint16",
                       crs=CRS, transform=from_origin(*ORIGIN, PIXEL_M, PIXEL_M), nodata=0,
                       tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(np.clip(data[picks], 1, 10_000).astype("uint16"))
        dst.descriptions = tuple(bands)
    mines = folder / "mines.geojson"
    mines.write_text(json.dumps(_feature_collection(boxes)))
    return Territory(scene=scene, mines=mines, mine_boxes=boxes)


def _feature_collection(boxes: list[tuple[float, float, float, float]]) -> dict:
    to_lonlat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    features = []
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        ring = [to_lonlat.transform(x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
        features.append({"type": "Feature", "properties": {"id": i, "name": f"mine {i}"},
                         "geometry": {"type": "Polygon", "coordinates": [ring]}})
    return {"type": "FeatureCollection", "features": features}
