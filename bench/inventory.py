#!/usr/bin/env python3
"""Decisions to a clean inventory, per review queue, against the seed's way (issue 10; not a test).

For each territory a base installation is built once (imagery store, seed labels, a first model,
scores); every plan then runs on its own copy of it (``simulation.inventory.drive_queue``: the app's
queue, ``decide`` and ``run_cycle`` with re-scoring, a simulated reviewer answering from the
truth) until the inventory (confirmed plus predicted-not-rejected cells) reaches precision
>= ``--precision`` at recall >= ``--recall`` against the truth.

Plans: each queue order in ``--queues`` with a retrain cycle every ``--retrain-every`` decisions
(several values: every queue with each; the first value decides the winner and the headline),
and the seed's way: review the first model's predicted cells in random order, no retrain. The
budget of every plan is ``--budget`` decisions (default: the first model's predicted cells, the
seed's way's whole job, or ``--min-budget`` when that is larger).

Territories:

* ``demo``: a SYNTHETIC 12-band territory (``simulation.synthetic``; no real 12-band image of a mine
  could be had offline) of ``--demo-km`` x ``--demo-km`` km, one year; its first model is trained
  from the year's mine polygons as the seed study's was. Truth: the generator's active mine
  components (a cell is a mine when >= 5 % of it is mine, background when none is, ambiguous in
  between).
* ``brazil``: the shared real Brazil tailings patches (3 bands, ``../shared/data``); the first
  model is trained from the masks of a ``--brazil-seed-share`` share of the patches (whole
  ``groups.csv`` groups); truth: every patch's mask, the same 5 % rule. Skipped with a reason
  when the folder is absent.

Outputs in ``--out``: ``curves.csv`` (the inventory after every batch and cycle),
``summary.json``, ``inventory.png`` (precision and recall against decisions); with
``--write-docs`` also ``docs/inventory_summary.json`` and ``docs/inventory.png``, the committed
summary the default queue is tested against. The last line printed is one JSON object with the
keys ``decisions_default_queue``, ``decisions_seed_way``, ``ratio`` (seed's way / default queue,
on the demo), ``default_queue`` and ``winner``.

Full run (issue 10)::

    .venv/bin/python bench/inventory.py --demo-km 80 --retrain-every 100 --write-docs

A small run (about 5 minutes)::

    .venv/bin/python bench/inventory.py --demo-km 24 --territories demo --queues uncertainty \\
        score --retrain-every 40 --epochs 4

A check that it works (``--quick``: a 12 km demo, the default queue and the seed's way, 25
decisions, one cycle; give ``--out`` a scratch folder)::

    .venv/bin/python bench/inventory.py --quick --out "$(mktemp -d)"
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench import common  # noqa: E402
from db.store import QUEUE_STRATEGIES, Store  # noqa: E402
from pipeline.ingest import cells_of_year, ingest_files  # noqa: E402
from pipeline.patch_split import group_split, read_groups  # noqa: E402
from pipeline.scoring import score_year  # noqa: E402
from pipeline.seeds import cell_labels_from_masks, fraction_label, seed_labels_from_masks  # noqa: E402
from pipeline.settings import Settings, load_settings  # noqa: E402
from pipeline.training import load_model, train_model  # noqa: E402
from review.queues import DEFAULT_STRATEGY  # noqa: E402
from simulation.demo import build_demo_installation  # noqa: E402
from simulation.inventory import (  # noqa: E402
    QueuePlan,
    QueueRun,
    Truth,
    drive_queue,
    seed_way_plan,
    winner,
)
from simulation.synthetic import truth_mine_fraction  # noqa: E402

BRAZIL = ROOT / ".." / "shared" / "data" / "tailings_rgb_brazil"
DOCS = ROOT / "docs"
BRAZIL_YEAR = 2021
SEED_WAY = "seed_way"


@dataclass(frozen=True)
class Base:
    """A territory's base installation and its truth."""

    name: str
    data_dir: Path
    truth: Truth
    note: str


