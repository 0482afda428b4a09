"""The map page: Leaflet (vendored in static/, no CDN, no remote tiles unless BASEMAP_URL is set)
over the year's own imagery, with cells coloured by status and score, the territory and protected
areas, filters by year-and-colour-mode and status; clicking a cell opens it in the review card
(``/review?cell=<id>&year=<year>``). ``/map?year=Y&cell=ID`` opens the map centred on a cell
(:func:`cell_map_url` builds that link; templates call it as ``cell_map_url(cell_id, year)``).

``/map/cells.geojson`` returns the cells of the current view (``bbox``), highest scores first,
capped at ``MAX_FEATURES`` (the response says when it was cut).

``/tiles/<year>/<mode>/<z>/<x>/<y>.png`` serves the year's imagery as web-mercator map tiles
(mode ``natural`` or ``false`` colour; :mod:`pipeline.tiles`), cached on disk under
``DATA_DIR/tiles`` (at most ``TILE_CACHE_MB``); a tile outside the imagery is transparent, a zoom
deeper than the imagery's pixels (``pipeline.tiles.max_tile_zoom``: 15 for 10 m) is a 404 and the
map upscales that zoom instead (Leaflet's ``maxNativeZoom``, from the page's configuration).
"""

from __future__ import annotations

import json

import numpy as np
import shapely
from flask import Blueprint, Response, abort, current_app, render_template, request, send_file, url_for

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
from imagery.store import MosaicError
from imagery.tiles import TRANSPARENT_PNG
from labeller.auth import current_name
from labeller.db import get_store
from labeller.safety import int_arg, parse_float
from pipeline.tiles import TileNotFound, map_tile, max_tile_zoom, year_modes
from review.cards import blind_cells, unreviewed_view

bp = Blueprint("map", __name__)

MAX_FEATURES = 5000
#: Fill colour per status (the legend shows the same).
COLOURS = {"confirmed": "#b91c1c", "predicted": "#f59e0b", "rejected": "#2563eb",
           "background": "#6b7280"}
STATUS_CHOICES = ("all", "mines", *STATUSES)
#: What each colour mode is called in the year-and-mode switch.
MODE_NAMES = {"natural": "natural colour", "false": "false colour"}
#: Zoom of a map opened on one cell (a 1 km cell is then about 100-150 px wide).
FOCUS_ZOOM = 14
#: Browser cache lifetime of a tile whose URL names its cache key (``?v=``): a year.
TILE_MAX_AGE = 365 * 24 * 3600


def cell_map_url(cell_id: int, year: int | None = None) -> str:
    """The map centred on a cell (in ``year``'s imagery when given): ``/map?year=Y&cell=ID``."""
    return url_for("map.page", year=year, cell=int(cell_id))


bp.add_app_template_global(cell_map_url, "cell_map_url")


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
    model = store.models.active_model()
    years = store.scores.scored_years(model["version"]) if model else []
    year = int_arg("year")
    year = year if year in years else (years[-1] if years else None)
    status = request.args.get("status", "all")
    _statuses(status)
    layers = _layers(store, years)
    chosen = _chosen(layers, year, request.args.get("mode", "natural"))
    focus, notice = _focus(settings.grid)
    config = {
        "cellsUrl": url_for("map.cells"), "territoryUrl": url_for("map.territory"),
        "protectedUrl": url_for("map.protected"), "basemapUrl": settings.BASEMAP_URL,
        "colours": COLOURS, "bounds": scenes_bounds_lonlat(store, settings.grid), "year": year,
        "status": status, "focus": focus,
        "tiles": {f"{y}/{m}": url for y, m, url, problem in layers if not problem},
        "maxNativeZoom": max_tile_zoom(settings),
    }
    synthetic = any(s["synthetic"] for s in store.scenes.scenes())
    return render_template("map.html", config=json.dumps(config), years=years, year=year,
                           layers=layers, chosen=chosen, mode_names=MODE_NAMES, notice=notice,
                           status=status, statuses=STATUS_CHOICES, colours=COLOURS, model=model,
                           territory=store.territory.territory(), n_protected=len(store.territory.protected_areas()),
                           synthetic=synthetic, max_features=MAX_FEATURES)


def _chosen(layers: list[tuple[int, str, str | None, str | None]], year: int | None,
            mode: str) -> str:
    """The switch's value on load, ``<year>/<mode>``: the asked mode if the year can show it, else
    its first available one; ``<year>/none`` (cells only) when asked or when none is available."""
    available = [m for y, m, _, problem in layers if y == year and not problem]
    if mode == "none" or not available:
        return f"{year}/none"
    return f"{year}/{mode if mode in available else available[0]}"


