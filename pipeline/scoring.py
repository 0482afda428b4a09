"""Score every cell of a year's mosaic (``imagery.store``) with a model version; store the scores."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from db.store import Store
from imagery.store import BLOCK_CELLS
from model.bundle import ModelBundle, check_bands
from model.score import distribution_shift, score_scene
from pipeline.ingest import check_year, year_mosaic
from pipeline.settings import Settings


@dataclass(frozen=True)
class YearScores:
    """What scoring a year stored."""

    year: int
    model_version: str
    scenes: int
    scored: int
    not_scored: int        # cells with less than MIN_VALID_FRACTION valid pixels
    predicted_mines: int   # scored cells at or above the model's threshold
    warnings: tuple[str, ...] = ()  # scene bands far from the model's training distribution


def score_year(
    store: Store,
    settings: Settings,
    bundle: ModelBundle,
    year: int,
    *,
    progress: Callable[[float], None] | None = None,
) -> YearScores:
    """Score the year's mosaic tile by tile (no warp), writing each tile's cells as they come.

    Cells without any valid pixel (parts of a block outside the imagery) get no row.
    ``progress`` receives the km² done after each tile. A model whose bands the mosaic lacks fails
    before anything is written (BandMismatchError naming both lists); a mosaic whose bands lie far
    from the model's training distribution is scored but named in ``warnings``.
    """
    year = check_year(year)
    records = store.scenes(year)
    if not records:
        raise ValueError(f"no imagery for {year}: ingest it with "
                         f"`run.py ingest FILE... --year {year}`")
    mosaic = year_mosaic(settings, year)
    check_bands(bundle, mosaic.bands)
    warnings = distribution_shift(bundle, mosaic)
    for cells in score_scene(bundle, mosaic, settings.grid,
                             min_valid_fraction=settings.MIN_VALID_FRACTION, progress=progress):
        held = cells.valid_fraction > 0  # a cell without any valid pixel is no cell of the year
        store.write_scores(year, bundle.version, records[0]["id"], cells.cell_ids[held],
                           cells.scores[held], cells.uncertainty[held], cells.valid_fraction[held])
    return summarise_year(store, bundle, year, len(records), tuple(warnings))


def summarise_year(store: Store, bundle: ModelBundle, year: int, n_scenes: int,
                   warnings: tuple[str, ...] = ()) -> YearScores:
    """Counts of what a model version holds for a year."""
    summary = {row["year"]: row for row in store.score_summary(bundle.version, bundle.threshold)}
    row = summary.get(year, {"scored": 0, "not_scored": 0, "predicted_mines": 0})
    return YearScores(year=year, model_version=bundle.version, scenes=n_scenes,
                      scored=int(row["scored"]), not_scored=int(row["not_scored"]),
                      predicted_mines=int(row["predicted_mines"] or 0), warnings=warnings)


def score_years(
    store: Store,
    settings: Settings,
    bundle: ModelBundle,
    years: Sequence[int] | None = None,
    *,
    progress: Callable[[float], None] | None = None,
) -> list[YearScores]:
    """Score each year (default: every year with scenes)."""
    return [score_year(store, settings, bundle, year, progress=progress)
            for year in (years or store.years())]


def scene_area_km2(store: Store, settings: Settings, years: Sequence[int]) -> float:
    """Area of the stored blocks of the years' mosaics, in km² (what scoring walks; for progress
    bars)."""
    cell_km2 = (settings.CELL_SIZE_M / 1000.0) ** 2
    return float(sum(len(year_mosaic(settings, y).blocks()) for y in years if store.scenes(y))
                 * BLOCK_CELLS ** 2 * cell_km2)
