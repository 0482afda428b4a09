"""The Team page (agreement per reviewer and pair, pace, review states) and the lead's
adjudication queue.

Both are for leads (``labeller.auth.ENDPOINT_ROLES``: lead; the blind second-review cards themselves are served
by the review page to any reviewer). The adjudication card (``templates/_adjudication.html``) has one source: the
page includes it and an htmx decision gets only it back. Unlike a second-review card it is not
blind: it shows both reviewers' labels. Each adjudication is one transaction
(``review.second_review.adjudicate``) and appears in the cell's label history.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for

from analysis.report import REVIEW_STATE_NAMES
from labeller.auth import current_name
from labeller.db import get_store
from labeller.review import is_htmx
from review import second_review as sr
from review.agreement import MIN_ACTIVE_S, SESSION_GAP_S
from review.cards import card_details
from review.decisions import MAX_REQUEST_ID, request_key
from review.thumbnails import thumbnail_version

bp = Blueprint("team", __name__)


@bp.app_template_global()
def review_state_names() -> dict[str, str]:
    """What each review state is called (``_review_states.html``)."""
    return REVIEW_STATE_NAMES

#: Disagreements listed under the adjudication card.
QUEUE_LIMIT = 50


@bp.get("/team")
def page():
    """Agreement per reviewer and per pair (percent, Cohen's kappa), pace, review states, and
    the second-review policy in force (a lead may change it)."""
    return render_template("team.html", **_team_context())


def _team_context(error: str | None = None, message: str | None = None) -> dict[str, Any]:
    store = get_store()
    return dict(figures=sr.team_figures(store), gap_minutes=round(SESSION_GAP_S / 60),
                min_active_s=MIN_ACTIVE_S, error=error, message=message,
                policy=sr.current_policy(store, current_app.config["SETTINGS"]),
                chosen=store.second_review.second_review_policy())


@bp.post("/team/policy")
def policy():
    """Set the share of first decisions sent to a second reviewer (form ``percent``, 0-100) and
    whether every mine goes too (``all_mines``); ``reset`` returns to the settings."""
    store = get_store()
    if request.form.get("reset"):
        store.second_review.clear_second_review_policy()
        return redirect(url_for("team.page"))
    try:
        sr.set_policy(store, lead=current_name(), percent=str(request.form.get("percent", "")),
                      all_mines=request.form.get("all_mines") in ("1", "on", "true"))
    except sr.SecondReviewError as error:
        return render_template("team.html", **_team_context(error=str(error))), 400
    return redirect(url_for("team.page"))


def _queue_context(notice: str | None = None) -> dict[str, Any]:
    """The first disagreement as a card (with thumbnails and score) and the rest as a list."""
    store = get_store()
    queue = sr.adjudication_queue(store, limit=QUEUE_LIMIT)
    card = None
    if queue:
        first = queue[0]
        card = {**first, **card_details(store, first["cell_id"], first["year"]),
                "thumb_version": thumbnail_version(store, first["cell_id"], first["year"])}
    return dict(card=card, queue=queue, notice=notice,
                waiting=store.second_review.review_state_counts()["disagreed"])


@bp.get("/adjudicate")
def queue():
    """The adjudication queue: the oldest disagreement first, both labels shown."""
    return render_template("adjudicate.html", **_queue_context())


@bp.post("/adjudicate/<int:cell_id>/<int:year>")
def decide(cell_id: int, year: int):
    """Record the lead's label (form: label mine|background, request_id); show the next one."""
    lead = current_name()
    label = (request.form.get("label") or "").strip()
    token = (request.form.get("request_id") or "").strip()[: MAX_REQUEST_ID] or None
    try:
        sr.adjudicate(get_store(), lead=lead, cell_id=cell_id, year=year, label=label,
                      request_id=request_key("adjudicate", lead, token) if token else None)
    except sr.SecondReviewError as error:
        abort(400, str(error))
    except sr.NothingToAdjudicateError as error:
        abort(404, str(error))
    notice = f"Adjudicated cell {cell_id} ({year}) as {label}."
    if is_htmx():
        return render_template("_adjudication.html", **_queue_context(notice))
    flash(notice)
    return redirect(url_for("team.queue"))
