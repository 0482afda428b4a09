#!/usr/bin/env python3
"""Active-learning simulation (issue 5): a simulated reviewer drives the app's real queue, label
store, training and scoring on real imagery and compares queue strategies.

Default: the Brazil tailings patches (``../shared/data/tailings_rgb_brazil``), 3 seeds x 6
strategies x 2 rounds of 60 labels, a small FCN (8, 16, 16) and a small tuning search on the
training split; a few minutes on 2 CPU cores. ``--full``: 5 seeds, 6 rounds, the seed's FCN
widths, more epochs and a larger search. ``--data demo`` runs on the synthetic demo territory.
Writes curves.csv, summary.csv, tuning.csv and learning_curves.png to ``--out`` (bench/out/).

Run from the repository root: ``.venv/bin/python bench/al_simulation.py [--data DIR]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.simulate import STRATEGIES, SimulationError, preset, simulate_command  # noqa: E402

DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "tailings_rgb_brazil"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="folder laid out like tailings_rgb_brazil/ (img/, mask/, "
                             "manifest.csv), or 'demo'")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--full", action="store_true", help="longer, more thorough run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None, help="labels per round (default 60)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds")
    parser.add_argument("--strategies", default=None,
                        help=f"comma-separated subset of {','.join(STRATEGIES)}")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--bands", default=None, help="bands to train on (default: the data's)")
    parser.add_argument("--target-ap", type=float, default=None,
                        help="target test AP (default: what random reaches at its last round)")
    args = parser.parse_args(argv)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # a new model per round retraces
    try:
        config = preset(args.full, rounds=args.rounds, batch=args.batch, seeds=args.seeds,
                        strategies=args.strategies, epochs=args.epochs, bands=args.bands,
                        target_ap=args.target_ap)
        simulate_command(args.data, args.out, config)
    except SimulationError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
