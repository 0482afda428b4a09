"""Benchmark of the review path: next card, label write, thumbnails (cold and warm).

Works on a copy of an installation (``--data-dir``, e.g. one built by ``run.py demo``) or builds a
one-year demo territory of ``--size-km`` in a temporary folder the way ``run.py demo`` does
(ingest, seed labels, first model, scores), then makes ``--labels`` decisions on the most
uncertain cells through the review loop (``next_cards`` + ``decide``: what an uncertainty queue
leaves behind, the worst case for the uncertainty-ordered scan). Prints p50 / p95 in milliseconds,
next to a same-process baseline (a ``SELECT 1`` round trip).

Targets (issue 3): next card p95 < 50 ms, label write p95 < 20 ms.

    .venv/bin/python bench/review.py [--data-dir DIR | --size-km 80] [--labels 2000] [--rounds 300]
    .venv/bin/python bench/review.py --quick

The last line is one JSON object: per operation, its n, p50_ms and p95_ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import add_installation_arguments, installation, parse_args, review  # noqa: E402
from db.store import Store  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from review.cards import forget_frontier, next_cards  # noqa: E402
from review.decisions import DecisionForm, decide  # noqa: E402
from review.thumbnails import thumbnail_path  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def prepare(settings: Settings, n_labels: int, n_thumbs: int) -> tuple[str, int, list[int]]:
    """Decisions on the most uncertain cells of the last year; (active model, year, ``n_thumbs``
    cells for the thumbnails)."""
    started = time.perf_counter()
    with Store(settings.database_path) as store:
        model, year = store.models.active_model()["version"], store.scenes.years()[-1]
        made = review(store, n_labels, reviewers=[f"r{i}" for i in range(7)], year=year,
                      label=lambda i, _card: "background" if i % 5 else "mine")
        store.db.execute("ANALYZE")
        thumb_cells = [int(r["cell_id"]) for r in
                       store.leases.queue_candidates(model, year, "score", "bench-thumbs", n_thumbs)]
        cells = store.db.execute("SELECT count(*) FROM scores WHERE model_version = ?",
                                 [model]).fetchone()[0]
    print(f"{cells:,} scored cells, {made:,} decisions made in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    return model, year, thumb_cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_installation_arguments(parser, size_km=80)
    parser.add_argument("--labels", type=int, default=2_000, help="decisions made first")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--thumbnails", type=int, default=64, help="cells whose pictures are timed")
    args = parse_args(parser, size_km=12, epochs=2, labels=20, rounds=5, thumbnails=8)
    with tempfile.TemporaryDirectory(prefix="minewatch-bench-") as tmp:
        run(installation(args, Path(tmp)), args)


def run(settings: Settings, args: argparse.Namespace) -> None:
    model, year, thumb_cells = prepare(settings, args.labels, args.thumbnails)
    prefetch = settings.PREFETCH
    results: dict[str, list[float]] = {}
    with Store(settings.database_path) as store:
        results["baseline: SELECT 1"] = [
            timed(lambda: store.db.execute("SELECT 1").fetchone()) for _ in range(args.rounds)]

        def review_loop(name: str, n: int, **queue) -> None:
            """A reviewer who takes the next card(s) and labels the first, ``rounds`` times."""
            nexts, writes = [], []
            reviewer = f"bench-{name}-{n}"
            for _ in range(args.rounds):
                start = time.perf_counter()
                batch = next_cards(store, reviewer=reviewer, n=n, year=year, **queue)
                nexts.append((time.perf_counter() - start) * 1000)
                if not batch:
                    print(f"{name}: the queue ran dry after {len(writes)} decisions")
                    break
                card = batch[0]
                form = DecisionForm("background", uuid.uuid4().hex)
                start = time.perf_counter()
                decide(store, reviewer=reviewer, cell_id=card["cell_id"], year=year,
                               form=form)
                writes.append((time.perf_counter() - start) * 1000)
            store.leases.release_leases(reviewer)
            results[f"next card, {name}, n={n}"] = nexts
            results.setdefault("label write (decide: lease check + record_label)", []).extend(writes)

        review_loop("uncertainty", 1, strategy="uncertainty")
        review_loop("uncertainty", 1 + prefetch, strategy="uncertainty")
        review_loop("score", 1 + prefetch, strategy="score")
        review_loop("random", 1 + prefetch, strategy="random")
        review_loop("uncertainty, predicted only", 1 + prefetch, strategy="uncertainty",
                    predicted_only=True)
        plain = []
        cells = store.leases.queue_candidates(model, year, "random", "bench-plain", args.rounds)
        for row in cells:
            plain.append(timed(lambda row=row: store.labels.record_label(
                row["cell_id"], year, "mine", "bench-plain", request_id=uuid.uuid4().hex,
                ms_spent=900, score_shown=row["score"], model_version_shown=model)))
        results["label write (Labels.record_label)"] = plain
        results["queue count (Leases.count_queue)"] = [
            timed(lambda: store.leases.count_queue(model, year)) for _ in range(5)]
        results["queue count (Leases.count_queue_fast, counters)"] = [
            timed(lambda: store.leases.count_queue_fast(model, year)) for _ in range(5)]
        forget_frontier(store)
        results["next card, uncertainty, full scan (every 30 s)"] = [
            timed(lambda: next_cards(store, reviewer="bench-full", n=1, year=year))]
        cold, warm = [], []
        for cell in thumb_cells:
            cold.append(timed(lambda cell=cell: thumbnail_path(
                store, settings, cell, year, "rgb", "cell")))
        for cell in thumb_cells:
            warm.append(timed(lambda cell=cell: thumbnail_path(
                store, settings, cell, year, "rgb", "cell")))
        results["thumbnail cold (render 400 px PNG)"] = cold
        results["thumbnail warm (cache hit)"] = warm
        context = [timed(lambda cell=cell: thumbnail_path(
            store, settings, cell, year, "rgb", "context")) for cell in thumb_cells]
        results["context thumbnail cold (3 x 3 cells)"] = context

    base = statistics.median(results["baseline: SELECT 1"])
    print(f"\n{'operation':58} {'n':>5} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}"
          f" {'p50/baseline':>13}")
    figures = {}
    for name, values in results.items():
        if not values:
            continue
        p50, p95 = pct(values, 50), pct(values, 95)
        figures[name] = {"n": len(values), "p50_ms": round(p50, 3), "p95_ms": round(p95, 3)}
        print(f"{name:58} {len(values):5d} {p50:9.3f} {p95:9.3f} {max(values):9.3f}"
              f" {p50 / base:13.0f}")
    print("\ntargets: next card p95 < 50 ms, label write p95 < 20 ms")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
