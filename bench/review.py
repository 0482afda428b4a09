"""Benchmark of the review path: next card, label write, thumbnails (cold and warm).

Builds a database in a temporary folder with 1.3 million scored cells (one model, one year) and
100,000 review labels on the most uncertain cells (what an uncertainty queue leaves behind: the
worst case for the uncertainty-ordered scan), plus a small real 12-band GeoTIFF for thumbnails.
Prints p50 / p95 in milliseconds, next to a same-process baseline (a ``SELECT 1`` round trip).

Targets (issue 3): next card p95 < 50 ms, label write p95 < 20 ms.

    .venv/bin/python bench/review.py [--cells 1300000] [--labels 100000] [--rounds 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from affine import Affine  # noqa: E402

from db.store import Store  # noqa: E402
from imagery.bands import SEED_BANDS  # noqa: E402
from imagery.grid import CellGrid  # noqa: E402
from pipeline import review as service  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402

ROW0, COL0 = 10_000, 19_000
YEAR = 2021


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def build(root: Path, n_cells: int, n_labels: int) -> tuple[Path, list[int]]:
    grid = CellGrid()
    side = int(np.ceil(np.sqrt(n_cells)))
    ids = (np.arange(n_cells) // side + ROW0) * 100_000 + (np.arange(n_cells) % side + COL0)
    rng = np.random.default_rng(7)
    scores = rng.beta(0.4, 3.0, n_cells)
    uncertainty = 1 - np.abs(2 * scores - 1)
    database = root / "bench.db"
    started = time.perf_counter()
    with Store(database) as store:
        lon, lat = grid.cell_centres_lonlat(ids)
        store.cells.add_cells(zip(ids.tolist(), (ids // 100_000).tolist(), (ids % 100_000).tolist(),
                                  lon.tolist(), lat.tolist(), strict=True))
        store.models.add_model({"version": "m0001", "path": "x", "bands": list(SEED_BANDS),
                                "threshold": 0.5, "metrics": {}, "training": {}}, activate=True)
        scene = write_geotiff(root / "thumbs.tif", grid)
        stretch = {b: [300.0, 4000.0] for b in ("B2", "B3", "B4", "B8A", "B12")}
        big = store.scenes.add_scene({"year": YEAR, "name": "territory", "paths": ["/nonexistent.tif"],
                                      "bands": list(SEED_BANDS), "crs": grid.crs, "row0": ROW0,
                                      "row1": ROW0 + side, "col0": COL0, "col1": COL0 + side,
                                      "stretch": stretch})
        store.scenes.add_scene({"year": YEAR, "name": "thumbs.tif", "paths": [str(scene)],
                                "bands": list(SEED_BANDS), "crs": grid.crs, "row0": ROW0,
                                "row1": ROW0 + 10, "col0": COL0, "col1": COL0 + 10, "stretch": stretch})
        store.scores.write_scores(YEAR, "m0001", big, ids.tolist(), scores.tolist(),
                                  uncertainty.tolist(), [1.0] * n_cells)
        most_uncertain = ids[np.argsort(-uncertainty)[:n_labels]]
        store.labels.import_label_events(
            {"cell_id": int(c), "year": YEAR, "reviewer": f"r{i % 7}",
             "label": "background" if i % 5 else "mine"} for i, c in enumerate(most_uncertain))
        store.db.execute("ANALYZE")
    print(f"built {n_cells:,} scored cells and {n_labels:,} labels in "
          f"{time.perf_counter() - started:.0f} s ({database.stat().st_size / 1e6:.0f} MB)")
    thumb_cells = [int((ROW0 + r) * 100_000 + COL0 + c) for r in range(1, 9) for c in range(1, 9)]
    return database, thumb_cells


def write_geotiff(path: Path, grid: CellGrid) -> Path:
    """A 12-band 10 x 10 km uint16 GeoTIFF at 10 m on the grid (the thumbnails' source)."""
    rng = np.random.default_rng(3)
    minx, _, _, maxy = grid.cell_bounds(ROW0 * 100_000 + COL0)
    data = rng.integers(300, 4000, size=(12, 1000, 1000), dtype=np.uint16)
    with rasterio.open(path, "w", driver="GTiff", count=12, height=1000, width=1000,
                       dtype="uint16", crs=grid.crs, transform=Affine(10, 0, minx, 0, -10, maxy),
                       tiled=True) as ds:
        ds.write(data)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_300_000)
    parser.add_argument("--labels", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="minewatch-bench-") as tmp:
        run(Path(tmp), args)


