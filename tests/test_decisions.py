"""Decisions (review/decisions.py): idempotent decisions, audit fields from the lease, undo,
changes, malformed forms and the scope of decision tokens."""

from __future__ import annotations

import time

import pytest

from db.store import Store
from review.cards import next_cards
from review.decisions import DecisionForm, change_decision, decide, parse_decision_form, recent_decisions, undo_last
from review.errors import ForbiddenError, NotFoundError, ReviewError
from review.second_review import SecondReviewPolicy

pytest.register_assert_rewrite("fixtures_app")
from fixtures_app import cards, form  # noqa: E402

pytest_plugins = ["fixtures_app"]


@pytest.fixture
def store(review_db):
    with Store(review_db.database) as s:
        yield s


def test_expired_lease_decision_is_recorded_and_reported(store) -> None:
    t0 = time.time()
    card = next_cards(store, reviewer="ana", n=1, lease_seconds=10, now=t0)[0]
    cell = card["cell_id"]
    # while ana's lease is live, ben is not served her cell; after it expires he may be
    assert cell not in {c["cell_id"] for c in next_cards(
        store, reviewer="ben", n=8, lease_seconds=10, now=t0 + 5)}
    store.leases.release_leases("ben")
    ben = next_cards(store, reviewer="ben", n=1, lease_seconds=10, now=t0 + 20)
    assert ben[0]["cell_id"] == cell
    decision = decide(store, reviewer="ana", cell_id=cell, year=2021, form=form(),
                              now=t0 + 25, policy=SecondReviewPolicy(share=0.0))
    assert decision.lease_expired and decision.held_by == "ben"
    assert "ben" in decision.notice
    assert store.labels.current_label(cell, 2021)["label"] == "mine"
    later = decide(store, reviewer="ben", cell_id=cell, year=2021,
                           form=form("background", "r2"), now=t0 + 26)
    assert "ana (mine)" in later.notice
    assert store.labels.current_label(cell, 2021)["label"] == "background"
    assert len([e for e in store.labels.label_history(cell) if e["kind"] == "label"]) == 2


def test_double_submit_counts_once(store) -> None:
    cell = cards(store, n=1)[0]["cell_id"]
    first = decide(store, reviewer="ana", cell_id=cell, year=2021, form=form())
    second = decide(store, reviewer="ana", cell_id=cell, year=2021, form=form())
    assert not first.duplicate and second.duplicate
    assert second.event["id"] == first.event["id"]
    assert store.labels.count_decisions("ana") == 1


def test_undo_restores_and_repeated_undo_request_counts_once(store) -> None:
    a, b = (c["cell_id"] for c in cards(store, n=2))
    decide(store, reviewer="ana", cell_id=a, year=2021, form=form("mine", "x1"))
    decide(store, reviewer="ana", cell_id=b, year=2021, form=form("background", "x2"))
    undone = undo_last(store, "ana", request_id="x3")
    assert undone["cell_id"] == b
    again = undo_last(store, "ana", request_id="x3")
    assert again["cell_id"] == b
    assert store.labels.current_label(b, 2021) is None
    assert store.labels.current_label(a, 2021)["label"] == "mine"
    kinds = [e["kind"] for e in store.labels.label_history(b)]
    assert kinds == ["label", "undo"]
    assert undo_last(store, "nobody") is None


def test_change_decision_appends_a_new_event(store) -> None:
    cell = cards(store, n=1)[0]["cell_id"]
    event = decide(store, reviewer="ana", cell_id=cell, year=2021, form=form()).event
    change_decision(store, reviewer="ana", event_id=event["id"], label="background")
    history = store.labels.label_history(cell)
    assert [e["label"] for e in history] == ["mine", "background"]
    assert store.labels.current_label(cell, 2021)["label"] == "background"
    recent = recent_decisions(store, "ana")
    assert len(recent) == 1 and recent[0]["current"]["label"] == "background"
    with pytest.raises(ReviewError):
        change_decision(store, reviewer="ana", event_id=event["id"], label="maybe")
    with pytest.raises(NotFoundError):
        change_decision(store, reviewer="ana", event_id=999, label="mine")
    with pytest.raises(ForbiddenError, match="only your own"):
        change_decision(store, reviewer="ben", event_id=event["id"], label="mine")
    assert store.labels.current_label(cell, 2021)["label"] == "background"


