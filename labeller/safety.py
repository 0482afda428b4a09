"""What every request and response goes through: allowed hosts, a size cap, security headers,
validated ids and years, and safe redirect targets.

- The Host header must name an allowed host (``ALLOWED_HOSTS``; default: the loopback names and
  HOST), else 400: a web page that rebinds its own DNS name to 127.0.0.1 cannot reach the app.
- A body larger than ``MAX_REQUEST_KB`` is refused with 413 before a byte of it is read.
- Every response carries X-Frame-Options DENY, a Content-Security-Policy that allows only the
  app's own scripts, styles and pictures (no inline script, no eval), nosniff and a
  Referrer-Policy.
- ``<int:...>`` in routes accepts ASCII digits within SQLite's int64 range only (else 404), and
  :func:`int_arg` does the same for query and form values (else 400).

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

from urllib.parse import urlsplit

from flask import Flask, abort, current_app, request
from werkzeug.routing import IntegerConverter, ValidationError

#: SQLite's largest integer.
INT64_MAX = 2**63 - 1
LOOPBACK_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
SECURITY_HEADERS: dict[str, str] = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class Int64Converter(IntegerConverter):
    """``<int:name>``: ASCII digits only, at most SQLite's int64 (anything else is a 404)."""

    regex = r"[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > INT64_MAX:
            raise ValidationError()
        return number


def parse_int(raw: str | None, name: str) -> int | None:
    """``raw`` as a non-negative int64, None when empty; 400 for anything else (e.g. "²", "-1")."""
    text = (raw or "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > INT64_MAX:
        abort(400, f"{name} must be a whole number from 0 to {INT64_MAX}, got {text[:20]!r}")
    return int(text)


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
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Content-Security-Policy", current_app.config["CSP"])
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
