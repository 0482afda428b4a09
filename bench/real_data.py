#!/usr/bin/env python3
"""Real-data checks (not tests): the pipeline on real Sentinel-2 imagery.

1. Brazil tailings (``../shared/data/tailings_rgb_brazil``): 79 real 3-band (B2, B3, B4) patches
   with tailings-dam masks. Ingest them, label cells from the masks (mine: >= 5 % tailings;
   background: none; in between: left out), hold out whole ``groups.csv`` groups (patches that
   overlap or lie < 1 km apart share a group; about a quarter of the patches, at least 1 km from
   every training patch, checked), train a 3-band model on the rest (its own validation split is
   geographic too), score the held-out patches and report precision, recall and average precision.
   The training masks also become the year's mask layer: ``--dense-weight 1`` trains with dense
   supervision from it (FCN_DEPTH auto then builds 4), ``--fcn-depth 3 --dense-weight 0`` (the
   defaults) the seed's way. ``--seeds`` repeats the whole run on several group splits (training seeded the same);
   the last line is one JSON object with the mean and std of the test figures over them.
2. Virginia (``../shared/data/s2_scene_virginia``): a real 13-band L1C scene of fields, marsh,
   beaches, a lagoon and a town, and no mine. Score it with a model trained on the demo territory
   (``--demo-data-dir``, default ``instance``) and report the share of its cells flagged as mines.

Run from the repository root: ``.venv/bin/python bench/real_data.py`` (``--quick``: the Brazil
part with 2 epochs of a 4,8,8-filter FCN, no Virginia).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from sklearn.metrics import average_precision_score, precision_recall_curve  # noqa: E402

from bench.common import parse_args  # noqa: E402
from db.store import Store  # noqa: E402
from pipeline.ingest import ingest_files  # noqa: E402
from pipeline.patch_split import check_gap, group_split, read_bounds, read_groups  # noqa: E402
from pipeline.scoring import score_year  # noqa: E402
from pipeline.seeds import (  # noqa: E402
    MIN_MASK_FRACTION,
    cell_labels_from_masks,
    seed_labels_from_masks,
)
from pipeline.settings import load_settings  # noqa: E402
from pipeline.training import load_model, register_model, train_config, train_model  # noqa: E402

SHARED = ROOT / ".." / "shared" / "data"
YEAR = 2021


def brazil(data: Path, work: Path, *, holdout: float, seed: int, epochs: int,
           overrides: dict[str, object]) -> dict:
    """Train on the Brazil patches outside the held-out groups, evaluate on those groups.

    ``overrides``: settings for the installation (e.g. FCN_DEPTH, DENSE_LOSS_WEIGHT)."""
    images = sorted((data / "img").glob("*.tif"), key=lambda p: int(p.stem.split("_")[-1]))
    masks = {p.stem.split("_")[-1]: p for p in (data / "mask").glob("*.tif")}
    with (data / "manifest.csv").open(newline="") as f:
        has_mine = {int(row["id"]): float(row["mask_fraction"]) > 0 for row in csv.DictReader(f)}
    train_ids, held = group_split(read_groups(data / "groups.csv"), holdout, seed, has_mine)
    gap_km = check_gap(read_bounds(data / "manifest.csv"), train_ids, held)
    test_ids = {str(i) for i in held}
    settings = load_settings({"DATA_DIR": str(work), "TRAIN_EPOCHS": epochs, **overrides},
                             environ={})
    grid = settings.grid
    with Store(settings.database_path) as store:
        ingest_files(store, settings, images, YEAR)
        train_records, test_records = [], []
        for image in images:
            (test_records if image.stem.split("_")[-1] in test_ids else train_records).append(
                (image, masks[image.stem.split("_")[-1]]))
        seeded = seed_labels_from_masks(store, grid, [m for _, m in train_records], YEAR,
                                        source="tailings masks (train)", data_dir=settings.data_dir)
        train_cells = {row["cell_id"] for row in store.labels.seed_labels(YEAR)}
        test_labels = cell_labels_from_masks(grid, [m for _, m in test_records])
        test_labels = {c: v for c, v in test_labels.items() if c not in train_cells}
        started = time.perf_counter()
        record, result = train_model(store, settings, bands=["B2", "B3", "B4"],
                                     config=train_config(settings, seed=seed))
        train_s = time.perf_counter() - started
        bundle = load_model(store)
        score_year(store, settings, bundle, YEAR)
        scored = [(store.scores.score(c, YEAR, bundle.version), label) for c, label in test_labels.items()]
        scored = [(row["score"], label == "mine") for row, label in scored
                  if row and row["score"] is not None]
    scores = np.array([s for s, _ in scored])
    truth = np.array([t for _, t in scored])
    predicted = scores >= bundle.threshold
    tp = int((predicted & truth).sum())
    precision, recall, _ = precision_recall_curve(truth, scores)
    dense = result.bundle.training["dense_supervision"]
    return {
        "FCN depth, dense loss weight (cells with mask targets)":
            f"{result.bundle.training['depth']}, {dense['weight']} "
            f"({dense['train_patches_with_mask']} train, {dense['val_patches_with_mask']} val)",
        "patches train/test": f"{len(train_records)}/{len(test_records)}",
        "groups.csv split: nearest train-test patches (km)": round(gap_km, 2),
        "train cells (mine/background)": f"{seeded.mines}/{seeded.background}",
        "test cells (mine/background)": f"{int(truth.sum())}/{int((~truth).sum())}",
        "threshold (chosen on validation)": round(bundle.threshold, 3),
        "validation AP (geographic split of train)": _round(result.metrics.get("average_precision")),
        "test precision": round(tp / max(int(predicted.sum()), 1), 3),
        "test recall": round(tp / max(int(truth.sum()), 1), 3),
        "test average precision": round(float(average_precision_score(truth, scores)), 3),
        "test precision at recall 0.9": round(float(precision[recall >= 0.9].max()), 3),
        "test AP of a random ranking (= mine share)": round(float(truth.mean()), 3),
        "training seconds": round(train_s, 1),
        "epochs run": len(result.history.get("loss", [])),
    }


def virginia(scene: Path, demo_data_dir: Path, work: Path) -> dict:
    """Share of the Virginia scene's cells that the demo-trained model flags as mines."""
    demo = load_settings({"DATA_DIR": str(demo_data_dir)}, environ={})
    with Store(demo.database_path) as demo_store:
        if demo_store.models.active_model() is None:
            raise SystemExit(f"no active model in {demo.database_path}: run `run.py demo` first")
        bundle = load_model(demo_store, settings=demo)
    settings = load_settings({"DATA_DIR": str(work)}, environ={})
    with Store(settings.database_path) as store:
        register_model(store, settings, bundle, activate=True)
        ingest_files(store, settings, [scene], 2016)
        done = score_year(store, settings, bundle, 2016)
    return {
        "model": f"{bundle.version} (demo-trained, threshold {bundle.threshold:.3f})",
        "cells scored": done.scored,
        "cells not scored (< half valid)": done.not_scored,
        "cells flagged as mines": done.predicted_mines,
        "share flagged": round(done.predicted_mines / max(done.scored, 1), 3),
        "distribution warnings": " | ".join(done.warnings) or "none",
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def print_table(title: str, rows: dict) -> None:
    print(f"\n{title}\n" + "-" * len(title))
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brazil", type=Path, default=SHARED / "tailings_rgb_brazil")
    parser.add_argument("--virginia", type=Path,
                        default=SHARED / "s2_scene_virginia" / "s2_l1c_13band_20m_stack.tif")
    parser.add_argument("--demo-data-dir", type=Path, default=ROOT / "instance")
    parser.add_argument("--holdout", type=float, default=0.25,
                        help="share of the Brazil patches held out, as whole groups.csv groups")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="group splits (and training seeds) to run the Brazil part on")
    parser.add_argument("--fcn-depth", choices=["auto", "3", "4"], default=None,
                        help="FCN_DEPTH for the Brazil model (default: the setting's default)")
    parser.add_argument("--dense-weight", type=float, default=None,
                        help="DENSE_LOSS_WEIGHT for the Brazil model (0: cell loss only)")
    parser.add_argument("--fcn-widths", default=None,
                        help="FCN_WIDTHS for the Brazil model (default: the setting's default)")
    parser.add_argument("--skip-virginia", action="store_true")
    args = parse_args(parser, epochs=2, fcn_widths="4,8,8", skip_virginia=True)
    overrides = {name: value for name, value in (("FCN_DEPTH", args.fcn_depth),
                                                 ("DENSE_LOSS_WEIGHT", args.dense_weight),
                                                 ("FCN_WIDTHS", args.fcn_widths))
                 if value is not None}
    print(f"mask threshold for a mine cell: {MIN_MASK_FRACTION:.0%} of the cell; settings "
          f"{overrides or 'defaults'}")
    with tempfile.TemporaryDirectory() as work:
        if args.brazil.exists():
            runs = []
            for seed in args.seeds:
                runs.append(brazil(args.brazil, Path(work) / f"brazil{seed}",
                                   holdout=args.holdout, seed=seed, epochs=args.epochs,
                                   overrides=overrides))
                print_table(f"Brazil tailings, 3-band model, held-out patches (seed {seed})",
                            runs[-1])
            summary = summarise(runs)
        else:
            print(f"skipped Brazil: {args.brazil} is absent")
            summary = {}
        if args.virginia.exists() and not args.skip_virginia:
            print_table("Virginia L1C scene (no mine), demo-trained model",
                        virginia(args.virginia, args.demo_data_dir, Path(work) / "virginia"))
        else:
            print(f"skipped Virginia: {args.virginia} is absent or --skip-virginia")
    print(json.dumps({"seeds": args.seeds, "epochs": args.epochs, "settings": overrides,
                      **summary}))


def summarise(runs: list[dict]) -> dict[str, float]:
    """Mean and std over the runs of the Brazil test figures."""
    out = {}
    for key, name in (("test average precision", "ap"), ("test precision at recall 0.9", "p90"),
                      ("test precision", "precision"), ("test recall", "recall")):
        values = np.array([run[key] for run in runs], dtype=np.float64)
        out[f"{name}_mean"] = round(float(values.mean()), 3)
        out[f"{name}_std"] = round(float(values.std()), 3)
    out["ap_per_seed"] = [run["test average precision"] for run in runs]
    return out


if __name__ == "__main__":
    main()
