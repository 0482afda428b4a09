"""The map page: Leaflet (vendored in static/, no CDN, no remote tiles unless BASEMAP_URL is set)
with cells coloured by status and score, the territory and protected areas, filters by year and
status; clicking a cell opens it in the review card (``/review?cell=<id>&year=<year>``).

``/map/cells.geojson`` returns the cells of the current view (``bbox``), highest scores first,
capped at ``MAX_FEATURES`` (the response says when it was cut).
"""

from __future__ import annotations

import json

import numpy as np
import shapely
from flask import Blueprint, abort, current_app, render_template, request, url_for

from analysis import AnalysisError
from analysis.status import (
    STATUSES,
    cell_footprints_lonlat,
    resolve_model,
    resolve_year,
    scenes_bounds_lonlat,
    to_lonlat,
)
from analysis.territory import refresh_territory_cells
from labeller.db import get_store
from labeller.safety import int_arg

bp = Blueprint("map", __name__)

MAX_FEATURES = 5000
#: Fill colour per status (the legend shows the same).
COLOURS = {"confirmed": "#b91c1c", "predicted": "#f59e0b", "rejected": "#2563eb",
           "background": "#6b7280"}
STATUS_CHOICES = ("all", "mines", *STATUSES)


def _statuses(value: str) -> tuple[str, ...] | None:
    if value in ("", "all"):
        return None
    if value == "mines":
        return ("confirmed", "predicted")
    chosen = tuple(v for v in value.split(",") if v)
    unknown = [v for v in chosen if v not in STATUSES]
    if unknown:
        abort(400, f"unknown status {unknown[0][:20]!r}; choose one of {', '.join(STATUS_CHOICES)}")
    return chosen


def _model_and_year(store):
    try:
        model = resolve_model(store, request.args.get("model") or None)
        return model, resolve_year(store, model, int_arg("year"))
    except AnalysisError as error:
        abort(404, str(error))


@bp.get("/map")
def page():
    """The map page (the cells load from /map/cells.geojson for the current view)."""
    store = get_store()
    settings = current_app.config["SETTINGS"]
    refresh_territory_cells(store, settings.grid)
    model = store.active_model()
    years = store.scored_years(model["version"]) if model else []
    year = int_arg("year")
    year = year if year in years else (years[-1] if years else None)
    status = request.args.get("status", "all")
    _statuses(status)
    bounds = scenes_bounds_lonlat(store, settings.grid)
    config = {
        "cellsUrl": url_for("map.cells"), "territoryUrl": url_for("map.territory"),
        "protectedUrl": url_for("map.protected"), "basemapUrl": settings.BASEMAP_URL,
        "colours": COLOURS, "bounds": bounds, "year": year, "status": status,
    }
    synthetic = any(s["synthetic"] for s in store.scenes())
    return render_template("map.html", config=json.dumps(config), years=years, year=year,
                           status=status, statuses=STATUS_CHOICES, colours=COLOURS, model=model,
                           territory=store.territory(), n_protected=len(store.protected_areas()),
                           synthetic=synthetic, max_features=MAX_FEATURES)


@bp.get("/map/cells.geojson")
def cells():
    """Cells of a year as lon/lat footprints: ?year=&status=all|mines|<status>[,...]&bbox=w,s,e,n."""
    store = get_store()
    grid = current_app.config["SETTINGS"].grid
    model, year = _model_and_year(store)
    statuses = _statuses(request.args.get("status", "all"))
    bounds = None
    if request.args.get("bbox"):
        try:
            west, south, east, north = (float(v) for v in request.args["bbox"].split(","))
        except ValueError:
            abort(400, "bbox must be west,south,east,north in degrees")
        pad = 0.01  # cell centres just outside the view still show their edge
        bounds = (west - pad, south - pad, east + pad, north + pad)
    rows = store.cell_statuses(model["version"], year, float(model["threshold"]), statuses=statuses,
                               bounds=bounds, inside_only=True, limit=MAX_FEATURES + 1)
    truncated = len(rows) > MAX_FEATURES
    rows = rows[:MAX_FEATURES]
    shapes = cell_footprints_lonlat(grid, np.asarray([r["cell_id"] for r in rows], dtype=np.int64))
    features = []
    for row, shape in zip(rows, shapes, strict=True):
        features.append({
            "type": "Feature",
            "geometry": json.loads(shapely.to_geojson(shapely.set_precision(shape, 1e-6))),
            "properties": {
                "cell_id": row["cell_id"], "year": year, "status": row["status"],
                "score": row["score"], "uncertainty": row["uncertainty"], "label": row["label"],
                "review_url": url_for("review.page", cell=row["cell_id"], year=year),
            },
        })
    return {"type": "FeatureCollection", "features": features, "truncated": truncated,
            "count": len(features), "year": year, "model_version": model["version"]}


def _polygons_geojson(items: list[tuple[bytes, dict]]) -> dict:
    grid = current_app.config["SETTINGS"].grid
    features = []
    for wkb, properties in items:
        shape = shapely.simplify(shapely.from_wkb(wkb), 100.0)   # 100 m: plenty for a map
        features.append({"type": "Feature", "properties": properties,
                         "geometry": json.loads(shapely.to_geojson(
                             shapely.set_precision(to_lonlat(grid, shape), 1e-6)))})
    return {"type": "FeatureCollection", "features": features}


@bp.get("/map/territory.geojson")
def territory():
    """The loaded territory in lon/lat (simplified to 100 m), or an empty collection."""
    row = get_store().territory()
    items = [(row["geometry"], {"name": row["name"], "area_km2": row["area_km2"]})] if row else []
    return _polygons_geojson(items)


@bp.get("/map/protected.geojson")
def protected():
    """The protected areas in lon/lat (simplified to 100 m)."""
    return _polygons_geojson([(row["geometry"], {"name": row["name"],
                                                 "designation": row["designation"]})
                              for row in get_store().protected_areas()])
