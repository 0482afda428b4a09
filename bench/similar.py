"""Benchmark "more like this": index build and query time at country scale, and whether the
nearest cells of a demo mine are mines.

1. Scale (synthetic vectors): ``--cells`` (default 1.3 million) uint8 embeddings of the seed FCN's
   real width (64), drawn as a mixture of ``--clusters`` Gamma-distributed centres plus noise
   and quantised exactly as scoring quantises them, so the index sees realistic non-negative,
   clustered vectors; the values are synthetic (no 1.3-million-cell scored territory exists here).
   Times ``pipeline.embedding_index.build_index`` (the IVF + 8-bit path used above EXACT_MAX cells) and
   ``--queries`` searches of the neighbours one review batch asks for (``k = 64``); p50 / p95 ms;
   recall@20 against brute force.
2. Demo territory (real embeddings): builds the synthetic demo (``simulation.synthetic``, known mines)
   for ``--demo-years`` at ``--demo-km`` as ``run.py demo`` does, trains the first model
   (``--epochs``) and scores it (storing the embeddings), then for every truth mine cell (at
   least 5 % active mine, the oracle's rule) asks the index for its 20 nearest cells and counts
   how many are mines: precision@20 against the base rate (mine cells / scored cells). Also
   printed: the same with the anchor's 8 adjacent cells left out (parts of the same mine are easy
   look-alikes). Then the review path end to end on that installation: the first query (index
   built from the database and written to disk) and ``--queries`` calls of
   ``next_cards(strategy="similar", n=5)`` (anchor lookup, index search, the SQL filter of
   labelled / leased / outside cells, the lease write).

The last line is one JSON object with the keys ``similar_build_s``, ``similar_p95_ms``,
``similar_precision_at_20``, ``base_rate`` (and a few more). Run from the repository root:
``.venv/bin/python bench/similar.py [--cells 1300000] [--demo-km 40]`` (``--quick``: 20,000
vectors, a 12 km demo, 20 queries).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.common import demo_installation, parse_args  # noqa: E402
from db.store import Store  # noqa: E402
from imagery.grid import ID_STRIDE  # noqa: E402
from model.score import quantise_embeddings  # noqa: E402
from pipeline.embedding_index import SimilarityIndex, build_index, normalised  # noqa: E402
from pipeline.seeds import MIN_MASK_FRACTION  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from review.similar import nearest_cells  # noqa: E402
from simulation.synthetic import truth_mine_fraction  # noqa: E402

#: The seed FCN's last hidden layer width: the embedding's length.
DIM = 64
#: Neighbours one review batch asks the index for (1 + PREFETCH cards, overfetched).
BATCH_K = 64


def synthetic_embeddings(n: int, clusters: int, seed: int = 0) -> np.ndarray:
    """``n`` normalised vectors from quantised non-negative clustered features."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(1.2, 1.0, size=(clusters, DIM)).astype(np.float32)
    vectors = np.empty((n, DIM), dtype=np.float32)
    step = 200_000
    for start in range(0, n, step):
        stop = min(n, start + step)
        which = rng.integers(0, clusters, stop - start)
        features = centres[which] * rng.gamma(4.0, 0.25, size=(stop - start, DIM))
        q, scale = quantise_embeddings(features)
        vectors[start:stop] = normalised(q, scale)
    return vectors


def scale_run(n: int, clusters: int, queries: int) -> dict[str, float]:
    """Build time and query latency on ``n`` synthetic vectors."""
    vectors = synthetic_embeddings(n, clusters)
    ids = np.arange(n, dtype=np.int64)
    t0 = time.perf_counter()
    index = SimilarityIndex("bench", 0, "", build_index(ids, vectors))
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    times = []
    for row in rng.choice(n, queries, replace=False):
        t = time.perf_counter()
        index.search(vectors[row], BATCH_K)
        times.append((time.perf_counter() - t) * 1000)
    exact_hits = []
    for row in rng.choice(n, 20, replace=False):
        truth = set(np.argpartition(-(vectors @ vectors[row]), 20)[:20].tolist())
        exact_hits.append(len(truth & set(index.search(vectors[row], 20)[0].tolist())) / 20)
    result = {"cells": n, "build_s": build_s, "p50_ms": float(np.percentile(times, 50)),
              "p95_ms": float(np.percentile(times, 95)), "recall_at_20": float(np.mean(exact_hits))}
    print(f"scale: {n:,} synthetic {DIM}-byte embeddings ({clusters} clusters): build "
          f"{build_s:.1f} s; query k={BATCH_K} p50 {result['p50_ms']:.2f} ms, p95 "
          f"{result['p95_ms']:.2f} ms over {queries}; recall@20 vs brute force "
          f"{result['recall_at_20']:.2f}", flush=True)
    return result


