"""The pictures of a card: a cell's thumbnails of a year, their cache keys and paths.

A picture is keyed by its scene and what it depends on (:func:`thumbnail_key`), so pages put
the key in thumbnail URLs (``?v=``) and a browser may cache them forever; it is rendered from the
year's mosaic on the first request (``imagery.thumbnails.ThumbnailCache``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from db.store import Store, StoreError
from imagery.bands import BandMismatchError
from imagery.grid import ID_STRIDE
from pipeline.ingest import year_mosaic
from review.errors import NotFoundError, ReviewError

#: Pixel size of the served pictures: the cell (100 px at 10 m, enlarged) and its 3 x 3 context.
THUMB_SIZE: dict[str, int] = {"cell": 400, "context": 300}
#: Views a thumbnail can be drawn in.
THUMB_VIEWS: tuple[str, ...] = ("rgb", "false")


def thumbnail_key(scene: Mapping[str, Any]) -> str:
    """Cache key of a scene's pictures: its id plus a digest of what the pictures depend on."""
    facts = json.dumps([scene["paths"], scene["bands"], scene["stretch"], scene["ingested_at"],
                        THUMB_SIZE], sort_keys=True)
    return f"s{scene['id']}-{hashlib.sha1(facts.encode()).hexdigest()[:10]}"


def thumbnail_version(store: Store, cell_id: int, year: int) -> str | None:
    """The cache key the cell's pictures of ``year`` are served under (None: no scene covers it).

    Pages put it in thumbnail URLs (``?v=``), so a browser may cache those URLs forever.
    """
    scenes = store.scenes.scenes_covering(cell_id, year)
    return thumbnail_key(scenes[0]) if scenes else None


def thumbnail_versions(
    store: Store, cells: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], str | None]:
    """:func:`thumbnail_version` of several (cell_id, year) pairs, reading each year's scenes once
    (a card and its prefetched cards in one query per year, not one per card)."""
    scenes = {year: sorted(store.scenes.scenes(year), key=lambda r: -r["id"])
              for year in {int(year) for _, year in cells}}
    keys: dict[int, str] = {}
    versions: dict[tuple[int, int], str | None] = {}
    for cell_id, year in cells:
        row, col = divmod(int(cell_id), ID_STRIDE)
        scene = next((r for r in scenes[int(year)] if r["row0"] <= row < r["row1"]
                      and r["col0"] <= col < r["col1"]), None)
        if scene is not None and scene["id"] not in keys:
            keys[scene["id"]] = thumbnail_key(scene)
        versions[(int(cell_id), int(year))] = keys[scene["id"]] if scene is not None else None
    return versions


def thumbnail_path(
    store: Store, settings: Any, cell_id: int, year: int, view: str = "rgb", kind: str = "cell",
) -> tuple[Path, str]:
    """(PNG path, cache key) of a cell's picture in ``year``, rendered on the first request.

    Finds the year's mosaic row if its range covers the cell (``Scenes.scenes_covering``) and uses
    ``imagery.thumbnails.ThumbnailCache(settings.thumbnail_dir)`` keyed by :func:`thumbnail_key`
    with the mosaic's stored stretch; a miss reads the year's mosaic (``imagery.store``), the
    very pixels scoring reads. A cached picture is returned without opening the store.
    Raises NotFoundError for an unknown cell, a year without a covering scene, or a view whose
    bands the scene lacks; ReviewError for an unknown view or kind.
    """
    from imagery.thumbnails import ThumbnailCache

    if view not in THUMB_VIEWS:
        raise ReviewError(f"unknown view {view!r}; expected rgb or false")
    if kind not in THUMB_SIZE:
        raise ReviewError(f"unknown kind {kind!r}; expected cell or context")
    if store.cells.cell(cell_id) is None:
        raise NotFoundError(f"unknown cell {cell_id}")
    scenes = store.scenes.scenes_covering(cell_id, year)
    if not scenes:
        raise NotFoundError(f"no scene of {year} covers cell {cell_id}")
    record = scenes[0]
    key = thumbnail_key(record)
    cache = ThumbnailCache(settings.thumbnail_dir)
    path = cache.path_for(key, cell_id, view, kind)
    if path.exists():
        return path, key
    try:
        path = cache.get(year_mosaic(settings, year), cell_id, key=key, view=view, kind=kind,
                         stretch=record["stretch"], size=THUMB_SIZE[kind])
    except BandMismatchError as error:
        raise NotFoundError(f"scene {record['name']} cannot show this view: {error}") from error
    except (OSError, ValueError, StoreError) as error:
        raise NotFoundError(f"scene {record['name']} cannot be read: {error}") from error
    return path, key
