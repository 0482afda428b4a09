"""Ingest: warp a year's files once onto the grid into the imagery store and register the year.

``ingest_files`` opens every source with ``imagery.scene.open_scene`` (which refuses what is not a
Sentinel-2 composite), then, for every store block (``imagery.store``) that a source's footprint
touches, warps that source once onto the block (``imagery.scene.read_pixels``, bilinear) and
merges it into the block:

**Overlap rule.** A pixel already valid in the store keeps its value; a new source fills only the
pixels still invalid; the sources of one call are taken in sorted path order. Earth Engine's
export tiles of one composite overlap with identical values, so the rule only decides which of
two equal values is kept; for two different composites of a year the first ingested wins.

**All-or-nothing, resumable.** New and updated blocks are first written to
``DATA_DIR/imagery/.staging/<year>/<key>/``, where ``key`` digests the sources (path, size,
mtime), the bands and the offset. A rerun of the same call after a kill skips the blocks already
staged. Only when every source warped without error are the staged blocks moved into place
(one ``os.replace`` each) and the database rows committed in one transaction; a corrupt or
truncated file found mid-warp leaves the store and the database as they were. The merge is
idempotent, so a rerun after a kill during the moves converges to the same blocks.

Memory is bounded by a few blocks (one block's warp output and two uint16 copies), whatever the
size of the sources.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from db.store import Store
from imagery.grid import CellGrid, CellRange
from imagery.scene import Scene, SceneError, open_scene, scene_cells
from imagery.store import (
    BLOCK_CELLS,
    NODATA,
    YearMosaic,
    block_name,
    block_of_name,
    block_valid_cells,
    blocks_covering,
    ids_range,
    open_year,
    read_block,
    staging_dir,
    stored_bands,
    union_range,
    warp_into_block,
    write_block,
    write_manifest,
    write_vrt,
    year_dir,
)
from imagery.thumbnails import stretch_of
from pipeline.settings import Settings

MIN_YEAR, MAX_YEAR = 2015, 2100  # Sentinel-2A launched in June 2015
#: Marker suffix of a staged block that turned out to hold no valid pixel (nothing to store).
EMPTY_MARKER = ".empty"

Source = str | os.PathLike | Sequence[str | os.PathLike]


def check_year(year: int) -> int:
    """The year, or ValueError when no Sentinel-2 composite can exist for it."""
    if not MIN_YEAR <= int(year) <= MAX_YEAR:
        raise ValueError(f"year {year} is outside {MIN_YEAR}..{MAX_YEAR} (Sentinel-2 era)")
    return int(year)


@dataclass(frozen=True)
class IngestResult:
    """What one ``ingest_files`` call did."""

    year: int
    scene: dict[str, Any]    # the year's mosaic row, after the call
    files: int               # source scenes ingested by this call
    blocks: int              # store blocks (re)written by this call
    new_cells: int           # cells with valid pixels in the blocks written
    area_km2: float          # area of the cells the sources' footprints touch
    notes: tuple[str, ...] = ()  # what was assumed about the sources (e.g. 0 taken as nodata)


def ingest_files(
    store: Store,
    settings: Settings,
    paths: Sequence[Source],
    year: int,
    *,
    bands: Sequence[str] | None = None,
    offset: float | None = None,
    expect_dtype: str | None = None,
    progress: Callable[[float], None] | None = None,
) -> IngestResult:
    """Warp ``paths`` (each one scene: a multi-band file, a folder of single-band files, or a list
    of single-band files) into the ``year`` mosaic and register the year; see the module doc.

    ``bands`` names the bands of every source (as ``open_scene``); ``offset`` is the DN offset
    added to every valid value (e.g. -1000 for processing baseline >= 04.00; default: what each
    file's metadata declares, see ``imagery.scene.open_scene``); ``progress(km2)``
    is called after each block with the area of that block's cells that the sources touch.
    A source whose band set differs from the year's (or from the call's first source for a new
    year) is refused before anything is written.
    """
    year = check_year(year)
    grid, data_dir = settings.grid, settings.data_dir
    if not paths:
        raise SceneError("no files given")
    scenes = sorted((open_scene(p, bands=bands, expect_dtype=expect_dtype, offset=offset)
                     for p in paths),
                    key=lambda s: [str(p) for p in s.paths])
    footprints = {id(s): scene_cells(s, grid) for s in scenes}
    blocks = sorted({b for s in scenes for b in blocks_covering(footprints[id(s)])},
                    key=lambda b: (b.row0, b.col0))
    if not blocks:
        raise SceneError(f"{scenes[0].name}: covers no cell of the grid")
    with _year_lock(data_dir, year):
        year_bands = _year_bands(data_dir, year, scenes)
        staged = _staging_folder(data_dir, year, scenes, year_bands)
        area = _stage_blocks(staged, year_dir(data_dir, year), grid, blocks, scenes, footprints,
                             year_bands, threads=settings.INGEST_THREADS, progress=progress)
        return _commit(store, settings, year, scenes, year_bands, staged, area)


@contextmanager
def _year_lock(data_dir: Path, year: int) -> Iterator[None]:
    """Hold the year's ingest lock (one ingest per year at a time), or raise SceneError."""
    folder = staging_dir(data_dir, year)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SceneError(f"another ingest of {year} is running; wait for it to finish") \
                from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _year_bands(data_dir: Path, year: int, scenes: list[Scene]) -> tuple[str, ...]:
    """The year's band order (stored, else the first source's); refuse a differing band set."""
    existing = stored_bands(data_dir, year)
    target = existing or scenes[0].bands
    for scene in scenes:
        if set(scene.bands) != set(target):
            what = f"the {year} mosaic's" if existing else f"{scenes[0].name}'s"
            raise SceneError(f"{scene.name}: bands {','.join(scene.bands)} differ from {what} "
                             f"bands {','.join(target)}; one year holds one band set")
    return tuple(target)