def territory_settings(data_dir: Path, epochs: int) -> Settings:
    return load_settings({"DATA_DIR": str(data_dir), "TRAIN_EPOCHS": epochs}, environ={})


def labels_from_fraction(cell_ids: np.ndarray, fraction: np.ndarray) -> dict[int, str]:
    """The 5 % rule: mine, background, or left out (ambiguous)."""
    labels = {c: fraction_label(share) for c, share in zip(cell_ids.tolist(), fraction.tolist(),
                                                            strict=True)}
    return {c: label for c, label in labels.items() if label is not None}


def demo_base(work: Path, size_km: int, year: int, seed: int, epochs: int) -> Base:
    """A one-year synthetic territory with its first model (trained from the mine polygons)."""
    settings = territory_settings(work / "demo", epochs)
    with Store(settings.database_path) as store:
        made = build_demo_installation(store, settings, size_km=size_km, years=(year,), seed=seed,
                                       echo=print)
        cells = cells_of_year(store, settings.grid, year)
        truth = Truth.from_labels(year, labels_from_fraction(
            cells, truth_mine_fraction(made.territory.truth_path, settings.grid, cells, year)))
    note = (f"SYNTHETIC {size_km} x {size_km} km demo, {year}, seed {seed}: {len(cells)} cells, "
            f"{len(truth.mines)} mine / {len(truth.background)} background in the truth; first "
            f"model from {made.seed.mines} polygon cells and {made.seed.background} background")
    return Base("demo", settings.data_dir, truth, note)


def brazil_base(work: Path, data: Path, seed_share: float, seed: int, epochs: int) -> Base:
    """The real Brazil patches: a first model from a share of the patches' masks."""
    settings = territory_settings(work / "brazil", epochs)
    images = sorted((data / "img").glob("*.tif"), key=lambda p: int(p.stem.split("_")[-1]))
    masks = {int(p.stem.split("_")[-1]): p for p in (data / "mask").glob("*.tif")}
    groups = read_groups(data / "groups.csv")
    seed_ids, _rest = group_split(groups, 1.0 - seed_share, seed)
    with Store(settings.database_path) as store:
        ingest_files(store, settings, images, BRAZIL_YEAR)
        seeded = seed_labels_from_masks(store, settings.grid, [masks[i] for i in seed_ids],
                                        BRAZIL_YEAR, source="tailings masks (seed patches)")
        train_model(store, settings, bands=["B2", "B3", "B4"])
        score_year(store, settings, load_model(store), BRAZIL_YEAR)
        cells = set(cells_of_year(store, settings.grid, BRAZIL_YEAR).tolist())
    labels = {c: v for c, v in cell_labels_from_masks(settings.grid, list(masks.values())).items()
              if c in cells}
    truth = Truth.from_labels(BRAZIL_YEAR, labels)
    note = (f"real Brazil tailings patches (RGB), {len(images)} patches, {len(cells)} cells, "
            f"{len(truth.mines)} mine / {len(truth.background)} background in the truth; first "
            f"model from the masks of {len(seed_ids)} patches ({seeded.mines} mine / "
            f"{seeded.background} background cells)")
    return Base("brazil", settings.data_dir, truth, note)


def first_predicted(base: Base, epochs: int) -> int:
    settings = territory_settings(base.data_dir, epochs)
    with Store(settings.database_path) as store:
        model = store.models.active_model()
        return store.scores.predicted_mine_count(model["version"], base.truth.year, model["threshold"])


def run_plan(base: Base, plan: QueuePlan, work: Path, epochs: int) -> QueueRun:
    folder = common.copy_installation(base.data_dir, work / f"{base.name}-{plan.strategy}-"
                               f"{plan.retrain_every or 'none'}-{int(plan.predicted_only)}")
    settings = territory_settings(folder, epochs)

    def progress(point) -> None:
        print(f"  {plan.label}: {point.decisions} decisions, {point.cycles} cycles, "
              f"{point.model}, inventory {point.inventory}, precision {point.precision:.3f}, "
              f"recall {point.recall:.3f}", flush=True)

    with Store(settings.database_path) as store:
        run = drive_queue(store, settings, base.truth, plan, progress=progress)
    shutil.rmtree(folder)
    return run


