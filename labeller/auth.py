"""Accounts in the web app: login and logout, ``g.user``, and one table of roles per endpoint.

Every request loads ``g.user`` (``before_app_request``, as in flaskr's ``auth.py``) and is then
checked against :data:`ENDPOINT_ROLES`, the one table naming the least role each endpoint needs
("public", "reviewer", "lead" or "admin"). An endpoint missing from the table is refused (403),
so a new route cannot be forgotten; ``tests/test_auth.py`` checks every route of the app is in it.
Every blueprint's endpoints are listed here and nowhere else (no blueprint adds to the table);
:func:`role_required` is there for code that wants a decorator, but the table is the source of
truth.

Open mode: while the app listens only on loopback (HOST 127.0.0.1, ::1 or localhost) and no
account exists, every request from a loopback client without forwarding headers
(:data:`FORWARDING_HEADERS`: a reverse proxy on the same machine forwards others) acts as the
built-in account ``local`` (role admin), so a fresh ``make run`` lets its user review at once;
pages say so and offer to create the first account. As soon as an account exists, or HOST is
anything else, every page but login needs a login (a forwarded request gets no open mode).

Sessions end on the server: the signed session carries the account's ``session_version``, which
grows on logout, disable and password reset, so a cookie saved before any of them is refused.

Login attempts are limited (Flask-Limiter, failures only) per account name (any case, from any
address: ``LOGIN_RATE_LIMIT``), so failures on one name never lock another, and per client
address only by the higher ceiling ``LOGIN_ADDRESS_LIMIT``, which stops a spray over many names.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from db.store import utc_now
from labeller.db import get_store
from labeller.safety import safe_next
from pipeline.settings import setting_help
from review import accounts
from review.accounts import LOCAL_NAME, ROLES, role_allows

bp = Blueprint("auth", __name__)
limiter = Limiter(key_func=get_remote_address, storage_uri="memory://", default_limits=[])

#: The least role each endpoint needs: "public" (no login), or one of ``review.accounts.ROLES``.
ENDPOINT_ROLES: dict[str, str] = {
    "static": "public",
    "favicon": "public",
    "auth.login": "public",
    "auth.logout": "public",
    "auth.accounts_page": "admin",
    "auth.add_account": "admin",
    "auth.set_disabled": "admin",
    "auth.reset_password": "admin",
    "auth.settings_page": "admin",
    "overview.index": "reviewer",
    "review.page": "reviewer",
    "review.card": "reviewer",
    "review.choose_queue": "reviewer",
    "review.label": "reviewer",
    "review.similar": "reviewer",
    "review.undo": "reviewer",
    "review.change": "reviewer",
    "review.thumbnail": "reviewer",
    "cycles.page": "reviewer",
    "cycles.status": "reviewer",
    "cycles.start": "lead",
    "map.page": "reviewer",
    "map.cells": "reviewer",
    "map.territory": "reviewer",
    "map.protected": "reviewer",
    "map.tile": "reviewer",
    "reports.page": "reviewer",
    "cycles.activate": "lead",
    "jobs.page": "lead",
    "jobs.job_list": "lead",
    "jobs.start": "lead",
    "jobs.download": "lead",
    "team.page": "lead",
    "team.queue": "lead",
    "team.decide": "lead",
    "team.policy": "lead",
    "triage.page": "reviewer",
    "triage.submit": "reviewer",
    "triage.reopen": "reviewer",
    "triage.correct": "reviewer",
}
#: Loopback host names: open mode is possible only when HOST is one of them.
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
#: Headers a reverse proxy adds: a request carrying any of them never gets open mode.
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
                      "X-Forwarded-Server", "X-Forwarded-Port", "X-Real-IP", "X-Client-IP",
                      "True-Client-IP", "CF-Connecting-IP", "Via")
#: What ``g.user`` is in open mode.
LOCAL_USER: dict[str, Any] = {"name": LOCAL_NAME, "role": "admin", "local": True}

F = TypeVar("F", bound=Callable[..., Any])


def open_mode() -> bool:
    """Whether this request acts as the built-in ``local`` admin: loopback HOST, no account,
    and a direct loopback client (a proxy on this machine forwarding others is not one)."""
    settings = current_app.config["SETTINGS"]
    return (settings.HOST in LOOPBACK and _direct_loopback_client()
            and not get_store().accounts.has_accounts())


def _direct_loopback_client() -> bool:
    """Whether the client is this machine itself, with no forwarding header on the request."""
    if any(header in request.headers for header in FORWARDING_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def current_user() -> dict[str, Any] | None:
    """The logged-in account (``name``, ``role``, ...), ``LOCAL_USER`` in open mode, or None."""
    return g.get("user")


def current_name() -> str:
    """The name decisions, leases and undo are keyed by (the request must have a user)."""
    user = current_user()
    if user is None:
        abort(401, "Please log in.")
    return str(user["name"])


def has_role(needed: str) -> bool:
    """Whether the current user may do what ``needed`` requires (templates use it too)."""
    user = current_user()
    if needed == "public":
        return True
    return user is not None and role_allows(user["role"], needed)


def may_open(endpoint: str) -> bool:
    """Whether the current user may open ``endpoint`` by :data:`ENDPOINT_ROLES` (False when it
    is not listed), so that a page links only to what the user can open."""
    needed = ENDPOINT_ROLES.get(endpoint)
    return needed is not None and has_role(needed)


def role_required(role: str) -> Callable[[F], F]:
    """A decorator refusing the view unless the user has ``role`` or more (401 / 403)."""
    accounts.role_rank(role)

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            _require(role)
            return view(*args, **kwargs)
        return wrapped  # type: ignore[return-value]
    return decorate


def load_user() -> None:
    """Set ``g.user`` from the session (None when logged out, expired, disabled or reset)."""
    g.user = None
    name = session.get("account")
    if name:
        account = get_store().accounts.account(name)
        max_age = current_app.permanent_session_lifetime.total_seconds()
        fresh = time.time() - float(session.get("login_at", 0)) < max_age
        if (account and not account["disabled"] and fresh
                and session.get("session_version") == account["session_version"]):
            g.user = {"name": account["name"], "role": account["role"], "local": False}
            return
        session.clear()
    if open_mode():
        g.user = LOCAL_USER
        session.setdefault("since", utc_now())
        session.setdefault("started", time.time())


def enforce_roles() -> Any:
    """Refuse the request unless ``g.user`` has the endpoint's role (fail closed when unlisted)."""
    if request.endpoint is None:  # no such route: the 404 follows
        return None
    needed = ENDPOINT_ROLES.get(request.endpoint)
    if needed is None:
        abort(403, f"endpoint {request.endpoint} has no role in labeller.auth.ENDPOINT_ROLES")
    if needed == "public":
        return None
    if current_user() is None and request.method == "GET" and not _is_htmx():
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    _require(needed)
    return None