def run(root: Path, args: argparse.Namespace) -> None:
    database, thumb_cells = build(root, args.cells, args.labels)
    settings = load_settings({"DATA_DIR": str(root), "DATABASE": str(database)})
    prefetch = settings.PREFETCH
    results: dict[str, list[float]] = {}
    with Store(database) as store:
        results["baseline: SELECT 1"] = [
            timed(lambda: store.db.execute("SELECT 1").fetchone()) for _ in range(args.rounds)]

        def review_loop(name: str, n: int, **queue) -> None:
            """A reviewer who takes the next card(s) and labels the first, ``rounds`` times."""
            nexts, writes = [], []
            reviewer = f"bench-{name}-{n}"
            for _ in range(args.rounds):
                start = time.perf_counter()
                batch = service.next_cards(store, reviewer=reviewer, n=n, year=YEAR, **queue)
                nexts.append((time.perf_counter() - start) * 1000)
                card = batch[0]
                form = service.DecisionForm("background", uuid.uuid4().hex)
                start = time.perf_counter()
                service.decide(store, reviewer=reviewer, cell_id=card["cell_id"], year=YEAR,
                               form=form)
                writes.append((time.perf_counter() - start) * 1000)
            results[f"next card, {name}, n={n}"] = nexts
            results.setdefault("label write (decide: lease check + record_label)", []).extend(writes)

        review_loop("uncertainty", 1, strategy="uncertainty")
        review_loop("uncertainty", 1 + prefetch, strategy="uncertainty")
        review_loop("score", 1 + prefetch, strategy="score")
        review_loop("random", 1 + prefetch, strategy="random")
        review_loop("uncertainty, predicted only", 1 + prefetch, strategy="uncertainty",
                    predicted_only=True)
        plain = []
        cells = store.leases.queue_candidates("m0001", YEAR, "random", "bench-plain", args.rounds)
        for row in cells:
            plain.append(timed(lambda row=row: store.labels.record_label(
                row["cell_id"], YEAR, "mine", "bench-plain", request_id=uuid.uuid4().hex,
                ms_spent=900, score_shown=row["score"], model_version_shown="m0001")))
        results["label write (Labels.record_label)"] = plain
        results["queue count (Leases.count_queue)"] = [
            timed(lambda: store.leases.count_queue("m0001", YEAR)) for _ in range(5)]
        results["queue count (Leases.count_queue_fast, counters)"] = [
            timed(lambda: store.leases.count_queue_fast("m0001", YEAR)) for _ in range(5)]
        service.forget_frontier(store)
        results["next card, uncertainty, full scan (every 30 s)"] = [
            timed(lambda: service.next_cards(store, reviewer="bench-full", n=1, year=YEAR))]
        cold, warm = [], []
        for cell in thumb_cells:
            cold.append(timed(lambda cell=cell: service.thumbnail_path(
                store, settings, cell, YEAR, "rgb", "cell")))
        for cell in thumb_cells:
            warm.append(timed(lambda cell=cell: service.thumbnail_path(
                store, settings, cell, YEAR, "rgb", "cell")))
        results["thumbnail cold (render 400 px PNG)"] = cold
        results["thumbnail warm (cache hit)"] = warm
        context = [timed(lambda cell=cell: service.thumbnail_path(
            store, settings, cell, YEAR, "rgb", "context")) for cell in thumb_cells]
        results["context thumbnail cold (3 x 3 cells)"] = context

    base = statistics.median(results["baseline: SELECT 1"])
    print(f"\n{'operation':58} {'n':>5} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}"
          f" {'p50/baseline':>13}")
    for name, values in results.items():
        p50, p95 = pct(values, 50), pct(values, 95)
        print(f"{name:58} {len(values):5d} {p50:9.3f} {p95:9.3f} {max(values):9.3f}"
              f" {p50 / base:13.0f}")
    print("\ntargets: next card p95 < 50 ms, label write p95 < 20 ms")


if __name__ == "__main__":
    main()
