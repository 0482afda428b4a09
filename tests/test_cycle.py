"""Cycles a lead can trust: real SIGKILLs of a cycle's worker during training and re-scoring
leave no model row, file or score behind, the previous model stays active and the next cycle
runs; a new model is activated only within ACTIVATION_MARGIN of the active one's AP and when its
predicted-mine share passes the floor (ACTIVATION_MAX_MINE_SHARE, ACTIVATION_MAX_SHARE_RATIO)."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest

from db.store import Store
from pipeline.cycle import (
    Activation,
    MineShare,
    activation_decision,
    launch_cycle,
    mine_share,
    run_cycle,
    share_problem,
    with_floor,
)
from pipeline.ingest import cells_of_year, ingest_files
from pipeline.jobs import PAUSE_ENV, recover_cycles
from pipeline.scoring import score_year
from pipeline.seeds import seed_labels_from_polygons
from pipeline.settings import load_settings
from pipeline.training import load_model, train_model
from tests.territory import write_territory

FAST = {"PIXEL_SIZE_M": 50.0, "FCN_WIDTHS": "4,8,8", "TRAIN_EPOCHS": 3}
#: Seconds a test waits for a worker to reach a stage (TensorFlow's import takes a while).
WAIT_S = 240


@pytest.fixture
def settings(tmp_path):
    return load_settings({"DATA_DIR": str(tmp_path / "instance"), **FAST}, environ={})


@pytest.fixture
def store(settings, tmp_path):
    """m0001 trained on the seed labels and active, every cell of 2021 reviewed by its truth."""
    territory = write_territory(tmp_path / "data", size_km=8, n_mines=8)
    with Store(settings.database_path) as opened:
        ingest_files(opened, settings, [territory.scene], 2021)
        seed_labels_from_polygons(opened, settings.grid, territory.mines, 2021)
        train_model(opened, settings)
        score_year(opened, settings, load_model(opened), 2021)
        truth = {r["cell_id"]: r["label"] for r in opened.labels.seed_labels(2021)}
        for cell_id in cells_of_year(opened, settings.grid, 2021):
            opened.labels.record_label(int(cell_id), 2021, truth.get(int(cell_id), "background"), "ann")
        yield opened


def model_files(settings) -> set[str]:
    return {p.name for p in settings.models_dir.iterdir()}


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def kill_cycle_at(store: Store, settings, stage: str, monkeypatch) -> dict:
    """Launch a cycle whose worker pauses at ``stage``, SIGKILL it there; its row."""
    monkeypatch.setenv(PAUSE_ENV, stage)
    cycle_id = launch_cycle(settings)
    monkeypatch.delenv(PAUSE_ENV)
    row = lambda: store.cycles.cycle(cycle_id)  # noqa: E731
    if stage == "scoring":
        wait_for(lambda: row()["new_model"] and store.scores.scored_years(row()["new_model"]),
                 "the new model's first scores")
    else:
        wait_for(lambda: row()["stage"] == stage, f"stage {stage}")
    pid = row()["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: store.cycles.running_cycle() is None, "the dead worker to be noticed")
    return row()


def test_sigkill_during_rescoring_leaves_nothing_and_the_next_cycle_runs(store, settings,
                                                                         monkeypatch):
    killed = kill_cycle_at(store, settings, "scoring", monkeypatch)
    assert killed["status"] == "failed" and "worker process" in killed["message"]
    assert killed["new_model"] == "m0002"
    partial = store.db.execute("SELECT count(*) FROM scores WHERE model_version = 'm0002'")
    assert partial.fetchone()[0] > 0            # the kill left partial scores ...
    assert "m0002" not in {m["version"] for m in store.models.models()}  # ... of a hidden model
    assert store.models.model("m0002")["state"] == "pending" and store.models.ready_model("m0002") is None
    recovery = recover_cycles(store, settings)
    assert recovery.removed_models == ["m0002"]
    assert store.db.execute("SELECT count(*) FROM scores WHERE model_version = 'm0002'"
                            ).fetchone()[0] == 0
    assert store.models.model("m0002") is None
    assert model_files(settings) == {"m0001.keras", "m0001.json", "m0001.labels.csv"}
    assert store.models.active_model()["version"] == "m0001"

    again = run_cycle(store, settings)
    assert again["status"] == "succeeded", again["message"]
    assert again["new_model"] == "m0002" and store.models.model("m0002")["state"] == "ready"


def test_sigkill_during_training_is_noticed_by_the_next_start(store, settings, monkeypatch):
    killed = kill_cycle_at(store, settings, "training", monkeypatch)
    assert killed["status"] == "failed" and killed["new_model"] is None
    assert store.models.active_model()["version"] == "m0001"

    cycle_id = launch_cycle(settings)           # the next start: not blocked, runs to the end
    wait_for(lambda: store.cycles.cycle(cycle_id)["status"] != "running", "the next cycle")
    done = store.cycles.cycle(cycle_id)
    assert done["status"] == "succeeded", done["message"]
    assert model_files(settings) == {f"{v}.{x}" for v in ("m0001", "m0002")
                                     for x in ("keras", "json", "labels.csv")}


def test_a_cycle_row_without_a_process_never_blocks(store, settings):
    orphan = store.cycles.start_cycle("m0001")         # as if the app died before starting the worker
    long_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="milliseconds")
    store.cycles.update_cycle(orphan, started_at=long_ago)
    (settings.models_dir / "m0002.keras").write_bytes(b"half")   # saved, never recorded
    (settings.models_dir / ".m0002.tmp1.json").write_text("{")
    recovery = recover_cycles(store, settings)
    assert recovery.failed_cycle == orphan
    assert sorted(recovery.removed_files) == [".m0002.tmp1.json", "m0002.keras"]
    assert "never started" in store.cycles.cycle(orphan)["message"]
    assert store.cycles.start_cycle("m0001") > orphan


def test_a_fresh_cycle_row_waiting_for_its_worker_still_blocks(store, settings):
    store.cycles.start_cycle("m0001")
    assert recover_cycles(store, settings).failed_cycle is None
    assert store.cycles.running_cycle() is not None


def test_a_worse_model_is_kept_inactive_and_the_lead_sees_why(store, settings):
    strict = load_settings({**{k: getattr(settings, k) for k in ("DATA_DIR", *FAST)},
                            "ACTIVATION_MARGIN": -1.0}, environ={})   # no model can meet it
    row = run_cycle(store, strict)
    assert row["status"] == "succeeded", row["message"]
    assert store.models.active_model()["version"] == "m0001"
    assert store.models.model("m0002")["active"] == 0
    assert "on the same" in row["decision"] and "ACTIVATION_MARGIN" in row["decision"]
    assert row["message"].startswith("m0002 kept inactive: AP ")


def test_activation_decision_compares_ap_within_the_margin():
    parent = {"version": "m0001"}
    new = {"average_precision": 0.70, "validated_on": "40 held-out reviewed cells"}
    assert activation_decision(new, {"average_precision": 0.72}, parent, 0.05).activate
    worse = activation_decision(new, {"average_precision": 0.80}, parent, 0.05)
    assert not worse.activate and "0.100 worse" in worse.reason
    assert activation_decision(new, None, None, 0.05) == Activation(True, "the first model")
    unvalidated = activation_decision({"validated_on": "training split"}, None, parent, 0.05)
    assert unvalidated.activate and "not compared" in unvalidated.reason


def test_share_floor_keeps_a_model_that_calls_too_many_cells_mines():
    parent = MineShare(predicted=40, scored=1598)
    limits = {"max_share": 0.5, "max_ratio": 10.0}
    assert share_problem(MineShare(120, 1598), parent, "m0001", **limits) is None
    flagged = share_problem(MineShare(1593, 1598), parent, "m0001", **limits)
    assert "99.7% of the scored cells as mines (1,593 of 1,598)" in flagged
    assert "ACTIVATION_MAX_MINE_SHARE 50.0%" in flagged
    jumped = share_problem(MineShare(500, 1598), parent, "m0001", **limits)
    assert "12.5 times m0001's 2.5%" in jumped and "ACTIVATION_MAX_SHARE_RATIO 10" in jumped
    assert share_problem(MineShare(500, 1598), MineShare(0, 1598), "m0001", **limits) is None
    assert share_problem(MineShare(900, 1598), None, None, **limits) is not None
    assert share_problem(MineShare(0, 0), parent, "m0001", **limits) is None
    ok = Activation(True, "AP 0.8 vs 0.7")
    assert with_floor(ok, None) == ok
    assert with_floor(ok, flagged) == Activation(
        False, f"{flagged}; a lead may activate it by hand")
    worse = Activation(False, "AP 0.5: 0.3 worse")
    assert with_floor(worse, flagged).reason == f"AP 0.5: 0.3 worse; also {flagged}"


def test_a_model_trained_on_wrong_labels_is_kept_inactive_and_the_page_says_why(
        store, settings, tmp_path):
    import random

    from labeller import create_app

    rng = random.Random(0)            # a reviewer who calls nine cells in ten a mine
    for cell_id in cells_of_year(store, settings.grid, 2021):
        store.labels.record_label(int(cell_id), 2021, "mine" if rng.random() < 0.9 else "background",
                                  "ann")
    lenient = load_settings({**{k: getattr(settings, k) for k in ("DATA_DIR", *FAST)},
                             "ACTIVATION_MARGIN": 1.0}, environ={})  # any AP passes
    row = run_cycle(store, lenient)
    assert row["status"] == "succeeded", row["message"]
    before, after = mine_share(store, "m0001", [2021]), mine_share(store, "m0002", [2021])
    assert after.share > 0.5 > before.share, (before, after)   # the share jumped
    assert store.models.active_model()["version"] == "m0001" and store.models.model("m0002")["active"] == 0
    assert row["decision"].startswith("it predicts ") and "ACTIVATION_MAX_MINE_SHARE" in row["decision"]
    assert row["message"] == f"m0002 kept inactive: {row['decision']}"
    app = create_app({"DATA_DIR": settings.DATA_DIR, "TESTING": True, "SECRET_KEY": "x", **FAST})
    html = app.test_client().get("/cycles").get_data(as_text=True)
    assert f"{after.share:.1%} of the scored cells as mines" in html
    assert "Activate m0002" in html


def test_cycles_page_cleans_up_shows_the_decision_and_lets_a_lead_activate(tmp_path):
    import subprocess
    import sys

    from labeller import create_app
    from tests.fixtures_app import csrf_from

    app = create_app({"DATA_DIR": str(tmp_path), "TESTING": True, "SECRET_KEY": "x"})
    record = {"parent": None, "bands": ["B2"], "threshold": 0.5, "metrics": {}, "training": {}}
    with Store(app.config["SETTINGS"].database_path) as store:
        store.models.add_model({**record, "version": "m0001", "path": "models/m0001.keras"},
                               activate=True)
        kept = store.cycles.start_cycle("m0001")
        store.models.add_model({**record, "version": "m0002", "path": "models/m0002.keras"})
        store.cycles.update_cycle(kept, new_model="m0002", pid=os.getpid())
        store.cycles.finish_cycle(kept, "succeeded", decision="AP 0.500 vs m0001's 0.900: 0.400 worse")
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        killed = store.cycles.start_cycle("m0001")
        store.models.add_model({**record, "version": "m0003", "path": "models/m0003.keras"},
                               pending=True)
        store.cycles.update_cycle(killed, new_model="m0003", pid=dead.pid)
    client = app.test_client()                   # open mode: the local admin
    html = client.get("/cycles").get_data(as_text=True)
    assert "0.400 worse" in html and "Activate m0002" in html and "Activate m0003" not in html
    with Store(app.config["SETTINGS"].database_path) as store:
        assert store.cycles.cycle(killed)["status"] == "failed"
        assert store.models.model("m0003") is None        # removed by the page load
    done = client.post("/models/m0002/activate", data={"csrf_token": csrf_from(html)})
    assert done.status_code == 302
    assert client.post("/models/m0003/activate",
                       data={"csrf_token": csrf_from(html)}).status_code == 404
    with Store(app.config["SETTINGS"].database_path) as store:
        assert store.models.active_model()["version"] == "m0002"