def _require(role: str) -> None:
    if current_user() is None:
        abort(401, "Please log in.")
    if not has_role(role):
        abort(403, f"This needs the {role} role; you are {g.user['role']}.")


def _is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def start_session(account: dict[str, Any]) -> None:
    """A fresh session for ``account`` (the old one is dropped: no session fixation)."""
    session.clear()
    session.permanent = True
    session["account"] = account["name"]
    session["session_version"] = account["session_version"]
    session["login_at"] = time.time()
    session["since"] = utc_now()
    session["started"] = time.time()


def _login_name() -> str:
    """The per-name bucket: names are one account whatever their case."""
    return "name:" + str(request.form.get("name", "")).strip()[:100].lower()


def _count_failures(response: Any) -> bool:
    """Only failed attempts count (a team behind one address logging in at 9:00 is fine)."""
    return response.status_code != 302


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["SETTINGS"].LOGIN_ADDRESS_LIMIT, methods=["POST"],
               deduct_when=_count_failures)
@limiter.limit(lambda: current_app.config["SETTINGS"].LOGIN_RATE_LIMIT, methods=["POST"],
               key_func=_login_name, deduct_when=_count_failures)
def login():
    """The login form; a good name and password start a session and go to ``next``."""
    error = None
    target = safe_next(request.values.get("next"), url_for("review.page"))
    if request.method == "POST":
        name = str(request.form.get("name", "")).strip()
        account = accounts.authenticate(get_store(), name, str(request.form.get("password", "")))
        if account is None:
            error = "Wrong name or password (or the account is disabled)."
        else:
            start_session(account)
            return redirect(target)
    return render_template("login.html", error=error, next=target,
                           local=current_user() is not None and current_user()["local"],
                           admin_hint=None if accounts.has_admin(get_store())
                           else accounts.FIRST_ADMIN_HINT), (401 if error else 200)


