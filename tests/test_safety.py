"""What every request and response goes through (labeller/safety.py): allowed hosts, the size
cap, security headers, validated ids and years, safe redirect targets."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labeller import create_app
from labeller.safety import INT64_MAX, content_security_policy, safe_next

pytest.register_assert_rewrite("fixtures_app")
from fixtures_app import PASSWORD, add_account, csrf_from, login  # noqa: E402

pytest_plugins = ["fixtures_app"]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:5000", "[::1]:5000", "LOCALHOST"])
def test_loopback_hosts_are_answered(client, host) -> None:
    assert client.get("/login", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:5000", "127.0.0.1.evil.example",
                                  "localhost.evil.example"])
def test_other_hosts_get_400(client, host) -> None:
    response = client.get("/login", headers={"Host": host})
    assert response.status_code == 400 and "ALLOWED_HOSTS" in response.get_data(as_text=True)


def test_allowed_hosts_setting_and_host_setting(app_config) -> None:
    listed = create_app({**app_config, "ALLOWED_HOSTS": "minewatch.example.org"}).test_client()
    assert listed.get("/login", headers={"Host": "minewatch.example.org"}).status_code == 200
    assert listed.get("/login", headers={"Host": "localhost"}).status_code == 400
    anything = create_app({**app_config, "ALLOWED_HOSTS": "*"}).test_client()
    assert anything.get("/login", headers={"Host": "whatever.example"}).status_code == 200
    lan = create_app({**app_config, "HOST": "10.1.2.3"}).test_client()
    assert lan.get("/login", headers={"Host": "10.1.2.3:5000"}).status_code == 200


@pytest.mark.parametrize("path", ["/login", "/static/app.css", "/no-such-page"])
def test_security_headers_on_every_response(client, path) -> None:
    response = client.get(path)
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe" not in csp


def test_csp_adds_only_the_basemap_host() -> None:
    csp = content_security_policy("https://{s}.tile.example.org/{z}/{x}/{y}.png")
    assert "img-src 'self' data: https://*.tile.example.org;" in csp
    assert "img-src 'self' data:;" in content_security_policy("")


def test_pages_have_no_inline_script_or_style(client, app) -> None:
    """The CSP allows neither: every page must work without them."""
    for path in ("/", "/review", "/cycles", "/map", "/report", "/accounts", "/settings", "/login"):
        html = client.get(path).get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html), path
        assert "hx-on" not in html and "keyup[" not in html, path


def test_a_big_body_is_refused_before_it_is_read(client) -> None:
    token = login(client)
    body = b"label=mine&request_id=x&pad=" + b"a" * (50 * 1024 * 1024)
    response = client.post("/undo", data=body, headers={
        "X-CSRFToken": token, "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413


@pytest.mark.parametrize("path", [
    "/cells/²/2021/label", "/cells/1/²/label", f"/cells/{INT64_MAX + 1}/2021/label",
    "/cells/-1/2021/label", "/cells/99999999999999999999999999/2021/label",
    "/cells/1/20210000000000000000000/label", f"/decisions/{INT64_MAX + 1}", "/decisions/-3",
    "/decisions/%C2%B2", "/cells/%D9%A3/2021/thumb/rgb.png",
])
def test_bad_ids_in_urls_are_404(client, path) -> None:
    token = login(client)
    method = "GET" if path.endswith(".png") else "POST"
    response = client.open(path, method=method, data={"label": "mine", "request_id": "a"},
                           headers={"X-CSRFToken": token})
    assert response.status_code == 404


def test_largest_id_is_a_404_not_a_500(client) -> None:
    token = login(client)
    response = client.post(f"/cells/{INT64_MAX}/2021/label",
                           data={"label": "mine", "request_id": "a"},
                           headers={"X-CSRFToken": token})
    assert response.status_code == 404
    assert client.post(f"/decisions/{INT64_MAX}", data={"label": "mine"},
                       headers={"X-CSRFToken": token}).status_code == 404


@pytest.mark.parametrize("query", [
    "cell=²&year=2021", "cell=1&year=²", f"cell={INT64_MAX + 1}&year=2021", "cell=-5&year=2021",
    "cell=1&year=" + "9" * 30, "cell=%D9%A3&year=2021",
])
def test_bad_ids_in_query_strings_are_400(client, query) -> None:
    login(client)
    assert client.get(f"/review?{query}").status_code == 400


@pytest.mark.parametrize("path", ["/map?year=²", "/map/cells.geojson?year=" + "9" * 25,
                                  "/report?year=²", "/report?k=-1", "/map?year=-2021",
                                  "/map/cells.geojson?bbox=%D9%A1,0,1,1",   # Arabic-Indic 1
                                  "/map/cells.geojson?bbox=nan,0,1,1",
                                  "/map/cells.geojson?bbox=0,0,1"])
def test_bad_numbers_on_map_and_report_are_400(client, path) -> None:
    login(client, "lea", "lead")
    assert client.get(path).status_code == 400


def test_queue_year_is_validated(client) -> None:
    token = login(client)
    for year in ("²", "99999999999999999999", "1850"):
        response = client.post("/review/queue", data={"strategy": "score", "year": year,
                                                      "csrf_token": token})
        assert response.status_code == 400


@pytest.mark.parametrize("target", [
    "/%09/evil.example", "/\t/evil.example", "//evil.example", "///evil.example",
    "/\\evil.example", "\\\\evil.example", "https://evil.example/", "javascript:alert(1)",
    "/\n/evil.example", "evil.example", "/ /evil.example",
])
def test_next_never_leaves_the_site(target) -> None:
    assert safe_next(target, "/review") in ("/review", target)
    if target != "/%09/evil.example":  # literal %09 stays a path on this site
        assert safe_next(target, "/review") == "/review"


def test_safe_next_keeps_local_paths() -> None:
    assert safe_next("/review?cell=5&year=2021", "/") == "/review?cell=5&year=2021"


@pytest.mark.parametrize("query", ["next=/%09/evil.example/x", "next=//evil.example",
                                   "next=/%5Cevil.example", "next=%5C%5Cevil.example",
                                   "next=https://evil.example"])
def test_login_redirect_stays_on_the_site(app, client, query) -> None:
    add_account(app, "ana")
    page = client.get(f"/login?{query}")
    token = csrf_from(page.get_data(as_text=True))
    response = client.post(f"/login?{query}", data={"name": "ana", "password": PASSWORD,
                                                    "csrf_token": token})
    assert response.status_code == 302 and response.location == "/review"


def test_a_bbox_in_ascii_digits_is_read(client) -> None:
    login(client, "lea", "lead")
    response = client.get("/map/cells.geojson?bbox=-180,-85.5,180,85.5")
    assert response.status_code == 200 and response.get_json()["count"] > 0


# the real server: waitress's own answers -------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`run.py serve` (waitress) on a free loopback port, until the module's tests are done."""
    port = free_port()
    env = {**os.environ, "MINEWATCH_DATA_DIR": str(tmp_path_factory.mktemp("served")),
           "MINEWATCH_MAX_REQUEST_KB": "8"}
    server = subprocess.Popen([sys.executable, "run.py", "serve", "--port", str(port)], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "run.py serve died"
            time.sleep(0.2)
    yield port
    server.terminate()
    server.wait(timeout=30)


def raw_request(port: int, request: bytes) -> tuple[int, dict[str, str]]:
    """Send raw bytes to the server; (status, headers) of its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
    return int(head[0].split()[1]), {k.lower(): v for k, v in headers.items()}


def assert_secured(headers: dict[str, str]) -> None:
    assert headers.get("x-frame-options") == "DENY"
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("referrer-policy") == "same-origin"
    assert "frame-ancestors 'none'" in headers.get("content-security-policy", "")


def test_the_real_server_answers_with_the_security_headers(served) -> None:
    status, headers = raw_request(served, b"GET /login HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status == 200
    assert_secured(headers)


@pytest.mark.parametrize("request_bytes, code, page", [
    # a little over MAX_REQUEST_KB (8 KiB here): the app's own 413 page
    (b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 9000\r\n"
     b"Content-Type: application/x-www-form-urlencoded\r\n\r\n" + b"a" * 9000, 413, "text/html"),
    # far over: waitress refuses it before reading the body
    (b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 999999999\r\n\r\n", 413,
     "text/plain"),
    (b"POST /login HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"4000\r\n" + b"a" * 0x4000 + b"\r\n0\r\n\r\n", 413, "text/plain"),  # over 2x the cap
    (b"GET /login HTTP/1.1\r\nHost: localhost\r\nNo colon here\r\n\r\n", 400,  # malformed
     "text/plain"),
    (b"GET /login HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n", 431,
     "text/plain"),
])
def test_waitress_own_error_answers_carry_the_security_headers(served, request_bytes, code,
                                                                page) -> None:
    status, headers = raw_request(served, request_bytes)
    assert status == code and headers["content-type"].startswith(page)   # text/plain: waitress
    assert_secured(headers)
