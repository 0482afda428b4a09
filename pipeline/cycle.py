"""Retrain-and-repredict cycles.

A cycle trains a new model version from the seed labels plus every reviewed label (every
reviewed background that any model version predicted weighs as a hard negative, confirmed mines
are positives), validates it on the reviewed labels of the installation's fixed validation blocks
(``pipeline.training.fixed_validation``: the same blocks every cycle), re-scores every year of
the territory with it, and makes it the active model only when all of that succeeded and its AP
on those cells is within ``ACTIVATION_MARGIN`` of the active model's (``activation_decision``)
and its predicted-mine share passes the sanity floor (``share_problem``: at most
``ACTIVATION_MAX_MINE_SHARE`` of the scored cells, at most ``ACTIVATION_MAX_SHARE_RATIO`` times
the active model's share on the same years).
Until then the model is *pending*: a failure, or a worker killed at any point, leaves the previous
model active, and ``recover_cycles`` (``pipeline.jobs``, run before every cycle) deletes the
pending model's rows, scores and files.
The web app never runs a cycle inside a request: ``launch_cycle`` starts
``run.py cycle --cycle-id N`` as a separate process (``pipeline.jobs.spawn_worker``) that reports
its stage and progress into the ``cycles`` table, which the status partial polls.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from db.store import Store
from model.train import source_scores, validation_metrics
from pipeline.embedding_index import drop_stale_indexes
from pipeline.jobs import pause_point, recover_cycles, start_recorded_worker
from pipeline.scoring import Runner, prune_old_scores, score_year, year_area_km2
from pipeline.settings import Settings
from pipeline.training import (
    collect_patches,
    default_bands,
    fixed_validation,
    hard_negative_keys,
    label_summary,
    load_model,
    model_file,
    register_model,
    train_config,
    train_from_patches,
    training_info,
)

#: Share of the cycle's progress bar given to training; scoring takes the rest.
TRAINING_SHARE = 0.5


def launch_cycle(settings: Settings) -> int:
    """Clean up after dead cycles, record a running cycle and start ``run.py cycle`` for it in
    its own process (``pipeline.jobs.spawn_worker``).

    Raises CycleRunningError (starting nothing) when a cycle is already running.
    """
    with Store(settings.database_path) as store:
        recover_cycles(store, settings)
        parent = store.models.active_model()
        cycle_id = store.cycles.start_cycle(parent["version"] if parent else None)
    start_recorded_worker(
        settings, ["cycle", "--cycle-id", str(cycle_id)],
        settings.data_dir / "cycles" / f"cycle_{cycle_id}.log",
        finish=lambda store, message: store.cycles.finish_cycle(cycle_id, "failed", message=message),
        record_pid=lambda store, pid: store.cycles.update_cycle(cycle_id, pid=pid))
    return cycle_id


class CycleReporter:
    """Writes a cycle's stage, progress and message to the store (and optionally a callback)."""

    def __init__(self, store: Store, cycle_id: int,
                 echo: Callable[[str, float], None] | None = None) -> None:
        self.store, self.cycle_id, self.echo = store, cycle_id, echo

    def __call__(self, stage: str, progress: float, message: str = "") -> None:
        self.store.cycles.update_cycle(self.cycle_id, stage=stage, progress=round(progress, 4),
                                       message=message)
        if self.echo:
            self.echo(f"{stage}: {message}" if message else stage, progress)


def run_cycle(
    store: Store,
    settings: Settings,
    *,
    cycle_id: int | None = None,
    echo: Callable[[str, float], None] | None = None,
    runner_for: Callable[[str], Runner] | None = None,
) -> dict[str, Any]:
    """Run one cycle to the end and return its row (status succeeded or failed).

    Without ``cycle_id`` it first cleans up after dead cycles (``recover_cycles``) and records a
    new one. A failure removes the cycle's unfinished model, its scores and files.

    ``runner_for(absolute model path)`` gives the runner that scores the new model's blocks (default: in
    this process; pipeline.distributed.dask_runner for a Dask cluster).
    """
    if cycle_id is None:
        recover_cycles(store, settings)
        parent = store.models.active_model()
        cycle_id = store.cycles.start_cycle(parent["version"] if parent else None)
    store.cycles.update_cycle(cycle_id, pid=os.getpid())
    report = CycleReporter(store, cycle_id, echo)
    try:
        _run_stages(store, settings, cycle_id, report, runner_for)
    except Exception as error:  # a cycle records any failure and leaves the old model active
        store.cycles.finish_cycle(cycle_id, "failed", message=f"{type(error).__name__}: {error}")
        recover_cycles(store, settings)
        if echo:
            echo(f"failed: {error}", 1.0)
        return store.cycles.cycle(cycle_id)
    # Only once the cycle is recorded (and its model active, or kept for a lead to judge): the
    # score rows of every version but the active model's kept ancestors and the newest candidate go.
    pruned = prune_old_scores(store, settings.KEEP_SCORED_MODELS)
    drop_stale_indexes(store, settings.similarity_dir)
    if pruned:
        message = store.cycles.cycle(cycle_id)["message"]
        store.cycles.update_cycle(cycle_id, message=f"{message}; scores of {', '.join(pruned)} kept as "
                                             "per-year summaries")
    return store.cycles.cycle(cycle_id)


