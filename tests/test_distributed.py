"""Scoring on Dask: a LocalCluster of two worker processes on loopback gives the same scores as
the local path, a worker killed mid-way has its blocks redone, and a real `dask scheduler` and
`dask worker` started as separate processes outside the checkout (the installed package) score
like this process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from db.store import Store
from pipeline.distributed import dask_client, dask_runner, parse_scheduler
from pipeline.jobs import settings_environment
from pipeline.scoring import score_year, year_recipe
from pipeline.training import model_file
from tests.territory import write_territory
from tests.test_scoring import REPO, all_scores, installation, tiny_bundle

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_territory(tmp_path_factory.mktemp("scene"), size_km=10, n_mines=4).scene


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, host="127.0.0.1")
    with cluster, distributed.Client(cluster) as connected:
        yield connected


def assert_same_scores(local, remote) -> None:
    """The two installations hold the same scores, and embeddings equal up to one level."""
    expected, got = all_scores(local.database_path), all_scores(remote.database_path)
    assert len(expected) > 0 and got.keys() == expected.keys()
    for cell, row in expected.items():
        assert got[cell] == pytest.approx(row, nan_ok=True, abs=1e-6)
    # The embeddings come back through the cluster too, the same up to one quantisation level.
    with Store(local.database_path) as a, Store(remote.database_path) as b:
        ids_a, vec_a, scale_a = a.embeddings.embeddings("m0001", 2021)
        ids_b, vec_b, scale_b = b.embeddings.embeddings("m0001", 2021)
    assert len(ids_a) > 0 and np.array_equal(ids_a, ids_b)
    assert np.abs(vec_a.astype(int) - vec_b.astype(int)).max() <= 1
    assert scale_b == pytest.approx(scale_a, rel=1e-5)


def test_cluster_scores_equal_local_scores(tmp_path, scene, client):
    local = installation(tmp_path, "local", scene)
    remote = installation(tmp_path, "remote", scene)
    with Store(local.database_path) as store:
        score_year(store, local, tiny_bundle(), 2021)
    with Store(remote.database_path) as store:
        path = str(model_file(store, store.models.model("m0001")))
        km2 = []
        done = score_year(store, remote, tiny_bundle(), 2021, progress=km2.append,
                          runner=dask_runner(client, path))
        assert done.blocks_scored == done.blocks_total > 2
    assert_same_scores(local, remote)
    # Each worker loaded the model once, whatever the number of blocks it scored.
    loaded = client.run(lambda: len(__import__("pipeline.distributed").distributed._MODELS))
    assert set(loaded.values()) <= {0, 1} and sum(loaded.values()) >= 1


def test_a_dead_worker_has_its_blocks_redone(tmp_path, scene, client):
    settings = installation(tmp_path, "a", scene)
    with Store(settings.database_path) as store:
        recipe = year_recipe(store, settings, 2021)
        blocks = recipe.open().blocks()
        run = dask_runner(client, str(model_file(store, store.models.model("m0001"))), retries=1)
        results = run(tiny_bundle(), recipe, blocks)
        first = [next(results)]
        pids = client.run(os.getpid)
        os.kill(next(iter(pids.values())), signal.SIGKILL)  # the nanny starts a fresh worker
        rest = list(results)
    done = first + rest
    assert sorted((b.row0, b.col0) for b, _ in done) == sorted((b.row0, b.col0) for b in blocks)
    assert all(np.isfinite(cells.valid_fraction).all() for _, cells in done)


def test_cli_scores_on_a_local_cluster(tmp_path, scene):
    local = installation(tmp_path, "local", scene)
    remote = installation(tmp_path, "remote", scene)
    with Store(local.database_path) as store:
        score_year(store, local, tiny_bundle(), 2021)
    env = {**os.environ, **settings_environment(remote), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "run.py"), "score", "--scheduler",
                           "local:2"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "2021:" in done.stdout and "cells scored by m0001" in done.stdout
    assert_same_scores(local, remote)


def test_scheduler_addresses():
    assert parse_scheduler("local:3") == 3
    assert parse_scheduler("tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    for bad in ("local:0", "local:x", " "):
        with pytest.raises(ValueError):
            parse_scheduler(bad)
    with pytest.raises(ValueError, match="cannot reach"), dask_client("tcp://127.0.0.1:9", timeout_s=1):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def outside_environment() -> dict[str, str]:
    """This process's environment without PYTHONPATH: what a `dask` command started by hand in
    another folder sees."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """A process in its own group (so that it and its children can be killed), output to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=outside_environment(),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_separate_scheduler_and_worker_processes_score_like_this_process(tmp_path, scene):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    found = subprocess.run([sys.executable, "-c", "import pipeline.distributed"], cwd=outside,
                           env=outside_environment(), capture_output=True, text=True)
    if found.returncode != 0:
        pytest.skip("the project is not installed in this venv: run `make test`, which installs "
                    "the package")
    local = installation(tmp_path, "local", scene)
    remote = installation(tmp_path, "remote", scene)
    with Store(local.database_path) as store:
        score_year(store, local, tiny_bundle(), 2021)
    address = f"tcp://127.0.0.1:{free_port()}"
    scheduler = start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                       address.rsplit(":", 1)[1], "--no-dashboard"], outside, tmp_path / "s.log")
    worker = None
    try:
        worker = start(["distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny",
                        "--no-dashboard"], outside, tmp_path / "w.log")
        with distributed.Client(address, timeout="60s") as client:
            client.wait_for_workers(1, timeout=60)
        env = {**outside_environment(), **settings_environment(remote)}
        done = subprocess.run([sys.executable, str(REPO / "run.py"), "score", "--scheduler",
                               address], cwd=outside, env=env, capture_output=True, text=True,
                              timeout=300)
        logs = (tmp_path / "s.log").read_text() + (tmp_path / "w.log").read_text()
        assert done.returncode == 0, done.stderr + logs
        assert "ModuleNotFoundError" not in logs
    finally:
        for process in (worker, scheduler):
            if process is not None:
                stop(process)
    assert_same_scores(local, remote)
