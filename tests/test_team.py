"""The Team page and the adjudication queue (labeller/team.py) through the Flask test client,
per role, and the blind second-review card and review-state figures on the other pages."""

from __future__ import annotations

import re

import pytest

from db.store import Store
from review import accounts, decisions
from review import second_review as sr

pytest.register_assert_rewrite("fixtures_app")
from fixtures_app import add_account, card_fields, csrf_from, login  # noqa: E402

pytest_plugins = ["fixtures_app"]
HTMX = {"HX-Request": "true"}
#: The team of these tests: account name -> role.
TEAM = {"ana": "reviewer", "ben": "reviewer", "lea": "lead", "adm": "admin"}


@pytest.fixture
def app_config(app_config: dict) -> dict:
    return {**app_config, "SECOND_REVIEW_SHARE": 1.0}


@pytest.fixture
def team(app) -> dict[str, str]:
    """The accounts exist (so the app is out of open mode)."""
    for name, role in TEAM.items():
        add_account(app, name, role)
    return TEAM


def new_client(app, name: str):
    """A client logged in as ``name``; returns it and its CSRF token."""
    client = app.test_client()
    return client, login(client, name, TEAM[name])


def decide(database, reviewer: str, cell: int, label: str, year: int = 2021) -> None:
    with Store(database) as store:
        decisions.decide(store, reviewer=reviewer, cell_id=cell, year=year,
                       form=decisions.DecisionForm(label, f"{reviewer}-{cell}-{label}"),
                       policy=sr.SecondReviewPolicy(share=1.0))


def disagreement(review_db, cell_index: int = 0) -> int:
    cell = review_db.cell_ids[cell_index]
    decide(review_db.database, "ana", cell, "mine")
    decide(review_db.database, "ben", cell, "background")
    return cell


# roles -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("role, expected", [("reviewer", 403), ("lead", 200), ("admin", 200)])
def test_team_and_adjudication_need_a_lead(app, review_db, team, role, expected) -> None:
    cell = disagreement(review_db)
    name = next(n for n, r in team.items() if r == role)
    client, token = new_client(app, name)
    assert client.get("/team").status_code == expected
    assert client.get("/adjudicate").status_code == expected
    response = client.post(f"/adjudicate/{cell}/2021", data={"label": "mine"},
                           headers={**HTMX, "X-CSRFToken": token})
    assert response.status_code == expected
    with Store(review_db.database) as store:
        status = store.second_review.second_review(cell, 2021)["status"]
    assert status == ("disagreed" if expected == 403 else "adjudicated")
    nav = client.get("/review").get_data(as_text=True)
    assert ('href="/team"' in nav) == (expected == 200)