def _run_stages(store: Store, settings: Settings, cycle_id: int, report: CycleReporter,
                runner_for: Callable[[str], Runner] | None) -> str:
    if settings.KEEP_SCORED_MODELS < 1:
        raise ValueError(f"KEEP_SCORED_MODELS must be at least 1, got {settings.KEEP_SCORED_MODELS}")
    parent = store.models.active_model()
    report("collecting labels", 0.0)
    rows = store.labels.training_labels()
    if not rows:
        raise ValueError("no training labels yet: seed them from mine polygons or review cells")
    bands = tuple(parent["bands"]) if parent else default_bands(store, sorted({r["year"] for r in rows}))
    patches = collect_patches(store, settings, rows, bands,
                              min_valid_fraction=settings.MIN_VALID_FRACTION,
                              hard_negatives=hard_negative_keys(store, parent))
    validation = fixed_validation(patches, settings.VALIDATION_BLOCK_SHARE)
    summary = label_summary(patches, validation)
    store.cycles.update_cycle(cycle_id, n_seed=summary["seed_mines"] + summary["seed_background"],
                              n_mines=summary["review_mines"], n_hard_negatives=summary["hard_negatives"])

    version = store.models.next_model_version()
    config = train_config(settings)

    def on_epoch(epoch: int, epochs: int, logs: dict) -> None:
        loss = logs.get("val_loss", logs.get("loss", float("nan")))
        report("training", TRAINING_SHARE * epoch / epochs,
               f"{version}: epoch {epoch}/{epochs}, validation loss {loss:.3f}")

    report("training", 0.0, f"{version}: {summary['n']} labelled cells")
    pause_point("training")
    result = train_from_patches(patches, bands, settings, version=version,
                                parent=parent["version"] if parent else None,
                                training_info=training_info(patches, settings, version, validation),
                                config=config, progress=on_epoch, validation=validation)
    metrics = {**result.metrics, "fixed_blocks": validation is not None,
               "validated_on": f"{len(validation)} reviewed cells in the fixed validation blocks"
               if validation is not None else "geographic split of all labels (the fixed "
               "validation blocks hold too few reviewed cells of a class)"}
    result.bundle.metrics = metrics
    report("validating", TRAINING_SHARE, metrics["validated_on"])
    decision = activation_decision(
        metrics, _parent_metrics(store, settings, parent, patches, result.validation_idx), parent,
        settings.ACTIVATION_MARGIN)
    record = register_model(store, settings, result.bundle, activate=False, pending=True)
    runner = runner_for(str(model_file(store, record, settings).resolve())) if runner_for else None
    store.cycles.update_cycle(cycle_id, new_model=version, metrics=metrics, history=result.history,
                              validation_ap=metrics.get("average_precision")
                              if metrics.get("fixed_blocks") else None)

    years = store.scenes.years()
    total_km2 = max(year_area_km2(store, settings, years), 1e-9)
    done = [0.0]
    started = time.monotonic()

    def on_tile(km2: float) -> None:
        done[0] += km2
        rate = done[0] / max(time.monotonic() - started, 1e-6)
        report("scoring", TRAINING_SHARE + (1 - TRAINING_SHARE) * min(done[0] / total_km2, 1.0),
               f"{done[0]:,.0f} of {total_km2:,.0f} km², {rate:,.0f} km²/s, about "
               f"{max(total_km2 - done[0], 0) / rate / 60:,.0f} min left")

    predicted = {}
    for i, year in enumerate(years):
        score_year(store, settings, result.bundle, year, progress=on_tile, runner=runner)
        predicted[str(year)] = store.scores.predicted_mine_count(version, year, result.bundle.threshold)
        if i == 0:
            pause_point("scoring")
    store.labels.record_predicted_rejections(version)
    report("activating", 1.0)
    decision = with_floor(decision, share_problem(
        mine_share(store, version, years),
        _parent_share(store, parent, years), parent["version"] if parent else None,
        max_share=settings.ACTIVATION_MAX_MINE_SHARE,
        max_ratio=settings.ACTIVATION_MAX_SHARE_RATIO))
    store.models.finish_model(version, activate=decision.activate)
    store.cycles.finish_cycle(cycle_id, "succeeded", stage="done", progress=1.0,
                              predicted_mines=predicted,
                              false_positives_found=store.labels.false_positives_found(parent["version"])
                              if parent else 0,
                              decision=decision.reason,
                              message=f"{version} is active" if decision.activate else
                              f"{version} kept inactive: {decision.reason}")
    return version