@bp.post("/logout")
def logout():
    """End the session on the server too (a saved copy of its cookie is refused afterwards; the
    account's other sessions end with it) and release the reviewer's leases; show the login."""
    user = current_user()
    if user is not None and not user["local"]:
        accounts.log_out(get_store(), user["name"])
    session.clear()
    return redirect(url_for("auth.login"))


@bp.get("/accounts")
def accounts_page():
    """Admin: every account with its role and state, forms to add, disable and reset."""
    return render_template("accounts.html", accounts=accounts.list_accounts(get_store()),
                           roles=ROLES, error=None, message=None)


def _accounts_answer(message: str | None = None, error: str | None = None):
    return render_template("accounts.html", accounts=accounts.list_accounts(get_store()),
                           roles=ROLES, error=error, message=message), 400 if error else 200


@bp.post("/accounts")
def add_account():
    """Admin: create an account. In open mode the new admin is logged in at once."""
    form = request.form
    was_local = current_user() is not None and current_user()["local"]
    try:
        account = accounts.create_account(get_store(), str(form.get("name", "")).strip(),
                                          str(form.get("role", "")),
                                          str(form.get("password", "")))
    except accounts.AccountError as error:
        return _accounts_answer(error=str(error))
    if was_local:
        start_session(account)
    return _accounts_answer(message=f"Account {account['name']} ({account['role']}) created.")


@bp.post("/accounts/<name>/disabled")
def set_disabled(name: str):
    """Admin: disable (``disabled=1``) or enable (``disabled=0``) an account."""
    disabled = request.form.get("disabled") == "1"
    if disabled and current_user() and name == current_user()["name"]:
        return _accounts_answer(error="You cannot disable your own account.")
    try:
        accounts.disable_account(get_store(), name, disabled=disabled)
    except accounts.AccountError as error:
        abort(404, str(error))
    return _accounts_answer(message=f"Account {name} {'disabled' if disabled else 'enabled'}.")


@bp.post("/accounts/<name>/password")
def reset_password(name: str):
    """Admin: set a new password for an account (its sessions end)."""
    try:
        accounts.reset_password(get_store(), name, str(request.form.get("password", "")))
    except accounts.AccountError as error:
        if get_store().accounts.account(name) is None:
            abort(404, str(error))
        return _accounts_answer(error=str(error))
    return _accounts_answer(message=f"New password set for {name}; its sessions ended.")


#: Settings whose value the settings page does not show.
SECRET_SETTINGS = frozenset({"SECRET_KEY"})


@bp.get("/settings")
def settings_page():
    """Admin: every setting with the value in effect (secrets hidden) and its meaning."""
    settings = current_app.config["SETTINGS"]
    rows = [(name, "(hidden)" if name in SECRET_SETTINGS else getattr(settings, name), default,
             help_text) for name, default, help_text in setting_help()]
    return render_template("settings.html", rows=rows)


def init_app(app: Flask) -> None:
    """Session lifetime and cookies, the user loader and role check, the limiter, the pages."""
    settings = app.config["SETTINGS"]
    app.config.update(
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.SESSION_HOURS),
        # The cookie is sent only when a request changes the session. Refreshing it on every
        # response let a thumbnail request that started before a POST overwrite what the POST
        # stored (e.g. the triage grid's per-tile outcomes); expiry counts from ``login_at``.
        SESSION_REFRESH_EACH_REQUEST=False,
        SESSION_COOKIE_SECURE=settings.BEHIND_HTTPS_PROXY,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
    )
    app.before_request(load_user)
    app.before_request(enforce_roles)
    limiter.init_app(app)
    app.register_blueprint(bp)
    app.jinja_env.globals.update(current_user=current_user, has_role=has_role, may_open=may_open)
