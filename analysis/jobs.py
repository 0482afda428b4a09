"""Exports and reports as background jobs: what a job asks for and the worker that writes it.

``launch_export`` records a job and starts its worker through ``pipeline.jobs`` (the runner that
cycles use too); the worker (``run.py job --job-id N``) calls ``run_job``, which streams the
export into ``DATA_DIR/exports`` with its progress in the job's row and stores the file's path
relative to DATA_DIR. The download list is ``Jobs.jobs()``; cleanup deletes old files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from analysis.change import PersistenceRule
from analysis.export import FORMATS, SINGLE_LAYERS, export
from analysis.report import build_report, to_csv, to_markdown
from db.store import Store
from pipeline.jobs import exports_dir, launch_job, pause_point
from pipeline.settings import Settings

#: Kinds of job in the ``jobs`` table and the formats each writes.
JOB_FORMATS: dict[str, tuple[str, ...]] = {"export": FORMATS, "report": ("csv", "md")}


@dataclass(frozen=True)
class JobRequest:
    """What an export or report job is asked to write (validated on creation)."""

    kind: str
    format: str
    year: int | None = None
    model: str | None = None
    layer: str = "cells"
    k: int = 2
    n: int = 2

    def __post_init__(self) -> None:
        if self.kind not in JOB_FORMATS:
            raise ValueError(f"unknown job kind {self.kind!r}; choose one of "
                             f"{', '.join(JOB_FORMATS)}")
        if self.format not in JOB_FORMATS[self.kind]:
            raise ValueError(f"a {self.kind} is written as {', '.join(JOB_FORMATS[self.kind])}, "
                             f"not {self.format!r}")
        if self.layer not in SINGLE_LAYERS:
            raise ValueError(f"layer must be one of {', '.join(SINGLE_LAYERS)}")
        PersistenceRule(self.k, self.n)   # raises ValueError on a bad rule

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "kind"}

    def file_name(self, job_id: int) -> str:
        """The output file's name: job id, what it holds, format."""
        what = "report" if self.kind == "report" else (
            "all_layers" if self.format == "gpkg" else self.layer)
        return (f"job{job_id}_{what}_{self.model or 'active'}_{self.year or 'all'}"
                f".{self.format}")


def launch_export(settings: Settings, request: JobRequest, requested_by: str | None) -> int:
    """Start ``request`` as a background job (see ``pipeline.jobs.launch_job``)."""
    return launch_job(settings, request.kind, request.params(), requested_by)


def run_job(store: Store, settings: Settings, job_id: int) -> dict[str, Any]:
    """Run a recorded job to its end in this process and return its row."""
    row = store.jobs.job(job_id)
    if row is None:
        raise ValueError(f"no job {job_id}")
    store.jobs.update_job(job_id, pid=os.getpid())
    try:
        request = JobRequest(kind=row["kind"], **row["params"])
        folder = exports_dir(settings)
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / request.file_name(job_id)

        def progress(share: float, message: str = "") -> None:
            store.jobs.update_job(job_id, progress=round(min(max(share, 0.0), 1.0), 4),
                                  message=message)

        message = _write(store, settings, request, out, progress)
        store.jobs.finish_job(job_id, "succeeded", progress=1.0, message=message,
                              output=settings.stored_path(out), output_bytes=out.stat().st_size)
    except Exception as error:  # a job records any failure as its message; no file is left
        store.jobs.finish_job(job_id, "failed", message=f"{type(error).__name__}: {error}")
    return store.jobs.job(job_id)


def _write(store: Store, settings: Settings, request: JobRequest, out: Path,
           progress: Callable[[float, str], None]) -> str:
    """Write the job's file; a one-line summary of what it holds."""
    if request.kind == "export":
        pause_point("export")
        done = export(store, settings, request.format, out, year=request.year,
                      model_version=request.model, layer=request.layer,
                      rule=PersistenceRule(request.k, request.n), progress=progress)
        layers = ", ".join(f"{name} {count:,}" for name, count in done.layers.items())
        return f"{done.model_version}, {', '.join(map(str, done.years))}: {layers}"
    progress(0.0, "building the report")
    report = build_report(store, settings, year=request.year, model_version=request.model,
                          rule=PersistenceRule(request.k, request.n))
    text = to_csv(report) if request.format == "csv" else to_markdown(report)
    tmp = out.with_name(f".{out.name}.part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return f"report of {report.model_version}, {report.year}"


