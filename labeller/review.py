"""Keyboard review: the card, decisions, undo, past decisions, queue choice and thumbnails.

The card (``templates/_card.html``) has one source: the review page includes it and htmx requests
get only it (plus out-of-band counters and recent decisions). Every decision carries a fresh
token (``request_id``) rendered into the card, so a double submit counts once.
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
    send_file,
    session,
    url_for,
)

from db.store import QUEUE_STRATEGIES
from labeller.auth import current_name
from labeller.db import get_store
from labeller.safety import parse_int
from pipeline.embedding_index import NoEmbeddingError
from review.cards import (
    SIMILAR,
    QueueChoice,
    card_details,
    default_year,
    lease_one,
    next_cards,
    require_cell_year,
    session_stats,
)
from review.decisions import change_decision, decide, parse_decision_form, parse_token, recent_decisions, undo_last
from review.errors import ForbiddenError, NotFoundError, ReviewError
from review.queues import DEFAULT_STRATEGY, QUEUE_NAMES, default_queue_sentence
from review.second_review import current_policy
from review.similar import anchor_vector
from review.thumbnails import thumbnail_path, thumbnail_versions

bp = Blueprint("review", __name__)
bp.add_app_template_global(default_queue_sentence)
bp.add_app_template_global(QUEUE_NAMES, "queue_names")  # type: ignore[arg-type]

#: Thumbnail URLs carry the cache key (``?v=``): a year in the browser cache is safe.
THUMB_MAX_AGE = 365 * 24 * 3600


@bp.app_template_global()
def new_token() -> str:
    """A fresh decision token (idempotency key) for a form."""
    return uuid.uuid4().hex


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def queue_choice(store) -> QueueChoice:
    """The session's queue choice; the year defaults to the latest the active model scored."""
    strategy = session.get("strategy", DEFAULT_STRATEGY)
    anchor = session.get("anchor") if strategy == SIMILAR else None
    if strategy not in QUEUE_STRATEGIES and anchor is None:
        strategy = DEFAULT_STRATEGY
    year = session.get("year")
    if year is None or (store.models.active_model() and year not in store.scenes.years()):
        year = default_year(store)
    return QueueChoice(strategy, year, bool(session.get("predicted_only", False)),
                               anchor)


def _card_context(store, *, cell: tuple[int, int] | None = None, notice: str | None = None,
                  oob: bool = False) -> dict[str, Any]:
    """Template context of the card partial: the current card, prefetch cards, counters, recent.

    ``cell`` forces the current card (e.g. the cell an undo shows again); otherwise the queue
    serves it. The next ``PREFETCH`` cards are leased too and their pictures preloaded. A "more
    like this" queue whose anchor lost its embedding falls back to the default order, saying so.
    """
    settings = current_app.config["SETTINGS"]
    reviewer = current_name()
    choice = queue_choice(store)
    common = dict(reviewer=reviewer, strategy=choice.strategy, year=choice.year,
                  predicted_only=choice.predicted_only, n=1 + settings.PREFETCH,
                  lease_seconds=settings.LEASE_SECONDS, anchor=choice.anchor,
                  similar_dir=settings.similarity_dir)
    if cell is None:
        try:
            cards = next_cards(store, **common)
        except NoEmbeddingError as error:  # e.g. the anchor's scores were pruned since
            _leave_similar()
            notice = f"{error}. Back to the usual queue."
            choice = queue_choice(store)
            common.update(strategy=choice.strategy, anchor=None)
            cards = next_cards(store, **common)
        current = (cards[0]["cell_id"], cards[0]["year"]) if cards else None
        prefetch = cards[1:]
    else:
        lease_one(store, cell[0], cell[1], reviewer, settings.LEASE_SECONDS)
        current = cell
        common["n"] = settings.PREFETCH
        try:
            prefetch = next_cards(store, exclude=[cell[0]], show_first=False, **common)
        except NoEmbeddingError:
            prefetch = []
    shown = ([current] if current is not None else []) + [
        (item["cell_id"], item["year"]) for item in prefetch]
    versions = thumbnail_versions(store, shown)
    card = None
    if current is not None:
        card = card_details(store, *current, reviewer=reviewer)
        card["request_id"] = uuid.uuid4().hex
        card["thumb_version"] = versions[(int(current[0]), int(current[1]))]
    for item in prefetch:
        item["thumb_version"] = versions[(int(item["cell_id"]), int(item["year"]))]
    stats = session_stats(
        store, reviewer, since=session.get("since", ""), started=session.get("started", 0.0),
        year=choice.year, predicted_only=choice.predicted_only)
    return dict(card=card, prefetch=prefetch, stats=stats, choice=choice, notice=notice,
                recent=recent_decisions(store, reviewer), oob=oob,
                model=store.models.active_model(), years=store.scenes.years(), strategies=QUEUE_NAMES,
                default_strategy=DEFAULT_STRATEGY)


