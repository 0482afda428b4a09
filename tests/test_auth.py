"""Accounts in the web app (labeller/auth.py): the role table covers every route and is enforced
per role; login, logout, rate limit, session expiry, open mode, the accounts page."""

from __future__ import annotations

import sys
import time
import types

import pytest
from werkzeug.routing import Rule

from db.store import Store
from labeller import create_app
from labeller.auth import ENDPOINT_ROLES, LOCAL_USER
from review.accounts import ROLES

pytest.register_assert_rewrite("fixtures_app")
from fixtures_app import PASSWORD, add_account, csrf_from, login  # noqa: E402

pytest_plugins = ["fixtures_app"]

#: A value for each URL variable of the app's routes.
SAMPLE_VALUES = {"cell_id": 1, "year": 2021, "view": "rgb", "kind": "cell", "fmt": "csv",
                 "event_id": 1, "name": "nobody", "filename": "app.css", "job_id": 1,
                 "version": "m0001", "mode": "natural", "z": 14, "x": 0, "y": 0}


def test_every_route_has_a_role() -> None:
    app = create_app({"SECRET_KEY": "x", "TESTING": True, "DATA_DIR": "unused-not-created"})
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoints - set(ENDPOINT_ROLES) == set()
    assert set(ENDPOINT_ROLES.values()) <= {"public", *ROLES}
    assert ENDPOINT_ROLES["auth.login"] == "public" and ENDPOINT_ROLES["static"] == "public"


def test_an_endpoint_missing_from_the_table_is_refused(app, client, monkeypatch) -> None:
    monkeypatch.delitem(ENDPOINT_ROLES, "cycles.page")
    response = client.get("/cycles")
    assert response.status_code == 403 and "ENDPOINT_ROLES" in response.get_data(as_text=True)


def _url(rule: Rule) -> str:
    values = {name: SAMPLE_VALUES[name] for name in rule.arguments}
    return rule.build(values, append_unknown=False)[1]


def _method(rule: Rule) -> str:
    return "GET" if "GET" in rule.methods else "POST"


@pytest.fixture
def no_cycle(monkeypatch):
    """pipeline.cycle replaced by a launcher that only records the call."""
    module = types.ModuleType("pipeline.cycle")
    calls: list[object] = []
    module.launch_cycle = calls.append
    monkeypatch.setitem(sys.modules, "pipeline.cycle", module)
    return calls


@pytest.mark.parametrize("role", [None, *ROLES])
def test_each_role_on_each_route(app, role, no_cycle) -> None:
    add_account(app, "someone-else")  # an account exists: no open mode
    client = app.test_client()
    token = login(client, f"a-{role}", role) if role else csrf_from(
        client.get("/login").get_data(as_text=True))
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "auth.logout":
            continue  # would end the session; see test_logout
        needed = ENDPOINT_ROLES[rule.endpoint]
        method = _method(rule)
        response = client.open(_url(rule), method=method, headers={"X-CSRFToken": token},
                               data={"csrf_token": token})
        allowed = needed == "public" or (role is not None and ROLES.index(role) >= ROLES.index(
            needed))
        code = response.status_code
        where = f"{role} {method} {rule.rule} ({needed}): {code}"
        if allowed:
            assert code not in (401, 403) and code < 500, where
        elif role is None:
            assert code == 401 or (code == 302 and "/login?next=" in response.location), where
        else:
            assert code == 403, where
        checked += 1
    assert checked >= 25