@pytest.mark.parametrize(("data", "message"), [
    ({"request_id": "a"}, "no decision"),
    ({"label": "maybe", "request_id": "a"}, "unknown label"),
    ({"label": "mine"}, "decision token"),
    ({"label": "mine", "request_id": "a" * 101}, "too long"),
    ({"label": "mine", "request_id": "a\nb"}, "printable ASCII"),
])
def test_malformed_forms_are_refused(data, message) -> None:
    with pytest.raises(ReviewError, match=message):
        parse_decision_form(data)


def test_client_audit_fields_are_ignored() -> None:
    parsed = parse_decision_form({"label": "skip", "request_id": "a", "ms": "-5",
                                          "score_shown": "nan", "model_version": "x" * 60_000})
    assert parsed == DecisionForm("skip", "a")


def test_audit_fields_come_from_the_lease(store) -> None:
    t0 = time.time()
    first, second = next_cards(store, reviewer="ana", n=2, lease_seconds=60, now=t0)
    shown = store.leases.lease(first["cell_id"], 2021)
    assert shown["shown_at"] == t0 and shown["model_version_shown"] == "m0001"
    assert shown["score_shown"] == pytest.approx(first["score"])
    assert store.leases.lease(second["cell_id"], 2021)["shown_at"] is None  # prefetched, not shown
    event = decide(store, reviewer="ana", cell_id=first["cell_id"], year=2021,
                           form=form(), now=t0 + 2.5).event
    assert event["ms_spent"] == 2500 and event["model_version_shown"] == "m0001"
    assert event["score_shown"] == pytest.approx(first["score"])
    # the prefetched card becomes the shown one on the next request: its clock starts then
    (now_shown,) = next_cards(store, reviewer="ana", n=1, lease_seconds=60, now=t0 + 3)
    assert now_shown["cell_id"] == second["cell_id"]
    later = decide(store, reviewer="ana", cell_id=second["cell_id"], year=2021,
                           form=form("skip", "r2"), now=t0 + 4).event
    assert later["ms_spent"] == 1000
    # a decision without a lease of one's own: the active model's score now, no time
    other = next(c for c in store.cells.cell_ids() if store.labels.current_label(c, 2021) is None
                 and store.leases.lease(c, 2021) is None)
    blind = decide(store, reviewer="ben", cell_id=other, year=2021,
                           form=form("mine", "b1")).event
    assert blind["ms_spent"] is None and blind["model_version_shown"] == "m0001"


def test_request_ids_are_scoped_to_the_account_and_kind(store) -> None:
    a, b = (c["cell_id"] for c in cards(store, n=2))
    ana = decide(store, reviewer="ana", cell_id=a, year=2021, form=form("mine", "T"))
    ben = decide(store, reviewer="ben", cell_id=b, year=2021, form=form("mine", "T"))
    assert not ben.duplicate and ben.event["reviewer"] == "ben"  # not swallowed by ana's "T"
    assert store.labels.current_label(b, 2021)["reviewer"] == "ben"
    # a label sent with the token a later undo uses cannot make that undo lie
    decide(store, reviewer="ana", cell_id=b, year=2021, form=form("skip", "undo:U"))
    undone = undo_last(store, "ana", request_id="U")
    assert undone["label"] == "skip" and undone["cell_id"] == b
    assert [e["kind"] for e in store.labels.label_history(b)][-1] == "undo"
    assert undo_last(store, "ana", request_id="undo:U")["id"] == ana.event["id"]
    assert store.labels.current_label(a, 2021) is None


def test_undo_leases_the_cell_back_in_the_same_transaction(store) -> None:
    (card,) = next_cards(store, reviewer="ana", n=1, lease_seconds=60)
    decide(store, reviewer="ana", cell_id=card["cell_id"], year=2021, form=form())
    assert store.leases.lease(card["cell_id"], 2021) is None
    undone = undo_last(store, "ana", request_id="u1", lease_seconds=60)
    assert undone["cell_id"] == card["cell_id"]
    lease = store.leases.lease(card["cell_id"], 2021)
    assert lease["reviewer"] == "ana" and lease["shown_at"] is not None
    served = next_cards(store, reviewer="ben", n=8, lease_seconds=60)
    assert card["cell_id"] not in {c["cell_id"] for c in served}
