"""The background job runner (pipeline.jobs, analysis.jobs, labeller.jobs): a real worker process
writes an export, a SIGKILLed one is noticed and leaves no file, old files expire, the download
list and its routes need the lead role, and a copied data folder still loads its models."""

from __future__ import annotations

import os
import shutil
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest

from analysis.jobs import JobRequest, launch_export, run_job
from db.store import Store
from labeller import create_app
from pipeline.jobs import PAUSE_ENV, cleanup_jobs, job_file, job_log
from pipeline.settings import load_settings
from tests.fixtures_app import add_account, csrf_from, login
from tests.test_analysis_status import build_db

WAIT_S = 120


@pytest.fixture
def settings(tmp_path):
    build_db(tmp_path / "minewatch.db").close()
    return load_settings({"DATA_DIR": str(tmp_path)}, environ={})


@pytest.fixture
def store(settings):
    with Store(settings.database_path) as opened:
        yield opened


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_a_worker_process_writes_the_export_with_a_relative_path(store, settings):
    job_id = launch_export(settings, JobRequest("export", "csv", year=2021, layer="mine_points"),
                           "lea")
    wait_for(lambda: store.jobs.job(job_id)["status"] != "running", "the export job")
    row = store.jobs.job(job_id)
    assert row["status"] == "succeeded", row["message"]
    assert row["output"] == f"exports/job{job_id}_mine_points_active_2021.csv"
    assert row["requested_by"] == "lea" and row["progress"] == 1.0
    assert job_log(settings, job_id).is_file()
    assert "m0001, 2021: mine_points" in row["message"]
    lines = job_file(settings, row).read_text().splitlines()
    assert lines[0].startswith("cell_id,year,model_version,status") and len(lines) == 1 + 4


def test_a_killed_job_is_failed_and_its_partial_file_removed(store, settings, monkeypatch):
    monkeypatch.setenv(PAUSE_ENV, "export")
    job_id = launch_export(settings, JobRequest("export", "geojson"), "lea")
    monkeypatch.delenv(PAUSE_ENV)
    wait_for(lambda: store.jobs.job(job_id)["pid"] is not None, "the worker's pid")
    leftover = settings.data_dir / "exports" / f".job{job_id}_cells.abc.part.geojson"
    leftover.parent.mkdir(exist_ok=True)
    leftover.write_text('{"type": "FeatureCollection", "features": [')   # as a killed write
    time.sleep(1.0)
    os.kill(store.jobs.job(job_id)["pid"], signal.SIGKILL)
    wait_for(lambda: cleanup_jobs(store, settings).failed or store.jobs.job(job_id)["status"] != "running",
             "the dead worker to be noticed")
    row = store.jobs.job(job_id)
    assert row["status"] == "failed" and "worker process" in row["message"]
    assert not leftover.exists() and job_file(settings, row) is None


def test_finished_files_expire_after_the_retention_period(store, settings):
    job_id = store.jobs.start_job("report", JobRequest("report", "md").params(), "lea")
    run_job(store, settings, job_id)
    path = job_file(settings, store.jobs.job(job_id))
    assert path.read_text().startswith("# MineWatch report")
    job_log(settings, job_id).parent.mkdir(exist_ok=True)
    job_log(settings, job_id).write_text("worker output\n")
    assert cleanup_jobs(store, settings).expired == []
    later = datetime.now(UTC) + timedelta(days=settings.EXPORT_RETENTION_DAYS, minutes=1)
    assert cleanup_jobs(store, settings, now=later).expired == [job_id]
    assert not path.exists() and store.jobs.job(job_id) is None
    assert not job_log(settings, job_id).exists()


def test_a_bad_request_fails_with_one_line_and_no_file(store, settings):
    with pytest.raises(ValueError, match="written as csv, md"):
        JobRequest("report", "gpkg")
    with pytest.raises(ValueError, match="layer must be one of"):
        JobRequest("export", "csv", layer="change")
    job_id = store.jobs.start_job("export", JobRequest("export", "csv", year=1999).params(), None)
    row = run_job(store, settings, job_id)
    assert row["status"] == "failed" and "no scores for year 1999" in row["message"]
    assert row["output"] is None and not list((settings.data_dir / "exports").iterdir())


