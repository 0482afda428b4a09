"""Second review (review/second_review.py with review/cards.py, review/decisions.py and
db/store.py): which decisions are picked, the blind queue, agreement, undo, adjudication and the
effective label that training and reports use."""

from __future__ import annotations

import pytest

from db.store import Store
from review import decisions
from review import second_review as sr
from review.cards import card_details, next_cards

pytest.register_assert_rewrite("fixtures_app")
from fixtures_app import THRESHOLD  # noqa: E402

pytest_plugins = ["fixtures_app"]
ALL = sr.SecondReviewPolicy(share=1.0)
NONE = sr.SecondReviewPolicy(share=0.0)


@pytest.fixture
def store(review_db):
    with Store(review_db.database) as s:
        yield s


def decide(store, reviewer, cell, label="mine", token=None, policy=ALL, year=2021):
    form = decisions.DecisionForm(label=label, request_id=token or f"{reviewer}-{cell}-{label}")
    return decisions.decide(store, reviewer=reviewer, cell_id=cell, year=year, form=form,
                          policy=policy)


def first_card(store, reviewer="ana"):
    return next_cards(store, reviewer=reviewer, n=1)[0]["cell_id"]


# which decisions ---------------------------------------------------------------------------------
def test_policy_is_deterministic_and_near_its_share() -> None:
    policy = sr.SecondReviewPolicy(share=0.1)
    picked = [policy.reason(cell, 2021, "background") for cell in range(20_000)]
    assert picked == [policy.reason(cell, 2021, "background") for cell in range(20_000)]
    share = sum(p == "share" for p in picked) / len(picked)
    assert 0.09 < share < 0.11
    assert all(policy.reason(cell, 2021, "skip") is None for cell in range(1000))
    mines = sr.SecondReviewPolicy(share=0.0, all_mines=True)
    assert mines.reason(7, 2021, "mine") == "mine" and mines.reason(7, 2021, "background") is None
    assert NONE.reason(7, 2021, "mine") is None and ALL.reason(7, 2021, "background") == "share"
    with pytest.raises(ValueError, match="SECOND_REVIEW_SHARE"):
        sr.SecondReviewPolicy(share=1.5)


def test_default_policy_comes_from_the_settings() -> None:
    from pipeline.settings import load_settings

    settings = load_settings(environ={"MINEWATCH_SECOND_REVIEW_SHARE": "0.25",
                                      "MINEWATCH_SECOND_REVIEW_ALL_MINES": "true"})
    assert sr.SecondReviewPolicy.from_settings(settings) == sr.SecondReviewPolicy(0.25, True)
    assert sr.SecondReviewPolicy() == sr.SecondReviewPolicy(0.10, False)
    with pytest.raises(ValueError, match="SECOND_REVIEW_ALL_MINES"):
        load_settings(environ={"MINEWATCH_SECOND_REVIEW_ALL_MINES": "maybe"})
    with pytest.raises(ValueError, match="SECOND_REVIEW_SHARE"):
        load_settings(environ={"MINEWATCH_SECOND_REVIEW_SHARE": "10"})  # a share, not percent


def test_first_decision_opens_a_task_a_skip_or_a_later_decision_does_not(store) -> None:
    cell = first_card(store)
    decide(store, "ana", cell, "skip")
    assert store.second_review.second_review(cell, 2021) is None
    other = first_card(store)
    decide(store, "ana", other, "mine")
    task = store.second_review.second_review(other, 2021)
    assert task["status"] == "pending" and task["first_reviewer"] == "ana"
    assert task["first_label"] == "mine" and task["reason"] == "share"
    unpicked = first_card(store)
    decide(store, "ana", unpicked, "mine", policy=NONE)
    assert store.second_review.second_review(unpicked, 2021) is None


