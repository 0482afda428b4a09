"""Web-map tiles of a year's mosaic: XYZ web-mercator PNGs rendered by rio-tiler, cached on disk.

A tile (z, x, y of the WebMercatorQuad tile matrix set, :data:`TILE_SIZE` px) is read by
rio-tiler from the year's ``mosaic.vrt`` (:mod:`imagery.store`), warped to web mercator, and
coloured by :func:`imagery.thumbnails.render_view` with the year's stretch, the very code and
stretch of the review thumbnails. Pixels with no data are transparent (alpha 0), so a map tile
partly or wholly outside the year's blocks shows what lies under it.

Modes: ``natural`` (B4, B3, B2) and ``false`` colour (B12, B8A, B4); a year lacking a band of a
mode cannot show that mode (:func:`mode_problem`).

Zooms are served up to :func:`native_zoom` of the imagery's pixel size (15 for 10 m pixels: a
tile pixel is then at most half an imagery pixel); a deeper tile would only upscale the same
pixels, so it is refused and the map (Leaflet's ``maxNativeZoom``) upscales zoom 15 itself.

:class:`TileCache` keeps rendered tiles at ``root/<year>/<mode>/<key>/<z>/<x>/<y>.png``; the
caller's ``key`` names the mosaic version and stretch, so a re-ingested year gets new tiles and
never a stale one. A tile outside the mosaic's bounds is answered with :data:`TRANSPARENT_PNG`
without reading anything or writing a file. With ``max_bytes`` the cache stays bounded: a write
that takes it over the cap deletes the least recently used tiles (a hit touches its file's
modification time) until it holds at most :data:`EVICT_TO` of the cap.
"""

from __future__ import annotations

import io
import math
import os
import re
import threading
import warnings
from functools import lru_cache
from pathlib import Path

import morecantile
import numpy as np
from PIL import Image
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds
from rio_tiler.errors import NoOverviewWarning
from rio_tiler.io import Reader

from imagery.bands import select_bands
from imagery.store import MOSAIC_VRT, MosaicError, YearMosaic, write_atomic
from imagery.thumbnails import VIEWS, Stretch, render_view
from imagery.validate import library_message, quiet_gdal

#: Map colour modes -> the thumbnail view (imagery.thumbnails.VIEWS) they draw.
MODES: dict[str, str] = {"natural": "rgb", "false": "false"}
#: Side of a map tile in pixels (Leaflet's default).
TILE_SIZE = 256
#: The tile matrix: zoom 0 (the world in one tile) to 22 (about 4 cm per pixel at the equator);
#: :func:`native_zoom` caps the zooms actually served.
MAX_ZOOM = 22
#: Web-mercator metres per tile pixel at zoom 0 (the equator's length / TILE_SIZE).
ZOOM0_PIXEL_M = 2 * math.pi * 6378137.0 / TILE_SIZE
#: Share of its cap that a full cache is brought back to by eviction.
EVICT_TO = 0.9
#: How rio-tiler resamples: nearest when decimating (fast, keeps DN as stored) and when warping.
RESAMPLING = "nearest"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


#: A TILE_SIZE x TILE_SIZE fully transparent PNG: the answer for a tile with no imagery.
TRANSPARENT_PNG: bytes = _png(Image.new("RGBA", (TILE_SIZE, TILE_SIZE), (0, 0, 0, 0)))

_TMS = morecantile.tms.get("WebMercatorQuad")
# The store keeps no overviews by design (tiles read only the part of the mosaic they cover).
warnings.filterwarnings("ignore", category=NoOverviewWarning)
#: The CRS of WebMercatorQuad tiles.
MERCATOR = "EPSG:3857"
_SAFE_KEY = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def tile_in_range(z: int, x: int, y: int, max_zoom: int = MAX_ZOOM) -> bool:
    """Whether (z, x, y) names a tile of the matrix (0 <= z <= max_zoom, x, y < 2**z)."""
    return 0 <= z <= min(max_zoom, MAX_ZOOM) and 0 <= x < 2 ** z and 0 <= y < 2 ** z


def native_zoom(pixel_size_m: float) -> int:
    """The deepest zoom worth rendering for imagery of ``pixel_size_m`` pixels: the first whose
    tile pixels are at most half an imagery pixel at the equator (15 for 10 m pixels), within
    0 to MAX_ZOOM. Deeper tiles would only upscale the same pixels."""
    return min(max(math.ceil(math.log2(ZOOM0_PIXEL_M / (pixel_size_m / 2))), 0), MAX_ZOOM)


