"""Benchmark the imagery store: ingest (the one warp) and reading tiles from it vs warping them.

Writes the synthetic 12-band uint16 UTM scene of ``bench/score.py`` (default 50 x 50 km =
2,500 km², UTM 35S) into a temporary folder and measures, in one process:

1. ingest: ``pipeline.ingest.ingest_files`` into a fresh installation (km²/s of the scene, peak RSS
   added),
2. reading every scoring tile (16 x 16 cells + the FCN's margin, 12 bands) from the store with
   ``YearMosaic.read_tile`` (km²/s),
3. the same windows warped from the scene with ``imagery.scene.read_pixels`` (the read that
   scoring did before the store) (km²/s),
4. with ``--codecs``: CPU time to write and to decode the store's blocks, and their size, with
   ZSTD level 1, ZSTD level 9 and DEFLATE (all with predictor 2): the measurement behind
   ``imagery.store.COMPRESSION``.

Wall-clock rates are printed with the CPU seconds of the process next to them, so that a busy
machine shows as wall >> CPU.

Run from the repository root: ``.venv/bin/python bench/store.py [--size-km 50] [--codecs]``
(``--quick``: 2 km). The last line is one JSON object of the speeds (km²/s) and peak memory.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import rasterio  # noqa: E402

from bench.common import parse_args  # noqa: E402
from bench.score import PIXEL_M, reset_peak, rss_mib, write_scene  # noqa: E402
from db.store import Store  # noqa: E402
from imagery.scene import open_scene, read_pixels  # noqa: E402
from imagery.store import BLOCK_CELLS, block_name  # noqa: E402
from model.fcn import MARGIN_PX  # noqa: E402
from pipeline.ingest import ingest_files, year_mosaic  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402

#: Compressions compared by ``--codecs`` (all with horizontal predictor 2).
CODECS: dict[str, dict[str, object]] = {
    "zstd level 1 (the store's)": {"compress": "zstd", "zstd_level": 1},
    "zstd level 9 (GDAL default)": {"compress": "zstd", "zstd_level": 9},
    "deflate level 6": {"compress": "deflate", "zlevel": 6},
}


def codec_table(mosaic, folder: Path) -> list[tuple[str, str]]:
    """Write every block with each codec; CPU seconds to write and to decode (best of 3), size.

    CPU time (``time.process_time``) rather than wall time, so that other processes on the
    machine do not blur the comparison.
    """
    rows = []
    blocks = mosaic.blocks()
    for label, options in CODECS.items():
        target = folder / label.split()[0] / str(len(rows))
        target.mkdir(parents=True)
        write_s, size, raw = 0.0, 0, 0
        for block in blocks:
            with rasterio.open(mosaic.block_path(block)) as src:
                profile, data = src.profile, src.read()
            profile.update(options)
            raw += data.nbytes
            t0 = time.process_time()
            with rasterio.open(target / block_name(block), "w", **profile) as dst:
                dst.write(data)
            write_s += time.process_time() - t0
            size += (target / block_name(block)).stat().st_size
        decode_s = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            for block in blocks:
                with rasterio.open(target / block_name(block)) as ds:
                    ds.read()
            decode_s = min(decode_s, time.process_time() - t0)
        rows.append((label, f"decode {decode_s / len(blocks):.3f} s/block, write "
                            f"{write_s / len(blocks):.3f} s/block (CPU), {size / 2**20:.0f} MiB "
                            f"({raw / size:.2f}x)"))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-km", type=float, default=50.0, help="scene side in km (default 50)")
    parser.add_argument("--codecs", action="store_true", help="also compare ZSTD and DEFLATE")
    parser.add_argument("--ingest-threads", type=int, default=None,
                        help="INGEST_THREADS for the ingest (default: the setting's default)")
    args = parse_args(parser, argv, size_km=2.0)
    size_px = int(round(args.size_km * 1000 / PIXEL_M))
    area_km2 = (size_px * PIXEL_M / 1000.0) ** 2
    tmp = Path(tempfile.mkdtemp(prefix="minewatch-bench-store-"))
    try:
        path = tmp / "scene.tif"
        write_scene(path, size_px)
        settings = load_settings({"DATA_DIR": str(tmp / "instance"),
                                  "INGEST_THREADS": args.ingest_threads}, environ={})
        grid = settings.grid
        base = rss_mib("VmRSS")
        can_reset = reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        with Store(settings.database_path) as store:
            result = ingest_files(store, settings, [path], 2021)
        t_ingest, c_ingest = time.perf_counter() - t0, time.process_time() - c0
        peak = rss_mib("VmHWM")
        mosaic = year_mosaic(settings, 2021)
        scene = open_scene(path)
        blocks = mosaic.blocks()

        t0, c0 = time.perf_counter(), time.process_time()
        for block in blocks:
            mosaic.read_tile(block, MARGIN_PX)
        t_store, c_store = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        cp = grid.cell_px
        for block in blocks:
            read_pixels(scene, grid, block.row0 * cp - MARGIN_PX, block.col0 * cp - MARGIN_PX,
                        block.n_rows * cp + 2 * MARGIN_PX, block.n_cols * cp + 2 * MARGIN_PX)
        t_warp, c_warp = time.perf_counter() - t0, time.process_time() - c0
        tile_km2 = len(blocks) * BLOCK_CELLS ** 2 * (grid.cell_size_m / 1000.0) ** 2
        check, _ = mosaic.read_tile(blocks[len(blocks) // 2], MARGIN_PX).interior
        warped, _ = read_pixels(scene, grid, blocks[len(blocks) // 2].row0 * cp,
                                blocks[len(blocks) // 2].col0 * cp, BLOCK_CELLS * cp,
                                BLOCK_CELLS * cp)
        both = np.isfinite(check).all(-1) & np.isfinite(warped).all(-1)
        rows = [
            ("scene", f"{args.size_km:g} x {args.size_km:g} km = {area_km2:,.0f} km², "
                      f"{size_px} x {size_px} px x 12 bands uint16, UTM 35S -> EPSG:6933"),
            ("ingest (warp once)", f"{area_km2 / t_ingest:8.1f} km²/s  ({t_ingest:.1f} s wall, "
                                   f"{c_ingest:.1f} s CPU; {result.blocks} blocks, "
                                   f"{result.new_cells} cells, "
                                   f"{settings.INGEST_THREADS} thread(s))"),
            ("peak RSS added by ingest", f"{peak - base:.0f} MiB"
                                         + ("" if can_reset else " [VmHWM not resettable]")),
            ("store read_tile (no warp)", f"{tile_km2 / t_store:8.1f} km²/s  ({t_store:.2f} s "
                                          f"wall, {c_store:.2f} s CPU; {len(blocks)} tiles of "
                                          "16 x 16 cells + margin)"),
            ("old warp read_pixels", f"{tile_km2 / t_warp:8.1f} km²/s  ({t_warp:.2f} s wall, "
                                     f"{c_warp:.2f} s CPU; same windows)"),
            ("speed-up", f"{t_warp / t_store:.1f}x wall, {c_warp / c_store:.1f}x CPU"),
            ("max |store - warp| DN", f"{np.abs(check[both] - warped[both]).max():.1f} "
                                      "(uint16 rounding of the same warp)"),
            ("CPU cores", str(os.cpu_count())),
        ]
        if args.codecs:
            rows += codec_table(mosaic, tmp / "codecs")
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
        print(json.dumps({"ingest_km2_s": round(area_km2 / t_ingest, 1),
                          "store_read_km2_s": round(tile_km2 / t_store, 1),
                          "warp_read_km2_s": round(tile_km2 / t_warp, 1),
                          "peak_rss_added_mib": round(peak - base, 1) if can_reset else None,
                          "blocks": len(blocks)}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
