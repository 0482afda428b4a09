"""Retrain-and-repredict cycles.

A cycle trains a new model version from the seed labels plus every reviewed label (every
reviewed background that any model version predicted weighs as a hard negative, confirmed mines
are positives), validates it on the reviewed labels of the installation's fixed validation blocks
(``pipeline.training.fixed_validation``: the same blocks every cycle), re-scores every year of
the territory with it, and makes it the active model only when all of that succeeded. A failure
leaves the previous model active and records why. The web app never runs a cycle inside a
request: ``launch_cycle`` starts ``run.py cycle --cycle-id N`` as a separate process that reports
its stage and progress into the ``cycles`` table, which the status partial polls.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from db.store import Store
from pipeline.scoring import scene_area_km2, score_year
from pipeline.settings import ENV_PREFIX, Settings
from pipeline.training import (
    collect_patches,
    default_bands,
    fixed_validation,
    hard_negative_keys,
    label_summary,
    register_model,
    train_config,
    train_from_patches,
    training_info,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Share of the cycle's progress bar given to training; scoring takes the rest.
TRAINING_SHARE = 0.5


def settings_environment(settings: Settings) -> dict[str, str]:
    """The MINEWATCH_* variables that hand ``settings`` to a child process."""
    return {ENV_PREFIX + f.name: str(value) for f, value in
            zip(fields(settings), asdict(settings).values(), strict=True)}


def launch_cycle(settings: Settings) -> int:
    """Record a running cycle and start ``run.py cycle`` for it in its own process.

    Raises CycleRunningError (starting nothing) when a cycle is already running.
    """
    with Store(settings.database_path) as store:
        parent = store.active_model()
        cycle_id = store.start_cycle(parent["version"] if parent else None)
    log_dir = settings.data_dir / "cycles"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open(log_dir / f"cycle_{cycle_id}.log", "ab") as log:
            worker = subprocess.Popen(
                [sys.executable, str(REPO_ROOT / "run.py"), "cycle", "--cycle-id", str(cycle_id)],
                cwd=os.getcwd(), env={**os.environ, **settings_environment(settings)},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except OSError as error:
        with Store(settings.database_path) as store:
            store.finish_cycle(cycle_id, "failed", message=f"the worker did not start: {error}")
        raise
    with Store(settings.database_path) as store:
        store.update_cycle(cycle_id, pid=worker.pid)
    # Reap the worker when it exits, so a crashed one is not kept as a zombie that looks alive.
    threading.Thread(target=worker.wait, daemon=True).start()
    return cycle_id


class CycleReporter:
    """Writes a cycle's stage, progress and message to the store (and optionally a callback)."""

    def __init__(self, store: Store, cycle_id: int,
                 echo: Callable[[str, float], None] | None = None) -> None:
        self.store, self.cycle_id, self.echo = store, cycle_id, echo

    def __call__(self, stage: str, progress: float, message: str = "") -> None:
        self.store.update_cycle(self.cycle_id, stage=stage, progress=round(progress, 4),
                                message=message)
        if self.echo:
            self.echo(f"{stage}: {message}" if message else stage, progress)


def run_cycle(
    store: Store,
    settings: Settings,
    *,
    cycle_id: int | None = None,
    echo: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Run one cycle to the end and return its row (status succeeded or failed)."""
    if cycle_id is None:
        parent = store.active_model()
        cycle_id = store.start_cycle(parent["version"] if parent else None)
    store.update_cycle(cycle_id, pid=os.getpid())
    report = CycleReporter(store, cycle_id, echo)
    try:
        _run_stages(store, settings, cycle_id, report)
    except Exception as error:  # a cycle records any failure and leaves the old model active
        unfinished = store.cycle(cycle_id)["new_model"]
        if unfinished:
            store.delete_model_scores(unfinished)
        store.finish_cycle(cycle_id, "failed", message=f"{type(error).__name__}: {error}")
        if echo:
            echo(f"failed: {error}", 1.0)
    return store.cycle(cycle_id)


def _run_stages(store: Store, settings: Settings, cycle_id: int, report: CycleReporter) -> str:
    parent = store.active_model()
    report("collecting labels", 0.0)
    rows = store.training_labels()
    if not rows:
        raise ValueError("no training labels yet: seed them from mine polygons or review cells")
    bands = tuple(parent["bands"]) if parent else default_bands(store, sorted({r["year"] for r in rows}))
    patches = collect_patches(store, settings, rows, bands,
                              min_valid_fraction=settings.MIN_VALID_FRACTION,
                              hard_negatives=hard_negative_keys(store, parent))
    validation = fixed_validation(patches, settings.VALIDATION_BLOCK_SHARE)
    summary = label_summary(patches, validation)
    store.update_cycle(cycle_id, n_seed=summary["seed_mines"] + summary["seed_background"],
                       n_mines=summary["review_mines"], n_hard_negatives=summary["hard_negatives"])

    version = store.next_model_version()
    config = train_config(settings)

    def on_epoch(epoch: int, epochs: int, logs: dict) -> None:
        loss = logs.get("val_loss", logs.get("loss", float("nan")))
        report("training", TRAINING_SHARE * epoch / epochs,
               f"{version}: epoch {epoch}/{epochs}, validation loss {loss:.3f}")

    report("training", 0.0, f"{version}: {summary['n']} labelled cells")
    result = train_from_patches(patches, bands, settings, version=version,
                                parent=parent["version"] if parent else None,
                                training_info=training_info(patches, settings, version, validation),
                                config=config, progress=on_epoch, validation=validation)
    metrics = {**result.metrics, "fixed_blocks": validation is not None,
               "validated_on": f"{len(validation)} reviewed cells in the fixed validation blocks"
               if validation is not None else "geographic split of all labels (the fixed "
               "validation blocks hold too few reviewed cells of a class)"}
    result.bundle.metrics = metrics
    register_model(store, settings, result.bundle, activate=False)
    store.update_cycle(cycle_id, new_model=version, metrics=metrics, history=result.history,
                       validation_ap=metrics.get("average_precision")
                       if metrics.get("fixed_blocks") else None)

    years = store.years()
    total_km2 = max(scene_area_km2(store, settings, years), 1e-9)
    done = [0.0]

    def on_tile(km2: float) -> None:
        done[0] += km2
        report("scoring", TRAINING_SHARE + (1 - TRAINING_SHARE) * min(done[0] / total_km2, 1.0),
               f"{done[0]:,.0f} of {total_km2:,.0f} km²")

    predicted = {}
    for year in years:
        score_year(store, settings, result.bundle, year, progress=on_tile)
        predicted[str(year)] = store.predicted_mine_count(version, year, result.bundle.threshold)
    store.record_predicted_rejections(version)
    report("activating", 1.0)
    store.activate_model(version)
    store.finish_cycle(cycle_id, "succeeded", stage="done", progress=1.0,
                       predicted_mines=predicted,
                       false_positives_found=store.false_positives_found(parent["version"])
                       if parent else 0,
                       message=f"{version} is active")
    return version
