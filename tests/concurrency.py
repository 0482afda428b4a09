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
    """Cell-years with decisions (not undone) of more than one reviewer, except a first decision
    and its blind second review (the two reviewers of its ``second_reviews`` row): cells that
    were served to two reviewers."""
    rows = store.db.execute(
        "SELECT e.cell_id, e.year, group_concat(DISTINCT e.reviewer), r.first_reviewer,"
        " r.second_reviewer FROM label_events e LEFT JOIN second_reviews r"
        " ON r.cell_id = e.cell_id AND r.year = e.year WHERE e.kind = 'label'"
        " AND NOT EXISTS (SELECT 1 FROM label_events u WHERE u.kind = 'undo' AND u.undoes = e.id)"
        " GROUP BY e.cell_id, e.year").fetchall()
    return [(cell, year) for cell, year, names, first, second in rows
            if len(names.split(",")) > 1 and set(names.split(",")) != {first, second}]
