"""Map tiles of a year's imagery for the web map: which modes a year can show, the cache key of
its tiles, and the tile itself (rendered by :mod:`imagery.tiles`, cached under
``DATA_DIR/tiles``).

The key of a year's tiles digests what they depend on: the year's mosaic row (id, paths, bands,
stretch, ingest time) and the modification time of its ``mosaic.vrt``, which ingest rewrites. A
re-ingested year or a new stretch therefore gets a new cache folder, and no stale tile is served.

Zooms deeper than ``imagery.tiles.native_zoom(PIXEL_SIZE_M)`` (15 for 10 m pixels) are refused
(the map upscales the deepest zoom itself), and the cache holds at most ``TILE_CACHE_MB`` MiB: one
:class:`imagery.tiles.TileCache` per folder and process evicts the least recently used tiles.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from db.store import Store
from imagery.bands import BandMismatchError
from imagery.store import MOSAIC_VRT, year_dir
from imagery.thumbnails import VIEWS
from imagery.tiles import MODES, TileCache, mode_problem, native_zoom, tile_in_range
from pipeline.ingest import year_mosaic


class TileNotFound(LookupError):
    """No such tile: an unknown year or mode, a mode the year cannot show, or z/x/y out of range."""


def tile_dir(settings: Any) -> Path:
    """The tile cache folder of an installation (``DATA_DIR/tiles``)."""
    return Path(settings.data_dir) / "tiles"


#: Bytes in a MiB (TILE_CACHE_MB).
MIB = 1024 * 1024


def max_tile_zoom(settings: Any) -> int:
    """The deepest zoom served for the installation's imagery (``native_zoom(PIXEL_SIZE_M)``)."""
    return native_zoom(float(settings.PIXEL_SIZE_M))


@lru_cache(maxsize=8)
def _tile_cache(root: str, max_bytes: int) -> TileCache:
    """The one TileCache of a folder in this process (it keeps the cache's running size)."""
    return TileCache(root, max_bytes=max_bytes)


def tile_cache(settings: Any) -> TileCache:
    """The installation's tile cache: ``DATA_DIR/tiles``, at most ``TILE_CACHE_MB`` MiB."""
    return _tile_cache(str(tile_dir(settings)), int(settings.TILE_CACHE_MB) * MIB)


def tile_key(settings: Any, scene: Mapping[str, Any]) -> str:
    """Cache key of a year's tiles: the mosaic row's id plus a digest of what the tiles show."""
    vrt = year_dir(settings.data_dir, int(scene["year"])) / MOSAIC_VRT
    try:
        written = vrt.stat().st_mtime_ns
    except FileNotFoundError:
        written = 0
    facts = json.dumps([scene["paths"], scene["bands"], scene["stretch"], scene["ingested_at"],
                        written], sort_keys=True)
    return f"s{scene['id']}-{hashlib.sha1(facts.encode()).hexdigest()[:10]}"


def _year_scene(store: Store, year: int) -> dict[str, Any]:
    scenes = store.scenes.scenes(year)
    if not scenes:
        raise TileNotFound(f"no imagery for {year}")
    return scenes[-1]


def year_modes(store: Store, settings: Any, year: int) -> dict[str, dict[str, str | None]]:
    """{mode: {"key": cache key or None, "problem": why it cannot show or None}} for a year.

    A year without imagery has every mode unavailable ("no imagery for <year>").
    """
    try:
        scene = _year_scene(store, year)
    except TileNotFound as error:
        return {mode: {"key": None, "problem": str(error)} for mode in MODES}
    key = tile_key(settings, scene)
    modes: dict[str, dict[str, str | None]] = {}
    for mode in MODES:
        problem = mode_problem(scene["bands"], mode) or _stretch_problem(scene["stretch"], mode)
        modes[mode] = {"key": None if problem else key, "problem": problem}
    return modes


def _stretch_problem(stretch: Mapping[str, Any], mode: str) -> str | None:
    missing = [band for band in VIEWS[MODES[mode]] if band not in stretch]
    return f"no stretch for {', '.join(missing)}; re-ingest the year" if missing else None


def map_tile(store: Store, settings: Any, year: int, mode: str, z: int, x: int,
             y: int) -> tuple[Path | None, str]:
    """(PNG path or None for a tile outside the year's imagery, cache key) of one map tile.

    A cached tile is returned without opening the mosaic. Raises TileNotFound for an unknown
    mode, z/x/y outside the tile matrix or deeper than :func:`max_tile_zoom`, a year without
    imagery, or a mode the year cannot show (a band or its stretch missing); MosaicError when
    the year's store cannot be read (a missing or corrupt block: one line, nothing cached).
    """
    if mode not in MODES:
        raise TileNotFound(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    deepest = max_tile_zoom(settings)
    if not tile_in_range(z, x, y, deepest):
        raise TileNotFound(f"no tile {z}/{x}/{y}: zooms 0-{deepest} are served for imagery of "
                           f"{settings.PIXEL_SIZE_M:g} m pixels (the map upscales beyond)")
    scene = _year_scene(store, year)
    problem = mode_problem(scene["bands"], mode) or _stretch_problem(scene["stretch"], mode)
    if problem:
        raise TileNotFound(f"{year} has no {mode}-colour imagery: {problem}")
    key = tile_key(settings, scene)
    cache = tile_cache(settings)
    path = cache.path_for(year, mode, key, z, x, y)
    if cache.hit(path):
        return path, key
    try:
        return cache.get(year_mosaic(settings, year), mode, z, x, y, key=key,
                         stretch=scene["stretch"]), key
    except BandMismatchError as error:
        raise TileNotFound(f"{year} has no {mode}-colour imagery: {error}") from error
