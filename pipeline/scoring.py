"""Score every cell of a year with a model version and store the scores, block by block.

The unit of work is a block of the year's mosaic (``imagery.store.BLOCK_CELLS`` squared cells,
aligned with the grid; read without warping): it is what a reader thread reads, what the FCN
scores, what one Dask task does and what a resumed run skips. The flow of one year::

    blocks not yet finished ─▶ reader thread(s), `prefetch` blocks ahead ─▶ FCN (main thread)
        ─▶ one writer (the main loop): `write_every` blocks per transaction, each block's scores
           and its `scored_blocks` row together

Reading (rasterio releases the GIL) overlaps the FCN; memory is bounded by ``prefetch + 1``
blocks whatever the territory's size. A run killed at any moment leaves whole blocks finished or
not; the next run skips the finished ones and writes nothing twice. Past one machine, a ``runner``
from :mod:`pipeline.distributed` replaces the local reader + FCN; the writer stays here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from db.store import Store
from imagery.grid import CellGrid, CellRange
from imagery.scene import Tile
from imagery.store import open_year
from model.bundle import ModelBundle, check_bands
from model.fcn import MARGIN_PX
from model.score import CellScores, distribution_shift, score_block
from pipeline.embedding_index import drop_stale_indexes
from pipeline.ingest import check_year
from pipeline.settings import Settings

#: Blocks read (decimated) for the distribution-shift check of a year.
SHIFT_SAMPLE_BLOCKS = 4


class BlockSource(Protocol):
    """A year's imagery as grid-aligned blocks (what the scoring reads)."""

    bands: tuple[str, ...]

    def blocks(self) -> list[CellRange]: ...

    def read_tile(self, cells: CellRange, margin_px: int,
                  bands: Sequence[str] | None = None) -> Tile: ...

    def sample(self, bands: Sequence[str] | None = None, *,
               max_blocks: int = 64) -> dict[str, np.ndarray]: ...


#: Yields (block, its scores) for the blocks given, in any order.
Runner = Callable[[ModelBundle, "YearRecipe", Sequence[CellRange]],
                  Iterator[tuple[CellRange, CellScores]]]


