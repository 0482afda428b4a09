"""Build the demo installation: the synthetic territory, its seed labels, a first model, scores.

No real 12-band image of a South African mine could be had offline, so the demo territory is
generated (``simulation.synthetic``) and marked synthetic in its files, the database and the web app.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from db.store import Store
from pipeline.ingest import ingest_files
from pipeline.scoring import YearScores, score_years, year_area_km2
from pipeline.seeds import SeedLabels, plan_seed_labels, train_on_polygons
from pipeline.settings import Settings
from pipeline.training import train_config
from simulation.synthetic import MIN_INSTALLATION_KM, DemoTerritory, build_demo

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
    year), train the first model and score every year; each stage reports to ``progress``.

    All or nothing: a failure at any step puts the database back as it was and removes every
    file the build added under DATA_DIR, so a later ``demo --if-empty`` builds it again.
    """
    if not MIN_INSTALLATION_KM <= size_km:
        raise ValueError(f"the demo installation needs a territory of at least "
                         f"{MIN_INSTALLATION_KM} km, got {size_km} km")
    with undone_on_failure(store, settings.data_dir):
        return _build(store, settings, size_km=size_km, years=years, seed=seed, echo=echo,
                      progress=progress or _Silent())


def _build(store: Store, settings: Settings, *, size_km: int, years: Sequence[int], seed: int,
           echo: Callable[[str], None], progress: DemoProgress) -> DemoInstallation:
    echo(f"Generating a synthetic {size_km} x {size_km} km territory for {', '.join(map(str, years))}")
    progress.stage("Generating", len(years), "scene")
    territory = build_demo(settings.demo_dir, size_km=size_km, years=tuple(years), seed=seed,
                           progress=echo, on_scene=lambda: progress.advance(1))
    progress.stage("Ingesting", len(years), "scene")
    for year, path in sorted(territory.scenes.items()):
        ingest_files(store, settings, [path], year)
        progress.advance(1)
        echo(f"Ingested {path.name} into the {year} mosaic")
    plan = plan_seed_labels(store, settings.grid, territory.mines_path, years[0])
    seed_labels = plan.summary
    echo(f"Seed labels for {years[0]}: {seed_labels.mines} mine and {seed_labels.background} "
         "background cells")
    config = train_config(settings)
    progress.stage("Training", config.epochs, "epoch")
    record, result = train_on_polygons(
        store, settings, plan, config=config,
        progress=lambda epoch, epochs, logs: progress.advance(
            1, **{k: v for k, v in logs.items() if k in ("loss", "val_loss")}))
    metrics = result.metrics
    echo(f"Trained {record['version']} in {metrics['epochs_run']} epochs (best "
         f"{metrics['best_epoch']}): precision {metrics.get('precision', 0):.2f}, recall "
         f"{metrics.get('recall', 0):.2f}, AP {metrics.get('average_precision') or 0:.2f}")
    progress.stage("Scoring", year_area_km2(store, settings, years), "km²")
    scores = score_years(store, settings, result.bundle, years, progress=progress.advance)
    return DemoInstallation(territory=territory, seed=seed_labels, model=record, scores=scores)


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


@contextmanager
def undone_on_failure(store: Store, data_dir: Path) -> Iterator[None]:
    """Run a block; if it fails, restore the store's database from a copy taken before (sqlite's
    backup API) and remove the files and folders it added under ``data_dir``."""
    data_dir = Path(data_dir)
    before = _files(data_dir)
    folders = {p for p in data_dir.rglob("*") if p.is_dir()} if data_dir.exists() else set()
    with tempfile.TemporaryDirectory(prefix="minewatch-undo-") as tmp:
        copy = sqlite3.connect(Path(tmp) / "before.db")
        try:
            store.db.conn.backup(copy)
            try:
                yield
            except BaseException:
                copy.backup(store.db.conn)
                database = {store.path, *(store.path.with_name(store.path.name + s)
                                          for s in ("-wal", "-shm", "-journal"))}
                for path in _files(data_dir) - before - database:
                    path.unlink(missing_ok=True)
                added = {p for p in data_dir.rglob("*") if p.is_dir()} - folders
                for folder in sorted(added, key=lambda p: len(p.parts), reverse=True):
                    shutil.rmtree(folder, ignore_errors=True)
                raise
        finally:
            copy.close()