def test_login_logout_and_wrong_password(app, client) -> None:
    add_account(app, "ana")
    token = csrf_from(client.get("/login").get_data(as_text=True))
    wrong = client.post("/login", data={"name": "ana", "password": "not the password",
                                        "csrf_token": token})
    assert wrong.status_code == 401 and "Wrong name or password" in wrong.get_data(as_text=True)
    unknown = client.post("/login", data={"name": "zed", "password": PASSWORD,
                                          "csrf_token": token})
    assert unknown.status_code == 401
    ok = client.post("/login", data={"name": "ana", "password": PASSWORD, "csrf_token": token,
                                     "next": "/map?year=2021"})
    assert ok.status_code == 302 and ok.location == "/map?year=2021"
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    # the session was renewed at login: the old CSRF token is gone
    assert client.post("/undo", headers={"X-CSRFToken": token}).status_code == 400
    token = csrf_from(client.get("/review").get_data(as_text=True))
    assert client.post("/review/card", headers={"X-CSRFToken": token}).status_code == 405
    out = client.post("/logout", headers={"X-CSRFToken": token})
    assert out.status_code == 302 and out.location == "/login"
    assert client.get("/review").status_code == 302


def test_a_request_that_does_not_change_the_session_sends_no_cookie(app, client) -> None:
    # A thumbnail answered after a POST must not put back the session from before the POST.
    login(client, "ana")
    assert client.get("/static/app.css").headers.get("Set-Cookie") is None
    assert client.get("/map").headers.get("Set-Cookie") is None


def test_logout_releases_the_reviewers_leases(app, client, review_db) -> None:
    token = login(client, "ana")
    client.get("/review")
    with Store(review_db.database) as store:
        assert store._scalar("SELECT count(*) FROM leases WHERE reviewer = 'ana'") > 0
    client.post("/logout", headers={"X-CSRFToken": token})
    with Store(review_db.database) as store:
        assert store._scalar("SELECT count(*) FROM leases WHERE reviewer = 'ana'") == 0


def test_login_attempts_are_rate_limited(app_config) -> None:
    app = create_app({**app_config, "LOGIN_RATE_LIMIT": "3 per minute"})
    add_account(app, "ana")
    client = app.test_client()
    token = csrf_from(client.get("/login").get_data(as_text=True))
    codes = [client.post("/login", data={"name": "ana", "password": "wrong password",
                                         "csrf_token": token}).status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    # the right password is refused too while the limit holds
    right = client.post("/login", data={"name": "ana", "password": PASSWORD,
                                        "csrf_token": token})
    assert right.status_code == 429


def test_successful_logins_do_not_count_against_the_limit(app_config) -> None:
    app = create_app({**app_config, "LOGIN_RATE_LIMIT": "2 per minute"})
    for _ in range(4):  # one office address, four people
        login(app.test_client(), "ana")


def test_htmx_request_without_a_session_is_sent_to_login(app, client, review_db) -> None:
    add_account(app, "ana")
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/undo", headers={"HX-Request": "true", "X-CSRFToken": token})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login?next=/review"


def test_login_attempts_are_limited_per_account_name(app_config) -> None:
    app = create_app({**app_config, "LOGIN_RATE_LIMIT": "2 per minute"})
    add_account(app, "ana")
    codes = []
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):  # three clients, one name
        client = app.test_client()
        token = csrf_from(client.get("/login").get_data(as_text=True))
        codes.append(client.post("/login", data={"name": "ana", "password": "wrong password",
                                                 "csrf_token": token},
                                 environ_base={"REMOTE_ADDR": address}).status_code)
    assert codes == [401, 401, 429]


def test_session_expires(app_config) -> None:
    app = create_app({**app_config, "SESSION_HOURS": 0.001})  # 3.6 s
    client = app.test_client()
    login(client, "ana")
    assert client.get("/review").status_code == 200
    with client.session_transaction() as session:
        session["login_at"] = time.time() - 10
    assert client.get("/review").status_code == 302


def test_disable_or_new_password_ends_sessions(app, client) -> None:
    from review.accounts import disable_account, reset_password

    login(client, "ana")
    with Store(app.config["SETTINGS"].database_path) as store:
        reset_password(store, "ana", "another long password")
    assert client.get("/review").status_code == 302
    login_again = app.test_client()
    add_account(app, "ben")
    login(login_again, "ben")
    with Store(app.config["SETTINGS"].database_path) as store:
        disable_account(store, "ben")
    assert login_again.get("/review").status_code == 302
    token = csrf_from(login_again.get("/login").get_data(as_text=True))
    refused = login_again.post("/login", data={"name": "ben", "password": PASSWORD,
                                               "csrf_token": token})
    assert refused.status_code == 401


