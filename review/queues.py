"""The review queue's orders, their names and the default: one source for the queue code, the
web app, the CLI's help and the README.

The default is the order that reached a clean inventory (precision >= 95 % at recall >= 90 %
against the truth) with the fewest reviewer decisions in ``bench/inventory.py``, whose committed
summary is ``docs/inventory_summary.json``; ``tests/test_queues.py`` checks that the default,
the summary, the README, ``run.py serve --help`` and the review page agree. Kept free of heavy
imports, so the CLI can show it in its help.
"""

from __future__ import annotations

#: How each queue order is named in the app, the CLI and the README.
QUEUE_NAMES: dict[str, str] = {
    "uncertainty": "most uncertain first (closest to the threshold)",
    "score": "highest score first",
    "random": "random (unbiased sample)",
    "mixed": "mixed: uncertain, top and random",
}
#: The order a reviewer's session starts with: the measured winner (see the module docstring).
DEFAULT_STRATEGY = "score"
#: Where the measurement behind DEFAULT_STRATEGY is committed (relative to the repository).
DEFAULT_EVIDENCE = "docs/inventory_summary.json"


def default_queue_sentence() -> str:
    """The one sentence that says which queue a session starts on (README, --help, app)."""
    return (f"Reviewers start on the {QUEUE_NAMES[DEFAULT_STRATEGY]!r} queue: the order that "
            "reached a clean inventory with the fewest decisions (bench/inventory.py).")