def _file_facts(scene: Scene) -> list[tuple[str, int, int]]:
    return [(str(Path(p).resolve()), Path(p).stat().st_size, Path(p).stat().st_mtime_ns)
            for p in scene.paths]


def _staging_folder(data_dir: Path, year: int, scenes: list[Scene],
                    bands: Sequence[str]) -> Path:
    """The staging folder of this call, keyed by its sources; other calls' leftovers removed."""
    facts = json.dumps([[_file_facts(s) for s in scenes], [s.dn_offset for s in scenes],
                        list(bands), BLOCK_CELLS])
    key = hashlib.sha1(facts.encode()).hexdigest()[:16]
    parent = staging_dir(data_dir, year)
    if parent.exists():
        for other in parent.iterdir():
            if other.name != key and other.is_dir():
                shutil.rmtree(other, ignore_errors=True)
    folder = parent / key
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _stage_blocks(staged: Path, root: Path, grid: CellGrid, blocks: list[CellRange],
                  scenes: list[Scene], footprints: dict[int, CellRange], bands: tuple[str, ...],
                  *, threads: int, progress: Callable[[float], None] | None) -> float:
    """Stage every block, ``threads`` at a time (at most that many blocks in memory); returns the
    area (km²) of the cells the sources touch. The first failure stops the call: blocks not yet
    started are cancelled, those already staged stay for a rerun."""
    if threads < 1:
        raise ValueError(f"INGEST_THREADS must be at least 1, got {threads}")
    km2 = (grid.cell_size_m / 1000.0) ** 2
    pending = iter(blocks)
    running: dict[Future, float] = {}
    area = 0.0
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ingest") as pool:
        try:
            while True:
                while len(running) < threads and (block := next(pending, None)) is not None:
                    touching = [s for s in scenes if _overlap(block, footprints[id(s)])]
                    future = pool.submit(_stage_block, staged, root, grid, block, touching, bands)
                    running[future] = _covered_cells(
                        block, [footprints[id(s)] for s in touching]) * km2
                if not running:
                    return area
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()
                    done = running.pop(future)
                    area += done
                    if progress is not None:
                        progress(done)
        except BaseException:
            for future in running:
                future.cancel()
            raise


def _overlap(a: CellRange, b: CellRange) -> bool:
    return a.row0 < b.row1 and b.row0 < a.row1 and a.col0 < b.col1 and b.col0 < a.col1


def _covered_cells(block: CellRange, footprints: list[CellRange]) -> int:
    """Cells of ``block`` inside at least one footprint."""
    mask = np.zeros((block.n_rows, block.n_cols), dtype=bool)
    for f in footprints:
        mask[max(f.row0 - block.row0, 0):max(f.row1 - block.row0, 0),
             max(f.col0 - block.col0, 0):max(f.col1 - block.col0, 0)] = True
    return int(mask.sum())


def _stage_block(staged: Path, root: Path, grid: CellGrid, block: CellRange,
                 scenes: list[Scene], bands: tuple[str, ...]) -> None:
    """Warp each source once onto ``block``, merge it into the stored block, stage the result.

    A block already staged (or marked empty) by an interrupted run of the same call is skipped.
    """
    target = staged / block_name(block)
    marker = staged / (block_name(block) + EMPTY_MARKER)
    if target.exists() or marker.exists():
        return
    side = BLOCK_CELLS * grid.cell_px
    stored = root / block_name(block)
    data = read_block(stored) if stored.exists() else \
        np.zeros((side, side, len(bands)), dtype=np.uint16)
    warp_into_block(data, scenes, grid, block, bands)
    if (data != NODATA).any():
        write_block(target, grid, block, data, bands)
    else:
        marker.touch()