# the blind queue -----------------------------------------------------------------------------
def test_pending_task_goes_blind_to_another_reviewer_only(store) -> None:
    cell = first_card(store)
    decide(store, "ana", cell, "mine")
    assert cell not in {c["cell_id"] for c in next_cards(store, reviewer="ana", n=6)}
    ben = next_cards(store, reviewer="ben", n=4)
    assert ben[0]["cell_id"] == cell and ben[0]["second_review"] and ben[0]["year"] == 2021
    assert sum(bool(c.get("second_review")) for c in ben) == 1
    # leased to ben: cy is not served it while ben's lease lives
    assert cell not in {c["cell_id"] for c in next_cards(store, reviewer="cy", n=6)}
    card = card_details(store, cell, 2021, reviewer="ben")
    assert card["blind"] and card["history"] == [] and card["current"] is None
    assert card["score"]["score"] is not None  # the score a first reviewer saw too
    own = card_details(store, cell, 2021, reviewer="ana")
    assert not own["blind"] and own["current"]["label"] == "mine"


def test_second_reviews_take_at_most_half_a_batch(store) -> None:
    cells = [c["cell_id"] for c in next_cards(store, reviewer="ana", n=6)]
    for cell in cells:
        decide(store, "ana", cell)
    batch = next_cards(store, reviewer="ben", n=4)
    assert [bool(c.get("second_review")) for c in batch] == [True, True, False, False]


def test_agreeing_second_review_resolves_the_task(store) -> None:
    cell = first_card(store)
    decide(store, "ana", cell, "mine")
    decision = decide(store, "ben", cell, "mine")
    assert decision.second_review and "second review" in decision.notice
    assert "ana" not in decision.notice  # the notice names nobody
    task = store.second_review.second_review(cell, 2021)
    assert task["status"] == "agreed" and task["second_reviewer"] == "ben"
    assert task["second_label"] == "mine" and task["resolved_at"]
    assert not card_details(store, cell, 2021, reviewer="ben")["blind"]
    assert cell not in {c["cell_id"] for c in next_cards(store, reviewer="cy", n=6)}
    assert {"cell_id": cell, "year": 2021, "label": "mine", "source": "review"} in \
        store.labels.training_labels()


def test_disagreement_waits_for_a_lead_and_stays_out_of_training(store) -> None:
    cell = first_card(store)
    store.labels.replace_seed_labels(2021, [(cell, "mine")], "test polygons")
    decide(store, "ana", cell, "mine")
    decide(store, "ben", cell, "background")
    assert store.second_review.second_review(cell, 2021)["status"] == "disagreed"
    assert all(r["cell_id"] != cell for r in store.labels.training_labels())  # seed label too
    assert all(r["cell_id"] != cell for r in store.labels.reviewed_labels())
    statuses = {r["cell_id"]: r for r in store.territory.cell_statuses("m0001", 2021, THRESHOLD)}
    assert statuses[cell]["label"] is None and statuses[cell]["status"] != "confirmed"
    queue = sr.adjudication_queue(store)
    assert [(q["cell_id"], q["first"]["label"], q["second"]["label"]) for q in queue] == [
        (cell, "mine", "background")]
    assert store.second_review.review_state_counts()["disagreed"] == 1


def test_adjudication_becomes_the_effective_label(store) -> None:
    cell = first_card(store)
    decide(store, "ana", cell, "mine")
    decide(store, "ben", cell, "background")
    task = sr.adjudicate(store, lead="lea", cell_id=cell, year=2021, label="mine",
                         request_id="adj-1")
    assert task["status"] == "adjudicated" and task["adjudicated_label"] == "mine"
    assert task["adjudicated_by"] == "lea"
    # a double submit records nothing more; the adjudication is in the history
    sr.adjudicate(store, lead="lea", cell_id=cell, year=2021, label="mine", request_id="adj-1")
    history = [e for e in store.labels.label_history(cell) if e["source"] == "adjudication"]
    assert len(history) == 1 and history[0]["reviewer"] == "lea"
    assert {"cell_id": cell, "year": 2021, "label": "mine", "source": "review"} in \
        store.labels.training_labels()
    statuses = {r["cell_id"]: r for r in store.territory.cell_statuses("m0001", 2021, THRESHOLD)}
    assert statuses[cell]["status"] == "confirmed"
    assert sr.adjudication_queue(store) == []
    # the first reviewer changing their mind later does not override the lead
    decisions.change_decision(store, reviewer="ana", event_id=task["first_event_id"],
                            label="background")
    assert store.second_review.second_review(cell, 2021)["status"] == "adjudicated"
    assert {"cell_id": cell, "year": 2021, "label": "mine", "source": "review"} in \
        store.labels.training_labels()
    # the lead's undo withdraws the adjudication: ana (now background) and ben agree
    decisions.undo_last(store, "lea")
    task = store.second_review.second_review(cell, 2021)
    assert task["status"] == "agreed" and task["adjudication_event_id"] is None


