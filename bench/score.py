"""Benchmark whole-scene scoring: how close is score_scene to the bare FCN forward pass?

Writes a synthetic 12-band uint16 Sentinel-2-like scene (default 50 x 50 km at 10 m = 5,000 x
5,000 px, UTM 35S, near Jagersfontein, South Africa) into a temporary directory, builds an untrained
seed FCN bundle, and measures:

1. the bare FCN forward pass over the same tiles already in memory (km²/s),
2. the full ``score_scene`` over the year's mosaic (block reads, no warp + forward + reduction)
   (km²/s),

their ratio, ingest (the one warp onto the grid, ``pipeline.ingest.ingest_files``), reading
alone, and peak resident memory (VmHWM; TensorFlow allocates outside
tracemalloc's view). Run from the repository root: ``.venv/bin/python bench/score.py``.
"""

from __future__ import annotations

import argparse
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

from db.store import Store  # noqa: E402
from imagery.bands import SEED_BANDS  # noqa: E402
from model.bundle import ModelBundle  # noqa: E402
from model.fcn import MARGIN_PX, build_fcn  # noqa: E402
from model.score import CellScores, score_scene  # noqa: E402
from pipeline.ingest import ingest_files, year_mosaic  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402

UTM35S = "EPSG:32735"
ORIGIN = (540_000.0, 6_700_000.0)
PIXEL_M = 10.0
STRIP_ROWS = 512


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-km", type=float, default=50.0, help="scene side in km (default 50)")
    parser.add_argument("--tile-cells", type=int, default=16,
                        help="tile side in cells, at most one store block (default 16)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary scene")
    args = parser.parse_args(argv)

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
        t0 = time.perf_counter()
        with Store(settings.database_path) as store:
            ingest_files(store, settings, [path], 2021)
        t_ingest = time.perf_counter() - t0
        mosaic = year_mosaic(settings, 2021)
        bundle = ModelBundle(
            model=build_fcn(SEED_BANDS, np.full(12, 2000.0), np.full(12, 900.0), seed=0),
            version="bench", parent=None, bands=SEED_BANDS, mean=[2000.0] * 12,
            std=[900.0] * 12,
        )
        cp = grid.cell_px
        side = args.tile_cells * cp + 2 * MARGIN_PX
        bundle.mine_probability(np.zeros((side, side, 12), np.float32))  # trace once, warm up
        base_rss = rss_mib("VmRSS")
        can_reset = reset_peak()

        # (2) full scoring: block reads + forward + reduction
        t0 = time.perf_counter()
        parts = list(score_scene(bundle, mosaic, grid, tile_cells=args.tile_cells))
        t_score = time.perf_counter() - t0
        peak_score = rss_mib("VmHWM")
        result = CellScores.concat(parts)
        n_scored = int(np.isfinite(result.scores).sum())

        # reading alone, keeping the tiles (filled) in memory for (1)
        t0 = time.perf_counter()
        tiles = []
        for tile in mosaic.iter_tiles(tile_cells=args.tile_cells, margin_px=MARGIN_PX,
                                      bands=bundle.bands):
            tiles.append(np.where(np.isnan(tile.pixels), np.float32(2000.0), tile.pixels))
        t_read = time.perf_counter() - t0

        # (1) bare forward pass over the same tiles, already in memory and filled
        forward = bundle._graph_forward()
        t0 = time.perf_counter()
        for pixels in tiles:
            forward(pixels[None]).numpy()
        t_forward = time.perf_counter() - t0
        del tiles

        rows = [
            ("scene", f"{args.size_km:g} x {args.size_km:g} km, {size_px} x {size_px} px x 12 "
                      f"bands, UTM 35S -> EPSG:6933"),
            ("tiles", f"{len(parts)}, up to {args.tile_cells} x {args.tile_cells} cells "
                      f"({side} px with margin); {len(result)} cells, {n_scored} scored"),
            ("write scene (s)", f"{t_write:.1f}"),
            ("ingest (warp once)", f"{area_km2 / t_ingest:8.1f} km²/s  ({t_ingest:.1f} s)"),
            ("(1) bare FCN forward", f"{area_km2 / t_forward:8.1f} km²/s  ({t_forward:.1f} s)"),
            ("(2) score_scene", f"{area_km2 / t_score:8.1f} km²/s  ({t_score:.1f} s)"),
            ("    of which block reads", f"{area_km2 / t_read:8.1f} km²/s  ({t_read:.1f} s)"),
            ("ratio (2)/(1)", f"{t_forward / t_score:.2f}  (score_scene speed / forward speed)"),
            ("RSS before scoring", f"{base_rss:.0f} MiB"),
            ("peak RSS while scoring", f"{peak_score:.0f} MiB (+{peak_score - base_rss:.0f} MiB)"
                                       + ("" if can_reset else " [VmHWM not resettable]")),
            ("CPU cores", str(os.cpu_count())),
        ]
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
    finally:
        if args.keep:
            print(f"scene kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