@dataclass(frozen=True)
class ScoringOptions:
    """How a year is scored on one machine.

    ``prefetch``: blocks read ahead of the FCN (memory holds at most ``prefetch + 1`` blocks);
    ``readers``: reader threads; ``write_every``: blocks per write transaction (a kill loses at most
    that many blocks of work); ``fcn_tile_cells``: side of one FCN pass in cells (activations);
    ``batch``: FCN passes of one shape stacked into one call (above 1 for a GPU).
    """

    prefetch: int = 2
    readers: int = 1
    write_every: int = 4
    fcn_tile_cells: int = 4
    batch: int = 1

    def __post_init__(self) -> None:
        for name in ("prefetch", "readers", "write_every", "fcn_tile_cells", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def scoring_options(settings: Settings, **overrides: int | None) -> ScoringOptions:
    """The options of the SCORE_PREFETCH, SCORE_READERS and SCORE_BATCH settings; an override
    that is not None (e.g. a `run.py score` option) wins."""
    chosen = {"prefetch": settings.SCORE_PREFETCH, "readers": settings.SCORE_READERS,
              "batch": settings.SCORE_BATCH}
    chosen.update({k: v for k, v in overrides.items() if v is not None})
    return ScoringOptions(**chosen)


@dataclass(frozen=True)
class YearRecipe:
    """How any process (this one or a Dask worker) opens a year's mosaic: plain, picklable data.

    ``data_dir`` is the installation's folder (on a shared filesystem past one machine);
    ``scene_id`` the year's mosaic row that the scores point to.
    """

    year: int
    grid: CellGrid
    data_dir: str
    scene_id: int
    min_valid_fraction: float = 0.5

    def open(self) -> BlockSource:
        return open_year(Path(self.data_dir), self.grid, self.year)


@dataclass(frozen=True)
class YearScores:
    """What scoring a year stored."""

    year: int
    model_version: str
    scored: int
    not_scored: int        # cells with less than MIN_VALID_FRACTION valid pixels
    predicted_mines: int   # scored cells at or above the model's threshold
    warnings: tuple[str, ...] = ()  # scene bands far from the model's training distribution
    blocks_scored: int = 0          # blocks scored by this run (the others were already done)
    blocks_total: int = 0


def year_recipe(store: Store, settings: Settings, year: int) -> YearRecipe:
    """The recipe of ``year`` (ValueError naming the command to run when it has no imagery)."""
    year = check_year(year)
    records = store.scenes.scenes(year)
    if not records:
        raise ValueError(f"no imagery for {year}: ingest it with "
                         f"`run.py ingest FILE... --year {year}`")
    return YearRecipe(year=year, grid=settings.grid, data_dir=str(settings.data_dir.resolve()),
                      scene_id=int(records[-1]["id"]),
                      min_valid_fraction=settings.MIN_VALID_FRACTION)


def block_key(block: CellRange) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of a block, as the store records it."""
    return block.row0, block.row1, block.col0, block.col1


def block_km2(block: CellRange, grid: CellGrid) -> float:
    """Area of a block's cells in km²."""
    return block.n_cells * (grid.cell_size_m / 1000.0) ** 2


def prefetched_tiles(source: BlockSource, blocks: Iterable[CellRange], bands: Sequence[str], *,
                     margin_px: int = MARGIN_PX, prefetch: int = 2, readers: int = 1,
                     ) -> Iterator[Tile]:
    """Tiles of ``blocks`` in order, read by ``readers`` threads up to ``prefetch`` blocks ahead.

    At most ``prefetch`` reads are in flight or waiting, plus the tile the caller holds. A read
    error is raised at that block; closing the generator cancels the reads not yet started.
    """
    pending: deque[Future[Tile]] = deque()
    todo = iter(blocks)
    pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="block-reader")

    def submit_next() -> None:
        block = next(todo, None)
        if block is not None:
            pending.append(pool.submit(source.read_tile, block, margin_px, bands))

    try:
        for _ in range(prefetch):
            submit_next()
        while pending:
            tile = pending.popleft().result()
            submit_next()
            yield tile
            del tile
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def local_runner(options: ScoringOptions | None = None) -> Runner:
    """Score blocks in this process: prefetching reader threads, the FCN in the caller's thread."""
    options = options or ScoringOptions()

    def run(bundle: ModelBundle, recipe: YearRecipe, blocks: Sequence[CellRange]
            ) -> Iterator[tuple[CellRange, CellScores]]:
        source = recipe.open()
        for tile in prefetched_tiles(source, blocks, bundle.bands, prefetch=options.prefetch,
                                     readers=options.readers):
            yield tile.cells, score_block(bundle, tile, recipe.grid,
                                          min_valid_fraction=recipe.min_valid_fraction,
                                          fcn_tile_cells=options.fcn_tile_cells,
                                          batch=options.batch)

    return run


def score_year(
    store: Store,
    settings: Settings,
    bundle: ModelBundle,
    year: int,
    *,
    progress: Callable[[float], None] | None = None,
    runner: Runner | None = None,
    options: ScoringOptions | None = None,
    restart: bool = False,
) -> YearScores:
    """Score the blocks of ``year`` that ``bundle``'s version has not finished, and store them.

    ``progress(km2)`` receives the area of each block as it is stored (the blocks finished by an
    earlier run first, at once). ``options`` default to the settings' (:func:`scoring_options`).
    ``runner`` scores the blocks (default: :func:`local_runner`;
    :func:`pipeline.distributed.dask_runner` for a cluster). ``restart`` forgets earlier progress
    and scores every block again. A model whose bands the imagery lacks fails before anything is
    written (BandMismatchError naming both lists); bands far from the model's training
    distribution are scored but named in ``warnings``. "More like this" index files of the
    version's changed years (and of versions without embeddings) are deleted afterwards.
    """
    recipe = year_recipe(store, settings, year)
    source = recipe.open()
    check_bands(bundle, source.bands)
    blocks = source.blocks()
    warnings = distribution_shift(bundle, source, max_blocks=SHIFT_SAMPLE_BLOCKS)
    if restart:
        store.scores.clear_scored_blocks(bundle.version, recipe.year)
    finished = store.scores.scored_blocks(bundle.version, recipe.year)
    todo = [b for b in blocks if (b.row0, b.col0) not in finished]
    if progress is not None and finished:
        progress(sum(block_km2(b, recipe.grid) for b in blocks if (b.row0, b.col0) in finished))
    options = options or scoring_options(settings)
    results = (runner or local_runner(options))(bundle, recipe, todo)
    write_blocks(store, recipe, bundle.version, results, write_every=options.write_every,
                 progress=progress)
    summary = store.scores.summarise_scores(bundle.version, recipe.year, bundle.threshold)
    drop_stale_indexes(store, settings.similarity_dir)
    return YearScores(year=recipe.year, model_version=bundle.version,
                      scored=int(summary["scored"]), not_scored=int(summary["not_scored"]),
                      predicted_mines=int(summary["predicted_mines"]), warnings=tuple(warnings),
                      blocks_scored=len(todo), blocks_total=len(blocks))


