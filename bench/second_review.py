"""Benchmark of second review: what it adds to serving a card, to a decision, and what the Team
page, the training-label query and the review-state counts cost on a big database.

Works on a copy of an installation (``--data-dir``, e.g. one built by ``run.py demo``) or builds a
one-year demo territory of ``--size-km`` in a temporary folder the way ``run.py demo`` does, then
lets ``--reviewers`` reviewers make ``--labels`` decisions through the review loop
(``next_cards`` + ``decide`` with the default policy: 10 % of first decisions open a second-review
task, which the next reviewers are served; one answer in ten disagrees with the score), then
times (p50 / p95 in ms over ``--rounds``):

* next card for a reviewer (``next_cards``, n = 5 as the review page asks), which now also looks
  for pending second reviews, against the same call with no second-review task in the database;
* a decision (``decide``) with the default policy;
* ``Labels.training_labels``, ``SecondReview.review_state_counts`` and ``team_figures`` (once each).

    .venv/bin/python bench/second_review.py [--data-dir DIR | --size-km 80] [--labels 2000]
    .venv/bin/python bench/second_review.py --quick

The last line is one JSON object of those figures (ms).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import add_installation_arguments, installation, parse_args, review  # noqa: E402
from db.store import Store  # noqa: E402
from review import second_review as sr  # noqa: E402
from review.cards import next_cards  # noqa: E402
from review.decisions import DecisionForm, decide  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def answer(i: int, card: dict) -> str:
    """The score's side of the threshold, the other side one time in ten."""
    mine = (card["score"] or 0.0) > 0.5
    return "mine" if mine != (i % 10 == 0) else "background"


def build(store: Store, n_labels: int, n_reviewers: int) -> int:
    """Decisions and second reviews through the review loop; returns the year reviewed."""
    year = store.scenes.years()[-1]
    made = review(store, n_labels, reviewers=[f"r{i}" for i in range(n_reviewers)], year=year,
                  label=answer)
    store.db.execute("ANALYZE")  # as bench/review.py: without statistics leased_to scans scores
    tasks = store.second_review.review_state_counts()
    print(f"{made:,} decisions; review states {tasks}", flush=True)
    return year


def percentiles(values: list[float]) -> str:
    return (f"p50 {statistics.median(values):.2f} ms, "
            f"p95 {float(np.percentile(values, 95)):.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_installation_arguments(parser, size_km=80)
    parser.add_argument("--labels", type=int, default=2_000, help="decisions made first")
    parser.add_argument("--reviewers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=200)
    args = parse_args(parser, size_km=12, epochs=2, labels=40, reviewers=3, rounds=5)
    with tempfile.TemporaryDirectory() as folder:
        settings = installation(args, Path(folder))
        with Store(settings.database_path) as store:
            year = build(store, args.labels, args.reviewers)
            print(json.dumps(measure(store, year, args.rounds)))


def measure(store: Store, year: int, rounds: int) -> dict[str, float]:
    """The timings of the module docstring, printed as they come."""
    def serve(reviewer: str) -> list[float]:
        times = []
        for _ in range(rounds):
            times.append(timed(lambda: next_cards(
                store, reviewer=reviewer, year=year, n=5, lease_seconds=300)))
            store.leases.release_leases(reviewer)
        return times

    with_tasks = serve("r0")
    count = store.second_review.review_state_counts()["pending"]
    print(f"next card, {count:,} pending second reviews: {percentiles(with_tasks)}")
    cards = next_cards(store, reviewer="r1", year=year, n=rounds, lease_seconds=300)
    decisions = [timed(lambda c=c: decide(
        store, reviewer="r1", cell_id=c["cell_id"], year=c["year"],
        form=DecisionForm("background", f"b-{c['cell_id']}"))) for c in cards]
    print(f"decision (decide, default policy): {percentiles(decisions)}")
    figures = {"next_card_with_tasks_p95_ms": p95(with_tasks), "pending": count,
               "decide_p95_ms": p95(decisions)}
    for name, fn in (("training_labels", store.labels.training_labels),
                     ("review_state_counts", store.second_review.review_state_counts),
                     ("team_figures", lambda: sr.team_figures(store))):
        figures[f"{name}_ms"] = round(timed(fn), 1)
        print(f"{name}: {figures[f'{name}_ms']:.0f} ms")
    store.db.execute("DELETE FROM second_reviews")  # the same database without any task
    without = serve("r0")
    print(f"next card, no second-review task: {percentiles(without)}")
    figures["next_card_without_tasks_p95_ms"] = p95(without)
    return figures


def p95(values: list[float]) -> float:
    return round(float(np.percentile(values, 95)), 3)


if __name__ == "__main__":
    main()
