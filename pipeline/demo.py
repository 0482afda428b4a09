"""Build the demo installation: the synthetic territory, its seed labels, a first model, scores.

No real 12-band image of a South African mine could be had offline, so the demo territory is
generated (``imagery.demo``) and marked synthetic in its files, the database and the web app.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from db.store import Store
from imagery.demo import DemoTerritory, build_demo
from pipeline.ingest import ingest_files
from pipeline.scoring import YearScores, score_years, year_area_km2
from pipeline.seeds import SeedLabels, seed_labels_from_polygons
from pipeline.settings import Settings
from pipeline.training import train_config, train_model

DEMO_YEARS: tuple[int, ...] = (2018, 2019, 2020, 2021)


class DemoProgress(Protocol):
    """Where the demo build reports its stages (``run.py demo`` draws a bar per stage)."""

    def stage(self, name: str, total: float, unit: str) -> None:
        """A stage of ``total`` units (scenes, epochs, km²) starts."""

    def advance(self, units: float, **figures: float) -> None:
        """``units`` more of the stage are done; ``figures`` (e.g. the epoch's losses) show."""


class _Silent:
    def stage(self, name: str, total: float, unit: str) -> None:
        pass

    def advance(self, units: float, **figures: float) -> None:
        pass


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
    progress: DemoProgress | None = None,
) -> DemoInstallation:
    """Generate the territory, ingest its scenes, seed labels from its mine polygons (first
    year), train the first model and score every year; each stage reports to ``progress``."""
    progress = progress or _Silent()
    echo(f"Generating a synthetic {size_km} x {size_km} km territory for {', '.join(map(str, years))}")
    progress.stage("Generating", len(years), "scene")
    territory = build_demo(settings.demo_dir, size_km=size_km, years=tuple(years), seed=seed,
                           progress=echo)
    progress.advance(len(years))
    progress.stage("Ingesting", len(years), "scene")
    for year, path in sorted(territory.scenes.items()):
        ingest_files(store, settings, [path], year)
        progress.advance(1)
        echo(f"Ingested {path.name} into the {year} mosaic")
    seed_labels = seed_labels_from_polygons(store, settings.grid, territory.mines_path, years[0],
                                            data_dir=settings.data_dir)
    echo(f"Seed labels for {years[0]}: {seed_labels.mines} mine and {seed_labels.background} "
         "background cells")
    config = train_config(settings)
    progress.stage("Training", config.epochs, "epoch")
    record, result = train_model(
        store, settings, years=[years[0]], config=config,
        progress=lambda epoch, epochs, logs: progress.advance(
            1, **{k: v for k, v in logs.items() if k in ("loss", "val_loss")}))
    metrics = result.metrics
    echo(f"Trained {record['version']} in {metrics['epochs_run']} epochs (best "
         f"{metrics['best_epoch']}): precision {metrics.get('precision', 0):.2f}, recall "
         f"{metrics.get('recall', 0):.2f}, AP {metrics.get('average_precision') or 0:.2f}")
    progress.stage("Scoring", year_area_km2(store, settings, years), "km²")
    scores = score_years(store, settings, result.bundle, years, progress=progress.advance)
    return DemoInstallation(territory=territory, seed=seed_labels, model=record, scores=scores)
