"""The MineWatch web app: Flask + htmx, served offline (htmx from ``static/vendor``).

``create_app(test_config)`` is the application factory; ``serve(settings)`` runs it with waitress.
Pages and partials live in the top-level ``templates/`` and ``static/`` folders. The web layer
turns HTTP into calls of ``review`` (``cards``, ``decisions``, ``thumbnails``) and ``db.store``
functions and renders templates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, render_template, request, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from pipeline.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: settings from ``pipeline.settings.load_settings(test_config)``.

    ``test_config`` may override any setting (DATA_DIR, DATABASE, LEASE_SECONDS, ...) and any
    Flask config key (e.g. TESTING). ``app.config["SETTINGS"]`` holds the Settings; each serving
    thread reuses one Store (``labeller.db.get_store``), on ``g`` during a request.
    """
    settings = load_settings(test_config)
    app = Flask(__name__, template_folder=str(ROOT / "templates"),
                static_folder=str(ROOT / "static"), static_url_path="/static")
    app.config.update(
        SECRET_KEY=settings.secret_key(),
        SETTINGS=settings,
        SEND_FILE_MAX_AGE_DEFAULT=3600,
    )
    for key, value in (test_config or {}).items():
        if key not in Settings.__dataclass_fields__:
            app.config[key] = value

    from labeller import auth, csrf, cycles, db, overview, review, safety

    if settings.BEHIND_HTTPS_PROXY:  # one proxy: trust its X-Forwarded-For/-Proto/-Host
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    db.init_app(app)
    safety.init_app(app)  # host and size checks run before any other hook
    csrf.init_app(app)
    auth.init_app(app)
    app.register_blueprint(overview.bp)
    app.register_blueprint(review.bp)
    app.register_blueprint(cycles.bp)
    from labeller import map as map_page  # territory map and reports (issue 4)
    from labeller import reports
    app.register_blueprint(map_page.bp); app.register_blueprint(reports.bp)  # noqa: E702
    from labeller import team  # second review and agreement (issue 9)
    app.register_blueprint(team.bp)
    from labeller import jobs  # exports and reports as background jobs
    app.register_blueprint(jobs.bp)
    from labeller import triage  # the triage grid (issue 11)
    app.register_blueprint(triage.bp)
    app.add_url_rule("/favicon.ico", "favicon",
                     lambda: app.send_static_file("favicon.ico"))  # for browsers that ask anyway
    app.register_error_handler(HTTPException, _http_error)
    return app


def _http_error(error: HTTPException):
    """Errors as a page, or for htmx as a message swapped into the card's error area."""
    code = error.code or 500
    message = error.description or error.name
    if request.headers.get("HX-Request") == "true":
        body = render_template("_error.html", code=code, message=message)
        headers = {"HX-Retarget": "#card-error", "HX-Reswap": "innerHTML"}
        if code == 401:  # e.g. the session expired while reviewing: go to the login page
            headers["HX-Redirect"] = url_for("auth.login", next=url_for("review.page"))
        return body, code, headers
    return render_template("error.html", code=code, name=error.name, message=message), code


def serve(settings: Settings | None = None, *, preload: bool = True) -> None:
    """Serve the app with waitress on ``settings.HOST:settings.PORT`` (8 threads).

    HOST is 127.0.0.1 by default: only this machine can reach the app until the HOST setting
    (``MINEWATCH_HOST=0.0.0.0``) opens it to the team's network. ``run.py serve`` calls this.
    Waitress's own error answers carry the app's security headers too
    (``labeller.safety.guard_server_errors``).
    With ``preload`` a background thread imports ``pipeline.cycle`` (and TensorFlow with it)
    so that the first press of Retrain does not wait for that import.
    """
    import logging
    import threading

    import waitress

    from labeller.safety import SERVER_BODY_FACTOR, guard_server_errors, response_headers

    settings = settings or load_settings()
    if preload:
        threading.Thread(target=_preload_cycle_module, daemon=True).start()
    overrides = {name: getattr(settings, name) for name in Settings.__dataclass_fields__}
    app = create_app(overrides)
    print(f"MineWatch on http://{settings.HOST}:{settings.PORT}/ (Ctrl+C to stop)", flush=True)
    print(_access_note(settings), flush=True)
    from labeller.auth import LOOPBACK

    if settings.HOST not in LOOPBACK and not settings.ALLOWED_HOSTS:
        print(f"Only requests naming localhost or {settings.HOST} in their Host header are "
              "answered: set ALLOWED_HOSTS to the name or address your team types.", flush=True)
    logging.basicConfig()  # as waitress.serve does: its own warnings (task queue depth) show
    listeners: dict = {}
    server = waitress.create_server(
        app, map=listeners, host=settings.HOST, port=settings.PORT, threads=8,
        max_request_body_size=SERVER_BODY_FACTOR * app.config["MAX_CONTENT_LENGTH"])
    guard_server_errors(listeners.values(), response_headers(app.config))
    server.print_listen("Serving on http://{}:{}")
    server.run()


def _access_note(settings: Settings) -> str:
    """One line on who can use the app (open mode, or logins), and a second on how to make the
    first admin while no admin exists."""
    from db.store import Store
    from labeller.auth import LOOPBACK
    from review.accounts import FIRST_ADMIN_HINT, has_admin

    with Store(settings.database_path) as store:
        n_accounts, admin = len(store.accounts.accounts()), has_admin(store)
    if n_accounts:
        note = f"{n_accounts} account(s): everyone logs in."
    elif settings.HOST in LOOPBACK:
        note = ("No account yet: open mode, every request acts as 'local' (admin) on this "
                "machine only. Create accounts before opening it to a network.")
    else:
        note = "No account yet and the app listens beyond this machine: nobody can log in."
    return note if admin else f"{note}\n{FIRST_ADMIN_HINT}"


def _preload_cycle_module() -> None:
    try:
        import pipeline.cycle  # noqa: F401
    except ImportError:  # reported when a cycle is started
        pass
