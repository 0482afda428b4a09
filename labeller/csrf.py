"""Cross-site request forgery protection for every state-changing request.

A token (``secrets.token_urlsafe``) is kept in the signed session. Forms send it as the
``csrf_token`` field; htmx sends it in the ``X-CSRFToken`` header (``hx-headers`` on <body>).
A POST, PUT, PATCH or DELETE without the session's token is refused with 400.

Why not Flask-WTF's ``CSRFProtect``: it reads the same field and header names and refuses with
400 too, but it would make this app worse in two ways. Its tokens expire after an hour by
default (``WTF_CSRF_TIME_LIMIT``), so a reviewer who leaves the review page open over lunch gets
a 400 on the next key press; here a token lives as long as the signed session. And it brings
WTForms, which nothing here uses, for a check that is one constant-time comparison
(``secrets.compare_digest``) against the session. Were the app ever to use WTForms forms,
``CSRFProtect`` with ``WTF_CSRF_TIME_LIMIT = None`` would be the replacement.
"""

from __future__ import annotations

import secrets

from flask import Flask, abort, request, session

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MESSAGE = "CSRF token missing or invalid"


def csrf_token() -> str:
    """The session's token, created on first use."""
    token = session.get("csrf_token")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf_token"] = token
    return token


def check_csrf() -> None:
    if request.method not in UNSAFE_METHODS:
        return
    expected = session.get("csrf_token")
    sent = request.headers.get("X-CSRFToken") or request.form.get("csrf_token")
    if not expected or not sent or not secrets.compare_digest(str(expected), str(sent)):
        abort(400, MESSAGE)


def init_app(app: Flask) -> None:
    app.before_request(check_csrf)
    app.jinja_env.globals["csrf_token"] = csrf_token
