"""Benchmark an export's memory: peak RSS for N cells against N / 10 (the ratio should be near 1).

Builds a synthetic installation per size (a square block of cells on the default grid, one year,
one model, a score per cell, a few cells labelled mine) in a temporary folder, then runs each
export in a fresh child process (``--child``) and reads the child's peak resident memory
(VmHWM, after the imports: ``baseline``) so that one export's memory does not hide another's.
The last line is one JSON object: per format, the peak RSS of each size and their ratio.

    .venv/bin/python bench/export.py --cells 1300000 --formats csv,geojson,gpkg
    .venv/bin/python bench/export.py --cells 130000          # a quick run
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from db.store import Store  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402

YEAR = 2021
#: Origin of the synthetic block of cells on the grid (row, col): somewhere in southern Africa.
ORIGIN = (4_000, 21_000)
#: Rows written per transaction while building the database.
BATCH = 200_000


def vm_hwm_mib() -> float:
    """This process's peak resident memory (VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def build(folder: Path, n_cells: int) -> Path:
    """A synthetic installation with ``n_cells`` scored cells; its DATA_DIR."""
    settings = load_settings({"DATA_DIR": str(folder)}, environ={})
    grid = settings.grid
    side = math.isqrt(n_cells - 1) + 1
    rng = np.random.default_rng(0)
    with Store(settings.database_path) as store:
        scene = store.scenes.add_scene({
            "year": YEAR, "name": "synthetic", "paths": [str(folder / "none.tif")],
            "bands": ["B2"], "crs": grid.crs, "row0": ORIGIN[0], "row1": ORIGIN[0] + side,
            "col0": ORIGIN[1], "col1": ORIGIN[1] + side, "stretch": {}, "synthetic": 1})
        store.models.add_model({"version": "m0001", "parent": None, "path": "models/m0001.keras",
                                "bands": ["B2"], "threshold": 0.5, "metrics": {}, "training": {}},
                               activate=True)
        index = np.arange(n_cells)
        rows, cols = ORIGIN[0] + index // side, ORIGIN[1] + index % side
        ids = np.asarray(grid.cell_id(rows, cols), dtype=np.int64)
        lon, lat = grid.cell_centres_lonlat(ids)
        for start in range(0, n_cells, BATCH):
            part = slice(start, start + BATCH)
            store.cells.add_cells(zip(ids[part], rows[part], cols[part], lon[part], lat[part],
                                      strict=True))
            scores = rng.beta(0.3, 6.0, size=len(ids[part]))
            store.scores.write_scores(YEAR, "m0001", scene, ids[part], scores, np.abs(scores - 0.5),
                                      np.ones(len(ids[part])))
        for cell_id in ids[rng.choice(n_cells, size=min(50, n_cells), replace=False)]:
            store.labels.record_label(int(cell_id), YEAR, "mine", "bench")
    return folder


def child(data_dir: str, fmt: str, out: str) -> None:
    """Run one export and print its figures as JSON (called in a fresh process)."""
    from analysis.export import export

    settings = load_settings({"DATA_DIR": data_dir}, environ={})
    with Store(settings.database_path) as store:
        baseline = vm_hwm_mib()
        started = time.perf_counter()
        done = export(store, settings, fmt, Path(out), year=YEAR)
        seconds = time.perf_counter() - started
    print(json.dumps({"baseline_mib": round(baseline, 1), "peak_mib": round(vm_hwm_mib(), 1),
                      "seconds": round(seconds, 1), "layers": done.layers,
                      "bytes": Path(out).stat().st_size}))


def measure(data_dir: Path, fmt: str) -> dict:
    out = data_dir / f"export.{fmt}"
    done = subprocess.run([sys.executable, __file__, "--child", str(data_dir), fmt, str(out)],
                          capture_output=True, text=True, check=True)
    out.unlink()
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_300_000,
                        help="cells of the large installation; the small one has a tenth")
    parser.add_argument("--formats", default="csv,geojson,gpkg",
                        help="comma-separated export formats to measure")
    parser.add_argument("--child", nargs=3, metavar=("DATA_DIR", "FORMAT", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    formats = args.formats.split(",")
    results: dict[str, dict] = {fmt: {} for fmt in formats}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.cells // 10, args.cells):
            started = time.perf_counter()
            folder = build(Path(tmp) / f"n{n}", n)
            print(f"{n:,} cells: built in {time.perf_counter() - started:.0f} s", flush=True)
            for fmt in formats:
                figures = measure(folder, fmt)
                results[fmt][str(n)] = figures
                print(f"  {fmt}: peak {figures['peak_mib']:.0f} MiB (after imports "
                      f"{figures['baseline_mib']:.0f} MiB), {figures['seconds']:.1f} s, "
                      f"{figures['bytes'] / 2**20:.0f} MiB written", flush=True)
    small, large = str(args.cells // 10), str(args.cells)
    summary = {fmt: {"cells": [int(small), int(large)],
                     "peak_mib": [r[small]["peak_mib"], r[large]["peak_mib"]],
                     "ratio": round(r[large]["peak_mib"] / r[small]["peak_mib"], 2),
                     "seconds": [r[small]["seconds"], r[large]["seconds"]]}
               for fmt, r in results.items()}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
