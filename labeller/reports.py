"""The territory report page.

``/report?year=&model=&k=&n=`` renders ``analysis.report.build_report``. Its downloads (the report
as CSV or Markdown, GeoPackage / GeoJSON / CSV exports) are background jobs: the page's buttons
POST to ``/exports`` (``labeller.jobs``), never writing a file inside the request.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template, request
from werkzeug.exceptions import HTTPException

from analysis import AnalysisError
from analysis.change import PersistenceRule
from analysis.report import TABLE1, build_report, title
from labeller.db import get_store
from labeller.safety import int_arg

bp = Blueprint("reports", __name__)

#: The report page's download buttons: (label, kind, format, layer, this year only).
DOWNLOADS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("report CSV", "report", "csv", "cells", True),
    ("report Markdown", "report", "md", "cells", True),
    ("GeoPackage (this year)", "export", "gpkg", "cells", True),
    ("GeoPackage (all years)", "export", "gpkg", "cells", False),
    ("cells GeoJSON", "export", "geojson", "cells", True),
    ("mine points GeoJSON", "export", "geojson", "mine_points", True),
    ("cells CSV", "export", "csv", "cells", True),
    ("mine points CSV", "export", "csv", "mine_points", True),
)


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
    models = store.models.models()
    try:
        report = _report()
    except HTTPException as error:  # e.g. no model or no scores yet: say so in the page
        return render_template("report.html", report=None, error=error.description,
                               models=models, table1=TABLE1), error.code
    return render_template("report.html", report=report, error=None, models=models,
                           title=title(report), table1=TABLE1, downloads=DOWNLOADS)
