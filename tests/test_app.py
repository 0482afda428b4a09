"""Flask test-client tests of every route of the web app (labeller/)."""

from __future__ import annotations

import re
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from db.store import CycleRunningError, Store
from labeller import create_app
from tests.concurrency import labelled_twice_unexpectedly, run_together

pytest.register_assert_rewrite("fixtures_app")
from fixtures_app import THRESHOLD, add_account, card_fields, csrf_from, login  # noqa: E402

pytest_plugins = ["fixtures_app"]
HTMX = {"HX-Request": "true"}


def events(review_db) -> list[dict]:
    with Store(review_db.database) as store:
        return store._rows("SELECT * FROM label_events ORDER BY id")


def post_label(client, token, fields, label="mine", **extra):
    """Post a decision, with audit fields a hostile client might send (the server ignores them)."""
    data = {"label": label, "request_id": fields["request_id"], "ms": "1500",
            "score_shown": "0.123", "model_version": "x" * 60_000, **extra}
    return client.post(f"/cells/{fields['cell_id']}/{fields['year']}/label", data=data,
                       headers={**HTMX, "X-CSRFToken": token})


# overview and reviewer entry ----------------------------------------------------------------------
def test_overview_shows_scenes_model_and_histograms(client) -> None:
    html = client.get("/").get_data(as_text=True)
    assert "synthetic demo data — generated, not real imagery" in html
    assert "64 <span>cells" in html
    assert "2020 mosaic" in html and "2021 mosaic" in html
    assert "1 file: scene_2020.tif" in html and "1 file: scene_2021.tif" in html
    assert "m0001" in html and "0.81" in html and "0.79" in html  # precision, AP
    assert html.count('<svg class="chart histogram"') == 2
    assert "predicted mines" in html
    assert 'class="good">26<' in html  # confusion matrix: tp


def test_overview_empty_database_says_what_to_run(tmp_path) -> None:
    app = create_app({"DATA_DIR": str(tmp_path), "SECRET_KEY": "x"})
    html = app.test_client().get("/").get_data(as_text=True)
    assert "No scenes yet" in html and "run.py demo" in html


def test_open_mode_on_loopback_without_accounts(client) -> None:
    page = client.get("/review")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "local (open mode)" in html and "create the first account" in html
    assert 'id="card-form"' in html


def test_review_needs_a_login_once_an_account_exists(client, app) -> None:
    add_account(app, "ana")
    response = client.get("/review")
    assert response.status_code == 302 and "/login?next=/review" in response.headers["Location"]
    login(client, "ana")
    page = client.get("/review").get_data(as_text=True)
    assert '<span class="reviewer-name"' in page and ">ana</span>" in page and "log out" in page


def test_label_without_login_is_refused(client, app, review_db) -> None:
    add_account(app, "ana")
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post(f"/cells/{review_db.cell_ids[0]}/2021/label",
                           data={"label": "mine", "request_id": "x"},
                           headers={"X-CSRFToken": token})
    assert response.status_code == 401 and "log in" in response.get_data(as_text=True)
    assert events(review_db) == []


# the card -----------------------------------------------------------------------------------------
def test_review_page_shows_a_full_card(client, app) -> None:
    login(client)
    html = client.get("/review").get_data(as_text=True)
    fields = card_fields(html)
    cell = fields["cell_id"]
    assert fields["year"] == 2021 and "<dt>Model</dt><dd>m0001</dd>" in html
    for key in ("Mine <kbd>m</kbd>", "Background <kbd>b</kbd>", "Skip / unsure <kbd>s</kbd>",
                "Undo <kbd>u</kbd>", "False colour <kbd>f</kbd>"):
        assert key in html
    assert 'data-key="m"' in html and 'data-key="u Backspace"' in html
    assert f"/cells/{cell}/2021/thumb/rgb.png?v=" in html
    assert f"/cells/{cell}/2021/thumb/false.png?v=" in html
    assert f"/cells/{cell}/2021/context/rgb.png?v=" in html
    assert re.search(r'data-copy="-?\d+\.\d+, -?\d+\.\d+"', html)
    prefetch = re.findall(r'data-prefetch="(\d+)"', html)
    assert len(prefetch) == app.config["SETTINGS"].PREFETCH
    assert str(cell) not in prefetch
    assert 'hx-headers=\'{"X-CSRFToken": "' in html
    assert "static/vendor/htmx.min.js" in html
    # the partial alone, for htmx
    partial = client.get("/review/card", headers=HTMX).get_data(as_text=True)
    assert 'id="card"' in partial
    assert card_fields(partial)["cell_id"] == cell  # still leased to this reviewer
    assert "<html" not in partial and 'hx-swap-oob="true"' in partial


