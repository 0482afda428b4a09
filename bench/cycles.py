"""Database size over retrain cycles: do scores grow forever?

Works on a copy of an installation (``--data-dir``, e.g. one built by ``run.py demo``) or builds
the demo installation (synthetic territory, 4 years, seed labels, first model, scores) in a
temporary folder, then runs ``--cycles`` retrain-and-repredict cycles (``pipeline.cycle``), and
prints after each: the database size (file + WAL), score rows, the model versions that still hold
score rows and those kept as per-year summaries only (setting KEEP_SCORED_MODELS). The last line
is one JSON object.

Run from the repository root: ``.venv/bin/python bench/cycles.py [--size-km 40] [--cycles 5]``
(``--epochs`` caps training; the demo's default is the TRAIN_EPOCHS setting; ``--quick``: a
12 km demo, one cycle of 2 epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import add_installation_arguments, installation, parse_args  # noqa: E402
from db.store import Store  # noqa: E402
from pipeline.cycle import run_cycle  # noqa: E402
from simulation.demo import DEMO_YEARS  # noqa: E402


def database_mib(path: Path) -> float:
    """Size of the database file and its WAL, MiB."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal"))
               if p.exists()) / 2**20


def state(store: Store) -> dict:
    """Score rows, versions holding rows, versions kept as summaries only."""
    with_rows = [r[0] for r in store.db.execute(
        "SELECT DISTINCT model_version FROM scores ORDER BY model_version").fetchall()]
    summarised = [r[0] for r in store.db.execute(
        "SELECT DISTINCT model_version FROM score_summaries ORDER BY model_version").fetchall()]
    return {"score_rows": store.db.execute("SELECT count(*) FROM scores").fetchone()[0],
            "versions_with_scores": with_rows,
            "summaries_only": [v for v in summarised if v not in with_rows]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_installation_arguments(parser, size_km=40)
    parser.add_argument("--cycles", type=int, default=5, help="cycles to run (default 5)")
    parser.add_argument("--keep", type=int, default=None,
                        help="KEEP_SCORED_MODELS (default: the setting's default, 2)")
    args = parse_args(parser, argv, size_km=12, cycles=1, epochs=2)

    tmp = Path(tempfile.mkdtemp(prefix="minewatch-cycles-"))
    rows = []
    try:
        t0 = time.perf_counter()
        settings = installation(args, tmp, years=DEMO_YEARS, KEEP_SCORED_MODELS=args.keep)
        with Store(settings.database_path) as store:
            store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            rows.append({"after": "demo", "seconds": round(time.perf_counter() - t0, 1),
                         "db_mib": round(database_mib(settings.database_path), 2), **state(store)})
            print(rows[-1], flush=True)
            for n in range(1, args.cycles + 1):
                t0 = time.perf_counter()
                cycle = run_cycle(store, settings)
                if cycle["status"] != "succeeded":
                    raise SystemExit(f"cycle {n} failed: {cycle['message']}")
                store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                rows.append({"after": f"cycle {n}", "seconds": round(time.perf_counter() - t0, 1),
                             "db_mib": round(database_mib(settings.database_path), 2),
                             **state(store)})
                print(rows[-1], flush=True)
        result = {"size_km": None if args.data_dir else args.size_km,
                  "data_dir": str(args.data_dir) if args.data_dir else None,
                  "keep_scored_models": settings.KEEP_SCORED_MODELS,
                  "db_mib": [r["db_mib"] for r in rows],
                  "score_rows": [r["score_rows"] for r in rows]}
        print(json.dumps(result))
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
