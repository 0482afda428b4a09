"""Benchmark ingest and scoring at the machine's limit: scoring against the bare FCN forward pass.

Writes a synthetic 12-band uint16 Sentinel-2-like scene (default 50 x 50 km = 2,500 km² at 10 m,
UTM 35S near Jagersfontein, South Africa) into a temporary installation, ingests it into the
grid-aligned store (one warp), registers an untrained seed-size FCN, then measures:

1. ingest: km²/s of the scene's area (read + warp + write of the store's blocks);
2. scoring: ``pipeline.scoring.score_year`` from the store to rows in SQLite (prefetching reader,
   FCN, one writer; or ``--scheduler`` for Dask), km²/s;
3. the bare FCN forward pass over the same pixels (the same FCN tiles that scoring runs the
   network on, already in memory and NaN-filled), timed tile by tile in the same run, km²/s;
4. their ratio (scoring speed / forward speed; target >= 0.7) and the peak resident memory added
   while scoring (VmHWM - VmRSS before; target < 1 GiB, and the same at 4 x the area);
5. with ``--workers N``: the same blocks scored again (``restart``) by N Dask worker processes
   of one thread each on this machine, and that speed over the one process's.

The last line printed is one JSON object with the keys ``ratio``, ``score_km2_s``,
``forward_km2_s``, ``ingest_km2_s``, ``peak_rss_added_mib``, ``device``, ``batch`` (and a few
more; ``workers_vs_process`` with ``--workers``).
Run from the repository root: ``.venv/bin/python bench/score.py [--size-km 50]`` (``--quick``:
2 km).
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

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from bench.common import parse_args  # noqa: E402
from db.store import Store  # noqa: E402
from imagery.bands import SEED_BANDS  # noqa: E402
from imagery.grid import CellRange  # noqa: E402
from model.bundle import ModelBundle  # noqa: E402
from model.fcn import MARGIN_PX, build_fcn  # noqa: E402
from pipeline.ingest import ingest_files, year_mosaic  # noqa: E402
from pipeline.scoring import ScoringOptions, score_year  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402
from pipeline.training import model_file, register_model  # noqa: E402

UTM35S = "EPSG:32735"
ORIGIN = (540_000.0, 6_700_000.0)
PIXEL_M = 10.0
STRIP_ROWS = 512
YEAR = 2021


def rss_mib(field: str) -> float:
    """VmRSS / VmHWM of this process in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def device() -> str:
    """The device TensorFlow computes on: the first GPU's name, else "CPU (N cores)"."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU ({details.get('device_name', gpus[0].name)}, {len(gpus)} visible)"
    return f"CPU ({os.cpu_count()} cores)"


def write_scene(path: Path, size_px: int, seed: int = 0) -> None:
    """12-band uint16 texture: 320 m blobs + 40 m blobs + pixel noise, written in strips."""
    rng = np.random.default_rng(seed)
    coarse_a = rng.uniform(500, 3500, size=(12, size_px // 32 + 2, size_px // 32 + 2))
    coarse_b = rng.uniform(-600, 600, size=(12, size_px // 4 + 2, size_px // 4 + 2))
    profile = dict(driver="GTiff", count=12, height=size_px, width=size_px, dtype="uint16",
                   crs=UTM35S, transform=from_origin(*ORIGIN, PIXEL_M, PIXEL_M), nodata=0,
                   tiled=True, blockxsize=512, blockysize=512)
    with rasterio.open(path, "w", **profile) as ds:
        for row0 in range(0, size_px, STRIP_ROWS):
            rows = min(STRIP_ROWS, size_px - row0)
            r = np.arange(row0, row0 + rows)
            c = np.arange(size_px)
            strip = (coarse_a[:, r[:, None] // 32, c[None, :] // 32]
                     + coarse_b[:, r[:, None] // 4, c[None, :] // 4]
                     + rng.normal(0, 80, size=(12, rows, size_px)))
            ds.write(strip.clip(1, 10000).astype(np.uint16), window=Window(0, row0, size_px, rows))
        for i, band in enumerate(SEED_BANDS, start=1):
            ds.set_band_description(i, band)


def forward_seconds(bundle: ModelBundle, mosaic, blocks: list[CellRange], fcn_tile_cells: int,
                    cell_px: int, min_valid_fraction: float) -> float:
    """Seconds of the bare forward pass over the FCN tiles that scoring runs the network on
    (those with a cell of at least ``min_valid_fraction`` valid pixels); reads are not timed."""
    forward = bundle._graph_forward()
    fill = np.asarray(bundle.mean, dtype=np.float32)
    total = 0.0
    step = fcn_tile_cells * cell_px
    for block in blocks:
        tile = mosaic.read_tile(block, MARGIN_PX, bundle.bands)
        pixels = np.where(np.isnan(tile.pixels), fill, tile.pixels)
        for y in range(0, pixels.shape[0] - 2 * MARGIN_PX, step):
            for x in range(0, pixels.shape[1] - 2 * MARGIN_PX, step):
                inner = tile.valid[MARGIN_PX + y:MARGIN_PX + y + step,
                                   MARGIN_PX + x:MARGIN_PX + x + step]
                cells = inner.reshape(inner.shape[0] // cell_px, cell_px,
                                      inner.shape[1] // cell_px, cell_px).mean(axis=(1, 3))
                if not (cells >= min_valid_fraction).any():
                    continue
                part = np.ascontiguousarray(pixels[y:y + step + 2 * MARGIN_PX,
                                                   x:x + step + 2 * MARGIN_PX])
                t0 = time.perf_counter()
                forward(part[None]).numpy()
                total += time.perf_counter() - t0
    return total


def workers_seconds(store: Store, settings, bundle: ModelBundle, model_path: Path,
                    options: ScoringOptions, workers: int) -> float:
    """Seconds to score the year's blocks again on ``workers`` local Dask worker processes (one
    thread each; the cluster's start-up is not timed)."""
    from pipeline.distributed import dask_client, dask_runner

    with dask_client(f"local:{workers}") as client:
        client.wait_for_workers(workers)
        runner = dask_runner(client, model_path, fcn_tile_cells=options.fcn_tile_cells,
                             batch=options.batch)
        t0 = time.perf_counter()
        score_year(store, settings, bundle, YEAR, options=options, runner=runner, restart=True)
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-km", type=float, default=50.0,
                        help="scene side in km (default 50: 2,500 km²)")
    parser.add_argument("--fcn-tile-cells", type=int, default=ScoringOptions.fcn_tile_cells,
                        help="side of one FCN pass in cells")
    parser.add_argument("--prefetch", type=int, default=ScoringOptions.prefetch,
                        help="blocks read ahead of the FCN")
    parser.add_argument("--readers", type=int, default=ScoringOptions.readers,
                        help="reader threads")
    parser.add_argument("--batch", type=int, default=ScoringOptions.batch,
                        help="FCN passes stacked into one FCN call (more for a GPU)")
    parser.add_argument("--workers", type=int, default=0,
                        help="also score the same blocks on N local Dask worker processes and "
                             "report that speed over the one process's")
    parser.add_argument("--scheduler", default="",
                        help="score on Dask: tcp://HOST:PORT or local:N (default: this process)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary installation")
    args = parse_args(parser, argv, size_km=2.0)
    if args.workers and args.scheduler:
        parser.error("--workers compares with scoring in this process: give no --scheduler")

    size_px = int(round(args.size_km * 1000 / PIXEL_M))
    area_km2 = (size_px * PIXEL_M / 1000.0) ** 2
    tmp = Path(tempfile.mkdtemp(prefix="minewatch-bench-"))
    settings = load_settings({"DATA_DIR": str(tmp / "instance")}, environ={})
    grid = settings.grid
    try:
        t0 = time.perf_counter()
        path = tmp / "bench_scene.tif"
        write_scene(path, size_px)
        t_write = time.perf_counter() - t0
        with Store(settings.database_path) as store:
            t0 = time.perf_counter()
            ingest_files(store, settings, [path], YEAR)
            t_ingest = time.perf_counter() - t0
            mosaic = year_mosaic(settings, YEAR)
            blocks = mosaic.blocks()
            bundle = ModelBundle(
                model=build_fcn(SEED_BANDS, np.full(12, 2000.0), np.full(12, 900.0), seed=0),
                version="m0001", parent=None, bands=SEED_BANDS, mean=[2000.0] * 12,
                std=[900.0] * 12,
            )
            register_model(store, settings, bundle, activate=True)
            model_path = model_file(store, store.models.model(bundle.version), settings)
            side = args.fcn_tile_cells * grid.cell_px + 2 * MARGIN_PX
            bundle.mine_probability(np.zeros((side, side, 12), np.float32))  # trace once
            options = ScoringOptions(prefetch=args.prefetch, readers=args.readers,
                                     fcn_tile_cells=args.fcn_tile_cells, batch=args.batch)
            base_rss = rss_mib("VmRSS")
            can_reset = reset_peak()
            t0 = time.perf_counter()
            if args.scheduler:
                from pipeline.distributed import dask_client, dask_runner

                with dask_client(args.scheduler) as client:
                    t0 = time.perf_counter()  # cluster start-up is not scoring
                    done = score_year(store, settings, bundle, YEAR, options=options,
                                      runner=dask_runner(client, model_path,
                                                         fcn_tile_cells=args.fcn_tile_cells,
                                                         batch=args.batch))
                    t_score = time.perf_counter() - t0
            else:
                done = score_year(store, settings, bundle, YEAR, options=options)
                t_score = time.perf_counter() - t0
            peak = rss_mib("VmHWM")
            rows = store.db.execute("SELECT count(*) FROM scores").fetchone()[0]
            t_workers = (workers_seconds(store, settings, bundle, model_path, options, args.workers)
                         if args.workers else None)
        t_forward = forward_seconds(bundle, mosaic, blocks, args.fcn_tile_cells, grid.cell_px,
                                    settings.MIN_VALID_FRACTION)

        result = {
            "ratio": round(t_forward / t_score, 3),
            "score_km2_s": round(area_km2 / t_score, 1),
            "forward_km2_s": round(area_km2 / t_forward, 1),
            "ingest_km2_s": round(area_km2 / t_ingest, 1),
            "peak_rss_added_mib": round(peak - base_rss, 1) if can_reset else None,
            "device": device(),
            "area_km2": round(area_km2, 1),
            "blocks": len(blocks),
            "score_rows": rows,
            "scheduler": args.scheduler or "in process",
            "batch": args.batch,
            "readers": args.readers,
        }
        if t_workers is not None:
            result.update(workers=args.workers, workers_km2_s=round(area_km2 / t_workers, 1),
                          workers_vs_process=round(t_score / t_workers, 3))
        table = [
            ("scene", f"{args.size_km:g} x {args.size_km:g} km ({area_km2:,.0f} km²), "
                      f"{size_px} x {size_px} px x 12 bands, UTM 35S -> EPSG:6933"),
            ("store", f"{len(blocks)} blocks of 16 x 16 cells; {rows} score rows, "
                      f"{done.scored} scored"),
            ("write scene (s)", f"{t_write:.1f}"),
            ("ingest (warp once)", f"{result['ingest_km2_s']:8.1f} km²/s  ({t_ingest:.1f} s)"),
            ("bare FCN forward", f"{result['forward_km2_s']:8.1f} km²/s  ({t_forward:.1f} s)"),
            ("scoring to SQLite", f"{result['score_km2_s']:8.1f} km²/s  ({t_score:.1f} s, "
                                  f"{result['scheduler']})"),
            ("ratio", f"{result['ratio']:.2f}  (scoring speed / forward speed)"),
            ("RSS before scoring", f"{base_rss:.0f} MiB"),
            ("peak RSS while scoring", f"{peak:.0f} MiB (+{peak - base_rss:.0f} MiB)"
                                       + ("" if can_reset else " [VmHWM not resettable]")),
            ("device", result["device"]),
            ("FCN batch, readers", f"{args.batch}, {args.readers}"),
        ]
        if t_workers is not None:
            table.append((f"{args.workers} Dask workers", f"{result['workers_km2_s']:8.1f} km²/s  "
                          f"({t_workers:.1f} s): x{result['workers_vs_process']:.2f} the process"))
        width = max(len(k) for k, _ in table)
        for key, value in table:
            print(f"{key:<{width}}  {value}")
        print(json.dumps(result))
        return result
    finally:
        if args.keep:
            print(f"installation kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