def test_logged_out_visitors_are_sent_to_login(app, review_db, team) -> None:
    client = app.test_client()
    for path in ("/team", "/adjudicate"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post(f"/adjudicate/{review_db.cell_ids[0]}/2021", data={"label": "mine"},
                           headers={**HTMX, "X-CSRFToken": token})
    assert response.status_code == 401


def test_open_mode_on_loopback_lets_the_local_admin_in(client, review_db) -> None:
    cell = disagreement(review_db)
    assert client.get("/team").status_code == 200
    html = client.get("/adjudicate").get_data(as_text=True)
    response = client.post(f"/adjudicate/{cell}/2021", data={"label": "background"},
                           headers={**HTMX, "X-CSRFToken": csrf_from(html)})
    assert response.status_code == 200
    with Store(review_db.database) as store:
        assert store.second_review.second_review(cell, 2021)["adjudicated_by"] == accounts.LOCAL_NAME


def test_second_reviewer_gets_a_blind_card_through_the_app(app, review_db, team) -> None:
    client, token = new_client(app, "ana")
    fields = card_fields(client.get("/review").get_data(as_text=True))
    response = client.post(f"/cells/{fields['cell_id']}/{fields['year']}/label", headers={
        **HTMX, "X-CSRFToken": token}, data={"label": "mine", "request_id": fields["request_id"]})
    assert response.status_code == 200
    with Store(review_db.database) as store:
        assert store.second_review.second_review(fields["cell_id"], 2021)["status"] == "pending"
    other, token = new_client(app, "ben")
    html = other.get("/review").get_data(as_text=True)
    card = card_fields(html)
    assert card["cell_id"] == fields["cell_id"]
    assert "second review · blind" in html and "Hidden: this is a blind second review" in html
    assert "by ana" not in html and ">ana<" not in html
    response = other.post(f"/cells/{card['cell_id']}/2021/label", headers={
        **HTMX, "X-CSRFToken": token}, data={"label": "background", "request_id": card["request_id"]})
    assert "Recorded as a second review" in response.get_data(as_text=True)
    with Store(review_db.database) as store:
        assert store.second_review.second_review(card["cell_id"], 2021)["status"] == "disagreed"


def test_team_page_empty_and_with_figures(app, review_db, team) -> None:
    client, _ = new_client(app, "lea")
    html = client.get("/team").get_data(as_text=True)
    assert "No double-reviewed decisions yet" in html and "No decisions yet" in html
    disagreement(review_db, 0)
    cell = review_db.cell_ids[1]
    decide(review_db.database, "ana", cell, "mine")
    decide(review_db.database, "ben", cell, "mine")
    html = client.get("/team").get_data(as_text=True)
    row = re.search(r'<tr data-reviewer="ana"><td>ana</td>(.*?)</tr>', html, re.S).group(1)
    assert "50.0 %" in row and ">2<" in row
    assert 'data-pair="ana|ben"' in html
    assert re.search(r'data-state="disagreed">.*?<td class="num">1<', html, re.S)
    assert re.search(r'data-state="agreed">.*?<td class="num">1<', html, re.S)
    assert "Adjudicate 1 disagreement" in html
    assert 'id="pace"' in html and "100 % of first decisions" in html


def test_adjudication_queue_and_decision(app, review_db, team) -> None:
    client, token = new_client(app, "lea")
    html = client.get("/adjudicate").get_data(as_text=True)
    assert "Nothing to adjudicate" in html
    first = disagreement(review_db, 0)
    second = disagreement(review_db, 2)
    html = client.get("/adjudicate").get_data(as_text=True)
    assert f'data-cell="{first}"' in html and "2 disagreements waiting" in html
    assert re.search(r'class="first-label">.*mine.*by ana', html)
    assert re.search(r'class="second-label">.*background.*by ben', html)
    assert 'id="adjudication-queue"' in html and str(second) in html
    request_id = re.search(r'name="request_id" value="(\w+)"', html).group(1)
    url = f"/adjudicate/{first}/2021"
    response = client.post(url, data={"label": "mine", "request_id": request_id},
                           headers={**HTMX, "X-CSRFToken": token})
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and f"Adjudicated cell {first} (2021) as mine" in body
    assert f'data-cell="{second}"' in body and "1 disagreement waiting" in body
    # a double submit records nothing more
    client.post(url, data={"label": "mine", "request_id": request_id},
                headers={**HTMX, "X-CSRFToken": token})
    with Store(review_db.database) as store:
        task = store.second_review.second_review(first, 2021)
        assert task["status"] == "adjudicated" and task["adjudicated_by"] == "lea"
        assert len([e for e in store.labels.label_history(first)
                    if e["source"] == "adjudication"]) == 1
    # without htmx: a redirect back to the queue with a flash
    response = client.post(f"/adjudicate/{second}/2021",
                           data={"label": "background", "csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"].endswith("/adjudicate")
    assert "Nothing to adjudicate" in client.get("/adjudicate").get_data(as_text=True)


def test_adjudication_refuses_bad_requests(app, review_db, team) -> None:
    cell = disagreement(review_db, 0)
    client, token = new_client(app, "lea")
    headers = {**HTMX, "X-CSRFToken": token}
    assert client.post(f"/adjudicate/{cell}/2021", data={"label": "mine"}).status_code == 400
    skip = client.post(f"/adjudicate/{cell}/2021", data={"label": "skip"}, headers=headers)
    assert skip.status_code == 400 and "mine or background" in skip.get_data(as_text=True)
    other = review_db.cell_ids[5]
    missing = client.post(f"/adjudicate/{other}/2021", data={"label": "mine"}, headers=headers)
    assert missing.status_code == 404 and "no disagreement" in missing.get_data(as_text=True)
    with Store(review_db.database) as store:
        assert store.second_review.second_review(cell, 2021)["status"] == "disagreed"


def test_cycles_and_report_pages_say_how_labels_were_reviewed(app, review_db, team) -> None:
    client, _ = new_client(app, "lea")
    disagreement(review_db, 0)
    html = client.get("/cycles").get_data(as_text=True)
    assert re.search(r'data-state="disagreed">.*?<td class="num">1<', html, re.S)
    assert "adjudicate them" in html
    html = client.get("/report").get_data(as_text=True)
    assert 'id="review-states"' in html
    assert "no lead has adjudicated them yet" in html


def test_report_markdown_and_csv_count_review_states(app, review_db) -> None:
    from analysis.report import build_report, to_csv, to_markdown

    disagreement(review_db, 0)
    cell = review_db.cell_ids[1]
    decide(review_db.database, "ana", cell, "mine")
    decide(review_db.database, "ben", cell, "mine")
    with Store(review_db.database) as store:
        report = build_report(store, app.config["SETTINGS"], year=2021)
    assert report.review_states == {"single": 0, "pending": 0, "agreed": 1, "disagreed": 1,
                                    "adjudicated": 0}
    markdown = to_markdown(report)
    assert "## Review of the labels (all years)" in markdown
    assert "| Disagreeing, pending adjudication (left out) | 1 |" in markdown
    assert "review,agreed,1,labels" in to_csv(report)


def test_a_lead_sets_the_second_review_policy(app, review_db, team) -> None:
    settings = app.config["SETTINGS"]
    reviewer, token = new_client(app, "ana")
    assert reviewer.post("/team/policy", data={"percent": "50"},
                         headers={"X-CSRFToken": token}).status_code == 403
    lead, token = new_client(app, "lea")
    html = lead.get("/team").get_data(as_text=True)
    assert "100 % of first decisions go blind" in html and "from the settings" in html
    for bad in ("abc", "150", "nan", "", "\u0661\u0660", "1_0"):  # \u0661\u0660: Arabic-Indic 10
        response = lead.post("/team/policy", data={"percent": bad},
                             headers={"X-CSRFToken": token})
        assert response.status_code == 400, bad
        assert "a percentage from 0 to 100 in digits 0-9" in response.get_data(as_text=True)
    assert "100 % of first decisions go blind" in lead.get("/team").get_data(as_text=True)
    response = lead.post("/team/policy", data={"percent": "0", "all_mines": "1"},
                         headers={"X-CSRFToken": token})
    assert response.status_code == 302
    html = lead.get("/team").get_data(as_text=True)
    assert "0 % of first decisions and every mine" in html and "set by lea" in html
    with Store(review_db.database) as store:
        assert sr.current_policy(store, settings) == sr.SecondReviewPolicy(0.0, True)
    # the review page decides with it: a background opens no task, a mine does
    client, token = new_client(app, "ben")
    for label in ("background", "mine"):
        fields = card_fields(client.get("/review").get_data(as_text=True))
        client.post(f"/cells/{fields['cell_id']}/2021/label", headers={"X-CSRFToken": token},
                    data={"label": label, "request_id": fields["request_id"]})
        with Store(review_db.database) as store:
            task = store.second_review.second_review(fields["cell_id"], 2021)
        assert (task is not None) == (label == "mine")
        assert task is None or task["reason"] == "mine"
    assert lead.post("/team/policy", data={"reset": "1"},
                     headers={"X-CSRFToken": csrf_from(html)}).status_code == 302
    with Store(review_db.database) as store:
        assert sr.current_policy(store, settings) == sr.SecondReviewPolicy(1.0, False)


@pytest.mark.parametrize("role, linked", [("reviewer", False), ("lead", True), ("admin", True)])
def test_cycles_page_links_to_adjudication_only_for_roles_that_may_open_it(
        app, review_db, team, role, linked) -> None:
    from labeller.auth import ENDPOINT_ROLES
    from review.accounts import role_allows

    disagreement(review_db)
    client, _ = new_client(app, next(n for n, r in team.items() if r == role))
    html = client.get("/cycles").get_data(as_text=True)
    assert ("adjudicate them" in html) == linked == role_allows(role, ENDPOINT_ROLES["team.queue"])
    assert "disagreements still waiting for a lead are left out" in html
