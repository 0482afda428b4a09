"""The triage grid (review/triage.py and labeller/triage.py): pages leased from the review
queue, one decision per tile with its audit fields, double submits, expired leases and cells
decided by others per tile, reopening and correcting the last page, bad input and roles."""

from __future__ import annotations

import re

import pytest

from db.store import Store
from review import triage
from review.cards import QueueChoice
from review.decisions import DecisionForm, decide
from review.second_review import SecondReviewPolicy

pytest.register_assert_rewrite("fixtures_app")
from fixtures_app import add_account, csrf_from, login  # noqa: E402

pytest_plugins = ["fixtures_app"]
NONE = SecondReviewPolicy(share=0.0)


@pytest.fixture
def app_config(app_config: dict) -> dict:
    return {**app_config, "TRIAGE_GRID": "2x3", "SECOND_REVIEW_SHARE": 0.0}


def page_tiles(html: str) -> list[dict]:
    """The tiles of a rendered grid page: their hidden fields, in page order."""
    tiles = []
    for block in re.findall(r'<div class="tile".*?<span class="tile-mark"', html, re.S):
        tiles.append(dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', block)))
    return tiles


def form_of(tiles: list[dict], token: str, labels: dict[int, str] | None = None) -> dict:
    """The POST body of a grid page with ``labels`` (tile index -> label; others unmarked)."""
    labels = labels or {}
    return {"csrf_token": token, "cell": [t["cell"] for t in tiles],
            "year": [t["year"] for t in tiles], "request_id": [t["request_id"] for t in tiles],
            "label": [labels.get(i, "") for i in range(len(tiles))]}


def events_of(app, reviewer: str) -> list[dict]:
    with Store(app.config["SETTINGS"].database_path) as store:
        return store._rows("SELECT * FROM label_events WHERE reviewer = ? ORDER BY id", [reviewer])


# serving ----------------------------------------------------------------------------------------
def test_page_shows_the_grid_leased_to_me_and_preloads_the_next(client, app) -> None:
    login(client, "ana")
    html = client.get("/triage").get_data(as_text=True)
    tiles = page_tiles(html)
    assert len(tiles) == 6 and len({t["cell"] for t in tiles}) == 6
    assert html.count("data-prefetch=") == 6
    for tile in tiles:  # each tile links to the map centred on its cell
        assert f'href="/map?year={tile["year"]}&amp;cell={tile["cell"]}"' in html
    ahead = set(re.findall(r'data-prefetch="(\d+)"', html))
    assert not ahead & {t["cell"] for t in tiles}
    with Store(app.config["SETTINGS"].database_path) as store:
        for tile in tiles:
            lease = store.leases.lease(int(tile["cell"]), int(tile["year"]))
            assert lease["reviewer"] == "ana" and lease["shown_at"] is not None
            assert lease["model_version_shown"] == "m0001"
        for cell in ahead:  # leased, not yet shown
            lease = store.leases.lease(int(cell), 2021)
            assert lease["reviewer"] == "ana" and lease["shown_at"] is None
    # The next page is the one preloaded.
    html2 = client.get("/triage").get_data(as_text=True)
    assert {t["cell"] for t in page_tiles(html2)} == {t["cell"] for t in tiles}  # undecided: same


def test_grid_uses_the_session_queue_choice(client, app, review_db) -> None:
    token = login(client, "ana")
    client.post("/review/queue", data={"strategy": "score", "year": "2020",
                                       "predicted_only": "1", "csrf_token": token})
    tiles = page_tiles(client.get("/triage").get_data(as_text=True))
    assert tiles and all(t["year"] == "2020" for t in tiles)
    scores = [review_db.scores[int(t["cell"])][0] for t in tiles]
    assert min(scores) >= 0.5  # predicted mines only (threshold 0.5)


def test_review_page_and_grid_link_to_each_other(client) -> None:
    login(client, "ana")
    assert 'href="/triage"' in client.get("/review").get_data(as_text=True)
    assert 'href="/review"' in client.get("/triage").get_data(as_text=True)


# submitting -------------------------------------------------------------------------------------
def test_submit_records_one_decision_per_tile_with_audit_fields(client, app, review_db) -> None:
    token = login(client, "ana")
    tiles = page_tiles(client.get("/triage").get_data(as_text=True))
    response = client.post("/triage", data=form_of(tiles, token, {0: "mine", 1: "skip"}))
    assert response.status_code == 302 and response.location.endswith("/triage")
    events = events_of(app, "ana")
    assert [e["label"] for e in events] == ["mine", "skip"] + ["background"] * 4
    for event, tile in zip(events, tiles, strict=True):
        assert event["cell_id"] == int(tile["cell"]) and event["kind"] == "label"
        assert event["request_id"] == f"label:ana:{tile['request_id']}"
        assert event["score_shown"] == pytest.approx(review_db.scores[event["cell_id"]][0])
        assert event["model_version_shown"] == "m0001"
        assert event["ms_spent"] is not None and 0 <= event["ms_spent"] < 60_000
    html = client.get("/triage").get_data(as_text=True)
    assert re.search(r"data-recorded>6<", html)
    assert not {t["cell"] for t in page_tiles(html)} & {t["cell"] for t in tiles}


def test_double_submit_counts_once(client, app) -> None:
    token = login(client, "ana")
    tiles = page_tiles(client.get("/triage").get_data(as_text=True))
    body = form_of(tiles, token, {2: "mine"})
    client.post("/triage", data=body)
    client.post("/triage", data=body)
    assert len(events_of(app, "ana")) == 6
    html = client.get("/triage").get_data(as_text=True)
    assert re.search(r"data-recorded>0<", html) and html.count('data-status="duplicate"') == 6


def test_expired_leases_and_cells_decided_by_others_are_told_per_tile(review_db) -> None:
    with Store(review_db.database) as store:
        choice = QueueChoice("score", 2021)
        page, _ = triage.serve_page(store, reviewer="ana", choice=choice, size=4,
                                    lease_seconds=60, now=1000.0)
        cells = [int(c["cell_id"]) for c in page]
        # bo decides tile 0 (after ana's lease ran out) and now holds tile 1.
        decide(store, reviewer="bo", cell_id=cells[0], year=2021, now=1100.0,
                       form=DecisionForm("mine", "bo-1"), policy=NONE)
        store.leases.lease_cells([(cells[1], 2021)], "bo", 600, now=1100.0)
        page_id = triage.new_page_id()
        tiles = triage.make_tiles([(c, 2021, "", triage.tile_token(page_id, i))
                                   for i, c in enumerate(cells)], max_tiles=4)
        # tile 3 is submitted in time: only its own lease is still live then.
        store.leases.lease_cells([(cells[3], 2021)], "ana", 600, now=1150.0)
        outcomes = triage.submit_page(store, reviewer="ana", tiles=tiles, policy=NONE,
                                      now=1200.0)
        assert [o.status for o in outcomes] == ["decided_by_other", "held_by_other",
                                                "recorded_late", "recorded"]
        assert outcomes[0].who == "bo" and "bo decided" in outcomes[0].message
        assert outcomes[1].who == "bo" and "leased to bo" in outcomes[1].message
        assert [o.recorded for o in outcomes] == [False, False, True, True]
        ana = [e for c in cells for e in store.labels.label_history(c) if e["reviewer"] == "ana"]
        assert sorted(e["cell_id"] for e in ana) == sorted(cells[2:])
        assert store.labels.current_label(cells[0], 2021)["reviewer"] == "bo"
        # The late tile still carries the time from the page's serving (clamped).
        late = next(e for e in ana if e["cell_id"] == cells[2])
        assert late["ms_spent"] == 200_000 and late["model_version_shown"] == "m0001"
        again = triage.submit_page(store, reviewer="ana", tiles=tiles, policy=NONE, now=1300.0)
        assert [o.status for o in again] == ["decided_by_other", "held_by_other", "duplicate",
                                             "duplicate"]
        assert len([e for c in cells for e in store.labels.label_history(c)
                    if e["reviewer"] == "ana"]) == 2


def test_next_page_says_which_tiles_were_not_recorded(client, app) -> None:
    token = login(client, "ana")
    tiles = page_tiles(client.get("/triage").get_data(as_text=True))
    with Store(app.config["SETTINGS"].database_path) as store:
        decide(store, reviewer="bo", cell_id=int(tiles[0]["cell"]), year=2021,
                       form=DecisionForm("mine", "bo-1"), policy=NONE)
    client.post("/triage", data=form_of(tiles, token))
    html = client.get("/triage").get_data(as_text=True)
    assert re.search(r"data-recorded>5<", html)
    assert re.search(rf'data-status="decided_by_other">cell {tiles[0]["cell"]} \(2021\), '
                     r"background: not recorded: bo decided", html)
    assert len(events_of(app, "ana")) == 5


def test_second_review_tiles_appear_blind_and_count_as_second_reviews(review_db) -> None:
    everyone = SecondReviewPolicy(share=1.0)
    with Store(review_db.database) as store:
        choice = QueueChoice("score", 2021)
        page, _ = triage.serve_page(store, reviewer="ana", choice=choice, size=2,
                                    lease_seconds=300)
        pid = triage.new_page_id()
        tiles = triage.make_tiles([(int(c["cell_id"]), 2021, "mine", triage.tile_token(pid, i))
                                   for i, c in enumerate(page)], max_tiles=2)
        triage.submit_page(store, reviewer="ana", tiles=tiles, policy=everyone)
        bo_page, _ = triage.serve_page(store, reviewer="bo", choice=choice, size=4,
                                       lease_seconds=300)
        assert [bool(c.get("second_review")) for c in bo_page] == [True, True, False, False]
        assert {int(c["cell_id"]) for c in bo_page[:2]} == {t.cell_id for t in tiles}
        pid = triage.new_page_id()
        bo_tiles = triage.make_tiles([(int(c["cell_id"]), 2021, "", triage.tile_token(pid, i))
                                      for i, c in enumerate(bo_page)], max_tiles=4)
        outcomes = triage.submit_page(store, reviewer="bo", tiles=bo_tiles, policy=NONE)
        assert [o.status for o in outcomes] == ["second_review"] * 2 + ["recorded"] * 2
        assert {store.second_review.second_review(t.cell_id, 2021)["status"] for t in tiles} == {"disagreed"}


def test_grid_page_shows_second_review_tiles_without_their_label(client, app) -> None:
    token = login(client, "ana")
    with Store(app.config["SETTINGS"].database_path) as store:
        store.second_review.set_second_review_policy(1.0, False, "lead")
    tiles = page_tiles(client.get("/triage").get_data(as_text=True))
    client.post("/triage", data=form_of(tiles, token, {0: "mine"}))
    login(client, "bo")
    html = client.get("/triage").get_data(as_text=True)
    bo_tiles = page_tiles(html)
    assert tiles[0]["cell"] in {t["cell"] for t in bo_tiles}
    assert html.count("badge second small") == 3  # the share: half of 6 tiles at most
    assert 'data-label="mine"' not in html and {t["label"] for t in bo_tiles} == {""}
    assert "ana" not in html


# bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    (lambda b: b.update(label=b["label"][:-1]), "every tile needs"),
    (lambda b: b.update(cell=["x"] + b["cell"][1:]), "cell must be a whole number"),
    (lambda b: b.update(label=["maybe"] + b["label"][1:]), "unknown label"),
    (lambda b: b.update(request_id=["abc"] + b["request_id"][1:]), "not a triage token"),
    (lambda b: b.update(request_id=[b["request_id"][0]] * len(b["request_id"])), "twice"),
    (lambda b: b.update(request_id=[triage.tile_token("0" * 32, 0)] + b["request_id"][1:]),
     "different pages"),
    (lambda b: b.update(cell=[], year=[], label=[], request_id=[]), "no tiles"),
    (lambda b: b.update(**{k: b[k] * 2 for k in ("cell", "year", "label", "request_id")}),
     "at most 6 tiles"),
])
def test_malformed_page_is_400_and_records_nothing(client, app, change, message) -> None:
    token = login(client, "ana")
    body = form_of(page_tiles(client.get("/triage").get_data(as_text=True)), token)
    change(body)
    response = client.post("/triage", data=body)
    assert response.status_code == 400 and message in response.get_data(as_text=True)
    assert events_of(app, "ana") == []