def run_territory(base: Base, args: argparse.Namespace, work: Path) -> dict[str, QueueRun]:
    predicted = first_predicted(base, args.epochs)
    budget = args.budget or max(predicted, args.min_budget)
    targets = {"target_precision": args.precision, "target_recall": args.recall}
    plans = {SEED_WAY: seed_way_plan(budget, batch=args.batch, **targets)}
    for every in args.retrain_every:
        for queue in args.queues:
            key = queue if every == args.retrain_every[0] else f"{queue}@{every}"
            plans[key] = QueuePlan(queue, every, batch=args.batch, budget=budget, **targets)
    print(f"{base.name}: {base.note}; the first model predicts {predicted} cells; budget "
          f"{budget} decisions per plan", flush=True)
    return {name: run_plan(base, plan, work, args.epochs) for name, plan in plans.items()}


def write_curves(path: Path, runs: dict[str, dict[str, QueueRun]]) -> None:
    with path.open("w", newline="") as f:
        writer = None
        for territory, plans in runs.items():
            for name, run in plans.items():
                for point in run.points:
                    row = {"territory": territory, "plan": name, **point.row()}
                    if writer is None:
                        writer = csv.DictWriter(f, fieldnames=list(row))
                        writer.writeheader()
                    writer.writerow(row)


def plot(path: Path, runs: dict[str, dict[str, QueueRun]], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.8 * len(runs)), squeeze=False)
    for row, (territory, plans) in enumerate(runs.items()):
        for col, metric in enumerate(("precision", "recall")):
            ax = axes[row][col]
            for name, run in plans.items():
                xs = [p.decisions for p in run.points]
                ys = [getattr(p, metric) for p in run.points]
                ax.plot(xs, ys, label=run.plan.label, lw=2.2 if name == SEED_WAY else 1.4,
                        ls="--" if name == SEED_WAY else "-")
            ax.axhline(args.precision if metric == "precision" else args.recall, color="grey",
                       lw=0.8, ls=":")
            ax.set(title=f"{territory}: inventory {metric}", xlabel="decisions", ylim=(0, 1.02))
            if col == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarise(runs: dict[str, dict[str, QueueRun]], notes: dict[str, str],
              args: argparse.Namespace) -> dict[str, Any]:
    territories = {}
    for territory, plans in runs.items():
        budget = plans[SEED_WAY].plan.budget
        queues = {name: run.reached_at for name, run in plans.items() if name in args.queues}
        territories[territory] = {
            "note": notes[territory], "budget": budget,
            "winner": winner(queues),
            "plans": {name: run.summary() for name, run in plans.items()}}
    primary = territories[args.territories[0]]
    seed_way = primary["plans"][SEED_WAY]
    default = primary["plans"].get(DEFAULT_STRATEGY)
    seed_decisions = seed_way["reached_at"] or seed_way["decisions"]
    default_decisions = default["reached_at"] if default else None
    return {
        "decisions_default_queue": default_decisions,
        "decisions_seed_way": seed_decisions,
        "seed_way_reached": seed_way["reached_at"] is not None,
        "ratio": round(seed_decisions / default_decisions, 2) if default_decisions else None,
        "default_queue": DEFAULT_STRATEGY,
        "winner": primary["winner"],
        "target": {"precision": args.precision, "recall": args.recall},
        "retrain_every": args.retrain_every[0],
        "command": command_line(sys.argv[1:]),
        "territories": territories,
    }


#: Options that only say where files go: left out of the recorded command (no machine paths).
LOCATION_OPTIONS = ("--work", "--out", "--brazil")


