"""Exports and reports as background jobs: start one, watch its progress, download its file.

POST /exports records a job and starts its worker (``analysis.jobs.launch_export``), returning at
once; the download list (``_jobs_list.html``) polls every 2 s while a job runs; GET
/exports/<id>/download sends a finished file. Every route needs the lead role
(``labeller.auth.ENDPOINT_ROLES``). Loading the page runs the runner's cleanup: jobs whose worker
died are marked failed and files older than ``EXPORT_RETENTION_DAYS`` are deleted.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, redirect, render_template, request, send_file, url_for

from analysis.export import SINGLE_LAYERS
from analysis.jobs import JOB_FORMATS, JobRequest, launch_export
from labeller.auth import current_name
from labeller.db import get_store
from labeller.safety import int_arg
from pipeline.jobs import cleanup_jobs, job_file

bp = Blueprint("jobs", __name__)

MIMETYPES = {"gpkg": "application/geopackage+sqlite3", "geojson": "application/geo+json",
             "csv": "text/csv", "md": "text/markdown"}


def _list_context(message: str | None = None) -> dict[str, Any]:
    store = get_store()
    settings = current_app.config["SETTINGS"]
    jobs = [{**row, "ready": job_file(settings, row) is not None} for row in store.jobs.jobs()]
    return {"jobs": jobs, "running": any(j["status"] == "running" for j in jobs),
            "message": message, "retention_days": settings.EXPORT_RETENTION_DAYS}


@bp.get("/exports")
def page():
    """The export form and the download list (after the runner's cleanup)."""
    store = get_store()
    cleanup_jobs(store, current_app.config["SETTINGS"])
    return render_template("exports.html", formats=JOB_FORMATS, layers=SINGLE_LAYERS,
                           models=store.models.models(), years=store.scenes.years(), **_list_context())


@bp.get("/exports/list")
def job_list():
    """The download list partial: polls while a job runs."""
    return render_template("_jobs_list.html", **_list_context())


def _request_from_form() -> JobRequest:
    try:
        return JobRequest(kind=request.form.get("kind", "export"),
                          format=request.form.get("format", ""),
                          year=int_arg("year"), model=request.form.get("model") or None,
                          layer=request.form.get("layer") or "cells",
                          k=int_arg("k", 2), n=int_arg("n", 2))
    except ValueError as error:
        abort(400, str(error))


@bp.post("/exports")
def start():
    """Start an export or report job; its progress shows in the download list."""
    job_request = _request_from_form()
    store = get_store()
    if job_request.model and store.models.ready_model(job_request.model) is None:
        abort(404, f"unknown model version {job_request.model!r}")
    job_id = launch_export(current_app.config["SETTINGS"], job_request, current_name())
    if request.headers.get("HX-Request") == "true":
        return render_template("_jobs_list.html", **_list_context(f"Job {job_id} started."))
    return redirect(url_for("jobs.page"))


@bp.get("/exports/<int:job_id>/download")
def download(job_id: int):
    """A finished job's file (404 while it runs, after it failed, or once it expired)."""
    row = get_store().jobs.job(job_id)
    path = job_file(current_app.config["SETTINGS"], row) if row else None
    if path is None:
        abort(404, f"job {job_id} has no file to download (running, failed or expired)")
    return send_file(path, mimetype=MIMETYPES.get(path.suffix.lstrip("."),
                                                  "application/octet-stream"),
                     as_attachment=True, download_name="minewatch_" + path.name.split("_", 1)[1],
                     max_age=0)