def _commit(store: Store, settings: Settings, year: int, scenes: list[Scene],
            bands: tuple[str, ...], staged: Path, area_km2: float) -> IngestResult:
    """Move the staged blocks into place and register the year in one transaction (which also
    clears every model's scored mark of the blocks written, so scoring redoes exactly those)."""
    grid, data_dir = settings.grid, settings.data_dir
    root = year_dir(data_dir, year)
    written = sorted(p for p in staged.iterdir() if block_of_name(p.name) is not None)
    written_blocks = [block_of_name(p.name) for p in written]
    new_ids = [block_valid_cells(p, grid, b) for p, b in zip(written, written_blocks, strict=True)]
    ids = np.unique(np.concatenate(new_ids)) if new_ids else np.empty(0, dtype=np.int64)
    previous = open_year(data_dir, grid, year) if stored_bands(data_dir, year) else None
    if ids.size == 0 and previous is None:
        shutil.rmtree(staged, ignore_errors=True)
        raise SceneError(f"{', '.join(s.name for s in scenes)}: no valid pixel on the grid")
    ranges = ([previous.cell_range()] if previous else []) + ([ids_range(grid, ids)]
                                                              if ids.size else [])
    write_manifest(root, grid, bands, union_range(ranges))
    for path in written:
        os.replace(path, root / path.name)
    mosaic = open_year(data_dir, grid, year)
    write_vrt(mosaic)
    cells = mosaic.cell_range()
    rows, cols = grid.row_col(ids)
    lons, lats = grid.cell_centres_lonlat(ids) if ids.size else ([], [])
    synthetic = any(s.synthetic for s in scenes) or bool(previous and any(
        r["synthetic"] for r in store.scenes.scenes(year)))
    record = {
        "year": year, "name": mosaic.name, "paths": [root.relative_to(data_dir).as_posix()],
        "bands": list(bands), "crs": grid.crs,
        "row0": cells.row0, "row1": cells.row1, "col0": cells.col0, "col1": cells.col1,
        "stretch": mosaic_stretch(mosaic), "synthetic": int(synthetic),
    }
    files = [_file_row(data_dir, s, p, bands, grid) for s in scenes for p in s.paths]
    with store.atomic():
        store.cells.add_cells(zip(ids, rows, cols, lons, lats, strict=True))
        scene_id = store.scenes.replace_year_mosaic(record, files,
                                                    [(b.row0, b.col0) for b in written_blocks])
    shutil.rmtree(staged, ignore_errors=True)
    return IngestResult(year=year, scene=store.scenes.scene(scene_id), files=len(scenes),
                        notes=tuple(note for s in scenes for note in s.notes),
                        blocks=len(written), new_cells=int(ids.size), area_km2=area_km2)


def _file_row(data_dir: Path, scene: Scene, path: Path, bands: Sequence[str],
              grid: CellGrid) -> dict[str, Any]:
    resolved, root = Path(path).resolve(), Path(data_dir).resolve()
    shown = resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else str(path)
    stat = Path(path).stat()
    footprint = blocks_covering(scene_cells(scene, grid))
    return {"path": shown, "size": stat.st_size, "mtime": stat.st_mtime, "crs": scene.crs,
            "bands": list(bands), "dn_offset": scene.dn_offset, "blocks": len(footprint)}


def mosaic_stretch(mosaic: YearMosaic) -> dict[str, list[float]]:
    """The thumbnail stretch of a year: percentiles of a decimated sample of its mosaic."""
    stretch = stretch_of(mosaic.sample(("B4", "B3", "B2", "B12", "B8A")))
    return {band: [float(lo), float(hi)] for band, (lo, hi) in stretch.items()}


def cells_of_year(store: Store, grid: CellGrid, year: int) -> np.ndarray:
    """Ids of the registered cells (cells with valid pixels in some year) inside the bounding
    range of ``year``'s mosaic (ValueError when the year has none)."""
    scenes = store.scenes.scenes(year)
    if not scenes:
        raise ValueError(f"no imagery for {year}: ingest it with "
                         f"`run.py ingest FILE... --year {year}`")
    ids = [store.cells.cells_in_range(r["row0"], r["row1"], r["col0"], r["col1"]) for r in scenes]
    return np.unique(np.asarray([i for part in ids for i in part], dtype=np.int64))


def year_mosaic(settings: Settings, year: int) -> YearMosaic:
    """The stored mosaic of ``year`` for an installation (MosaicError when there is none)."""
    return open_year(settings.data_dir, settings.grid, year)
