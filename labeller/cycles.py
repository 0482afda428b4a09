"""Retrain-and-repredict cycles: start one as a background job, poll its status, compare cycles.

A request never trains: POST /cycles calls ``pipeline.cycle.launch_cycle(settings)``, which starts
a separate process and returns at once; the status partial polls every 2 s while it runs.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for

from db.store import CycleRunningError
from labeller.charts import line_chart_svg
from labeller.db import get_store
from pipeline.jobs import recover_cycles

bp = Blueprint("cycles", __name__)

ALREADY_RUNNING = "a cycle is already running"


def _status_context(store, message: str | None = None) -> dict[str, Any]:
    running = store.cycles.running_cycle()
    if running is None:
        cycles = store.cycles.cycles()
        return {"cycle": cycles[-1] if cycles else None, "message": message}
    return {"cycle": running, "message": message}


def _metric(cycle: dict[str, Any], name: str) -> float | None:
    return (cycle.get("metrics") or {}).get(name)


def _predicted_inside(store, cycle: dict[str, Any]) -> dict[str, int]:
    """{year: cells the cycle's model predicts as mines inside the territory}, counted now from
    its scores where they are kept, else the counts the cycle recorded."""
    recorded = cycle.get("predicted_mines") or {}
    model = store.models.ready_model(cycle["new_model"]) if cycle.get("new_model") else None
    if model is None or cycle["status"] != "succeeded":
        return recorded
    return {**recorded, **{str(year): store.scores.predicted_mine_count(model["version"], year,
                                                                        model["threshold"])
                           for year in store.scores.scored_years(model["version"])}}


@bp.get("/cycles")
def page():
    """One row per cycle, the training curves, the predicted mines inside the territory per
    cycle, and the AP on the fixed validation blocks per cycle.

    Loading it cleans up after a cycle whose worker died (``pipeline.jobs.recover_cycles``).
    """
    store = get_store()
    recover_cycles(store, current_app.config["SETTINGS"])
    cycles = [{**c, "predicted_mines": _predicted_inside(store, c)} for c in store.cycles.cycles()]
    active = store.models.active_model()
    ready = {m["version"] for m in store.models.models()}
    rows = []
    for cycle in reversed(cycles):
        history = cycle.get("history") or {}
        curves = {name: list(enumerate(history[name], start=1))
                  for name in ("loss", "val_loss") if history.get(name)}
        rows.append({
            **cycle,
            "precision": _metric(cycle, "precision"),
            "recall": _metric(cycle, "recall"),
            "activatable": (cycle["status"] == "succeeded" and cycle["new_model"] in ready
                            and (active is None or active["version"] != cycle["new_model"])),
            "is_active": active is not None and active["version"] == cycle["new_model"],
            "curves": line_chart_svg(curves, width=260, height=120, x_label="epoch",
                                     y_label="loss", integer_x=True) if curves else None,
        })
    per_year: dict[str, list[tuple[float, float]]] = {}
    for cycle in cycles:
        for year, count in sorted((cycle.get("predicted_mines") or {}).items()):
            per_year.setdefault(str(year), []).append((cycle["id"], count))
    fixed = [c for c in cycles if (c.get("metrics") or {}).get("fixed_blocks")]
    quality = {name: [(c["id"], _metric(c, key)) for c in fixed if _metric(c, key) is not None]
               for name, key in (("precision", "precision"), ("recall", "recall"))}
    quality["AP"] = [(c["id"], c["validation_ap"]) for c in cycles
                     if c.get("validation_ap") is not None]
    return render_template(
        "cycles.html", rows=rows, **_status_context(store),
        review_states=store.second_review.review_state_counts(),
        mines_chart=line_chart_svg(per_year, width=520, height=200, x_label="cycle",
                                   y_label="predicted mines", integer_x=True),
        quality_chart=line_chart_svg({k: v for k, v in quality.items() if v}, width=520,
                                     height=200, x_label="cycle",
                                     y_label="fixed validation blocks",
                                     integer_x=True),
    )


@bp.post("/cycles")
def start():
    """Start a retrain-and-repredict cycle in the background (refused while one runs)."""
    from pipeline.cycle import launch_cycle

    store = get_store()
    message, code = None, 200
    if store.cycles.running_cycle() is not None:
        message, code = ALREADY_RUNNING, 409
    else:
        try:
            launch_cycle(current_app.config["SETTINGS"])
        except CycleRunningError:
            message, code = ALREADY_RUNNING, 409
    if request.headers.get("HX-Request") == "true":
        return render_template("_cycle_status.html", **_status_context(store, message)), code
    if message:
        flash(message)
    return redirect(url_for("cycles.page"))


@bp.post("/models/<version>/activate")
def activate(version: str):
    """A lead activates a ready model by hand (e.g. one a cycle kept inactive); one whose scores
    were pruned is refused (409) until it is scored again."""
    store = get_store()
    if store.models.ready_model(version) is None:
        abort(404, f"unknown or unfinished model version {version!r}")
    if store.scores.summarised_years(version) and not store.scores.scored_years(version):
        abort(409, f"{version}'s scores were pruned (KEEP_SCORED_MODELS) and only its per-year "
                   f"summaries are left; score it again first (run.py score --model {version}), "
                   "then activate it")
    store.models.activate_model(version)
    flash(f"{version} is now the active model.")
    return redirect(url_for("cycles.page"))


@bp.get("/cycles/status")
def status():
    """The status partial: polls every 2 s while a cycle runs, stops when it is done (a cycle
    whose worker died is cleaned up here too, so the poll ends on its failure)."""
    store = get_store()
    recover_cycles(store, current_app.config["SETTINGS"])
    return render_template("_cycle_status.html", **_status_context(store))