def mode_problem(bands: tuple[str, ...] | list[str], mode: str) -> str | None:
    """Why a mosaic of ``bands`` cannot show ``mode`` (None when it can).

    ValueError for a mode that is not one of :data:`MODES`.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    missing = [band for band in VIEWS[MODES[mode]] if band not in bands]
    return f"no {', '.join(missing)} in this year's imagery" if missing else None


def mosaic_bounds_mercator(mosaic: YearMosaic) -> tuple[float, float, float, float]:
    """(west, south, east, north) of the mosaic's cell range in web-mercator metres."""
    return _bounds_3857(mosaic.grid.crs, _grid_bounds(mosaic))


def mosaic_bounds_lonlat(mosaic: YearMosaic) -> tuple[float, float, float, float]:
    """(west, south, east, north) of the mosaic's cell range in degrees."""
    return transform_bounds(mosaic.grid.crs, "EPSG:4326", *_grid_bounds(mosaic), densify_pts=21)


def _grid_bounds(mosaic: YearMosaic) -> tuple[float, float, float, float]:
    """The grid-CRS bounds of the mosaic's bounding cell range (the cells with valid pixels)."""
    cells, grid = mosaic.cells, mosaic.grid
    size = grid.cell_size_m
    return (grid.origin_x + cells.col0 * size, grid.origin_y - cells.row1 * size,
            grid.origin_x + cells.col1 * size, grid.origin_y - cells.row0 * size)


@lru_cache(maxsize=64)
def _bounds_3857(crs: str, bounds: tuple[float, float, float, float],
                 ) -> tuple[float, float, float, float]:
    return transform_bounds(crs, "EPSG:3857", *bounds, densify_pts=21)


def tile_window(mosaic: YearMosaic, z: int, x: int, y: int) -> tuple[int, int, int, int] | None:
    """The pixels (col0, row0, col1, row1) of the map tile that the mosaic's bounds overlap,
    rounded out to whole pixels; None when the tile lies outside the bounds."""
    tile = _TMS.xy_bounds(x, y, z)
    res = (tile.right - tile.left) / TILE_SIZE
    west, south, east, north = mosaic_bounds_mercator(mosaic)
    col0, col1 = math.floor((west - tile.left) / res), math.ceil((east - tile.left) / res)
    row0, row1 = math.floor((tile.top - north) / res), math.ceil((tile.top - south) / res)
    col0, row0 = max(col0, 0), max(row0, 0)
    col1, row1 = min(col1, TILE_SIZE), min(row1, TILE_SIZE)
    return (col0, row0, col1, row1) if col0 < col1 and row0 < row1 else None


def render_tile(mosaic: YearMosaic, mode: str, z: int, x: int, y: int,
                stretch: Stretch) -> bytes | None:
    """The PNG (RGBA, TILE_SIZE px) of one map tile, or None when it holds no valid pixel.

    rio-tiler reads the mode's bands from ``mosaic.vrt``, warped to web mercator, for the part of
    the tile the mosaic's bounds overlap (:func:`tile_window`: reading only that part keeps a
    zoomed-out tile from warping the whole empty tile at full resolution);
    :func:`imagery.thumbnails.render_view` applies ``stretch`` (the year's thumbnail stretch);
    invalid pixels get alpha 0. Raises BandMismatchError when the mosaic lacks the mode's bands,
    MosaicError (one line, the library's message) when a block or the VRT cannot be read.
    """
    view = MODES[mode]
    bands = VIEWS[view]
    indexes = [i + 1 for i in select_bands(mosaic.bands, bands, what=f"{mode}-colour map")]
    window = tile_window(mosaic, z, x, y)
    if window is None:
        return None
    col0, row0, col1, row1 = window
    tile = _TMS.xy_bounds(x, y, z)
    res = (tile.right - tile.left) / TILE_SIZE
    part = (tile.left + col0 * res, tile.top - row1 * res, tile.left + col1 * res,
            tile.top - row0 * res)
    vrt = mosaic.root / MOSAIC_VRT
    try:
        with quiet_gdal(), Reader(str(vrt)) as reader:
            image = reader.part(part, dst_crs=MERCATOR, bounds_crs=MERCATOR, width=col1 - col0,
                                height=row1 - row0, indexes=indexes,
                                resampling_method=RESAMPLING, reproject_method=RESAMPLING)
    except (RasterioError, OSError) as exc:
        raise MosaicError(f"{mosaic.name}: map tile {z}/{x}/{y} cannot be read "
                          f"({library_message(exc, vrt)})") from exc
    valid = np.zeros((TILE_SIZE, TILE_SIZE), dtype=bool)
    valid[row0:row1, col0:col1] = image.mask > 0
    if not valid.any():
        return None
    pixels = np.full((TILE_SIZE, TILE_SIZE, len(bands)), np.nan, dtype=np.float32)
    pixels[row0:row1, col0:col1] = np.moveaxis(np.asarray(image.array.data, np.float32), 0, -1)
    pixels[~valid] = np.nan
    rgb = np.asarray(render_view(pixels, bands, view, stretch))
    rgba = np.dstack([rgb, np.where(valid, 255, 0).astype(np.uint8)])
    return _png(Image.fromarray(rgba, mode="RGBA"))