def test_label_records_and_returns_the_next_card(client, review_db) -> None:
    token = login(client)
    fields = card_fields(client.get("/review").get_data(as_text=True))
    response = post_label(client, token, fields, "mine")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    following = card_fields(html)
    assert following["cell_id"] != fields["cell_id"]
    assert 'id="counters" class="panel compact counters" hx-swap-oob="true"' in html
    assert "<b>1</b><span>decisions this session" in html
    (event,) = events(review_db)
    assert (event["cell_id"], event["year"], event["label"], event["reviewer"]) == (
        fields["cell_id"], 2021, "mine", "ana")
    # audit fields come from the lease, not from what the client sent
    assert event["model_version_shown"] == "m0001"
    assert event["score_shown"] == pytest.approx(review_db.scores[fields["cell_id"]][0])
    assert 0 <= event["ms_spent"] < 60_000 and event["ms_spent"] != 1500
    with Store(review_db.database) as store:
        assert store.labels.current_label(fields["cell_id"], 2021)["label"] == "mine"
        assert store.leases.lease_holder(fields["cell_id"], 2021) is None


def test_label_without_htmx_redirects(client) -> None:
    token = login(client)
    fields = card_fields(client.get("/review").get_data(as_text=True))
    response = client.post(f"/cells/{fields['cell_id']}/2021/label",
                           data={"label": "skip", "request_id": "plain", "csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"].endswith("/review")


def test_double_submit_counts_once(client, review_db) -> None:
    token = login(client)
    fields = card_fields(client.get("/review").get_data(as_text=True))
    assert post_label(client, token, fields).status_code == 200
    assert post_label(client, token, fields).status_code == 200
    assert len(events(review_db)) == 1


def test_ms_spent_is_from_lease_to_decision_and_clamped(client, review_db) -> None:
    token = login(client)
    fields = card_fields(client.get("/review").get_data(as_text=True))
    with Store(review_db.database) as store:  # the card was shown 3 s ago
        store.db.execute("UPDATE leases SET shown_at = shown_at - 3 WHERE cell_id = ?",
                         [fields["cell_id"]])
    following = card_fields(post_label(client, token, fields).get_data(as_text=True))
    assert 3000 <= events(review_db)[0]["ms_spent"] < 30_000
    with Store(review_db.database) as store:  # this one was left open for a day
        store.db.execute("UPDATE leases SET shown_at = shown_at - 86400 WHERE cell_id = ?",
                         [following["cell_id"]])
    post_label(client, token, following)
    assert events(review_db)[1]["ms_spent"] == 600_000


def test_undo_shows_the_cell_again(client, review_db) -> None:
    token = login(client)
    first = card_fields(client.get("/review").get_data(as_text=True))
    second = card_fields(post_label(client, token, first, "mine").get_data(as_text=True))
    third = card_fields(post_label(client, token, second, "background").get_data(as_text=True))
    response = client.post("/undo", data={"request_id": third["request_id"]},
                           headers={**HTMX, "X-CSRFToken": token})
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "Undone: background" in html
    assert card_fields(html)["cell_id"] == second["cell_id"]
    # a double-submitted undo undoes nothing more
    client.post("/undo", data={"request_id": third["request_id"]},
                headers={**HTMX, "X-CSRFToken": token})
    kinds = [(e["kind"], e["label"]) for e in events(review_db)]
    assert kinds == [("label", "mine"), ("label", "background"), ("undo", None)]
    with Store(review_db.database) as store:
        assert store.labels.current_label(second["cell_id"], 2021) is None
        assert store.labels.current_label(first["cell_id"], 2021)["label"] == "mine"
    nothing = client.post("/undo", data={}, headers={"X-CSRFToken": token})
    assert nothing.status_code == 302


def test_change_a_past_decision(client, review_db) -> None:
    token = login(client)
    first = card_fields(client.get("/review").get_data(as_text=True))
    html = post_label(client, token, first, "mine").get_data(as_text=True)
    event_id = events(review_db)[0]["id"]
    assert f'action="/decisions/{event_id}"' in html
    response = client.post(f"/decisions/{event_id}",
                           data={"label": "background", "request_id": "chg-1"},
                           headers={**HTMX, "X-CSRFToken": token})
    assert response.status_code == 200
    assert 'id="recent"' in response.get_data(as_text=True)
    rows = events(review_db)
    assert [(r["kind"], r["label"]) for r in rows] == [("label", "mine"), ("label", "background")]
    with Store(review_db.database) as store:
        assert store.labels.current_label(first["cell_id"], 2021)["label"] == "background"
    assert client.post("/decisions/9999", data={"label": "mine"},
                       headers={"X-CSRFToken": token}).status_code == 404
    assert client.post(f"/decisions/{event_id}", data={"label": "rock"},
                       headers={"X-CSRFToken": token}).status_code == 400


# bad input ----------------------------------------------------------------------------------------
def test_review_opens_a_requested_cell(client, app, review_db) -> None:
    add_account(app, "ana")
    wanted = review_db.cell_ids[-1]
    first = client.get(f"/review?cell={wanted}&year=2020")
    assert first.status_code == 302 and "next=/review?cell%3D" in first.location.replace("%2F", "/")
    login(client)
    html = client.get(f"/review?cell={wanted}&year=2020").get_data(as_text=True)
    assert card_fields(html)["cell_id"] == wanted and card_fields(html)["year"] == 2020
    assert client.get("/review?cell=12345&year=2020").status_code == 404
    assert client.get(f"/review?cell={wanted}&year=1999").status_code == 404
    assert client.get("/review?cell=abc&year=2020").status_code == 400


def test_unknown_cell_is_404(client, review_db) -> None:
    token = login(client)
    response = client.post("/cells/12345/2021/label", data={"label": "mine", "request_id": "a"},
                           headers={"X-CSRFToken": token})
    assert response.status_code == 404 and "unknown cell 12345" in response.get_data(as_text=True)
    year = client.post(f"/cells/{review_db.cell_ids[0]}/1999/label",
                       data={"label": "mine", "request_id": "a"}, headers={"X-CSRFToken": token})
    assert year.status_code == 404
    assert events(review_db) == []


@pytest.mark.parametrize(("data", "message"), [
    ({"label": "maybe", "request_id": "a"}, "unknown label"),
    ({"label": "mine", "request_id": "a" * 101}, "token is too long"),
    ({"label": "mine", "request_id": "caf\u00e9"}, "printable ASCII"),
    ({"label": "mine"}, "decision token"),
    ({"request_id": "a"}, "no decision given"),
])
def test_bad_label_or_malformed_form_is_400(client, review_db, data, message) -> None:
    token = login(client)
    fields = card_fields(client.get("/review").get_data(as_text=True))
    url = f"/cells/{fields['cell_id']}/2021/label"
    plain = client.post(url, data=data, headers={"X-CSRFToken": token})
    assert plain.status_code == 400 and message in plain.get_data(as_text=True)
    htmx = client.post(url, data=data, headers={**HTMX, "X-CSRFToken": token})
    assert htmx.status_code == 400
    assert htmx.headers["HX-Retarget"] == "#card-error"
    assert message in htmx.get_data(as_text=True) and "<html" not in htmx.get_data(as_text=True)
    assert events(review_db) == []


def test_missing_or_wrong_csrf_token_is_400(client, review_db) -> None:
    login(client)
    fields = card_fields(client.get("/review").get_data(as_text=True))
    url = f"/cells/{fields['cell_id']}/2021/label"
    data = {"label": "mine", "request_id": "a"}
    for headers in ({}, {"X-CSRFToken": "forged"}):
        response = client.post(url, data=data, headers=headers)
        assert response.status_code == 400
        assert "CSRF token missing or invalid" in response.get_data(as_text=True)
    assert client.post("/undo").status_code == 400
    assert client.post("/cycles").status_code == 400
    assert client.post("/login", data={"name": "ana"}).status_code == 400
    assert events(review_db) == []
    # the form field works as well as the header
    ok = client.post(url, data={**data, "csrf_token": fields["csrf_token"]})
    assert ok.status_code == 302


# queue choice -------------------------------------------------------------------------------------
def choose(client, token, **data):
    return client.post("/review/queue", data={"csrf_token": token, **data})


def test_queue_strategy_filter_and_year(client, review_db) -> None:
    token = login(client)
    assert choose(client, token, strategy="score").status_code == 302
    best = max(review_db.scores, key=lambda c: review_db.scores[c][0])
    assert card_fields(client.get("/review").get_data(as_text=True))["cell_id"] == best
    choose(client, token, strategy="random", predicted_only="1", year="2020")
    html = client.get("/review").get_data(as_text=True)
    fields = card_fields(html)
    assert fields["year"] == 2020 and review_db.scores[fields["cell_id"]][0] >= THRESHOLD
    assert "predicted mines" in html
    assert choose(client, token, strategy="alphabetical").status_code == 400
    assert choose(client, token, strategy="score", year="1850").status_code == 400


def test_two_reviewers_are_served_different_cells(app, review_db) -> None:
    a, b = app.test_client(), app.test_client()
    login(a, "ana")
    login(b, "ben")
    cell_a = card_fields(a.get("/review").get_data(as_text=True))["cell_id"]
    cell_b = card_fields(b.get("/review").get_data(as_text=True))["cell_id"]
    assert cell_a != cell_b


def test_empty_queue_says_so(client, review_db) -> None:
    with Store(review_db.database) as store:
        store.labels.import_label_events({"cell_id": c, "year": 2021, "label": "background",
                                          "reviewer": "seed"} for c in review_db.cell_ids)
    login(client)
    html = client.get("/review").get_data(as_text=True)
    assert "Queue empty" in html and 'id="card-form"' not in html


# thumbnails ---------------------------------------------------------------------------------------
def test_thumbnails_are_png_and_cached(client, review_db, app_config) -> None:
    login(client)
    html = client.get("/review").get_data(as_text=True)
    url = re.search(r'src="(/cells/\d+/2021/thumb/rgb\.png\?v=[^"]+)"', html).group(1)
    response = client.get(url)
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.data[:8] == b"\x89PNG\r\n\x1a\n" and len(response.data) > 1000
    assert "immutable" in response.headers["Cache-Control"]
    assert response.headers["ETag"]
    cached = list(Path(app_config["THUMBNAIL_DIR"]).rglob("*.png"))
    assert len(cached) >= 1
    again = client.get(url)
    assert again.data == response.data
    context = client.get(url.replace("/thumb/", "/context/").replace("rgb.png", "false.png"))
    assert context.status_code == 200 and context.data[:4] == b"\x89PNG"


def test_thumbnail_not_found(client, review_db) -> None:
    cell = review_db.cell_ids[0]
    assert client.get("/cells/1/2021/thumb/rgb.png").status_code == 404
    missing_year = client.get(f"/cells/{cell}/1999/thumb/rgb.png")
    assert missing_year.status_code == 404
    assert "no scene of 1999" in missing_year.get_data(as_text=True)
    assert client.get(f"/cells/{cell}/2021/thumb/ultraviolet.png").status_code == 404


# cycles -------------------------------------------------------------------------------------------
@pytest.fixture
def fake_cycle(monkeypatch, review_db):
    """pipeline.cycle replaced by a module whose launch_cycle only records a running cycle."""
    calls: list[int] = []

    def launch_cycle(settings) -> int:
        with Store(settings.database_path) as store:
            cycle_id = store.cycles.start_cycle("m0001")
        calls.append(cycle_id)
        return cycle_id

    module = types.ModuleType("pipeline.cycle")
    module.launch_cycle = launch_cycle
    monkeypatch.setitem(sys.modules, "pipeline.cycle", module)
    return calls


def test_start_a_cycle_and_refuse_a_second(client, fake_cycle, review_db) -> None:
    token = login(client, "lea", "lead")
    response = client.post("/cycles", headers={**HTMX, "X-CSRFToken": token})
    assert response.status_code == 200 and fake_cycle == [1]
    html = response.get_data(as_text=True)
    assert 'hx-trigger="every 2s"' in html and "running" in html
    again = client.post("/cycles", headers={**HTMX, "X-CSRFToken": token})
    assert again.status_code == 409
    assert "a cycle is already running" in again.get_data(as_text=True)
    assert fake_cycle == [1]
    plain = client.post("/cycles", data={"csrf_token": token}, follow_redirects=True)
    assert "a cycle is already running" in plain.get_data(as_text=True)
    # reviewers keep working while it runs
    fields = card_fields(client.get("/review").get_data(as_text=True))
    assert post_label(client, token, fields).status_code == 200


def test_launch_race_is_reported(client, monkeypatch) -> None:
    token = login(client, "lea", "lead")
    module = types.ModuleType("pipeline.cycle")

    def launch_cycle(settings):
        raise CycleRunningError("a retrain cycle is already running")

    module.launch_cycle = launch_cycle
    monkeypatch.setitem(sys.modules, "pipeline.cycle", module)
    response = client.post("/cycles", headers={**HTMX, "X-CSRFToken": token})
    assert response.status_code == 409 and "already running" in response.get_data(as_text=True)


def test_status_partial_polls_while_running_and_stops_when_done(client, review_db) -> None:
    assert "No retrain cycle yet" in client.get("/cycles/status").get_data(as_text=True)
    with Store(review_db.database) as store:
        cycle_id = store.cycles.start_cycle("m0001")
        store.cycles.update_cycle(cycle_id, stage="training", progress=0.4, message="epoch 4/10")
    html = client.get("/cycles/status").get_data(as_text=True)
    assert 'hx-trigger="every 2s"' in html and "training" in html and 'data-width="40.0"' in html
    assert "epoch 4/10" in html
    with Store(review_db.database) as store:
        store.cycles.finish_cycle(cycle_id, "succeeded", stage="done", progress=1.0,
                                  message="m0002 is active")
    done = client.get("/cycles/status").get_data(as_text=True)
    assert "hx-trigger" not in done and "succeeded" in done and "m0002 is active" in done


def test_cycles_page_plots_curves_and_counts(client, review_db) -> None:
    with Store(review_db.database) as store:
        for index, version in enumerate(("m0002", "m0003")):
            cycle_id = store.cycles.start_cycle("m0001")
            store.cycles.finish_cycle(
                cycle_id, "succeeded", new_model=version, n_seed=40, n_mines=12 + index,
                n_hard_negatives=30, history={"loss": [0.9, 0.5, 0.3], "val_loss": [1.0, 0.6, 0.5]},
                metrics={"precision": 0.8 + index / 10, "recall": 0.7, "average_precision": 0.75,
                         "fixed_blocks": True},
                predicted_mines={"2020": 120 - index * 20, "2021": 140 - index * 30},
                false_positives_found=17, validation_ap=0.61 + index / 10)
        failed = store.cycles.start_cycle("m0003")
        store.cycles.finish_cycle(failed, "failed", message="training failed: no labels")
    html = client.get("/cycles").get_data(as_text=True)
    assert html.count('<svg class="chart lines"') == 4  # 2 curves + mines + validation
    assert "<polyline" in html and "predicted mines" in html
    assert "m0001 → <strong>m0002</strong>" in html and "hard neg. 30" in html
    assert "2021: 110" in html and "17" in html
    assert "training failed: no labels" in html
    assert "0.71" in html and "fixed validation blocks" in html  # the AP of cycle 2


def test_cycles_page_counts_predicted_mines_inside_the_territory(client, review_db) -> None:
    with Store(review_db.database) as store:
        model = store.models.model("m0001")
        year = store.scenes.years()[0]
        predicted = [r["cell_id"] for r in store.db.query(
            "SELECT cell_id FROM scores WHERE model_version = 'm0001' AND year = ?"
            " AND score >= ?", [year, model["threshold"]])]
        assert len(predicted) >= 2
        store.territory.classify_cells([(predicted[0], 0)] + [(c, 1) for c in predicted[1:]])
        cycle_id = store.cycles.start_cycle(None)
        store.cycles.finish_cycle(cycle_id, "succeeded", new_model="m0001",
                                  predicted_mines={str(year): 99_999})
        inside = store.scores.predicted_mine_count("m0001", year, model["threshold"])
    assert inside == len(predicted) - 1  # the cell outside the territory is dropped
    html = client.get("/cycles").get_data(as_text=True)
    assert f"{year}: {inside:,}" in html and "99,999" not in html


def test_empty_cycles_page(client) -> None:
    html = client.get("/cycles").get_data(as_text=True)
    assert "No cycles yet" in html


# several reviewers through the web app at once ----------------------------------------------------
def test_concurrent_reviewers_through_the_app(app, review_db) -> None:
    """4 threads, each its own client and reviewer, pull and label cards for ~2 s."""
    ok: list[tuple[int, int]] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + 2.0

    def work(name: str) -> None:
        client = app.test_client()
        token = login(client, name)
        while time.monotonic() < stop:
            html = client.get("/review/card", headers=HTMX).get_data(as_text=True)
            if 'id="card-form"' not in html:
                break
            fields = card_fields(html)
            response = post_label(client, token, fields, "background")
            if response.status_code != 200:
                failures.append(f"{name}: {response.status_code} {response.get_data()[:200]}")
                break
            with lock:
                ok.append((fields["cell_id"], fields["year"]))

    run_together(work, [(f"rev{i}",) for i in range(4)])
    assert not failures, failures
    rows = events(review_db)
    assert len(rows) == len(ok) > 10
    with Store(review_db.database) as store:
        assert labelled_twice_unexpectedly(store) == [], "a cell labelled twice"


def test_serve_listens_on_the_host_setting(monkeypatch, tmp_path) -> None:
    import waitress

    from labeller import serve
    from pipeline.settings import load_settings

    seen = {}

    class Listening:
        def print_listen(self, line: str) -> None:
            seen["line"] = line

        def run(self) -> None:
            seen["ran"] = True

    def create_server(app, **kw):
        seen.update(kw, app=app)
        return Listening()

    monkeypatch.setattr(waitress, "create_server", create_server)
    serve(load_settings({"DATA_DIR": str(tmp_path), "PORT": 5099}), preload=False)
    assert seen["host"] == "127.0.0.1" and seen["port"] == 5099 and seen["threads"] == 8
    assert seen["max_request_body_size"] == 2 * 64 * 1024 and seen["ran"]


def test_every_queue_order_is_offered_by_name(client) -> None:
    from db.store import QUEUE_STRATEGIES
    from review.queues import QUEUE_NAMES as STRATEGY_NAMES

    assert set(STRATEGY_NAMES) == set(QUEUE_STRATEGIES)
    login(client)
    html = client.get("/review").get_data(as_text=True)
    for strategy, name in STRATEGY_NAMES.items():
        assert f'<option value="{strategy}"' in html and name in html


def test_each_serving_thread_reuses_one_store(app, client) -> None:
    """One connection per serving thread, kept between requests; a transaction a failed request
    left open is rolled back at teardown."""
    from labeller.db import get_store

    with app.app_context():
        first = get_store()
        first.db.execute("BEGIN")
    assert not first.db.conn.in_transaction
    with app.app_context():
        assert get_store() is first
    assert client.get("/review").status_code == 200  # the test client serves in this thread too
    with app.app_context():
        assert get_store() is first
    other: list[Store] = []

    def serve() -> None:
        with app.app_context():
            other.append(get_store())

    thread = threading.Thread(target=serve)
    thread.start()
    thread.join()
    assert other and other[0] is not first and other[0].path == first.path


def test_a_relative_data_folder_serves_pictures_and_downloads(monkeypatch, tmp_path,
                                                               review_db) -> None:
    """`make run`'s default: DATA_DIR relative to the working folder (issue 16). Flask's
    send_file resolves a relative path against labeller/, so every path must arrive absolute."""
    import io

    from PIL import Image

    from tests.test_tiles import centre_tile, url

    monkeypatch.chdir(tmp_path.parent)
    app = create_app({"DATA_DIR": tmp_path.name, "SECRET_KEY": "x", "TESTING": True})
    settings = app.config["SETTINGS"]
    assert settings.data_dir == tmp_path and settings.thumbnail_dir.is_absolute()
    client = app.test_client()
    html = client.get("/review").get_data(as_text=True)
    thumb = re.search(r'src="(/cells/\d+/2021/thumb/rgb\.png\?v=[^"]+)"', html).group(1)
    for picture in (thumb, url(2021, "natural", centre_tile(settings.grid))):
        response = client.get(picture)
        assert response.status_code == 200, picture
        assert Image.open(io.BytesIO(response.data)).format == "PNG"
    token = csrf_from(client.get("/exports").get_data(as_text=True))
    assert client.post("/exports", data={"csrf_token": token, "format": "csv"}).status_code == 302
    deadline = time.monotonic() + 120
    while (done := client.get("/exports/1/download")).status_code != 200:
        assert time.monotonic() < deadline, "the export job did not finish"
        time.sleep(0.3)
    assert done.data.startswith(b"cell_id,") and len(done.data.splitlines()) > 1


def test_favicon_is_linked_and_served_to_anyone(client, app) -> None:
    import io

    from PIL import Image

    add_account(app, "ana")  # out of open mode: the icon needs no login
    page = client.get("/login").get_data(as_text=True)
    link = re.search(r'<link rel="icon" href="([^"]+)"', page).group(1)
    for path in (link, "/favicon.ico"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert Image.open(io.BytesIO(response.data)).format == "ICO"


def test_login_page_says_how_to_make_the_first_admin(client, app) -> None:
    from review.accounts import FIRST_ADMIN_HINT

    add_account(app, "ana", "lead")
    assert FIRST_ADMIN_HINT in client.get("/login").get_data(as_text=True)
    add_account(app, "adm", "admin")
    assert FIRST_ADMIN_HINT not in client.get("/login").get_data(as_text=True)


def test_every_page_says_the_demo_is_synthetic(client) -> None:
    """The demo's imagery is generated: the review card and the triage grid say so too."""
    for page in ("/review", "/triage", "/cycles"):
        html = client.get(page).get_data(as_text=True)
        assert 'title="synthetic demo data — generated, not real imagery">synthetic demo</span>' in html, page