def _layers(store, years: list[int]) -> list[tuple[int, str, str | None, str | None]]:
    """(year, mode, tile URL template, why unavailable) for every year and mode of the switch."""
    settings = current_app.config["SETTINGS"]
    layers = []
    for year in years:
        for mode, facts in year_modes(store, settings, year).items():
            url = None
            if not facts["problem"]:
                url = url_for("map.tile", year=year, mode=mode, z=0, x=0, y=0, v=facts["key"])
                url = url.replace("/0/0/0.png", "/{z}/{x}/{y}.png")
            layers.append((year, mode, url, facts["problem"]))
    return layers


def _focus(grid) -> tuple[dict | None, str | None]:
    """The cell the map opens on (``?cell=``) as {cell_id, lat, lon, zoom, geometry}, or a notice
    when that cell is unknown."""
    cell_id = int_arg("cell")
    if cell_id is None:
        return None, None
    if get_store().cells.cell(cell_id) is None:
        return None, f"unknown cell {cell_id}: showing the whole map"
    ids = np.asarray([cell_id], dtype=np.int64)
    lon, lat = grid.cell_centres_lonlat(ids)
    shape = cell_footprints_lonlat(grid, ids)[0]
    return {"cell_id": cell_id, "lat": float(lat[0]), "lon": float(lon[0]), "zoom": FOCUS_ZOOM,
            "geometry": json.loads(shapely.to_geojson(shapely.set_precision(shape, 1e-6)))}, None


@bp.get("/tiles/<int:year>/<mode>/<int:z>/<int:x>/<int:y>.png")
def tile(year: int, mode: str, z: int, x: int, y: int):
    """One web-mercator map tile of a year's imagery (mode natural or false), cached on disk.

    Outside the year's imagery: a transparent PNG. Unknown year or mode, a mode the year cannot
    show, z/x/y outside the tile matrix, or a zoom deeper than ``max_tile_zoom``: 404.
    """
    settings = current_app.config["SETTINGS"]
    try:
        path, key = map_tile(get_store(), settings, year, mode, z, x, y)
    except (TileNotFound, MosaicError) as error:
        abort(404, str(error))
    immutable = request.args.get("v") == key
    if path is None:
        response = Response(TRANSPARENT_PNG, mimetype="image/png")
        response.cache_control.max_age = TILE_MAX_AGE if immutable else 3600
    else:
        response = send_file(path, mimetype="image/png", etag=f"{key}-{z}-{x}-{y}",
                             conditional=True, max_age=TILE_MAX_AGE if immutable else 3600)
    response.cache_control.immutable = immutable or None
    response.cache_control.public = True
    return response


@bp.get("/map/cells.geojson")
def cells():
    """Cells of a year as lon/lat footprints: ?year=&status=all|mines|<status>[,...]&bbox=w,s,e,n."""
    store = get_store()
    grid = current_app.config["SETTINGS"].grid
    model, year = _model_and_year(store)
    statuses = _statuses(request.args.get("status", "all"))
    bounds = None
    if request.args.get("bbox"):
        values = [parse_float(v, "bbox") for v in request.args["bbox"].split(",")]
        if len(values) != 4 or None in values:
            abort(400, "bbox must be west,south,east,north in degrees")
        west, south, east, north = values
        pad = 0.01  # cell centres just outside the view still show their edge
        bounds = (west - pad, south - pad, east + pad, north + pad)
    rows = _visible_statuses(store, model, year, statuses, bounds)
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


def _visible_statuses(store, model: dict, year: int, statuses: tuple[str, ...] | None,
                      bounds: tuple[float, float, float, float] | None) -> list[dict]:
    """Cell statuses as the current user may see them: a cell whose blind second review may come
    to them shows no label, only what the score says (``unreviewed_view``)."""
    threshold = float(model["threshold"])
    blind = blind_cells(store, current_name())
    wanted = statuses
    if blind and statuses is not None:  # a hidden confirmed/rejected cell may now match
        wanted = tuple({*statuses, "confirmed", "rejected"})
    rows = store.territory.cell_statuses(model["version"], year, threshold, statuses=wanted,
                                         bounds=bounds, inside_only=True, limit=MAX_FEATURES + 1)
    if not blind:
        return rows
    rows = [unreviewed_view(r, threshold) if r["cell_id"] in blind else r for r in rows]
    return rows if statuses is None else [r for r in rows if r["status"] in statuses]


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
    row = get_store().territory.territory()
    items = [(row["geometry"], {"name": row["name"], "area_km2": row["area_km2"]})] if row else []
    return _polygons_geojson(items)


@bp.get("/map/protected.geojson")
def protected():
    """The protected areas in lon/lat (simplified to 100 m)."""
    return _polygons_geojson([(row["geometry"], {"name": row["name"],
                                                 "designation": row["designation"]})
                              for row in get_store().territory.protected_areas()])
