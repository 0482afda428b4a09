"""One runner for background work: retrain cycles, exports and reports.

Each job runs as ``run.py <command> --<kind>-id N`` in its own process (``spawn_worker``), whose
pid is recorded with the job's row; the worker writes its progress and message into that row,
which the web app's status partials poll. A row whose worker died (SIGKILL, a crash, a reboot)
or never started is marked failed by the next cleanup and never blocks another job. Cycles keep
their own ``cycles`` table (their columns are a cycle's: labels used, metrics, predicted mines);
exports and reports live in ``jobs``, their files in ``DATA_DIR/exports`` (paths stored relative
to DATA_DIR), deleted after ``EXPORT_RETENTION_DAYS``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from db.store import Store, process_alive
from pipeline.settings import ENV_PREFIX, Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
#: A cycle's model file (``m0003.keras``, its sidecar, its label list ``m0003.labels.csv``) or a
#: temporary one of ``save_bundle`` (``.m0003.x.json``).
_MODEL_FILE = re.compile(r"^(?P<temp>\.)?(?P<version>m\d{4,})(\.[^.]+)?\.(keras|json|csv)$")
#: Test-only: a stage name at which a worker pauses (see ``pause_point``), so a test can kill it
#: there deterministically. Never set in production.
PAUSE_ENV = "MINEWATCH_TEST_PAUSE_AT"
#: How long a paused worker waits (seconds) before it carries on.
PAUSE_SECONDS = 60.0


def settings_environment(settings: Settings) -> dict[str, str]:
    """The MINEWATCH_* variables that hand ``settings`` to a child process."""
    return {ENV_PREFIX + f.name: str(value) for f, value in
            zip(fields(settings), asdict(settings).values(), strict=True)}


def spawn_worker(settings: Settings, args: list[str], log_path: Path) -> subprocess.Popen:
    """Start ``run.py *args`` in its own session, output appended to ``log_path``.

    The worker runs ``settings.WORKER_NICE`` steps nicer than this process (set right after the
    start, before it imports TensorFlow and starts its threads, which inherit it), so that a
    cycle's training or an export leaves the CPU to review requests first. A thread reaps the
    worker when it exits, so a crashed one is not kept as a zombie.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "run.py"), *args],
            cwd=os.getcwd(), env={**os.environ, **settings_environment(settings)},
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    if settings.WORKER_NICE:
        _renice(worker.pid, settings.WORKER_NICE)
    threading.Thread(target=worker.wait, daemon=True).start()
    return worker


def _renice(pid: int, steps: int) -> None:
    """Lower a process's priority by ``steps`` (capped at 19); an exited process is left alone."""
    try:
        priority = min(os.getpriority(os.PRIO_PROCESS, 0) + steps, 19)
        os.setpriority(os.PRIO_PROCESS, pid, priority)
    except ProcessLookupError:  # it already ended (its log says why)
        pass


def pause_point(stage: str) -> None:
    """Test-only hook: when ``MINEWATCH_TEST_PAUSE_AT`` names ``stage``, sleep
    ``PAUSE_SECONDS``, so a test can SIGKILL the worker in that stage."""
    if os.environ.get(PAUSE_ENV) == stage:
        time.sleep(PAUSE_SECONDS)


def launch_job(settings: Settings, kind: str, params: dict[str, Any],
               requested_by: str | None) -> int:
    """Record a running job and start ``run.py job --job-id N`` for it; returns the job id.

    Cleanup (``cleanup_jobs``) runs first, so dead jobs' rows and old files never pile up.
    """
    with Store(settings.database_path) as store:
        cleanup_jobs(store, settings)
        job_id = store.jobs.start_job(kind, params, requested_by)
    start_recorded_worker(settings, ["job", "--job-id", str(job_id)], job_log(settings, job_id),
                          finish=lambda store, message: store.jobs.finish_job(job_id, "failed",
                                                                              message=message),
                          record_pid=lambda store, pid: store.jobs.update_job(job_id, pid=pid))
    return job_id


