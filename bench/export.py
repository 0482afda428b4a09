"""Benchmark an export's memory: peak RSS for N cells against N / 10 (the ratio should be near 1).

Builds a one-year demo installation per size (``--sizes-km``: two territory sides, by default
about sqrt(10) apart, so the larger has ten times the cells) in a temporary folder the way
``run.py demo`` does (ingest, seed labels, first model, scores), then runs each export in a fresh
child process (``--child``) and reads the child's peak resident memory (VmHWM, after the
imports: ``baseline``) so that one export's memory does not hide another's. The last line is one
JSON object: per format, the cells and peak RSS of each size and their ratio.

    .venv/bin/python bench/export.py --sizes-km 40,126 --formats csv,geojson,gpkg
    .venv/bin/python bench/export.py --quick    # one 12 km demo, csv: a check, not figures
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DEMO_YEAR, demo_installation, parse_args  # noqa: E402
from db.store import Store  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402

YEAR = DEMO_YEAR


def vm_hwm_mib() -> float:
    """This process's peak resident memory (VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def cell_count(data_dir: Path) -> int:
    """Cells the export of YEAR writes (scored cells of the active model)."""
    settings = load_settings({"DATA_DIR": str(data_dir)}, environ={})
    with Store(settings.database_path) as store:
        return store.scores.year_summary(store.models.active_model()["version"], YEAR)["scored"]


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
    parser.add_argument("--sizes-km", default="40,126",
                        help="sides of the two demo territories, comma-separated (default "
                             "40,126: 1,600 and 15,876 cells; one side: one territory, ratio 1)")
    parser.add_argument("--formats", default="csv,geojson,gpkg",
                        help="comma-separated export formats to measure")
    parser.add_argument("--epochs", type=int, default=None, help="TRAIN_EPOCHS of the demos")
    parser.add_argument("--child", nargs=3, metavar=("DATA_DIR", "FORMAT", "OUT"),
                        help=argparse.SUPPRESS)
    args = parse_args(parser, sizes_km="12", formats="csv", epochs=2)
    if args.child:
        child(*args.child)
        return
    formats = args.formats.split(",")
    results: dict[str, dict] = {fmt: {} for fmt in formats}
    counts = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sorted({int(s) for s in args.sizes_km.split(",")}):
            folder = demo_installation(Path(tmp) / f"km{size}", size_km=size,
                                       epochs=args.epochs).data_dir
            n = cell_count(folder)
            counts.append(str(n))
            print(f"{size} km: {n:,} scored cells", flush=True)
            for fmt in formats:
                figures = measure(folder, fmt)
                results[fmt][str(n)] = figures
                print(f"  {fmt}: peak {figures['peak_mib']:.0f} MiB (after imports "
                      f"{figures['baseline_mib']:.0f} MiB), {figures['seconds']:.1f} s, "
                      f"{figures['bytes'] / 2**20:.0f} MiB written", flush=True)
    small, large = counts[0], counts[-1]
    summary = {fmt: {"cells": [int(small), int(large)],
                     "peak_mib": [r[small]["peak_mib"], r[large]["peak_mib"]],
                     "ratio": round(r[large]["peak_mib"] / r[small]["peak_mib"], 2),
                     "seconds": [r[small]["seconds"], r[large]["seconds"]]}
               for fmt, r in results.items()}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