def test_unknown_cell_is_404_and_records_nothing(client, app) -> None:
    token = login(client, "ana")
    body = form_of(page_tiles(client.get("/triage").get_data(as_text=True)), token)
    body["cell"][-1] = "5"
    response = client.post("/triage", data=body)
    assert response.status_code == 404 and "unknown cell 5" in response.get_data(as_text=True)
    assert events_of(app, "ana") == []


def test_triage_grid_setting_is_validated() -> None:
    from pipeline.settings import load_settings

    assert load_settings(environ={}).triage_grid == (4, 4)
    assert load_settings(environ={"MINEWATCH_TRIAGE_GRID": "3x5"}).triage_grid == (3, 5)
    for bad in ("4", "0x4", "11x2", "axb"):
        with pytest.raises(ValueError, match="TRIAGE_GRID"):
            load_settings(environ={"MINEWATCH_TRIAGE_GRID": bad})


# reopening and correcting -----------------------------------------------------------------------
def test_reopen_shows_the_last_page_and_corrections_are_change_decisions(client, app) -> None:
    token = login(client, "ana")
    assert client.get("/triage/last").status_code == 302  # nothing submitted yet
    tiles = page_tiles(client.get("/triage").get_data(as_text=True))
    client.post("/triage", data=form_of(tiles, token, {0: "mine"}))
    html = client.get("/triage/last").get_data(as_text=True)
    reopened = page_tiles(html)
    assert [t["label"] for t in reopened] == ["mine"] + ["background"] * 5
    first_events = [e["id"] for e in events_of(app, "ana")]
    assert [int(t["event"]) for t in reopened] == first_events
    fix = {"csrf_token": token, "request_id": "fix1",
           "event": [t["event"] for t in reopened],
           "label": ["background", "background", "skip", "", "", ""]}
    assert client.post("/triage/last", data=fix).status_code == 302
    client.post("/triage/last", data=fix)  # double submit: changes once
    events = events_of(app, "ana")
    changes = events[6:]
    assert [(e["cell_id"], e["label"]) for e in changes] == [
        (int(tiles[0]["cell"]), "background"),
        (int(tiles[2]["cell"]), "skip")]
    assert all(e["request_id"].startswith("change:ana:fix1-") for e in changes)
    again = page_tiles(client.get("/triage/last").get_data(as_text=True))
    assert [t["label"] for t in again] == ["background", "background", "skip"] + ["background"] * 3
    with Store(app.config["SETTINGS"].database_path) as store:
        assert store.labels.current_label(int(tiles[0]["cell"]), int(tiles[0]["year"]))["label"] == \
            "background"