def test_adjudication_refuses_what_is_not_a_disagreement(store) -> None:
    cell = first_card(store)
    with pytest.raises(sr.NothingToAdjudicateError):
        sr.adjudicate(store, lead="lea", cell_id=cell, year=2021, label="mine")
    decide(store, "ana", cell, "mine")
    with pytest.raises(sr.NothingToAdjudicateError):
        sr.adjudicate(store, lead="lea", cell_id=cell, year=2021, label="mine")
    decide(store, "ben", cell, "background")
    with pytest.raises(sr.SecondReviewError):
        sr.adjudicate(store, lead="lea", cell_id=cell, year=2021, label="skip")
    assert store.second_review.second_review(cell, 2021)["status"] == "disagreed"
    sr.adjudicate(store, lead="lea", cell_id=cell, year=2021, label="background")
    decisions.undo_last(store, "lea")
    assert store.second_review.second_review(cell, 2021)["status"] == "disagreed"  # open again


def test_a_skip_by_the_second_reviewer_needs_a_lead(store) -> None:
    cell = first_card(store)
    decide(store, "ana", cell, "background")
    decide(store, "ben", cell, "skip")
    assert store.second_review.second_review(cell, 2021)["status"] == "disagreed"


# undo --------------------------------------------------------------------------------------------
def test_undo_of_the_second_decision_reopens_the_task(store) -> None:
    cell = first_card(store)
    decide(store, "ana", cell, "mine")
    decide(store, "ben", cell, "background")
    undone = decisions.undo_last(store, "ben")
    assert undone["cell_id"] == cell
    task = store.second_review.second_review(cell, 2021)
    assert task["status"] == "pending" and task["second_reviewer"] is None
    assert task["second_event_id"] is None and task["resolved_at"] is None
    assert store.labels.current_label(cell, 2021)["label"] == "mine"
    assert card_details(store, cell, 2021, reviewer="ben")["blind"]
    assert next_cards(store, reviewer="ben", n=1)[0]["cell_id"] == cell
    decide(store, "ben", cell, "mine", token="again")
    assert store.second_review.second_review(cell, 2021)["status"] == "agreed"


def test_undo_of_the_first_decision_while_the_second_reviewer_looks(store) -> None:
    cell = first_card(store)
    decide(store, "ana", cell, "mine")
    assert next_cards(store, reviewer="ben", n=1)[0]["cell_id"] == cell
    # ana undoes while ben holds the card: the task stays open, ben keeps the card
    decisions.undo_last(store, "ana", lease_seconds=60)
    assert store.second_review.second_review(cell, 2021)["status"] == "pending"
    assert store.leases.lease_holder(cell, 2021) == "ben"
    decide(store, "ben", cell, "skip")  # ben's second review waits for ana's new decision ...
    task = store.second_review.second_review(cell, 2021)
    assert (task["status"], task["first_reviewer"], task["second_reviewer"]) == (
        "pending", "ana", "ben")
    assert cell not in {c["cell_id"] for c in next_cards(store, reviewer="cy", n=6)}
    decide(store, "ana", cell, "background", token="redo")  # ... which resolves it
    task = store.second_review.second_review(cell, 2021)
    assert (task["status"], task["first_label"], task["second_label"]) == (
        "disagreed", "background", "skip")


def test_a_change_of_the_first_decision_keeps_the_second_reviewers_card(store) -> None:
    cell = first_card(store)
    first = decide(store, "ana", cell, "mine").event
    assert next_cards(store, reviewer="ben", n=1)[0]["cell_id"] == cell
    decisions.change_decision(store, reviewer="ana", event_id=first["id"], label="background")
    assert store.leases.lease_holder(cell, 2021) == "ben"
    assert cell not in {c["cell_id"] for c in next_cards(store, reviewer="cy", n=6)}


