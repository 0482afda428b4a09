"""The overview page: scenes, cells, the active model and its score histograms."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from flask import Blueprint, render_template

from labeller.charts import histogram_svg
from labeller.db import get_store

bp = Blueprint("overview", __name__)


def installation_synthetic() -> bool:
    """Whether any scene of the installation is generated (the demo territory): every page then
    says so in its top bar, the review card and the triage grid included."""
    return any(scene["synthetic"] for scene in get_store().scenes.scenes())


bp.add_app_template_global(installation_synthetic, "installation_synthetic")

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
    for scene in store.scenes.scenes():
        files = [Path(f["path"]).name for f in store.scenes.scene_files(scene["year"])]
        by_year.setdefault(scene["year"], []).append({**scene, "files": files})
    model = store.models.active_model()
    years: list[dict[str, Any]] = []
    if model is not None:
        threshold = float(model["threshold"])
        summary = {row["year"]: row for row in store.scores.score_summary(model["version"], threshold)}
        for year in sorted(set(by_year) | set(summary)):
            row = summary.get(year)
            counts = store.scores.score_histogram(model["version"], year) if row else []
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
        n_cells=store.cells.count_cells(),
        model=model,
        metrics={
            "precision": metric(metrics, "precision"),
            "recall": metric(metrics, "recall"),
            "ap": metric(metrics, "average_precision", "ap"),
            "confusion": metric(metrics, "confusion_matrix", "confusion"),
        },
        years=years,
        running=store.cycles.running_cycle(),
        synthetic=any(s["synthetic"] for scenes in by_year.values() for s in scenes),
    )