def test_download_list_routes_need_the_lead_role(settings, tmp_path):
    app = create_app({"DATA_DIR": str(tmp_path), "TESTING": True, "SECRET_KEY": "x"})
    add_account(app, "someone")
    reviewer = app.test_client()
    token = login(reviewer, "rita", "reviewer")
    assert reviewer.get("/exports").status_code == 403
    assert reviewer.post("/exports", data={"csrf_token": token, "format": "csv"}).status_code == 403
    lead = app.test_client()
    token = login(lead, "lea", "lead")
    page = lead.get("/exports")
    assert page.status_code == 200 and "No exports yet." in page.get_data(as_text=True)
    token = csrf_from(page.get_data(as_text=True))
    bad = lead.post("/exports", data={"csrf_token": token, "kind": "export", "format": "pdf"})
    assert bad.status_code == 400 and "written as gpkg, geojson, csv" in bad.get_data(as_text=True)
    unknown = lead.post("/exports", data={"csrf_token": token, "format": "csv", "model": "m9"})
    assert unknown.status_code == 404
    assert lead.get("/exports/99/download").status_code == 404
    started = lead.post("/exports", data={"csrf_token": token, "format": "csv"},
                        headers={"HX-Request": "true"})
    html = started.get_data(as_text=True)
    assert started.status_code == 200 and "started" in html and 'data-job="1"' in html
    with Store(settings.database_path) as store:
        wait_for(lambda: store.jobs.job(1)["status"] != "running", "the export job")
    listing = lead.get("/exports/list").get_data(as_text=True)
    assert "/exports/1/download" in listing and "hx-trigger" not in listing   # stopped polling
    download = lead.get("/exports/1/download")
    assert download.status_code == 200 and download.data.startswith(b"cell_id,")


def test_a_copied_data_folder_loads_its_own_models(tmp_path):
    from pipeline.training import load_model, model_file, register_model
    from tests.test_fcn import tiny_bundle

    original = load_settings({"DATA_DIR": str(tmp_path / "a")}, environ={})
    with Store(original.database_path) as store:
        record = register_model(store, original, tiny_bundle(version="m0001"), activate=True)
    assert record["path"] == "models/m0001.keras"
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    copy = load_settings({"DATA_DIR": str(tmp_path / "b")}, environ={})
    with Store(copy.database_path) as store:
        assert model_file(store, store.models.active_model(), copy) == tmp_path / "b/models/m0001.keras"
        assert load_model(store, settings=copy).version == "m0001"
        assert load_model(store).version == "m0001"     # without settings: the db's folder


def test_migration_makes_absolute_model_paths_relative(tmp_path):
    from sqlite_utils import Database

    from db.migrations import migrations

    old = Database(tmp_path / "minewatch.db")           # an installation from before 0008_jobs
    migrations.apply(old, stop_before="0008_jobs")
    for version, path in (("m0001", str(tmp_path / "models" / "m0001.keras")),
                          ("m0002", "/elsewhere/m0002.keras")):
        old["models"].insert({"version": version, "path": path, "bands": "[]", "threshold": 0.5,
                              "metrics": "{}", "training": "{}", "created_at": version})
    old.close()
    with Store(tmp_path / "minewatch.db") as store:
        paths = {m["version"]: m["path"] for m in store.models.models()}
    assert paths == {"m0001": "models/m0001.keras", "m0002": "/elsewhere/m0002.keras"}


@pytest.mark.parametrize("nice", [0, 7])
def test_workers_run_nicer_than_the_app(tmp_path, monkeypatch, nice):
    """WORKER_NICE lowers a worker's priority (a cycle or export leaves the CPU to requests)."""
    build_db(tmp_path / "minewatch.db").close()
    settings = load_settings({"DATA_DIR": str(tmp_path), "WORKER_NICE": nice}, environ={})
    monkeypatch.setenv(PAUSE_ENV, "export")  # the worker waits there, so it can be looked at
    job_id = launch_export(settings, JobRequest("export", "csv"), "lea")
    monkeypatch.delenv(PAUSE_ENV)
    with Store(settings.database_path) as store:
        wait_for(lambda: store.jobs.job(job_id)["pid"] is not None, "the worker's pid")
        pid = store.jobs.job(job_id)["pid"]
        try:
            expected = min(os.getpriority(os.PRIO_PROCESS, 0) + nice, 19)
            assert os.getpriority(os.PRIO_PROCESS, pid) == expected
        finally:
            os.kill(pid, signal.SIGKILL)


def test_worker_nice_outside_0_to_19_is_refused(tmp_path):
    with pytest.raises(ValueError, match="WORKER_NICE: 0 to 19, got 20"):
        load_settings({"DATA_DIR": str(tmp_path), "WORKER_NICE": 20}, environ={})