def start_recorded_worker(settings: Settings, args: list[str], log_path: Path, *,
                          finish: Callable[[Store, str], None],
                          record_pid: Callable[[Store, int], None]) -> None:
    """``spawn_worker`` for a row already recorded as running (a job or a cycle): its pid is
    recorded with ``record_pid``; a worker that cannot start fails the row (``finish``) and the
    OSError is raised."""
    try:
        worker = spawn_worker(settings, args, log_path)
    except OSError as error:
        with Store(settings.database_path) as store:
            finish(store, f"the worker did not start: {error}")
        raise
    with Store(settings.database_path) as store:
        record_pid(store, worker.pid)


def job_log(settings: Settings, job_id: int) -> Path:
    """The worker's output (stdout and stderr) of a job."""
    return settings.data_dir / "jobs" / f"job_{job_id}.log"


def exports_dir(settings: Settings) -> Path:
    """Where export and report jobs write their files."""
    return settings.data_dir / "exports"


@dataclass
class Recovery:
    """What ``recover_cycles`` cleaned up."""

    failed_cycle: int | None = None                         # a running cycle whose worker died
    removed_models: list[str] = field(default_factory=list)  # pending models, scores and files
    removed_files: list[str] = field(default_factory=list)   # model files without a model row


def recover_cycles(store: Store, settings: Settings) -> Recovery:
    """Leave no trace of a cycle that died: mark it failed, delete its pending model (every row
    keyed by its version, e.g. partial scores), the model's files, and model files that no row
    names (a worker killed between saving and recording them). The active model stays active.

    Does nothing while a cycle's worker is alive (its pending model is work in progress).
    """
    recovery = Recovery()
    before = {c["id"] for c in store.cycles.cycles() if c["status"] == "running"}
    if store.cycles.running_cycle() is not None:
        return recovery
    if before:
        recovery.failed_cycle = min(before)
    for model in store.models.pending_models():
        store.models.delete_model(model["version"])
        recovery.removed_models.append(model["version"])
    known = store.models.model_versions()
    folder = settings.models_dir
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = _MODEL_FILE.match(path.name)
        if path.is_file() and match and (match["temp"] or match["version"] not in known):
            path.unlink(missing_ok=True)
            recovery.removed_files.append(path.name)
    return recovery


@dataclass
class JobCleanup:
    """What ``cleanup_jobs`` did."""

    failed: list[int]           # running jobs whose worker was gone
    expired: list[int]          # finished jobs past the retention period, files deleted
    partial_files: list[str]    # half-written files of dead workers


def cleanup_jobs(store: Store, settings: Settings, *, now: datetime | None = None) -> JobCleanup:
    """Fail jobs whose worker died, delete their partial files, and delete finished jobs (file,
    worker log and row) older than ``EXPORT_RETENTION_DAYS``."""
    failed = store.jobs.fail_dead_jobs()
    now = now or datetime.now(UTC)
    cutoff = (now - timedelta(days=settings.EXPORT_RETENTION_DAYS)).isoformat(
        timespec="milliseconds")
    expired = []
    for row in store.jobs.finished_jobs_before(cutoff):
        if row["output"]:
            settings.data_path(row["output"]).unlink(missing_ok=True)
        job_log(settings, row["id"]).unlink(missing_ok=True)
        store.jobs.delete_job(row["id"])
        expired.append(row["id"])
    partial = []
    folder = exports_dir(settings)
    live = [r for r in store.jobs.jobs(limit=1000) if r["status"] == "running"
            and r["pid"] and process_alive(r["pid"])]
    if folder.is_dir() and not live:
        for leftover in folder.glob(".*"):     # temporary files are hidden: ".name.*.part*"
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
                partial.append(leftover.name)
    return JobCleanup(failed, expired, partial)


def job_file(settings: Settings, row: dict[str, Any]) -> Path | None:
    """A finished job's file, when it still exists."""
    if row["status"] != "succeeded" or not row["output"]:
        return None
    path = settings.data_path(row["output"])
    return path if path.is_file() else None
