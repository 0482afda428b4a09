"""Benchmark: peak memory of training on 10,000 and on 100,000 labelled cell-years.

Training streams its patches from the imagery store (``pipeline.training.StorePatches``), so its
memory should not grow with the number of labels. This builds one installation in a work folder:

1. one synthetic 12-band mosaic of ``--size-km`` x ``--size-km`` (default 100 x 100 km =
   10,000 cells) written straight into the store's blocks (``imagery.store.write_block``; the
   warp of ``run.py ingest`` is not what is measured here) for the first year;
2. ``--years`` - 1 more years whose block files are hard links to the first year's (the same
   pixels, no extra disk), each registered as that year's mosaic, so that every cell of every
   year is a distinct labelled cell-year read from disk;
3. a seed label for every cell of every year (10 % mines, at random: the figures are about
   memory and speed, not about what the model learns).

Then, each in a fresh child process (so each peak is its own), ``pipeline.training.train_model``
trains on the first year's labels (``--size-km``^2 cell-years) and on all years' labels: the
real path (validity pass over every label, band statistics from a bounded sample, the geographic
split, streamed training and validation batches, validation scoring, the label list and hash in
the sidecar). One epoch, limited to ``--steps`` batches of 32 (training and validation) so the
run stays short; every label is in the dataset that the batches are drawn from, and the
validation split is scored in full. The peak RSS (VmHWM) of each child is reported, with the
wall seconds of ``train_bundle`` per 1,000 patches it read (training batches, validation
batches, validation scoring and the band-statistics sample).

Run from the repository root::

    .venv/bin/python bench/train_memory.py [--size-km 100] [--years 10] [--steps 100]
        [--val-fraction 0.05] [--workdir DIR]

``--quick``: 16 km, 2 years, 2 steps. ``--workdir`` keeps (and reuses) the installation; without it
a temporary folder is removed at the end. The last line printed is one JSON object with the keys
``labels_10k_rss_mib``, ``labels_100k_rss_mib`` and ``seconds_per_1000_patches`` (of the larger
run), whatever the sizes asked for.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.common import parse_args  # noqa: E402
from bench.score import rss_mib  # noqa: E402
from db.store import Store  # noqa: E402
from imagery.bands import SEED_BANDS  # noqa: E402
from imagery.grid import CellRange  # noqa: E402
from imagery.store import (  # noqa: E402
    BLOCK_CELLS,
    block_name,
    blocks_covering,
    open_year,
    write_block,
    write_manifest,
    write_vrt,
    year_dir,
)
from pipeline.ingest import mosaic_stretch  # noqa: E402
from pipeline.settings import Settings, load_settings  # noqa: E402

#: First year of the installation; the others follow it.
FIRST_YEAR = 2016
#: North-west corner of the mosaic (Brazil, near Paracatu), moved to a block corner.
CORNER_LONLAT = (-47.0, -17.0)
#: Share of labelled cells that are mines.
MINE_SHARE = 0.1


def installation(workdir: Path) -> Settings:
    """The settings of the benchmark installation in ``workdir``."""
    return load_settings({"DATA_DIR": str(workdir)})


def block_pixels(block: CellRange, cells: CellRange, cp: int, seed: int) -> np.ndarray:
    """uint16 (H, W, 12) texture of a block: 320 m blobs + pixel noise, 0 outside ``cells``."""
    rng = np.random.default_rng(seed)
    height, width = block.n_rows * cp, block.n_cols * cp
    coarse = rng.uniform(500, 3500, size=(height // 32 + 1, width // 32 + 1, 12))
    data = np.repeat(np.repeat(coarse, 32, axis=0), 32, axis=1)[:height, :width]
    data += rng.normal(0, 80, size=data.shape)
    data = data.clip(1, 10000).astype(np.uint16)
    rows = np.arange(block.row0, block.row1).repeat(cp)[:, None]
    cols = np.arange(block.col0, block.col1).repeat(cp)[None, :]
    outside = (rows < cells.row0) | (rows >= cells.row1) | (cols < cells.col0) | (cols >= cells.col1)
    data[outside] = 0
    return data


def build(settings: Settings, size_cells: int, years: int) -> None:
    """Write the first year's blocks, hard-link them into the other years, register all years
    and seed a label on every cell-year."""
    grid, data_dir = settings.grid, settings.data_dir
    row0, col0 = (v // BLOCK_CELLS * BLOCK_CELLS
                  for v in grid.row_col(grid.cell_at_lonlat(*CORNER_LONLAT)))
    cells = CellRange(row0, row0 + size_cells, col0, col0 + size_cells)
    first = year_dir(data_dir, FIRST_YEAR)
    started = time.perf_counter()
    for i, block in enumerate(blocks_covering(cells)):
        write_block(first / block_name(block), grid, block,
                    block_pixels(block, cells, grid.cell_px, seed=i), SEED_BANDS)
    write_manifest(first, grid, SEED_BANDS, cells)
    print(f"wrote {len(blocks_covering(cells))} blocks of {FIRST_YEAR} "
          f"({size_cells * size_cells:,} cells) in {time.perf_counter() - started:.0f} s",
          flush=True)
    ids = grid.cell_ids_in(cells)
    lons, lats = grid.cell_centres_lonlat(ids)
    rows, cols = grid.row_col(ids)
    rng = np.random.default_rng(0)
    with Store(settings.database_path) as store:
        store.cells.add_cells(zip(ids.tolist(), rows.tolist(), cols.tolist(), lons, lats, strict=True))
        for year in range(FIRST_YEAR, FIRST_YEAR + years):
            root = year_dir(data_dir, year)
            if year != FIRST_YEAR:
                root.mkdir(parents=True, exist_ok=True)
                for path in first.iterdir():
                    if path.suffix == ".tif":
                        os.link(path, root / path.name)
                write_manifest(root, grid, SEED_BANDS, cells)
            mosaic = open_year(data_dir, grid, year)
            write_vrt(mosaic)
            store.scenes.replace_year_mosaic({
                "year": year, "name": mosaic.name,
                "paths": [root.relative_to(data_dir).as_posix()], "bands": list(SEED_BANDS),
                "crs": grid.crs, "row0": cells.row0, "row1": cells.row1, "col0": cells.col0,
                "col1": cells.col1, "stretch": mosaic_stretch(mosaic), "synthetic": 1,
            }, [])
            mines = rng.random(len(ids)) < MINE_SHARE
            store.labels.replace_seed_labels(year, zip(ids.tolist(), np.where(mines, "mine",
                                                                        "background").tolist(),
                                                       strict=True), "benchmark")


def child(settings: Settings, n_years: int, steps: int, val_fraction: float) -> dict[str, float]:
    """Train on the labels of the first ``n_years`` years; peak RSS and speed of this process."""
    from model.train import BAND_SAMPLE_PATCHES, TrainConfig
    from pipeline.training import train_model

    config = TrainConfig(epochs=1, steps_per_epoch=steps, val_fraction=val_fraction,
                         patience=0)
    with Store(settings.database_path) as store:
        record, result = train_model(store, settings,
                                     years=list(range(FIRST_YEAR, FIRST_YEAR + n_years)),
                                     config=config)
    metrics, counts = result.metrics, record["training"]["counts"]
    read = (min(steps, -(-counts["train"] // config.batch_size)) * config.batch_size
            + min(steps * max(config.batch_size, 64), counts["val"]) + counts["val"]
            + min(BAND_SAMPLE_PATCHES, counts["train"]))
    return {
        "labels": counts["patches"],
        "train": counts["train"],
        "val": counts["val"],
        "peak_rss_mib": round(rss_mib("VmHWM"), 1),
        "train_seconds": metrics["train_seconds"],
        "patches_read": read,
        "seconds_per_1000_patches": round(1000 * metrics["train_seconds"] / read, 3),
        "label_sha256": record["training"]["labels"]["sha256"],
        "label_list": record["training"]["labels"]["list_file"],
    }


def run_child(workdir: Path, n_years: int, steps: int, val_fraction: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--workdir", str(workdir), "--child-years", str(n_years),
         "--steps", str(steps), "--val-fraction", str(val_fraction)],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-km", type=int, default=100,
                        help="side of the mosaic in km = cells (default 100: 10,000 cells)")
    parser.add_argument("--years", type=int, default=10,
                        help="years (hard-linked copies of the mosaic) (default 10)")
    parser.add_argument("--steps", type=int, default=100,
                        help="most training (and validation) batches of the one epoch "
                             "(default 100)")
    parser.add_argument("--val-fraction", type=float, default=0.05,
                        help="share of the labels in the geographic validation split, all "
                             "scored at the end (default 0.05)")
    parser.add_argument("--workdir", type=Path,
                        help="installation folder to keep and reuse (default: a temporary one)")
    parser.add_argument("--child-years", type=int, help=argparse.SUPPRESS)
    args = parse_args(parser, argv, size_km=16, years=2, steps=2)
    if args.child_years:
        print(json.dumps(child(installation(args.workdir), args.child_years, args.steps,
                               args.val_fraction)))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="minewatch-train-memory-"))
    try:
        settings = installation(workdir)
        if not (settings.database_path.exists() and (year_dir(workdir, FIRST_YEAR)).exists()):
            build(settings, args.size_km, args.years)
        small = run_child(workdir, 1, args.steps, args.val_fraction)
        large = run_child(workdir, args.years, args.steps, args.val_fraction)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    for name, figures in (("one year", small), (f"{args.years} years", large)):
        print(f"{name}: {figures['labels']:,} labelled cell-years ({figures['train']:,} train, "
              f"{figures['val']:,} validation), peak RSS {figures['peak_rss_mib']:,.0f} MiB, "
              f"{figures['train_seconds']:.0f} s for {figures['patches_read']:,} patches read "
              f"({figures['seconds_per_1000_patches']:.2f} s per 1,000), label list "
              f"{figures['label_list'] or 'not written (too many)'}")
    print(json.dumps({"labels_10k_rss_mib": small["peak_rss_mib"],
                      "labels_100k_rss_mib": large["peak_rss_mib"],
                      "seconds_per_1000_patches": large["seconds_per_1000_patches"],
                      "labels_small": small["labels"], "labels_large": large["labels"],
                      "steps_per_epoch": args.steps}))


if __name__ == "__main__":
    main()
