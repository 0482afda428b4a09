"""The territory report page, its CSV and Markdown downloads, and export downloads.

``/report?year=&model=&k=&n=`` renders ``analysis.report.build_report``; ``/report.csv`` and
``/report.md`` are the same report as files; ``/report/export.<gpkg|geojson|csv>`` writes an export
into ``DATA_DIR/exports`` (atomically: never a half-written file) and sends it.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, render_template, request, send_file
from werkzeug.exceptions import HTTPException

from analysis import AnalysisError
from analysis.change import PersistenceRule
from analysis.export import FORMATS, SINGLE_LAYERS, export
from analysis.report import TABLE1, build_report, title, to_csv, to_markdown
from labeller.db import get_store
from labeller.safety import int_arg

bp = Blueprint("reports", __name__)


def _report():
    store = get_store()
    try:
        rule = PersistenceRule(int_arg("k", 2), int_arg("n", 2))
        return build_report(store, current_app.config["SETTINGS"], year=int_arg("year"),
                            model_version=request.args.get("model") or None, rule=rule)
    except (AnalysisError, ValueError) as error:
        abort(404 if isinstance(error, AnalysisError) else 400, str(error))


@bp.get("/report")
def page():
    """The report page with year and model filters and download links."""
    store = get_store()
    models = store.models()
    try:
        report = _report()
    except HTTPException as error:  # e.g. no model or no scores yet: say so in the page
        return render_template("report.html", report=None, error=error.description,
                               models=models, table1=TABLE1), error.code
    return render_template("report.html", report=report, error=None, models=models,
                           title=title(report), table1=TABLE1, formats=FORMATS,
                           layers=SINGLE_LAYERS)


def _filename(report, suffix: str) -> str:
    return f"minewatch_report_{report.model_version}_{report.year}.{suffix}"


@bp.get("/report.csv")
def report_csv():
    report = _report()
    return Response(to_csv(report), mimetype="text/csv", headers={
        "Content-Disposition": f"attachment; filename={_filename(report, 'csv')}"})


@bp.get("/report.md")
def report_markdown():
    report = _report()
    return Response(to_markdown(report), mimetype="text/markdown", headers={
        "Content-Disposition": f"attachment; filename={_filename(report, 'md')}"})


@bp.get("/report/export.<fmt>")
def download_export(fmt: str):
    """An export file: ?year= (default: every year) &model= &layer=cells|mine_points."""
    if fmt not in FORMATS:
        abort(404, f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    settings = current_app.config["SETTINGS"]
    layer = request.args.get("layer", "cells")
    if layer not in SINGLE_LAYERS:
        abort(400, f"layer must be one of {', '.join(SINGLE_LAYERS)}")
    year = int_arg("year")
    folder = settings.data_dir / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    store = get_store()
    try:
        version = request.args.get("model") or None
        name = (f"minewatch_{version or 'active'}_{year or 'all'}"
                f"{'' if fmt == 'gpkg' else '_' + layer}.{fmt}")
        done = export(store, settings, fmt, folder / name, year=year, model_version=version,
                      layer=layer)
    except AnalysisError as error:
        abort(404, str(error))
    download = name.replace("_active_", f"_{done.model_version}_")
    mimetype = {"gpkg": "application/geopackage+sqlite3", "geojson": "application/geo+json",
                "csv": "text/csv"}[fmt]
    return send_file(done.path, mimetype=mimetype, as_attachment=True, download_name=download,
                     max_age=0)
