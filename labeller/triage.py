"""The triage grid: a page of N thumbnails decided by keyboard, then the next page.

``GET /triage`` leases a page (``TRIAGE_GRID``, default 4 x 4) and the next one from the
reviewer's queue (the same session queue choice as the single card, ``labeller.review
.queue_choice``) and preloads the next page's pictures. ``POST /triage`` records every tile as
its own decision (``review.triage.submit_page``) and redirects to the next page, which says
what happened to each tile that was not simply recorded. ``GET /triage/last`` reopens the
reviewer's last submitted page with its decisions; ``POST /triage/last`` stores the corrections
(one changed decision per changed tile). The keys live in ``static/triage.js``.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from labeller.auth import current_name
from labeller.db import get_store
from labeller.review import queue_choice
from labeller.safety import parse_int
from review import triage
from review.decisions import parse_token
from review.errors import ForbiddenError, NotFoundError, ReviewError
from review.second_review import current_policy
from review.thumbnails import thumbnail_version

bp = Blueprint("triage", __name__)
#: Session key of the last submit's per-tile outcomes (shown once on the next page).
OUTCOMES_KEY = "triage_outcomes"


def _with_versions(store, tiles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tiles plus the cache key their pictures are served under (``thumb_version``)."""
    return [{**t, "thumb_version": thumbnail_version(store, t["cell_id"], t["year"])}
            for t in tiles]


@bp.get("/triage")
def page():
    """A page of tiles leased to the reviewer, the next page preloaded."""
    store = get_store()
    settings = current_app.config["SETTINGS"]
    rows, cols = settings.triage_grid
    choice = queue_choice(store)
    tiles, ahead = triage.serve_page(store, reviewer=current_name(), choice=choice,
                                     size=rows * cols, lease_seconds=settings.LEASE_SECONDS)
    page_id = triage.new_page_id()
    for index, tile in enumerate(tiles):
        tile["request_id"] = triage.tile_token(page_id, index)
    return render_template(
        "triage.html", tiles=_with_versions(store, tiles), ahead=_with_versions(store, ahead),
        cols=cols, rows=rows, choice=choice, model=store.models.active_model(), reopened=False,
        outcomes=_outcomes(session.pop(OUTCOMES_KEY, None)), action=url_for("triage.submit"))


def _outcomes(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """The last submit's outcomes as the page shows them (``tiles``: TileOutcome each)."""
    if not stored:
        return None
    return {"recorded": stored["recorded"],
            "tiles": [triage.TileOutcome(*row) for row in stored["tiles"]]}


def _form_rows() -> list[tuple[int, int, str, str]]:
    """The submitted tiles as (cell, year, label, request_id); 400 when the lists disagree."""
    cells, years = request.form.getlist("cell"), request.form.getlist("year")
    labels, tokens = request.form.getlist("label"), request.form.getlist("request_id")
    if not (len(cells) == len(years) == len(labels) == len(tokens)):
        abort(400, "malformed triage page: every tile needs a cell, year, label and request_id")
    rows = []
    for cell, year, label, token in zip(cells, years, labels, tokens, strict=True):
        cell_id, year_value = parse_int(cell, "cell"), parse_int(year, "year")
        if cell_id is None or year_value is None:
            abort(400, "malformed triage page: a tile lacks its cell or year")
        rows.append((cell_id, year_value, label, token))
    return rows


@bp.post("/triage")
def submit():
    """Record each tile (label; unmarked = background) as its own decision; next page."""
    store = get_store()
    settings = current_app.config["SETTINGS"]
    rows, cols = settings.triage_grid
    try:
        tiles = triage.make_tiles(_form_rows(), max_tiles=rows * cols)
        outcomes = triage.submit_page(store, reviewer=current_name(), tiles=tiles,
                                      policy=current_policy(store, settings))
    except ReviewError as error:
        abort(400, str(error))
    except NotFoundError as error:
        abort(404, str(error))
    # Compact (the session is a cookie): the messages are made again when the page shows them.
    session[OUTCOMES_KEY] = {
        "recorded": sum(o.status != "duplicate" and o.recorded for o in outcomes),
        "tiles": [[o.cell_id, o.year, o.label, o.status, o.who]
                  for o in outcomes if o.status != "recorded"],
    }
    return redirect(url_for("triage.page"))


@bp.get("/triage/last")
def reopen():
    """The reviewer's last submitted page with its decisions, for correction."""
    store = get_store()
    settings = current_app.config["SETTINGS"]
    rows, cols = settings.triage_grid
    tiles = triage.last_page(store, current_name())
    if not tiles:
        flash("No triage page to reopen yet.")
        return redirect(url_for("triage.page"))
    return render_template(
        "triage.html", tiles=_with_versions(store, tiles), ahead=[], cols=cols, rows=rows,
        choice=queue_choice(store), model=store.models.active_model(), reopened=True, outcomes=None,
        token=uuid.uuid4().hex, action=url_for("triage.correct"))


@bp.post("/triage/last")
def correct():
    """Store a reopened page's corrections: one changed decision per changed tile."""
    store = get_store()
    events, labels = request.form.getlist("event"), request.form.getlist("label")
    if not events or len(events) != len(labels):
        abort(400, "malformed correction: every tile needs its event and label")
    changes = []
    for raw, label in zip(events, labels, strict=True):
        event_id = parse_int(raw, "event")
        if event_id is None:
            abort(400, "malformed correction: a tile lacks its event")
        changes.append((event_id, (label or "").strip() or "background"))
    try:
        token = parse_token(request.form.get("request_id"))
        changed = triage.correct_page(store, reviewer=current_name(), changes=changes,
                                      token=token)
    except ReviewError as error:
        abort(400, str(error))
    except NotFoundError as error:
        abort(404, str(error))
    except ForbiddenError as error:
        abort(403, str(error))
    flash(f"Corrections stored: {len(changed)} tile(s) changed." if changed
          else "No tile changed.")
    return redirect(url_for("triage.page"))