def render_card(store, **kwargs: Any) -> str:
    return render_template("_card.html", **_card_context(store, oob=is_htmx(), **kwargs))


@bp.get("/review")
def page():
    """The review page: queue choice, the card, counters, recent decisions, cycle status.

    ``?cell=<id>&year=<year>`` opens that cell-year as the current card (from the map, the
    change report or a link a colleague sent); the queue takes over after its decision.
    """
    store = get_store()
    context = _card_context(store, cell=_requested_cell(store))
    running = store.cycles.running_cycle()
    cycles = store.cycles.cycles()
    return render_template("review.html", cycle=running or (cycles[-1] if cycles else None),
                           **context)


def _requested_cell(store) -> tuple[int, int] | None:
    """The (cell, year) named in the query string, if any: 400 when malformed, 404 when unknown."""
    raw_cell, raw_year = request.args.get("cell"), request.args.get("year")
    if raw_cell is None and raw_year is None:
        return None
    cell_id, year = parse_int(raw_cell, "cell"), parse_int(raw_year, "year")
    if cell_id is None or year is None:
        abort(400, "open a cell with ?cell=<cell id>&year=<year> (both whole numbers)")
    try:
        require_cell_year(store, cell_id, year)
    except NotFoundError as error:
        abort(404, str(error))
    return cell_id, year


@bp.get("/review/card")
def card():
    """The next card (partial), e.g. after a retrain cycle."""
    return render_card(get_store())


@bp.post("/review/queue")
def choose_queue():
    """Set the queue's order, year and predicted-only filter; the reviewer's leases are released.
    The "more like this" order stays only while it is chosen again (its anchor is kept)."""
    reviewer = current_name()
    store = get_store()
    strategy = request.form.get("strategy", DEFAULT_STRATEGY)
    similar = strategy == SIMILAR and session.get("anchor") is not None
    if strategy not in QUEUE_STRATEGIES and not similar:
        abort(400, f"unknown queue order {strategy!r}; choose one of {', '.join(QUEUE_STRATEGIES)}")
    year = parse_int(request.form.get("year"), "year")
    if year is not None and year not in store.scenes.years():
        abort(400, f"no scene of year {year} in this installation")
    session["strategy"] = strategy
    if not similar:
        session.pop("anchor", None)
    session["year"] = year
    session["predicted_only"] = request.form.get("predicted_only") in ("1", "on", "true")
    store.leases.release_leases(reviewer)
    if is_htmx():
        return render_card(store)
    return redirect(url_for("review.page"))


@bp.post("/cells/<int:cell_id>/<int:year>/similar")
def similar(cell_id: int, year: int):
    """More like this: the queue becomes the unreviewed cells of ``year`` nearest to this cell
    in the active model's embedding space (the reviewer's other leases are released); 404 for an
    unknown cell, 409 with the reason when the cell has no embedding."""
    store = get_store()
    try:
        require_cell_year(store, cell_id, year)
    except NotFoundError as error:
        abort(404, str(error))
    model = store.models.active_model()
    if model is None:
        abort(409, "no active model: train and score one before asking for look-alikes")
    try:
        anchor_vector(store, model["version"], year, cell_id)
    except NoEmbeddingError as error:
        abort(409, str(error))
    session.update(strategy=SIMILAR, anchor=cell_id, year=year)
    store.leases.release_leases(current_name())
    notice = f"More like cell {cell_id}: its nearest unreviewed look-alikes of {year}."
    if is_htmx():
        return render_card(store, notice=notice)
    flash(notice)
    return redirect(url_for("review.page"))