@dataclass(frozen=True)
class Activation:
    """Whether a cycle's new model becomes active, and why."""

    activate: bool
    reason: str


def activation_decision(new: dict[str, Any], active: dict[str, Any] | None,
                        parent: dict[str, Any] | None, margin: float) -> Activation:
    """Activate the new model unless its average precision on the held-out reviewed cells is
    more than ``margin`` below the active model's on the same cells.

    AP is compared because it does not depend on a threshold: each model picks its own, so two
    models' precision or F1 at their own thresholds do not measure the same thing, while AP
    ranks the same cells. Without an active model, or without held-out reviewed cells of both
    classes to compare on, the new model is activated and the reason says so.
    """
    if parent is None:
        return Activation(True, "the first model")
    if active is None:
        return Activation(True, f"not compared with {parent['version']}: "
                          f"{new.get('validated_on', 'no held-out reviewed cells')}")
    ap_new, ap_old = new.get("average_precision"), active.get("average_precision")
    if ap_new is None or ap_old is None:
        return Activation(True, f"not compared with {parent['version']}: no AP on the held-out cells")
    drop = ap_old - ap_new
    figures = (f"AP {ap_new:.3f} vs {parent['version']}'s {ap_old:.3f} on the same "
               f"{new['validated_on']}")
    if drop > margin:
        return Activation(False, f"{figures}: {drop:.3f} worse, more than the margin "
                          f"{margin:.3f} (ACTIVATION_MARGIN); a lead may activate it by hand")
    return Activation(True, f"{figures} (margin {margin:.3f})")


@dataclass(frozen=True)
class MineShare:
    """Cells a model predicts as mines (score at or above its threshold) among those it scored."""

    predicted: int
    scored: int

    @property
    def share(self) -> float:
        """predicted / scored (0 when nothing was scored)."""
        return self.predicted / self.scored if self.scored else 0.0


def mine_share(store: Store, version: str, years: list[int]) -> MineShare:
    """A model's predicted mines and scored cells summed over ``years``, from the per-year
    summaries (``Scores.year_summary``: kept after its score rows are pruned; mines outside the
    territory are not counted); years it never scored add nothing."""
    summaries = [s for s in (store.scores.year_summary(version, year) for year in years) if s]
    return MineShare(sum(int(s["predicted_mines"]) for s in summaries),
                     sum(int(s["scored"]) for s in summaries))


def share_problem(new: MineShare, parent: MineShare | None, parent_version: str | None, *,
                  max_share: float, max_ratio: float) -> str | None:
    """Why a new model's predicted-mine share is not believable, or None when it is.

    The floor under the AP comparison: a model trained on wrong labels can rank a few held-out
    cells well and still call nearly every cell a mine. Its share may be at most ``max_share``,
    and at most ``max_ratio`` times the parent's share (the ratio is not applied when the parent
    predicted no mine or scored nothing on those years).
    """
    figures = (f"it predicts {new.share:.1%} of the scored cells as mines ({new.predicted:,} "
               f"of {new.scored:,})")
    if new.share > max_share:
        return f"{figures}, more than ACTIVATION_MAX_MINE_SHARE {max_share:.1%}"
    if parent is not None and parent.predicted and new.share > max_ratio * parent.share:
        return (f"{figures}, {new.share / parent.share:.1f} times {parent_version}'s "
                f"{parent.share:.1%}, more than ACTIVATION_MAX_SHARE_RATIO {max_ratio:g}")
    return None


def with_floor(decision: Activation, problem: str | None) -> Activation:
    """``decision`` kept inactive by the share floor's ``problem`` (both reasons when it was
    already kept inactive by its AP)."""
    if problem is None:
        return decision
    if decision.activate:
        return Activation(False, f"{problem}; a lead may activate it by hand")
    return Activation(False, f"{decision.reason}; also {problem}")


def _parent_share(store: Store, parent: dict[str, Any] | None,
                  years: list[int]) -> MineShare | None:
    return mine_share(store, parent["version"], years) if parent else None


def _parent_metrics(store: Store, settings: Settings, parent: dict[str, Any] | None,
                    patches: Any, validation: np.ndarray) -> dict[str, Any] | None:
    """The active model's metrics on the cells that validated the new model (the fixed blocks'
    reviews, or the geographic split's cells), so both are compared on the same cells; None
    without an active model or validation cells."""
    if parent is None or not len(validation):
        return None
    bundle = load_model(store, parent["version"], settings=settings)
    scores = source_scores(bundle, patches.pixels, validation)
    return validation_metrics(patches.labels[validation], scores, bundle.threshold)