def test_open_mode_only_on_loopback_without_accounts(app_config) -> None:
    local = create_app(app_config).test_client()
    assert local.get("/").status_code == 200
    exposed = create_app({**app_config, "HOST": "0.0.0.0"}).test_client()
    response = exposed.get("/")
    assert response.status_code == 302 and "/login" in response.location
    assert LOCAL_USER["role"] == "admin"


def test_open_mode_creates_the_first_account_and_logs_it_in(app, client, review_db) -> None:
    page = client.get("/accounts").get_data(as_text=True)
    assert "No account yet" in page
    token = csrf_from(page)
    made = client.post("/accounts", data={"name": "boss", "role": "admin", "password": PASSWORD,
                                          "csrf_token": token})
    assert made.status_code == 200 and "Account boss (admin) created" in made.get_data(
        as_text=True)
    page = client.get("/review").get_data(as_text=True)
    assert ">boss</span>" in page and "open mode" not in page
    # a second browser now needs a login
    assert app.test_client().get("/review").status_code == 302


def test_accounts_page_for_admins(app, client) -> None:
    token = login(client, "root", "admin")
    bad = client.post("/accounts", data={"name": "local", "role": "reviewer",
                                         "password": PASSWORD, "csrf_token": token})
    assert bad.status_code == 400 and "reserved" in bad.get_data(as_text=True)
    short = client.post("/accounts", data={"name": "ana", "role": "reviewer", "password": "x",
                                           "csrf_token": token})
    assert short.status_code == 400 and "at least 10" in short.get_data(as_text=True)
    ok = client.post("/accounts", data={"name": "ana", "role": "reviewer", "password": PASSWORD,
                                        "csrf_token": token})
    assert ok.status_code == 200
    again = client.post("/accounts", data={"name": "ana", "role": "lead", "password": PASSWORD,
                                           "csrf_token": token})
    assert again.status_code == 400 and "already exists" in again.get_data(as_text=True)
    off = client.post("/accounts/ana/disabled", data={"disabled": "1", "csrf_token": token})
    assert off.status_code == 200 and "disabled" in off.get_data(as_text=True)
    self_off = client.post("/accounts/root/disabled", data={"disabled": "1",
                                                            "csrf_token": token})
    assert self_off.status_code == 400
    reset = client.post("/accounts/ana/password", data={"password": "brand new password",
                                                        "csrf_token": token})
    assert reset.status_code == 200
    assert client.post("/accounts/zed/password", data={"password": "brand new password",
                                                       "csrf_token": token}).status_code == 404
    with Store(app.config["SETTINGS"].database_path) as store:
        assert store.accounts.account("ana")["disabled"] == 1 and store.accounts.account("root")["disabled"] == 0


def test_behind_https_proxy_secure_cookie_and_forwarded_headers(app_config) -> None:
    app = create_app({**app_config, "BEHIND_HTTPS_PROXY": "1",
                      "ALLOWED_HOSTS": "minewatch.example.org"})
    add_account(app, "ana")
    client = app.test_client()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "minewatch.example.org",
                 "X-Forwarded-For": "203.0.113.9"}
    page = client.get("/login", headers=forwarded)
    assert page.status_code == 200
    token = csrf_from(page.get_data(as_text=True))
    ok = client.post("/login", headers=forwarded, data={"name": "ana", "password": PASSWORD,
                                                        "csrf_token": token})
    assert ok.status_code == 302 and "Secure" in ok.headers["Set-Cookie"]
    assert client.get("/login").status_code == 400  # Host: localhost is not allowed here


