"""Build the demo installation: the synthetic territory, its seed labels, a first model, scores.

No real 12-band image of a South African mine could be had offline, so the demo territory is
generated (``simulation.synthetic``) and marked synthetic in its files, the database and the web app.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from db.store import Store
from pipeline.ingest import ingest_files
from pipeline.scoring import YearScores, score_years
from pipeline.seeds import SeedLabels, seed_labels_from_polygons
from pipeline.settings import Settings
from pipeline.training import EpochProgress, train_model
from simulation.synthetic import DemoTerritory, build_demo

DEMO_YEARS: tuple[int, ...] = (2018, 2019, 2020, 2021)


@dataclass(frozen=True)
class DemoInstallation:
    """What ``build_demo_installation`` made."""

    territory: DemoTerritory
    seed: SeedLabels
    model: dict
    scores: list[YearScores]


def build_demo_installation(
    store: Store,
    settings: Settings,
    *,
    size_km: int = 40,
    years: Sequence[int] = DEMO_YEARS,
    seed: int = 2021,
    echo: Callable[[str], None] = lambda message: None,
    on_tile: Callable[[float], None] | None = None,
    on_epoch: EpochProgress | None = None,
) -> DemoInstallation:
    """Generate the territory, ingest its scenes, seed labels from its mine polygons (first
    year), train the first model and score every year."""
    echo(f"Generating a synthetic {size_km} x {size_km} km territory for {', '.join(map(str, years))}")
    territory = build_demo(settings.demo_dir, size_km=size_km, years=tuple(years), seed=seed,
                           progress=echo)
    for year, path in sorted(territory.scenes.items()):
        ingest_files(store, settings, [path], year)
        echo(f"Ingested {path.name} into the {year} mosaic")
    seed_labels = seed_labels_from_polygons(store, settings.grid, territory.mines_path, years[0],
                                            data_dir=settings.data_dir)
    echo(f"Seed labels for {years[0]}: {seed_labels.mines} mine and {seed_labels.background} "
         "background cells")
    record, result = train_model(store, settings, years=[years[0]], progress=on_epoch)
    metrics = result.metrics
    echo(f"Trained {record['version']}: precision {metrics.get('precision', 0):.2f}, recall "
         f"{metrics.get('recall', 0):.2f}, AP {metrics.get('average_precision') or 0:.2f}")
    scores = score_years(store, settings, result.bundle, years, progress=on_tile)
    return DemoInstallation(territory=territory, seed=seed_labels, model=record, scores=scores)
