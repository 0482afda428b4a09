"""Run several simulated reviewers at once, each in its own thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any


def run_together(target: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> None:
    """Start ``target(*a)`` for every ``a`` in ``args`` in its own thread; wait for all."""
    threads = [threading.Thread(target=target, args=a) for a in args]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def labelled_twice_unexpectedly(store: Any) -> list[tuple[int, int]]:
    """Cell-years with more than one label event, except those whose second event is the blind
    second review (``second_reviews``) by another reviewer: a cell served to two reviewers."""
    rows = store.db.execute(
        "SELECT e.cell_id, e.year, count(*), count(DISTINCT e.reviewer), r.second_event_id"
        " FROM label_events e LEFT JOIN second_reviews r ON r.cell_id = e.cell_id"
        " AND r.year = e.year GROUP BY e.cell_id, e.year").fetchall()
    return [(cell, year) for cell, year, n, reviewers, second in rows
            if n > 2 or (n == 2 and (second is None or reviewers != 2))]