def write_blocks(store: Store, recipe: YearRecipe, version: str,
                 results: Iterable[tuple[CellRange, CellScores]], *, write_every: int = 4,
                 progress: Callable[[float], None] | None = None) -> int:
    """The one writer: store blocks' scores (and the embeddings of their scored cells)
    ``write_every`` blocks per transaction, each with its ``scored_blocks`` row; cells without
    any valid pixel get no row. Returns the score rows written."""
    batch: list[tuple[CellRange, CellScores]] = []
    written = 0

    def flush() -> None:
        nonlocal written
        written += store.scores.write_scored_blocks(recipe.year, version, recipe.scene_id,
                                                    [(block_key(b), cells) for b, cells in batch])
        if progress is not None:
            progress(sum(block_km2(b, recipe.grid) for b, _ in batch))
        batch.clear()

    for block, cells in results:
        batch.append((block, with_pixels(cells)))
        if len(batch) >= write_every:
            flush()
    if batch:
        flush()
    return written


def with_pixels(cells: CellScores) -> CellScores:
    """The cells that hold at least one valid pixel (a block's corner may lie off the imagery)."""
    return cells.subset(cells.valid_fraction > 0)


def score_years(
    store: Store,
    settings: Settings,
    bundle: ModelBundle,
    years: Sequence[int] | None = None,
    *,
    progress: Callable[[float], None] | None = None,
    runner: Runner | None = None,
) -> list[YearScores]:
    """Score each year (default: every year with scenes)."""
    return [score_year(store, settings, bundle, year, progress=progress, runner=runner)
            for year in (years or store.scenes.years())]


def year_area_km2(store: Store, settings: Settings, years: Sequence[int]) -> float:
    """Area of the years' blocks in km² (for progress bars)."""
    return float(sum(block_km2(b, settings.grid) for y in years
                     for b in year_recipe(store, settings, y).open().blocks()))


def scored_versions_to_keep(store: Store, keep: int) -> list[str]:
    """The active model and its ancestors, ``keep`` versions in all (newest first), then the
    newest model created after the active one when there is one (the inactive candidate of the
    last cycle, which a lead may still activate)."""
    active = store.models.active_model()
    if active is None:
        return []
    kept: list[str] = []
    model = active
    while model is not None and len(kept) < keep:
        kept.append(model["version"])
        model = store.models.model(model["parent"]) if model["parent"] else None
    newer = [m for m in store.models.models() if _created(m) > _created(active)]
    return kept + [newer[-1]["version"]] if newer else kept


def _created(model: dict) -> tuple[str, str]:
    return model["created_at"], model["version"]


def prune_old_scores(store: Store, keep: int) -> list[str]:
    """Keep the score rows of the versions :func:`scored_versions_to_keep` names; every other
    version with score rows (older models and inactive candidates that a newer cycle superseded)
    keeps only its per-year summaries. Nothing is pruned without an active model.

    Returns the versions pruned, oldest first.
    """
    if keep < 1:
        raise ValueError(f"KEEP_SCORED_MODELS must be at least 1, got {keep}")
    kept = set(scored_versions_to_keep(store, keep))
    if not kept:
        return []
    pruned = [m["version"] for m in store.models.models()
              if m["version"] not in kept and store.scores.scored_years(m["version"])]
    store.scores.prune_scores(pruned)
    return pruned