def test_undo_of_the_first_decision_withdraws_the_task(store) -> None:
    cell = first_card(store)
    decide(store, "ana", cell, "mine")
    decisions.undo_last(store, "ana", lease_seconds=60)
    assert store.second_review.second_review(cell, 2021) is None
    assert store.leases.lease_holder(cell, 2021) == "ana"
    assert all(not c.get("second_review") for c in next_cards(store, reviewer="ben", n=4))
    store.leases.release_leases("ben")
    decide(store, "ana", cell, "background", token="redo")
    task = store.second_review.second_review(cell, 2021)
    assert task["status"] == "pending" and task["first_label"] == "background"


def test_undo_of_a_first_decision_already_second_reviewed(store) -> None:
    cell = first_card(store)
    decide(store, "ana", cell, "mine")
    decide(store, "ben", cell, "background")
    decisions.undo_last(store, "ana", lease_seconds=60)
    # the task waits for ana's new decision; ana holds the card again, nobody else gets it
    task = store.second_review.second_review(cell, 2021)
    assert (task["status"], task["first_reviewer"], task["second_reviewer"]) == (
        "pending", "ana", "ben")
    assert store.leases.lease_holder(cell, 2021) == "ana"
    assert cell not in {c["cell_id"] for c in next_cards(store, reviewer="cy", n=6)}
    assert store.second_review.review_state_counts()["pending"] == 1
    assert sr.team_figures(store).per_pair == {}  # not double-reviewed while ana's side is open
    decide(store, "ana", cell, "background", token="redo")
    task = store.second_review.second_review(cell, 2021)
    assert (task["status"], task["first_reviewer"], task["second_reviewer"]) == (
        "agreed", "ana", "ben")


def test_a_change_by_the_first_reviewer_re_resolves(store) -> None:
    cell = first_card(store)
    first = decide(store, "ana", cell, "mine").event
    decide(store, "ben", cell, "background")
    decisions.change_decision(store, reviewer="ana", event_id=first["id"], label="background")
    task = store.second_review.second_review(cell, 2021)
    assert task["status"] == "agreed" and task["first_label"] == "background"


# figures -----------------------------------------------------------------------------------------
def test_review_states_and_team_figures(store) -> None:
    cells = [c["cell_id"] for c in next_cards(store, reviewer="ana", n=5)]
    decide(store, "ana", cells[0], "mine", policy=NONE)        # single
    decide(store, "ana", cells[1], "mine")                     # pending
    decide(store, "ana", cells[2], "mine")
    decide(store, "ben", cells[2], "mine")                     # agreed
    decide(store, "ana", cells[3], "background")
    decide(store, "ben", cells[3], "mine")                     # disagreed
    decide(store, "ana", cells[4], "background")
    decide(store, "ben", cells[4], "mine")
    sr.adjudicate(store, lead="lea", cell_id=cells[4], year=2021, label="background")
    assert store.second_review.review_state_counts() == {"single": 1, "pending": 1, "agreed": 1,
                                                         "disagreed": 1, "adjudicated": 1}
    figures = sr.team_figures(store)
    assert figures.per_reviewer["ana"].n == 3 and figures.per_reviewer["ana"].agreed == 1
    assert figures.per_pair[("ana", "ben")].percent == pytest.approx(100 / 3)
    assert set(figures.pace) == {"ana", "ben"}  # the lead's adjudication is not pace
    assert figures.pace["ana"].decisions == 5 and figures.pending_by_reviewer == {"ana": 1}


