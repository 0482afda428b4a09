"""Score every cell of a year's scenes with a model version and store the scores."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from db.store import Store
from model.bundle import ModelBundle, check_bands
from model.score import distribution_shift, score_scene
from pipeline.ingest import check_year, open_stored_scene
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
    """Score the scenes of ``year`` tile by tile, writing each tile's cells as they come.

    ``progress`` receives the km² done after each tile. A model whose bands a scene lacks fails
    before anything is written (BandMismatchError naming both lists); a scene whose bands lie far
    from the model's training distribution is scored but named in ``warnings``.
    """
    year = check_year(year)
    records = store.scenes(year)
    if not records:
        raise ValueError(f"no scene for {year}: ingest one with `run.py ingest FILE --year {year}`")
    scenes = [(record, open_stored_scene(record)) for record in records]
    warnings: list[str] = []
    for _, scene in scenes:
        check_bands(bundle, scene.bands)
        warnings += distribution_shift(bundle, scene)
    for record, scene in scenes:
        for cells in score_scene(bundle, scene, settings.grid,
                                 min_valid_fraction=settings.MIN_VALID_FRACTION,
                                 progress=progress):
            store.write_scores(year, bundle.version, record["id"], cells.cell_ids, cells.scores,
                               cells.uncertainty, cells.valid_fraction)
    return summarise_year(store, bundle, year, len(scenes), tuple(warnings))


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
    """Area of the cell ranges of the years' scenes, in km² (for progress bars)."""
    cell_km2 = (settings.CELL_SIZE_M / 1000.0) ** 2
    return float(np.sum([(s["row1"] - s["row0"]) * (s["col1"] - s["col0"]) * cell_km2
                         for y in years for s in store.scenes(y)]))
