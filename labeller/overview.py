"""The overview page (scenes, cells, the active model and its score histograms) and reviewer entry."""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, redirect, render_template, request, session, url_for

from db.store import utc_now
from labeller.charts import histogram_svg
from labeller.db import get_store

bp = Blueprint("overview", __name__)

#: Longest accepted reviewer name.
MAX_NAME = 60


def metric(metrics: dict[str, Any] | None, *names: str) -> Any:
    """The first of ``names`` present (not None) in a model's metrics."""
    for name in names:
        value = (metrics or {}).get(name)
        if value is not None:
            return value
    return None


@bp.get("/")
def index():
    """Scenes and years, cell count, the active model with metrics and per-year histograms."""
    store = get_store()
    by_year: OrderedDict[int, list[dict[str, Any]]] = OrderedDict()
    for scene in store.scenes():
        files = [Path(f["path"]).name for f in store.scene_files(scene["year"])]
        by_year.setdefault(scene["year"], []).append({**scene, "files": files})
    model = store.active_model()
    years: list[dict[str, Any]] = []
    if model is not None:
        threshold = float(model["threshold"])
        summary = {row["year"]: row for row in store.score_summary(model["version"], threshold)}
        for year in sorted(set(by_year) | set(summary)):
            row = summary.get(year)
            counts = store.score_histogram(model["version"], year) if row else []
            years.append({
                "year": year,
                "scored": row["scored"] if row else 0,
                "not_scored": row["not_scored"] if row else 0,
                "predicted_mines": (row["predicted_mines"] or 0) if row else 0,
                "histogram": histogram_svg(counts, threshold, label=f"scores {year}")
                if row else None,
            })
    metrics = model["metrics"] if model else {}
    return render_template(
        "overview.html",
        scenes_by_year=by_year,
        n_cells=store.count_cells(),
        model=model,
        metrics={
            "precision": metric(metrics, "precision"),
            "recall": metric(metrics, "recall"),
            "ap": metric(metrics, "average_precision", "ap"),
            "confusion": metric(metrics, "confusion_matrix", "confusion"),
        },
        years=years,
        running=store.running_cycle(),
        synthetic=any(s["synthetic"] for scenes in by_year.values() for s in scenes),
    )


@bp.route("/reviewer", methods=["GET", "POST"])
def reviewer():
    """Pick a reviewer name (kept in the session); every decision records it."""
    error = None
    if request.method == "POST":
        name = " ".join(str(request.form.get("name", "")).split())
        if not name:
            error = "Please type your name: every decision records who made it."
        elif len(name) > MAX_NAME:
            error = f"Please use at most {MAX_NAME} characters."
        else:
            previous = session.get("reviewer")
            if previous and previous != name:
                get_store().release_leases(previous)
            start_session(name)
            target = request.form.get("next") or url_for("review.page")
            if not target.startswith("/") or target.startswith("//"):
                abort(400, "bad redirect target")
            return redirect(target)
    return render_template("reviewer.html", error=error, current=session.get("reviewer")), (
        400 if error else 200)


def start_session(name: str) -> None:
    """Begin a review session for ``name`` (the counters count from now)."""
    session["reviewer"] = name
    session["since"] = utc_now()
    session["started"] = time.time()
