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
