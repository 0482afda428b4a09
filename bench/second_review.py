"""Benchmark of second review: what it adds to serving a card, to a decision, and what the Team
page, the training-label query and the review-state counts cost on a big database.

Builds a database in a temporary folder with ``--cells`` scored cells (one model, one year),
``--labels`` review decisions by ``--reviewers`` reviewers (10 % of them picked for second review
by the default policy, half of those already second-reviewed, a tenth of those disagreeing), then
times (p50 / p95 in ms over ``--rounds``):

* next card for a reviewer (``next_cards``, n = 5 as the review page asks), which now also looks
  for pending second reviews, against the same call with no second-review task in the database;
* a decision (``decide``) with the default policy;
* ``Labels.training_labels``, ``SecondReview.review_state_counts`` and ``team_figures`` (once each).

    .venv/bin/python bench/second_review.py [--cells 1300000] [--labels 100000] [--reviewers 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from db.store import Store  # noqa: E402
from pipeline import review as service  # noqa: E402
from pipeline import second_review as sr  # noqa: E402

ROW0, COL0 = 10_000, 19_000
YEAR = 2021


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def build(database: Path, n_cells: int, n_labels: int, n_reviewers: int) -> list[int]:
    """Cells, scores, decisions and second-review tasks; returns the cell ids."""
    side = int(np.ceil(np.sqrt(n_cells)))
    ids = (np.arange(n_cells) // side + ROW0) * 100_000 + (np.arange(n_cells) % side + COL0)
    rng = np.random.default_rng(7)
    scores = rng.beta(0.4, 3.0, n_cells)
    with Store(database) as store:
        store.cells.add_cells(zip(ids.tolist(), (ids // 100_000).tolist(), (ids % 100_000).tolist(),
                                  [0.0] * n_cells, [0.0] * n_cells, strict=True))
        store.models.add_model({"version": "m0001", "parent": None, "path": "m.keras", "bands": ["B4"],
                                "threshold": 0.5, "metrics": {}, "training": {}}, activate=True)
        scene = store.scenes.add_scene({"year": YEAR, "name": "bench", "paths": ["bench.tif"],
                                        "bands": ["B4"], "crs": "EPSG:6933", "row0": ROW0,
                                        "row1": ROW0 + side, "col0": COL0, "col1": COL0 + side,
                                        "stretch": {}})
        store.scores.write_scores(YEAR, "m0001", scene, ids.tolist(), scores.tolist(),
                                  (1 - np.abs(2 * scores - 1)).tolist(), [1.0] * n_cells)
        labelled = rng.choice(n_cells, size=n_labels, replace=False)
        rows, policy = [], sr.SecondReviewPolicy()
        for i, index in enumerate(labelled):
            cell = int(ids[index])
            rows.append({"cell_id": cell, "year": YEAR, "reviewer": f"r{i % n_reviewers}",
                         "label": "mine" if scores[index] > 0.5 else "background",
                         "ms_spent": int(rng.integers(1500, 9000))})
        store.labels.import_label_events(rows)
        events = {(e[0], e[1]): e for e in store.db.execute(
            "SELECT cell_id, year, id, reviewer, label FROM label_events").fetchall()}
        picked = [(cell, year) for (cell, year) in events
                  if policy.reason(cell, year, events[(cell, year)][4])]
        with store.atomic():
            for cell, year in picked:
                _, _, event_id, reviewer, label = events[(cell, year)]
                store.second_review.add_second_review({"cell_id": cell, "year": year, "id": event_id,
                                                       "reviewer": reviewer, "label": label}, "share")
        second = []
        for j, (cell, year) in enumerate(picked[: len(picked) // 2]):
            first = events[(cell, year)]
            label = first[4] if j % 10 else ("background" if first[4] == "mine" else "mine")
            other = f"r{(int(first[3][1:]) + 1) % n_reviewers}"
            second.append((cell, label, other))
        for cell, label, other in second:
            store.labels.record_label(cell, YEAR, label, other)
        store.db.execute("ANALYZE")  # as bench/review.py: without statistics leased_to scans scores
        print(f"built {n_cells:,} cells, {n_labels:,} decisions, {len(picked):,} second-review "
              f"tasks ({len(second):,} second-reviewed)", flush=True)
    return ids.tolist()


def percentiles(values: list[float]) -> str:
    return (f"p50 {statistics.median(values):.2f} ms, "
            f"p95 {float(np.percentile(values, 95)):.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=1_300_000)
    parser.add_argument("--labels", type=int, default=100_000)
    parser.add_argument("--reviewers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        database = Path(folder) / "bench.db"
        build(database, args.cells, args.labels, args.reviewers)
        with Store(database) as store:
            def serve(reviewer: str) -> list[float]:
                times = []
                for _ in range(args.rounds):
                    times.append(timed(lambda: service.next_cards(
                        store, reviewer=reviewer, n=5, lease_seconds=300)))
                    store.leases.release_leases(reviewer)
                return times

            with_tasks = serve("r0")
            count = store.db.execute("SELECT count(*) FROM second_reviews"
                                     " WHERE status = 'pending'").fetchone()[0]
            print(f"next card, {count:,} pending second reviews: {percentiles(with_tasks)}")
            cards = service.next_cards(store, reviewer="r1", n=args.rounds, lease_seconds=300)
            decisions = [timed(lambda c=c: service.decide(
                store, reviewer="r1", cell_id=c["cell_id"], year=c["year"],
                form=service.DecisionForm("background", f"b-{c['cell_id']}"))) for c in cards]
            print(f"decision (decide, default policy): {percentiles(decisions)}")
            for name, fn in (("training_labels", store.labels.training_labels),
                             ("review_state_counts", store.second_review.review_state_counts),
                             ("team_figures", lambda: sr.team_figures(store))):
                print(f"{name}: {timed(fn):.0f} ms")
            store.db.execute("DELETE FROM second_reviews")
            without = serve("r0")
            print(f"next card, no second-review task: {percentiles(without)}")


if __name__ == "__main__":
    main()
