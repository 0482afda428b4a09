"""Country scale: does ingest and scoring time grow linearly with area and memory stay flat?

Runs ``bench/score.py`` in a fresh process for each scene size (at least 4 sizes over a 16 x range
of area, i.e. a 4 x range of side), fits time = a + b * area for ingest and for scoring, and
projects the hours for the mission's territory, South Africa and Lesotho (1.27 million km², 4
years): on this machine, and with k added Dask workers like it (``--workers-measured`` runs the
largest size once more on ``local:N`` to measure how scoring scales on this machine's cores).

Run from the repository root: ``.venv/bin/python bench/country.py --sizes-km 10,20,30,40``
(``--quick``: 1,2,3,4).
Its last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import parse_args  # noqa: E402

BENCH = Path(__file__).resolve().parent / "score.py"
TERRITORY_KM2 = 1_270_000.0
YEARS = 4


def run_size(size_km: float, scheduler: str = "") -> dict:
    """One bench/score.py run in its own process (so its memory is its own); its JSON line."""
    command = [sys.executable, str(BENCH), "--size-km", str(size_km)]
    if scheduler:
        command += ["--scheduler", scheduler]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench/score.py --size-km {size_km} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fit(areas: np.ndarray, seconds: np.ndarray) -> tuple[float, float, float]:
    """Least-squares seconds = a + b * km²; returns (a, b, r²)."""
    b, a = np.polyfit(areas, seconds, 1)
    predicted = a + b * areas
    ss = float(((seconds - seconds.mean()) ** 2).sum())
    r2 = 1.0 - float(((seconds - predicted) ** 2).sum()) / ss if ss > 0 else 1.0
    return float(a), float(b), r2


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-km", default="10,20,30,40",
                        help="scene sides in km, comma-separated (default 10,20,30,40: 16 x area)")
    parser.add_argument("--workers-measured", type=int, default=0,
                        help="also score the largest size on local:N Dask workers (0: skip)")
    parser.add_argument("--max-added-workers", type=int, default=4,
                        help="project up to this many added Dask workers (default 4)")
    args = parse_args(parser, argv, sizes_km="1,2,3,4")
    sizes = sorted(float(s) for s in args.sizes_km.split(","))
    if len(sizes) < 4 or (sizes[-1] / sizes[0]) ** 2 < 16:
        raise SystemExit("give at least 4 sizes spanning a 16 x range of area (4 x the side)")

    runs = []
    for size in sizes:
        result = run_size(size)
        runs.append(result)
        print(f"{size:5.0f} km side  {result['area_km2']:9,.0f} km²  ingest "
              f"{result['area_km2'] / result['ingest_km2_s']:7.1f} s  scoring "
              f"{result['area_km2'] / result['score_km2_s']:7.1f} s  peak RSS added "
              f"{result['peak_rss_added_mib']} MiB  ratio {result['ratio']:.2f}", flush=True)
    areas = np.array([r["area_km2"] for r in runs])
    ingest_s = areas / np.array([r["ingest_km2_s"] for r in runs])
    score_s = areas / np.array([r["score_km2_s"] for r in runs])
    _, ingest_b, ingest_r2 = fit(areas, ingest_s)
    _, score_b, score_r2 = fit(areas, score_s)
    total_km2 = TERRITORY_KM2 * YEARS
    ingest_h, score_h = total_km2 * ingest_b / 3600, total_km2 * score_b / 3600
    memory = [r["peak_rss_added_mib"] for r in runs]
    summary = {
        "device": runs[-1]["device"],
        "sizes_km2": [round(a) for a in areas],
        "ingest_s_per_1000_km2": round(ingest_b * 1000, 2), "ingest_r2": round(ingest_r2, 4),
        "score_s_per_1000_km2": round(score_b * 1000, 2), "score_r2": round(score_r2, 4),
        "peak_rss_added_mib": memory,
        "ratio": [r["ratio"] for r in runs],
        "hours_ingest_4_years": round(ingest_h, 2),
        "hours_score_4_years": round(score_h, 2),
        "hours_score_4_years_with_k_added_workers": {
            k: round(score_h / (1 + k), 2) for k in range(1, args.max_added_workers + 1)},
    }
    print(f"time per 1,000 km²: ingest {ingest_b * 1000:.1f} s (r² {ingest_r2:.3f}), scoring "
          f"{score_b * 1000:.1f} s (r² {score_r2:.3f}); peak RSS added {memory} MiB")
    print(f"projected for {TERRITORY_KM2:,.0f} km² x {YEARS} years on this machine: ingest "
          f"{ingest_h:.1f} h, scoring {score_h:.1f} h (one retrain cycle's re-prediction)")
    for k, hours in summary["hours_score_4_years_with_k_added_workers"].items():
        print(f"  scoring with {k} added Dask worker machine(s) like this one: {hours:.1f} h "
              "(blocks are independent; assumes DATA_DIR on a shared filesystem that keeps up)")
    if args.workers_measured:
        dask = run_size(sizes[-1], scheduler=f"local:{args.workers_measured}")
        summary["measured_local_dask"] = {"workers": args.workers_measured,
                                          "score_km2_s": dask["score_km2_s"],
                                          "in_process_score_km2_s": runs[-1]["score_km2_s"]}
        print(f"measured: local:{args.workers_measured} Dask workers score "
              f"{dask['score_km2_s']} km²/s vs {runs[-1]['score_km2_s']} km²/s in one process "
              f"on this machine's {runs[-1]['device']}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