def review_path(store: Store, settings: Settings, year: int, ids: np.ndarray,
                queries: int) -> dict[str, float]:
    """The review path end to end on the scored demo: the first "more like this" query (builds
    the index from SQLite), then ``queries`` batches of 5 look-alike cards (anchor lookup, index
    search, SQL filter, lease write)."""
    from review.cards import SIMILAR, next_cards

    rng = np.random.default_rng(2)
    anchors = rng.choice(ids, min(queries + 1, len(ids)), replace=False).tolist()
    t0 = time.perf_counter()
    next_cards(store, reviewer="bench", strategy=SIMILAR, anchor=int(anchors[0]), year=year,
               n=5, similar_dir=settings.similarity_dir)
    first_s = time.perf_counter() - t0
    times = []
    for anchor in anchors[1:]:
        t = time.perf_counter()
        next_cards(store, reviewer="bench", strategy=SIMILAR, anchor=int(anchor), year=year,
                   n=5, similar_dir=settings.similarity_dir)
        times.append((time.perf_counter() - t) * 1000)
        store.leases.release_leases("bench")
    result = {"first_s": first_s, "p50_ms": float(np.percentile(times, 50)),
              "p95_ms": float(np.percentile(times, 95))}
    print(f"store: {len(ids):,} scored cells; first query (index built from SQLite and written) "
          f"{first_s:.1f} s; then next_cards(strategy='similar', n=5) p50 "
          f"{result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms over {len(times)}",
          flush=True)
    return result


def demo_run(size_km: int, years: tuple[int, ...], epochs: int,
             queries: int) -> tuple[dict[str, float], dict[str, float]]:
    """Precision@20 of the nearest cells of demo mines against the base rate, and the review
    path's timings on the same installation."""
    with tempfile.TemporaryDirectory(prefix="similar-bench-") as tmp:
        settings = demo_installation(Path(tmp), size_km=size_km, years=years, epochs=epochs)
        with Store(settings.database_path) as store:
            version, year = store.models.active_model()["version"], years[0]
            ids = store.embeddings.embeddings(version, year)[0]
            mine = truth_mine_fraction(settings.demo_dir / "demo_truth.geojson", settings.grid,
                                       ids, year) >= MIN_MASK_FRACTION
            is_mine = dict(zip(ids.tolist(), mine.tolist(), strict=True))
            precision, far_precision = [], []
            for anchor in ids[mine].tolist():
                near = [c for c, _ in nearest_cells(store, settings.similarity_dir, version,
                                                    year, anchor, 28)]
                precision.append(np.mean([is_mine[c] for c in near[:20]]))
                far = [c for c in near if not _adjacent(c, anchor)][:20]
                far_precision.append(np.mean([is_mine[c] for c in far]))
            timings = review_path(store, settings, year, ids, queries)
    base = float(mine.mean())
    result = {"precision_at_20": float(np.mean(precision)),
              "precision_at_20_not_adjacent": float(np.mean(far_precision)),
              "base_rate": base, "mine_cells": int(mine.sum()), "cells": len(ids)}
    print(f"demo {year}: {result['mine_cells']} mine cells of {len(ids)} scored (base rate "
          f"{base:.3f}); precision@20 of their nearest cells {result['precision_at_20']:.3f} "
          f"({result['precision_at_20'] / base:.1f} x the base rate); without the 8 adjacent "
          f"cells {result['precision_at_20_not_adjacent']:.3f}", flush=True)
    return result, timings


def _adjacent(a: int, b: int) -> bool:
    (ra, ca), (rb, cb) = divmod(a, ID_STRIDE), divmod(b, ID_STRIDE)
    return abs(ra - rb) <= 1 and abs(ca - cb) <= 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=1_300_000, help="synthetic index size")
    parser.add_argument("--clusters", type=int, default=500, help="synthetic mixture centres")
    parser.add_argument("--queries", type=int, default=300, help="timed queries")
    parser.add_argument("--demo-km", type=int, default=40, help="demo territory side (km)")
    parser.add_argument("--demo-years", default="2018", help="comma-separated demo years")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of the model")
    args = parse_args(parser, cells=20_000, clusters=50, queries=20, demo_km=12, epochs=2)
    scale = scale_run(args.cells, args.clusters, args.queries)
    demo, end_to_end = demo_run(args.demo_km, tuple(int(y) for y in args.demo_years.split(",")),
                                args.epochs, args.queries)
    print(json.dumps({"similar_build_s": round(scale["build_s"], 2),
                      "similar_p95_ms": round(scale["p95_ms"], 3),
                      "similar_p50_ms": round(scale["p50_ms"], 3),
                      "similar_recall_at_20": round(scale["recall_at_20"], 3),
                      "similar_first_query_s": round(end_to_end["first_s"], 2),
                      "similar_next_cards_p95_ms": round(end_to_end["p95_ms"], 2),
                      "similar_cells": scale["cells"],
                      "similar_precision_at_20": round(demo["precision_at_20"], 3),
                      "similar_precision_at_20_not_adjacent":
                          round(demo["precision_at_20_not_adjacent"], 3),
                      "base_rate": round(demo["base_rate"], 4),
                      "demo_mine_cells": demo["mine_cells"], "demo_cells": demo["cells"]}))


if __name__ == "__main__":
    main()