def test_a_leads_policy_overrides_the_settings(store) -> None:
    from pipeline.settings import load_settings

    settings = load_settings({"SECOND_REVIEW_SHARE": 0.2}, environ={})
    assert sr.current_policy(store, settings) == sr.SecondReviewPolicy(0.2, False)
    assert sr.set_policy(store, lead="lea", percent=" 35 ", all_mines=True) == \
        sr.SecondReviewPolicy(0.35, True)
    assert sr.current_policy(store, settings) == sr.SecondReviewPolicy(0.35, True)
    assert store.second_review.second_review_policy()["set_by"] == "lea"
    for bad in ("-1", "100.5", "inf", "nan", "ten", "\u0661\u0660", "\uff11\uff10", "1_0", "1e1"):
        with pytest.raises(sr.SecondReviewError, match="percentage"):
            sr.set_policy(store, lead="lea", percent=bad, all_mines=False)
    assert sr.current_policy(store, settings) == sr.SecondReviewPolicy(0.35, True)
    store.second_review.clear_second_review_policy()
    assert sr.current_policy(store, settings) == sr.SecondReviewPolicy(0.2, False)


# no card shown to two reviewers through undos --------------------------------------------------
def test_two_undos_on_a_second_reviewed_cell_over_http(app) -> None:
    """The lead sets the share to 100 %; ana labels, ben second-reviews, ana undoes, ben undoes:
    ana has the card back, ben is shown another one, and the cell is leased to ana alone."""
    from fixtures_app import card_fields, login

    htmx = {"HX-Request": "true"}
    lead, ana, ben = app.test_client(), app.test_client(), app.test_client()
    tokens = {"lea": login(lead, "lea", "lead"), "ana": login(ana, "ana"),
              "ben": login(ben, "ben")}
    assert lead.post("/team/policy", data={"percent": "100", "csrf_token": tokens["lea"]}
                     ).status_code == 302

    def label(client, who, fields):
        return client.post(f"/cells/{fields['cell_id']}/{fields['year']}/label",
                           data={"label": "mine", "request_id": fields["request_id"]},
                           headers={**htmx, "X-CSRFToken": tokens[who]})

    def undo(client, who):
        return card_fields(client.post("/undo", headers={**htmx, "X-CSRFToken": tokens[who]},
                                       data={"request_id": f"undo-{who}"}).get_data(as_text=True))

    first = card_fields(ana.get("/review").get_data(as_text=True))
    cell = (first["cell_id"], first["year"])
    label(ana, "ana", first)
    second = card_fields(ben.get("/review").get_data(as_text=True))
    assert (second["cell_id"], second["year"]) == cell  # ben's blind second review
    label(ben, "ben", second)
    again = undo(ana, "ana")
    assert (again["cell_id"], again["year"]) == cell
    shown_to_ben = undo(ben, "ben")
    assert (shown_to_ben["cell_id"], shown_to_ben["year"]) != cell
    with Store(app.config["SETTINGS"].database_path) as store:
        assert store.leases.lease_holder(*cell) == "ana"
    page = ben.get("/review").get_data(as_text=True)
    assert (card_fields(page)["cell_id"], card_fields(page)["year"]) != cell


def test_undo_while_another_reviewer_holds_the_card_does_not_show_it(store) -> None:
    cell = first_card(store)
    decide(store, "ana", cell, "mine")
    assert next_cards(store, reviewer="ben", n=1)[0]["cell_id"] == cell
    undone = decisions.undo_last(store, "ana", lease_seconds=60)
    assert undone["cell_id"] == cell and undone["held_by"] == "ben"
    assert store.leases.lease_holder(cell, 2021) == "ben"


def test_random_label_second_review_undo_sequences_never_show_a_card_twice(store) -> None:
    """Three reviewers label (second reviews included, share 100 %) and undo at random, as the
    web app does (after a decision, or an undo whose card another reviewer holds, the queue's
    next card): after every step no cell-year is shown to two reviewers, and each shown card
    is leased to the reviewer looking at it."""
    import random

    rng = random.Random(7)
    showing: dict[str, tuple[int, int]] = {}

    def serve(reviewer: str) -> None:
        cards = next_cards(store, reviewer=reviewer, n=2, lease_seconds=600)
        if cards:
            showing[reviewer] = (int(cards[0]["cell_id"]), int(cards[0]["year"]))

    undone_twice_held = 0
    for step in range(160):
        reviewer = rng.choice(["ana", "ben", "cy"])
        if reviewer not in showing:
            serve(reviewer)
        if rng.random() < 0.6 and reviewer in showing:
            cell, year = showing.pop(reviewer)
            decide(store, reviewer, cell, rng.choice(["mine", "background"]), token=f"s{step}",
                   year=year)
            serve(reviewer)
        else:
            target = decisions.undo_last(store, reviewer, request_id=f"u{step}",
                                       lease_seconds=600)
            if target is not None and target["held_by"] is None:
                showing[reviewer] = (int(target["cell_id"]), int(target["year"]))
            elif target is not None:
                undone_twice_held += 1
                showing.pop(reviewer, None)
                serve(reviewer)
        shown = list(showing.values())
        assert len(shown) == len(set(shown)), (step, showing)
        for who, (cell, year) in showing.items():
            assert store.leases.lease_holder(cell, year) == who, (step, who, cell)
    assert store.second_review.second_reviews() and undone_twice_held > 0  # the sequences did meet