class TileCache:
    """Rendered map tiles on disk: ``root/<year>/<mode>/<key>/<z>/<x>/<y>.png``.

    ``key`` names what the tiles depend on (the mosaic's version and stretch); a new key means
    new tiles. Old keys' tiles go first when the cache is over ``max_bytes`` (they are no longer
    hit); any folder can be deleted at any time. One object per cache folder and process keeps
    the running size (counted by a scan at its first write), so share it between threads.
    """

    def __init__(self, root: Path | str, max_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._used: int | None = None

    def path_for(self, year: int, mode: str, key: str, z: int, x: int, y: int) -> Path:
        """Where one tile lives (whether or not it exists yet)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if not _SAFE_KEY.match(key):
            raise ValueError(f"cache key {key!r} is not 1-64 letters, digits, '.', '_' or '-'")
        return self.root / str(int(year)) / mode / key / str(int(z)) / str(int(x)) / f"{int(y)}.png"

    def get(self, mosaic: YearMosaic, mode: str, z: int, x: int, y: int, *, key: str,
            stretch: Stretch) -> Path | None:
        """Path of the tile's PNG, rendering it first on a miss; None for a tile outside the
        mosaic's bounds (answer :data:`TRANSPARENT_PNG`).

        A hit touches neither rio-tiler nor the store (only its file's time, see :meth:`hit`). A
        miss inside the bounds renders (:func:`render_tile`; a tile with no valid pixel is stored
        as TRANSPARENT_PNG), writes atomically (temporary file in the same folder, then
        ``os.replace``) and evicts when that took the cache over ``max_bytes``. ValueError for a
        zoom deeper than :func:`native_zoom` of the mosaic's pixels.
        """
        deepest = native_zoom(mosaic.grid.pixel_size_m)
        if not tile_in_range(z, x, y, deepest):
            raise ValueError(f"tile {z}/{x}/{y} is outside the tile matrix (zoom 0-{deepest})")
        path = self.path_for(mosaic.year, mode, key, z, x, y)
        if self.hit(path):
            return path
        if tile_window(mosaic, z, x, y) is None:
            return None
        data = render_tile(mosaic, mode, z, x, y, stretch) or TRANSPARENT_PNG
        write_atomic(path, data)
        self._added(len(data))
        return path

    def hit(self, path: Path) -> bool:
        """Whether the tile at ``path`` is cached; a hit marks it as just used (its modification
        time, which eviction orders by)."""
        try:
            os.utime(path)
        except FileNotFoundError:
            return False
        return True

    def _tiles(self) -> list[tuple[float, int, str]]:
        """(modification time, bytes, path) of every cached tile (not the temporary files)."""
        found = []
        for folder, _, names in os.walk(self.root):
            for name in names:
                if name.endswith(".png") and not name.startswith("."):
                    path = os.path.join(folder, name)
                    try:
                        facts = os.stat(path)
                    except FileNotFoundError:  # evicted or replaced meanwhile
                        continue
                    found.append((facts.st_mtime, facts.st_size, path))
        return found

    def size(self) -> int:
        """Bytes of the cached tiles now on disk."""
        return sum(size for _, size, _ in self._tiles())

    def evict(self, target_bytes: int) -> int:
        """Delete the least recently used tiles until the cache holds at most ``target_bytes``;
        returns the bytes left. Folders stay (a writer may be about to use them)."""
        tiles = sorted(self._tiles())
        left = sum(size for _, size, _ in tiles)
        for _, size, path in tiles:
            if left <= target_bytes:
                break
            Path(path).unlink(missing_ok=True)
            left -= size
        return left

    def _added(self, n_bytes: int) -> None:
        """Count a written tile; evict down to EVICT_TO of the cap when over ``max_bytes``."""
        if self.max_bytes is None:
            return
        with self._lock:
            self._used = self.size() if self._used is None else self._used + n_bytes
            if self._used > self.max_bytes:
                self._used = self.evict(int(self.max_bytes * EVICT_TO))