def test_review_keys_decisions_by_account(app, review_db) -> None:
    """Two accounts: each is served its own cells and may change only its own decisions."""
    ana, ben = app.test_client(), app.test_client()
    ta, tb = login(ana, "ana"), login(ben, "ben")
    from fixtures_app import card_fields

    fields = card_fields(ana.get("/review").get_data(as_text=True))
    ana.post(f"/cells/{fields['cell_id']}/2021/label",
             data={"label": "mine", "request_id": "T"}, headers={"X-CSRFToken": ta})
    page = ben.get("/review").get_data(as_text=True)
    other = card_fields(page)
    # ben gets ana's cell only as its blind second review (when SECOND_REVIEW_SHARE picks it)
    assert other["cell_id"] != fields["cell_id"] or "second review · blind" in page
    ben.post(f"/cells/{other['cell_id']}/2021/label",
             data={"label": "skip", "request_id": "T"}, headers={"X-CSRFToken": tb})
    with Store(review_db.database) as store:
        rows = store._rows("SELECT id, reviewer, cell_id FROM label_events ORDER BY id")
    assert [r["reviewer"] for r in rows] == ["ana", "ben"]  # ben's "T" was not swallowed
    forbidden = ben.post(f"/decisions/{rows[0]['id']}", data={"label": "background"},
                         headers={"X-CSRFToken": tb})
    assert forbidden.status_code == 403 and "only your own" in forbidden.get_data(as_text=True)
    own = ben.post(f"/decisions/{rows[1]['id']}", data={"label": "mine"},
                   headers={"X-CSRFToken": tb})
    assert own.status_code == 302


def test_serve_says_who_can_use_the_app(tmp_path) -> None:
    from labeller import _access_note
    from pipeline.settings import load_settings
    from review.accounts import create_account

    local = load_settings({"DATA_DIR": str(tmp_path)})
    assert "open mode" in _access_note(local)
    exposed = load_settings({"DATA_DIR": str(tmp_path), "HOST": "0.0.0.0"})
    assert "users add NAME --role admin" in _access_note(exposed)
    with Store(local.database_path) as store:
        create_account(store, "ana", "admin", PASSWORD)
    assert "1 account(s): everyone logs in." == _access_note(exposed)


def test_role_required_decorator(app_config, monkeypatch) -> None:
    from labeller.auth import role_required

    app = create_app(app_config)

    @role_required("lead")
    def lead_only() -> str:
        return "lead stuff"

    app.add_url_rule("/lead-only", "lead_only", lead_only)
    monkeypatch.setitem(ENDPOINT_ROLES, "lead_only", "reviewer")  # the table lets reviewers in
    reviewer, lead = app.test_client(), app.test_client()
    login(reviewer, "ana")
    login(lead, "lea", "lead")
    assert reviewer.get("/lead-only").status_code == 403  # the decorator does not
    assert lead.get("/lead-only").get_data(as_text=True) == "lead stuff"
    with pytest.raises(ValueError, match="unknown role"):
        role_required("owner")


def test_settings_page_shows_values_but_not_secrets(app, client) -> None:
    login(client, "root", "admin")
    html = client.get("/settings").get_data(as_text=True)
    assert "<code>LEASE_SECONDS</code></td><td>300</td>" in html
    assert "test-secret" not in html and "(hidden)" in html


def _replay(app, cookie: str):
    """A new browser holding a copy of a session cookie saved earlier."""
    replayed = app.test_client()
    replayed.set_cookie("session", cookie)
    return replayed


def _refused(app, cookie: str, token: str) -> None:
    """The saved cookie opens no page and starts no export (a redirect to login / 401)."""
    page = _replay(app, cookie).get("/review")
    assert page.status_code == 302 and page.location.startswith("/login")
    export = _replay(app, cookie).post("/exports", data={"csrf_token": token, "format": "nonsense"},
                           headers={"X-CSRFToken": token})
    assert export.status_code == 401


def test_a_saved_cookie_is_refused_after_logout(app, client, review_db) -> None:
    token = login(client, "lea", "lead")
    saved = client.get_cookie("session").value
    assert _replay(app, saved).get("/review").status_code == 200  # the copy works before
    client.post("/logout", headers={"X-CSRFToken": token})
    _refused(app, saved, token)
    login(client, "lea", "lead")  # logging in again works
    assert client.get("/review").status_code == 200