def test_blind_in_the_history_of_every_year_of_the_cell(app) -> None:
    """While ben may still give a cell-year its blind second review, no card of that cell, of
    any year, shows ana's label; once ben decided, the history shows it."""
    from fixtures_app import card_fields, login

    lead, ana, ben = app.test_client(), app.test_client(), app.test_client()
    lead_token, ana_token, ben_token = login(lead, "lea", "lead"), login(ana), login(ben, "ben")
    lead.post("/team/policy", data={"percent": "100", "csrf_token": lead_token})
    first = card_fields(ana.get("/review").get_data(as_text=True))
    cell, year = first["cell_id"], first["year"]
    other_year = 2020 if year == 2021 else 2021
    ana.post(f"/cells/{cell}/{year}/label", data={"label": "mine",
             "request_id": first["request_id"]}, headers={"X-CSRFToken": ana_token})
    for shown_year in (other_year, year):
        page = ben.get(f"/review?cell={cell}&year={shown_year}").get_data(as_text=True)
        assert card_fields(page)["year"] == shown_year
        assert "<td>ana</td>" not in page and "history-hidden" in page, shown_year
    own = ana.get(f"/review?cell={cell}&year={other_year}").get_data(as_text=True)
    assert "<td>ana</td>" in own  # the first reviewer sees their own label
    with Store(app.config["SETTINGS"].database_path) as store:
        details = card_details(store, cell, other_year, reviewer="ben")
        assert details["history"] == [] and details["hidden_years"] == [year]
    ben.post(f"/cells/{cell}/{year}/label", data={"label": "mine", "request_id": "ben-1"},
             headers={"X-CSRFToken": ben_token})
    after = ben.get(f"/review?cell={cell}&year={other_year}").get_data(as_text=True)
    assert "<td>ana</td>" in after and "history-hidden" not in after


def test_blind_on_the_map(app) -> None:
    """While ben may still give a cell-year its blind second review, the map's cells show him no
    label of that cell (nor a status that only a label gives, nor its absence from a filter)."""
    from fixtures_app import card_fields, login

    lead, ana, ben = app.test_client(), app.test_client(), app.test_client()
    lead_token, ana_token, ben_token = login(lead, "lea", "lead"), login(ana), login(ben, "ben")
    lead.post("/team/policy", data={"percent": "100", "csrf_token": lead_token})
    first = card_fields(ana.get("/review").get_data(as_text=True))
    cell, year = first["cell_id"], first["year"]
    ana.post(f"/cells/{cell}/{year}/label", data={"label": "background",
             "request_id": first["request_id"]}, headers={"X-CSRFToken": ana_token})

    def shown(client, status: str = "all") -> dict | None:
        features = client.get(f"/map/cells.geojson?year={year}&status={status}").get_json()["features"]
        return next((f["properties"] for f in features if f["properties"]["cell_id"] == cell), None)

    assert shown(ana)["label"] == "background"
    blind = shown(ben)
    assert blind is not None and blind["label"] is None
    assert blind["status"] in ("predicted", "background")
    assert shown(ben, blind["status"]) is not None
    assert shown(ben, "rejected") is None and shown(ben, "confirmed") is None
    ben.post(f"/cells/{cell}/{year}/label", data={"label": "background", "request_id": "ben-1"},
             headers={"X-CSRFToken": ben_token})
    assert shown(ben)["label"] == "background"