def test_correcting_another_reviewers_decision_is_403(client, app) -> None:
    token = login(client, "ana")
    tiles = page_tiles(client.get("/triage").get_data(as_text=True))
    client.post("/triage", data=form_of(tiles, token))
    event = events_of(app, "ana")[0]["id"]
    bo_token = login(client, "bo")
    response = client.post("/triage/last", data={"csrf_token": bo_token, "request_id": "t",
                                                 "event": [event], "label": ["mine"]})
    assert response.status_code == 403 and "only your own" in response.get_data(as_text=True)
    response = client.post("/triage/last", data={"csrf_token": bo_token, "request_id": "t",
                                                 "event": ["x"], "label": ["mine"]})
    assert response.status_code == 400
    assert len(events_of(app, "ana")) == 6 and events_of(app, "bo") == []


# roles ------------------------------------------------------------------------------------------
def test_grid_needs_a_login_once_accounts_exist(client, app) -> None:
    add_account(app, "ana")
    for path in ("/triage", "/triage/last"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.location
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/triage", data={"csrf_token": token, "cell": ["1"], "year": ["2021"],
                                            "label": ["mine"], "request_id": ["x"]})
    assert response.status_code == 401
    assert events_of(app, "ana") == []


def test_every_triage_endpoint_needs_the_reviewer_role() -> None:
    from labeller.auth import ENDPOINT_ROLES

    assert {k: v for k, v in ENDPOINT_ROLES.items() if k.startswith("triage.")} == {
        "triage.page": "reviewer", "triage.submit": "reviewer", "triage.reopen": "reviewer",
        "triage.correct": "reviewer"}


def test_grid_header_names_the_queue_order_as_the_review_page_does(client) -> None:
    from review.queues import QUEUE_NAMES

    token = login(client, "ana")
    for strategy, name in QUEUE_NAMES.items():
        client.post("/review/queue", data={"strategy": strategy, "csrf_token": token})
        head = client.get("/triage").get_data(as_text=True).split('<p class="muted">')[1]
        head = head.split("</p>")[0]
        assert name in head and f"{strategy} order" not in head
