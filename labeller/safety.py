"""What every request and response goes through: allowed hosts, a size cap, security headers,
validated ids and years, and safe redirect targets.

- The Host header must name an allowed host (``ALLOWED_HOSTS``; default: the loopback names and
  HOST), else 400: a web page that rebinds its own DNS name to 127.0.0.1 cannot reach the app.
- A body larger than ``MAX_REQUEST_KB`` is refused with 413 before a byte of it is read.
- Every response carries X-Frame-Options DENY, a Content-Security-Policy that allows only the
  app's own scripts, styles and pictures (no inline script, no eval), nosniff and a
  Referrer-Policy; so do the answers waitress gives itself, without asking the app (a request
  it cannot parse, headers or a body too large: :func:`guard_server_errors`). Waitress takes
  bodies up to :data:`SERVER_BODY_FACTOR` times the cap, so that a body a little over it gets
  the app's own 413 page.
- ``<int:...>`` in routes accepts ASCII digits within SQLite's int64 range only (else 404), and
  :func:`int_arg` / :func:`parse_int` do the same for query and form values (else 400);
  :func:`parse_float` reads decimal numbers in ASCII digits (``pipeline.numbers``).

Why no security-headers extension (Flask-Talisman): it covers only the headers, and its defaults
are wrong for an app most teams serve over plain http on a laptop or a LAN: it redirects every
request to https, sends Strict-Transport-Security and marks the session cookie secure (so a
login over http never sticks), and frames SAMEORIGIN where this app says DENY; switched off
and re-specified, those defaults leave one ``after_request`` hook, which is what is here. The
host check and size cap stay explicit rather than Flask's ``TRUSTED_HOSTS`` and the body limit
that Werkzeug applies when a body is read: this hook runs first, before any handler reads
anything, and its 400 names the setting to change.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from flask import Flask, abort, current_app, request
from werkzeug.routing import IntegerConverter, ValidationError

from pipeline.numbers import parse_decimal, parse_whole

#: SQLite's largest integer.
INT64_MAX = 2**63 - 1
LOOPBACK_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
SECURITY_HEADERS: dict[str, str] = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: Waitress accepts bodies up to this many times MAX_REQUEST_KB: one a little over the cap reaches
#: the app (which refuses it with its 413 page before reading it); a larger one waitress refuses.
SERVER_BODY_FACTOR = 2


class Int64Converter(IntegerConverter):
    """``<int:name>``: ASCII digits only, at most SQLite's int64 (anything else is a 404)."""

    regex = r"[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > INT64_MAX:
            raise ValidationError()
        return number


def parse_int(raw: str | None, name: str) -> int | None:
    """``raw`` as a non-negative int64 in ASCII digits (``pipeline.numbers.parse_whole``), None
    when empty; 400 for anything else (e.g. "²", "١٠", "-1")."""
    text = (raw or "").strip()
    if not text:
        return None
    try:
        number = parse_whole(text) if len(text) <= 19 else None
    except ValueError:
        number = None
    if number is None or number > INT64_MAX:
        abort(400, f"{name} must be a whole number from 0 to {INT64_MAX} in digits 0-9, "
                   f"got {text[:20]!r}")
    return number


def parse_float(raw: str | None, name: str) -> float | None:
    """``raw`` as a decimal number in ASCII digits (``pipeline.numbers.parse_decimal``), None
    when empty; 400 for anything else (e.g. "١٠", "nan", "1e3")."""
    text = (raw or "").strip()
    if not text:
        return None
    try:
        return parse_decimal(text)
    except ValueError:
        abort(400, f"{name} must be a number in digits 0-9 (like -47.25), got {text[:20]!r}")


def int_arg(name: str, default: int | None = None) -> int | None:
    """A query-string or form value as in :func:`parse_int`, or ``default`` when absent."""
    value = parse_int(request.values.get(name), name)
    return default if value is None else value


def safe_next(target: str | None, default: str) -> str:
    """``target`` when it is a path on this site ("/..."), else ``default``.

    Refused: anything with a scheme or host, "//" or "/\\" starts, backslashes anywhere, and
    control characters or spaces (browsers drop tabs and newlines, so "/\\t/evil" means "//evil").
    """
    if not target or not target.startswith("/") or len(target) > 2000:
        return default
    if "\\" in target or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in target):
        return default
    parts = urlsplit(target)
    if target.startswith("//") or parts.scheme or parts.netloc:
        return default
    return target


def allowed_hosts(settings) -> frozenset[str] | None:
    """The host names the app answers to (lower case), or None when ``ALLOWED_HOSTS`` is '*'."""
    names = [h.strip().lower() for h in settings.ALLOWED_HOSTS.split(",") if h.strip()]
    if "*" in names:
        return None
    if not names:
        names = [*LOOPBACK_NAMES, settings.HOST.lower()]
    return frozenset(names)


def _host_name(host: str) -> str:
    """The Host header without its port ("[::1]:5000" -> "::1")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def check_request() -> None:
    """400 for a Host not allowed; 413 for a body over the cap, before anything reads it."""
    allowed = current_app.config["ALLOWED_HOST_NAMES"]
    if allowed is not None and _host_name(request.host) not in allowed:
        abort(400, "This host name is not served here (see the ALLOWED_HOSTS setting).")
    length = request.content_length
    if length is not None and length > current_app.config["MAX_CONTENT_LENGTH"]:
        abort(413)


def content_security_policy(basemap_url: str) -> str:
    """Only this site's scripts, styles and pictures (plus the basemap's tile host, if any)."""
    images = "'self' data:"
    parts = urlsplit(basemap_url)
    if parts.scheme in ("http", "https") and parts.netloc:
        images += f" {parts.scheme}://{parts.netloc.replace('{s}', '*')}"
    return ("default-src 'self'; script-src 'self'; style-src 'self'; "
            f"img-src {images}; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")


def add_headers(response):
    """The security headers, on every response."""
    for name, value in response_headers(current_app.config):
        response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    """The int64 converter, the request checks (first of all hooks) and the response headers."""
    settings = app.config["SETTINGS"]
    app.url_map.converters["int"] = Int64Converter
    app.config["MAX_CONTENT_LENGTH"] = settings.MAX_REQUEST_KB * 1024
    app.config["ALLOWED_HOST_NAMES"] = allowed_hosts(settings)
    app.config["CSP"] = content_security_policy(settings.BASEMAP_URL)
    app.before_request(check_request)
    app.after_request(add_headers)


def response_headers(config: dict) -> list[tuple[str, str]]:
    """The security headers of every answer (:func:`add_headers`), as (name, value) pairs."""
    return [*SECURITY_HEADERS.items(), ("Content-Security-Policy", config["CSP"])]


def guard_server_errors(listeners: Iterable[object], headers: list[tuple[str, str]]) -> None:
    """Give the answers waitress makes itself (400 for a request it cannot parse, 431 headers
    too large, 413 body too large, 500, 501: they never reach the app) ``headers`` too.

    ``listeners``: the dispatchers of ``waitress.create_server``'s map; each listening server
    gets a channel class whose error task adds the headers (waitress's ``ErrorTask`` builds its
    answer from ``response_headers``, so they go out with its status line).
    """
    from waitress.channel import HTTPChannel
    from waitress.server import BaseWSGIServer
    from waitress.task import ErrorTask

    class GuardedErrorTask(ErrorTask):
        def execute(self) -> None:
            self.response_headers.extend(headers)
            super().execute()

    class GuardedChannel(HTTPChannel):
        error_task_class = GuardedErrorTask

    for listener in listeners:
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = GuardedChannel
