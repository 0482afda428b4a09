"""store.cycles: one running cycle, and a dead worker never blocks the next."""

from __future__ import annotations

import os

import pytest

from db.store import CycleRunningError

pytest_plugins = ["tests.db_fixtures"]


def test_only_one_running_cycle(store):
    cycle_id = store.cycles.start_cycle(None)
    with pytest.raises(CycleRunningError):
        store.cycles.start_cycle(None)
    store.cycles.update_cycle(cycle_id, stage="training", progress=0.25, history={"loss": [1.0, 0.5]})
    assert store.cycles.cycle(cycle_id)["history"] == {"loss": [1.0, 0.5]}
    store.cycles.finish_cycle(cycle_id, "succeeded", predicted_mines={"2020": 4})
    assert store.cycles.cycle(cycle_id)["predicted_mines"] == {"2020": 4}
    second = store.cycles.start_cycle(None)
    assert second > cycle_id


def test_a_cycle_whose_worker_died_does_not_block_the_next(store):
    import subprocess
    import sys

    worker = subprocess.Popen([sys.executable, "-c", "pass"])
    worker.wait()
    cycle_id = store.cycles.start_cycle(None)
    store.cycles.update_cycle(cycle_id, pid=worker.pid)
    assert store.cycles.running_cycle() is None
    assert store.cycles.cycle(cycle_id)["status"] == "failed"
    assert "interrupted" in store.cycles.cycle(cycle_id)["message"]
    store.cycles.update_cycle(store.cycles.start_cycle(None), pid=os.getpid())  # a live worker keeps it running
    with pytest.raises(CycleRunningError):
        store.cycles.start_cycle(None)
