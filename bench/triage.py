"""Run the three triage benchmarks and print their figures together (issue 11).

- ``bench/triage_browser.py``: a simulated reviewer in Debian's chromium, keys and wall time per
  decision in the grid against the single card, grid page p95 cold and warm;
- ``bench/tiles.py``: map tiles of a generated 2,500 km2 scene, p95 cold and warm;
- ``bench/similar.py``: "more like this" index build and query p95 at 1.3 M cells, and how often
  the 20 nearest cells of a demo mine are mines against the base rate.

Each runs in its own process (as it would alone), its output is passed through, and its last line
(one JSON object) is collected. The last line printed here is one JSON object with the keys
``grid_keys_per_decision``, ``card_keys_per_decision``, ``grid_s_per_decision``,
``card_s_per_decision``, ``tile_p95_ms_warm``, ``similar_p95_ms``, ``similar_precision_at_20``,
``base_rate`` (and the rest of each benchmark's figures).

    python bench/triage.py [--quick]

``--quick`` runs each with its own ``--quick`` (a check that everything runs, not figures).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench.common import parse_args  # noqa: E402

#: The keys issue 11 asks for, in its order.
KEYS = ("grid_keys_per_decision", "card_keys_per_decision", "grid_s_per_decision",
        "card_s_per_decision", "tile_p95_ms_warm", "similar_p95_ms", "similar_precision_at_20",
        "base_rate")
#: (script, arguments for a full run); ``--quick`` runs each with its own ``--quick``.
RUNS: tuple[tuple[str, list[str]], ...] = (
    ("triage_browser.py", []),
    ("tiles.py", ["--size-km", "50"]),
    ("similar.py", []),
)


def run_one(script: str, args: list[str]) -> dict:
    """Run one benchmark, echo its output, and return its last line's JSON object."""
    print(f"== bench/{script} {' '.join(args)}", flush=True)
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                          text=True, check=False)
    sys.stdout.write(done.stdout)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"bench/{script} failed (exit {done.returncode})")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args = parse_args(parser)
    figures: dict = {}
    for script, full in RUNS:
        figures.update(run_one(script, ["--quick"] if args.quick else full))
    missing = [key for key in KEYS if key not in figures]
    if missing:
        raise SystemExit(f"the benchmarks printed no {', '.join(missing)}")
    print(json.dumps({**{key: figures[key] for key in KEYS},
                      **{k: v for k, v in figures.items() if k not in KEYS}}))


if __name__ == "__main__":
    main()