def command_line(argv: list[str]) -> str:
    """The command that reproduces a run, without the options that only locate files."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in LOCATION_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in LOCATION_OPTIONS)):
            kept.append(arg)
    return " ".join(["python bench/inventory.py", *kept])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--territories", nargs="+", default=["demo", "brazil"],
                        choices=["demo", "brazil"], help="the first one gives the headline keys")
    parser.add_argument("--demo-km", type=int, default=80)
    parser.add_argument("--demo-seed", type=int, default=2021)
    parser.add_argument("--year", type=int, default=2021, help="the demo's year")
    parser.add_argument("--brazil", type=Path, default=BRAZIL)
    parser.add_argument("--brazil-seed-share", type=float, default=0.25,
                        help="share of the Brazil patches whose masks train the first model")
    parser.add_argument("--queues", nargs="+", default=list(QUEUE_STRATEGIES),
                        choices=QUEUE_STRATEGIES)
    parser.add_argument("--retrain-every", type=int, nargs="+", default=[100])
    parser.add_argument("--batch", type=int, default=5, help="cards per batch (the app's prefetch)")
    parser.add_argument("--budget", type=int, default=None)
    parser.add_argument("--min-budget", type=int, default=300)
    parser.add_argument("--precision", type=float, default=0.95)
    parser.add_argument("--recall", type=float, default=0.90)
    parser.add_argument("--epochs", type=int, default=15, help="TRAIN_EPOCHS of every model")
    parser.add_argument("--seed", type=int, default=0, help="the Brazil seed patches' draw")
    parser.add_argument("--work", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "inventory")
    parser.add_argument("--write-docs", action="store_true",
                        help="also write docs/inventory_summary.json and docs/inventory.png")
    return common.parse_args(parser, territories=["demo"], demo_km=12, queues=[DEFAULT_STRATEGY],
                             retrain_every=[25], budget=25, epochs=2)


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        bases = []
        for name in args.territories:
            if name == "demo":
                bases.append(demo_base(work, args.demo_km, args.year, args.demo_seed, args.epochs))
            elif (args.brazil / "manifest.csv").exists():
                bases.append(brazil_base(work, args.brazil, args.brazil_seed_share, args.seed,
                                         args.epochs))
            else:
                print(f"brazil: skipped, {args.brazil} is absent (the shared data folder)")
        runs = {base.name: run_territory(base, args, work) for base in bases}
    args.territories = list(runs)
    summary = summarise(runs, {b.name: b.note for b in bases}, args)
    summary["seconds"] = round(time.monotonic() - started)
    write_curves(args.out / "curves.csv", runs)
    plot(args.out / "inventory.png", runs, args)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.write_docs:
        shutil.copy(args.out / "summary.json", DOCS / "inventory_summary.json")
        shutil.copy(args.out / "inventory.png", DOCS / "inventory.png")
    for territory, entry in summary["territories"].items():
        print(f"\n{territory}: {entry['note']}")
        print("| plan | decisions to target | final precision | final recall | cycles | time |")
        print("|---|---|---|---|---|---|")
        for plan in entry["plans"].values():
            reached = plan["reached_at"] if plan["reached_at"] is not None else \
                f"not reached ({plan['stop']} at {plan['decisions']})"
            print(f"| {plan['plan']} | {reached} | {plan['final_precision']:.3f} | "
                  f"{plan['final_recall']:.3f} | {plan['cycles']} | {plan['seconds']:.0f} s |")
        print(f"winner: {entry['winner'] or 'no queue reached the target'}")
    if summary["winner"] != DEFAULT_STRATEGY:
        print(f"NOTE: the measured winner {summary['winner']!r} is not the default queue "
              f"{DEFAULT_STRATEGY!r} (review/queues.py DEFAULT_STRATEGY)")
    headline = {k: summary[k] for k in ("decisions_default_queue", "decisions_seed_way", "ratio",
                                        "default_queue", "winner", "seed_way_reached")}
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