@pytest.mark.parametrize("how", ["disable", "password"])
def test_a_saved_cookie_is_refused_after_disable_or_reset(app, client, review_db, how) -> None:
    admin = app.test_client()
    admin_token = login(admin, "root", "admin")
    token = login(client, "lea", "lead")
    saved = client.get_cookie("session").value
    if how == "disable":
        answer = admin.post("/accounts/lea/disabled", data={"disabled": "1",
                                                            "csrf_token": admin_token})
    else:
        answer = admin.post("/accounts/lea/password", data={"password": "a brand new password",
                                                            "csrf_token": admin_token})
    assert answer.status_code == 200
    _refused(app, saved, token)
    assert client.get("/review").status_code == 302


def test_login_names_ignore_case(app, client) -> None:
    add_account(app, "Ana")
    token = csrf_from(client.get("/login").get_data(as_text=True))
    ok = client.post("/login", data={"name": "aNA", "password": PASSWORD, "csrf_token": token})
    assert ok.status_code == 302
    page = client.get("/review").get_data(as_text=True)
    assert ">Ana</span>" in page  # the session is the account's own name


def test_failures_on_one_name_do_not_lock_another_from_the_same_address(app_config) -> None:
    app = create_app({**app_config, "LOGIN_RATE_LIMIT": "3 per minute"})
    add_account(app, "ana")
    add_account(app, "ben")
    client = app.test_client()  # one office address for everybody
    token = csrf_from(client.get("/login").get_data(as_text=True))
    codes = [client.post("/login", data={"name": name, "password": "wrong password",
                                         "csrf_token": token}).status_code
             for name in ("ben", "BEN", "ben", "ben")]
    assert codes == [401, 401, 401, 429]  # ben's bucket, whatever the case
    right = client.post("/login", data={"name": "ana", "password": PASSWORD, "csrf_token": token})
    assert right.status_code == 302


def test_a_spray_over_many_names_hits_the_address_ceiling(app_config) -> None:
    app = create_app({**app_config, "LOGIN_RATE_LIMIT": "3 per minute",
                      "LOGIN_ADDRESS_LIMIT": "5 per minute"})
    add_account(app, "ana")
    client = app.test_client()
    token = csrf_from(client.get("/login").get_data(as_text=True))
    codes = [client.post("/login", data={"name": f"user{i}", "password": "wrong password",
                                         "csrf_token": token}).status_code for i in range(6)]
    assert codes == [401] * 5 + [429]
    other = app.test_client()  # another address is not affected
    token = csrf_from(other.get("/login").get_data(as_text=True))
    assert other.post("/login", data={"name": "ana", "password": PASSWORD, "csrf_token": token},
                      environ_base={"REMOTE_ADDR": "10.0.0.7"}).status_code == 302


@pytest.mark.parametrize("header", ["Forwarded", "X-Forwarded-For", "X-Forwarded-Host",
                                    "X-Real-IP"])
def test_no_open_mode_for_a_forwarded_request(app_config, header) -> None:
    client = create_app(app_config).test_client()
    assert client.get("/").status_code == 200  # direct from loopback: open mode
    response = client.get("/", headers={header: "203.0.113.9"})
    assert response.status_code == 302 and "/login" in response.location
    assert client.get("/", environ_base={"REMOTE_ADDR": "192.0.2.4"}).status_code == 302


def test_blueprints_add_no_roles_at_import() -> None:
    """The table in labeller/auth.py is the whole table: importing every blueprint changes it
    not (a fresh interpreter, so nothing was imported before)."""
    import subprocess

    script = ("import labeller.auth as a; before = dict(a.ENDPOINT_ROLES)\n"
              "import labeller.team, labeller.triage, labeller.review, labeller.jobs, "
              "labeller.map, labeller.reports, labeller.cycles, labeller.overview\n"
              "assert a.ENDPOINT_ROLES == before, set(a.ENDPOINT_ROLES.items()) ^ "
              "set(before.items())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
