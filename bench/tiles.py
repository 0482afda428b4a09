"""Benchmark the imagery under the map: p95 per map tile, cold (rendered by rio-tiler) and warm
(from the disk cache), at a few zoom levels.

Writes the synthetic 12-band uint16 UTM scene of ``bench/score.py`` (default 50 x 50 km =
2,500 km²), ingests it into a fresh installation with ``pipeline.ingest.ingest_files`` (the
store's one warp), then asks the app for the web-mercator tiles covering the scene at each zoom
(at most ``--per-zoom`` of them, spread evenly), each twice: cold (empty tile cache) and warm.
Requests go over HTTP to the app served by waitress on 127.0.0.1 (``--via waitress``, the
default: what a browser waits for) or through Flask's test client (``--via client``: no socket).

The last line is one JSON object: ``tile_p95_ms_cold``, ``tile_p95_ms_warm``, ``tiles`` and the
per-zoom figures.

Run from the repository root: ``.venv/bin/python bench/tiles.py [--size-km 50]
[--zooms 10,12,14] [--per-zoom 40] [--mode natural] [--via waitress]`` (``--quick``: 4 km, 4
tiles at zoom 12).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import morecantile  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import parse_args  # noqa: E402
from bench.score import PIXEL_M, write_scene  # noqa: E402
from db.store import Store  # noqa: E402
from imagery.tiles import mosaic_bounds_lonlat  # noqa: E402
from labeller import create_app  # noqa: E402
from pipeline.ingest import ingest_files, year_mosaic  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402
from pipeline.tiles import tile_dir  # noqa: E402

YEAR = 2021
Fetch = Callable[[str], bytes]


def tiles_over(bounds: tuple[float, float, float, float], zoom: int,
               limit: int) -> list[morecantile.Tile]:
    """At most ``limit`` tiles of ``zoom`` over ``bounds`` (lon/lat), spread evenly."""
    tms = morecantile.tms.get("WebMercatorQuad")
    tiles = list(tms.tiles(*bounds, zooms=[zoom]))
    if len(tiles) > limit:
        tiles = [tiles[i] for i in np.linspace(0, len(tiles) - 1, limit).astype(int)]
    return tiles


@contextmanager
def fetcher(app, via: str) -> Iterator[Fetch]:
    """A function GET path -> body (raising on any status but 200), over waitress or the client."""
    if via == "client":
        client = app.test_client()

        def get(path: str) -> bytes:
            response = client.get(path)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: HTTP {response.status_code}")
            return response.data

        yield get
        return
    import waitress

    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4)
    # a daemon thread: the server ends with the benchmark's process
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{server.effective_port}"

    def fetch(path: str) -> bytes:
        with urllib.request.urlopen(base + path, timeout=120) as response:
            return response.read()

    yield fetch


def p95_ms(seconds: list[float]) -> float:
    return round(float(np.percentile(np.asarray(seconds) * 1000.0, 95)), 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-km", type=float, default=50.0, help="scene side in km (default 50)")
    parser.add_argument("--zooms", default="10,12,14",
                        help="comma-separated zoom levels (default 10,12,14)")
    parser.add_argument("--per-zoom", type=int, default=40,
                        help="most tiles requested per zoom (default 40)")
    parser.add_argument("--mode", choices=("natural", "false"), default="natural")
    parser.add_argument("--via", choices=("waitress", "client"), default="waitress",
                        help="HTTP to waitress on 127.0.0.1, or Flask's test client")
    args = parse_args(parser, argv, size_km=4.0, zooms="12", per_zoom=4)
    zooms = [int(z) for z in args.zooms.split(",") if z.strip()]
    size_px = int(round(args.size_km * 1000 / PIXEL_M))
    tmp = Path(tempfile.mkdtemp(prefix="minewatch-bench-tiles-"))
    try:
        write_scene(tmp / "scene.tif", size_px)
        settings = load_settings({"DATA_DIR": str(tmp / "instance")}, environ={})
        t0 = time.perf_counter()
        with Store(settings.database_path) as store:
            result = ingest_files(store, settings, [tmp / "scene.tif"], YEAR)
        t_ingest = time.perf_counter() - t0
        bounds = mosaic_bounds_lonlat(year_mosaic(settings, YEAR))
        app = create_app({"DATA_DIR": str(settings.data_dir), "SECRET_KEY": "bench"})
        print(f"scene: {args.size_km:g} x {args.size_km:g} km, {size_px} px, 12 bands; ingest "
              f"{t_ingest:.1f} s ({result.blocks} blocks); tiles via {args.via}, "
              f"mode {args.mode}", flush=True)
        cold: list[float] = []
        warm: list[float] = []
        per_zoom: dict[str, dict[str, float]] = {}
        with fetcher(app, args.via) as get:
            get("/map")  # the first request loads what the app loads once
            shutil.rmtree(tile_dir(settings), ignore_errors=True)
            for zoom in zooms:
                tiles = tiles_over(bounds, zoom, args.per_zoom)
                times = {"cold": [], "warm": []}
                for kind in ("cold", "warm"):
                    for tile in tiles:
                        t0 = time.perf_counter()
                        body = get(f"/tiles/{YEAR}/{args.mode}/{tile.z}/{tile.x}/{tile.y}.png")
                        times[kind].append(time.perf_counter() - t0)
                        if body[:8] != b"\x89PNG\r\n\x1a\n":
                            raise RuntimeError(f"tile {tile} is not a PNG")
                cold += times["cold"]
                warm += times["warm"]
                per_zoom[str(zoom)] = {"tiles": len(tiles), "p95_ms_cold": p95_ms(times["cold"]),
                                       "p95_ms_warm": p95_ms(times["warm"]),
                                       "p50_ms_cold": round(float(np.median(times["cold"])) * 1e3,
                                                            1)}
                print(f"zoom {zoom:2d}: {len(tiles):3d} tiles  cold p50 "
                      f"{per_zoom[str(zoom)]['p50_ms_cold']:7.1f} ms  p95 "
                      f"{per_zoom[str(zoom)]['p95_ms_cold']:7.1f} ms   warm p95 "
                      f"{per_zoom[str(zoom)]['p95_ms_warm']:6.1f} ms", flush=True)
        print(json.dumps({"tile_p95_ms_cold": p95_ms(cold), "tile_p95_ms_warm": p95_ms(warm),
                          "tiles": len(cold), "via": args.via, "size_km": args.size_km,
                          "mode": args.mode, "per_zoom": per_zoom}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
