#!/usr/bin/env python3
"""A demo installation's model against the demo's truth (not a test).

``run.py demo`` seeds labels from the polygons of the mines it "knows" in the first year and
trains on them; the synthetic territory also writes the truth (``demo_truth.geojson``: every
mine, every year). This scores nothing: it reads the model's stored scores of the later years
(every scored cell but the first year's, whose seed labels trained it) and reports the AP
against the truth (a cell is a mine when >= 5 % of it is an active mine that year).

Compare two training set-ups on the same territory, e.g. dense supervision from the polygons'
mask layer (depth 4) against the seed's way (the defaults)::

    MINEWATCH_DATA_DIR=/tmp/d_new MINEWATCH_TRAIN_EPOCHS=8 MINEWATCH_DENSE_LOSS_WEIGHT=1 \\
        python run.py demo --size-km 12 --seed 0
    MINEWATCH_DATA_DIR=/tmp/d_old MINEWATCH_TRAIN_EPOCHS=8 MINEWATCH_FCN_DEPTH=3 \\
        MINEWATCH_DENSE_LOSS_WEIGHT=0 python run.py demo --size-km 12 --seed 0
    python bench/demo_truth.py /tmp/d_new /tmp/d_old

The last line is one JSON object {data_dir: {cells, mines, ap, depth, dense}}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from sklearn.metrics import average_precision_score  # noqa: E402

from db.store import Store  # noqa: E402
from pipeline.seeds import MIN_MASK_FRACTION  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402
from simulation.synthetic import truth_mine_fraction  # noqa: E402


def truth_ap(data_dir: Path, version: str) -> dict:
    """AP of ``version``'s stored scores of every year after the first against the truth."""
    settings = load_settings({"DATA_DIR": str(data_dir)}, environ={})
    truth_path = settings.demo_dir / "demo_truth.geojson"
    if not truth_path.is_file():
        raise SystemExit(f"{data_dir}: no demo truth at {truth_path} (run `run.py demo` there)")
    with Store(settings.database_path) as store:
        model = store.models.model(version)
        if model is None:
            raise SystemExit(f"{data_dir}: no model {version}")
        years = store.scenes.years()[1:]
        scored = [(cell, year, score) for year in years
                  for cell, score in store.db.execute(
                      "SELECT cell_id, score FROM scores WHERE model_version = ? AND year = ?"
                      " AND score IS NOT NULL", [version, year]).fetchall()]
    cells = np.array([c for c, _, _ in scored], dtype=np.int64)
    cell_years = np.array([y for _, y, _ in scored])
    scores = np.array([s for _, _, s in scored], dtype=np.float64)
    truth = np.zeros(len(cells), dtype=bool)
    for year in years:
        at = cell_years == year
        truth[at] = truth_mine_fraction(truth_path, settings.grid, cells[at],
                                        int(year)) >= MIN_MASK_FRACTION
    training = model["training"] or {}
    return {"cells": int(len(cells)), "mines": int(truth.sum()),
            "ap": round(float(average_precision_score(truth, scores)), 3),
            "depth": training.get("depth"),
            "dense": (training.get("dense_supervision") or {}).get("used")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dirs", type=Path, nargs="+", help="demo installations (DATA_DIR)")
    parser.add_argument("--model", default="m0001", help="model version (default: the first)")
    args = parser.parse_args()
    print(json.dumps({str(d): truth_ap(d, args.model) for d in args.data_dirs}))


if __name__ == "__main__":
    main()