def _leave_similar() -> None:
    """Back from "more like this" to the default order."""
    session["strategy"] = DEFAULT_STRATEGY
    session.pop("anchor", None)


@bp.post("/cells/<int:cell_id>/<int:year>/label")
def label(cell_id: int, year: int):
    """Record a decision (label, request_id; audit fields from the lease); show the next card."""
    reviewer = current_name()
    store = get_store()
    try:
        require_cell_year(store, cell_id, year)
    except NotFoundError as error:
        abort(404, str(error))
    try:
        form = parse_decision_form(request.form)
    except ReviewError as error:
        abort(400, str(error))
    policy = current_policy(store, current_app.config["SETTINGS"])
    decision = decide(store, reviewer=reviewer, cell_id=cell_id, year=year, form=form,
                              policy=policy)
    if is_htmx():
        return render_card(store, notice=decision.notice)
    if decision.notice:
        flash(decision.notice)
    return redirect(url_for("review.page"))


@bp.post("/undo")
def undo():
    """Undo the reviewer's latest decision and show that cell again (leased in the same step),
    unless another reviewer holds its card: then the queue's next card."""
    reviewer = current_name()
    store = get_store()
    try:
        token = parse_token(request.form.get("request_id"), required=False)
    except ReviewError as error:
        abort(400, str(error))
    target = undo_last(store, reviewer, request_id=token or None,
                               lease_seconds=current_app.config["SETTINGS"].LEASE_SECONDS)
    if target is None:
        notice, cell = "Nothing to undo.", None
    else:
        notice = f"Undone: {target['label']} on cell {target['cell_id']} ({target['year']})."
        cell = (target["cell_id"], target["year"])
        if target["held_by"] is not None:  # another reviewer has its card: never show it twice
            notice += " Another reviewer has its card now; here is your next one."
            cell = None
    if is_htmx():
        return render_card(store, cell=cell, notice=notice)
    flash(notice)
    return redirect(url_for("review.page"))


@bp.post("/decisions/<int:event_id>")
def change(event_id: int):
    """Change one's own past decision (403 for another reviewer's): a new label event."""
    reviewer = current_name()
    store = get_store()
    label_value = (request.form.get("label") or "").strip()
    try:
        token = parse_token(request.form.get("request_id"), required=False) or None
        change_decision(store, reviewer=reviewer, event_id=event_id, label=label_value,
                                request_id=token)
    except NotFoundError as error:
        abort(404, str(error))
    except ForbiddenError as error:
        abort(403, str(error))
    except ReviewError as error:
        abort(400, str(error))
    if is_htmx():
        return render_template("_recent.html", recent=recent_decisions(store, reviewer),
                               oob=False)
    return redirect(url_for("review.page"))


@bp.get("/cells/<int:cell_id>/<int:year>/thumb/<view>.png", defaults={"kind": "cell"})
@bp.get("/cells/<int:cell_id>/<int:year>/context/<view>.png", defaults={"kind": "context"})
def thumbnail(cell_id: int, year: int, view: str, kind: str):
    """A cell's picture (view rgb or false; kind cell or its 3 x 3 context), cached on disk."""
    settings = current_app.config["SETTINGS"]
    try:
        path, key = thumbnail_path(get_store(), settings, cell_id, year, view, kind)
    except (NotFoundError, ReviewError) as error:
        abort(404, str(error))
    response = send_file(path, mimetype="image/png", etag=key, conditional=True,
                         max_age=THUMB_MAX_AGE if request.args.get("v") == key else 3600)
    if request.args.get("v") == key:
        response.cache_control.immutable = True
    response.cache_control.public = True
    return response
