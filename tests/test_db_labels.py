"""store.labels: labels as an append-only history, the training set and the hard negatives."""

from __future__ import annotations

import pytest

from db.store import InvalidLabelError, StoreError, UnknownCellError
from tests.db_fixtures import add_model, add_scene

pytest_plugins = ["tests.db_fixtures"]


def test_labels_are_an_append_only_history(store):
    first = store.labels.record_label(3, 2020, "mine", "ann", request_id="r1", ms_spent=900)
    assert store.labels.record_label(3, 2020, "mine", "ann", request_id="r1")["id"] == first["id"]
    second = store.labels.record_label(3, 2020, "background", "bob")
    assert store.labels.current_label(3, 2020)["label"] == "background"
    undo = store.labels.undo_label(second["id"], "bob")
    assert undo["kind"] == "undo" and store.labels.current_label(3, 2020)["label"] == "mine"
    assert store.labels.undo_label(second["id"], "bob")["id"] == undo["id"]  # undone once
    store.labels.undo_label(first["id"], "ann")
    assert store.labels.current_label(3, 2020) is None
    history = store.labels.label_history(3)
    assert [(e["kind"], e["label"], bool(e["undone"])) for e in history] == [
        ("label", "mine", True), ("label", "background", True), ("undo", None, False),
        ("undo", None, False)]
    assert store.db.execute("SELECT count(*) FROM label_events").fetchone()[0] == 4


def test_bad_labels_change_nothing(store):
    with pytest.raises(InvalidLabelError):
        store.labels.record_label(3, 2020, "maybe", "ann")
    with pytest.raises(UnknownCellError):
        store.labels.record_label(999, 2020, "mine", "ann")
    with pytest.raises(StoreError):
        store.labels.undo_label(12345, "ann")
    assert store.db.execute("SELECT count(*) FROM label_events").fetchone()[0] == 0


def test_training_labels_review_overrides_seed(store):
    store.labels.replace_seed_labels(2020, [(1, "mine"), (2, "background")], "mines.geojson")
    store.labels.record_label(1, 2020, "background", "ann")
    store.labels.record_label(4, 2020, "mine", "ann")
    store.labels.record_label(5, 2020, "skip", "ann")
    rows = {(r["cell_id"], r["label"], r["source"]) for r in store.labels.training_labels()}
    assert rows == {(1, "background", "review"), (2, "background", "seed"), (4, "mine", "review")}
    with pytest.raises(InvalidLabelError):
        store.labels.replace_seed_labels(2020, [(1, "skip")], "x")
    assert len(store.labels.seed_labels(2020)) == 2  # the failed replacement rolled back


def test_current_labels_of_several_cells(store):
    store.labels.record_label(1, 2020, "mine", "ann")
    store.labels.record_label(1, 2020, "background", "bob")
    store.labels.record_label(2, 2021, "skip", "ann")
    found = store.labels.current_labels_of([(1, 2020), (2, 2021), (3, 2020), (1, 2021)])
    assert set(found) == {(1, 2020), (2, 2021)}
    assert (found[(1, 2020)]["label"], found[(1, 2020)]["reviewer"]) == ("background", "bob")
    assert found[(2, 2021)] == store.labels.current_label(2, 2021)
    assert store.labels.current_labels_of([]) == {}


# hard negatives: every lesson kept ----------------------------------------------------------------
def test_a_rejected_prediction_stays_a_hard_negative_of_the_model_that_made_it(store):
    scene_id = add_scene(store)
    add_model(store, "m0001", threshold=0.4)
    store.scores.write_scores(2020, "m0001", scene_id, [1, 2, 3, 4], [0.9, 0.45, 0.2, 0.8],
                              [0.1] * 4, [1.0] * 4)
    shown = store.labels.record_label(1, 2020, "background", "ann", score_shown=0.9,
                                      model_version_shown="m0001")
    store.labels.record_label(2, 2020, "background", "ann")  # no lease: the active model's score counts
    store.labels.record_label(3, 2020, "background", "ann", score_shown=0.2, model_version_shown="m0001")
    store.labels.record_label(4, 2020, "mine", "ann", score_shown=0.8, model_version_shown="m0001")
    rows = store.labels.hard_negatives()
    assert [(r["cell_id"], r["model_version"]) for r in rows] == [(1, "m0001"), (2, "m0001")]
    assert rows[0]["event_id"] == shown["id"] and rows[0]["score"] == pytest.approx(0.9)
    assert store.labels.false_positives_found("m0001") == 2

    # a retrained model no longer predicts cell 1 but predicts the already-rejected cell 3
    add_model(store, "m0002", threshold=0.5)
    store.scores.write_scores(2020, "m0002", scene_id, [1, 2, 3, 4], [0.1, 0.6, 0.7, 0.9],
                              [0.1] * 4, [1.0] * 4)
    assert store.labels.record_predicted_rejections("m0002") == 2  # cells 2 and 3
    assert store.labels.record_predicted_rejections("m0002") == 0  # once only
    keys = {(r["cell_id"], r["model_version"]) for r in store.labels.hard_negatives()}
    assert keys == {(1, "m0001"), (2, "m0001"), (2, "m0002"), (3, "m0002")}
    assert store.labels.false_positives_found() == 3  # distinct cell-years, any model
    assert store.labels.false_positives_found("m0002") == 2
    assert store.labels.false_positives_found(year=2021) == 0
    assert next(r for r in store.labels.hard_negatives() if r["cell_id"] == 3)["event_id"] == \
        store.labels.current_label(3, 2020)["event_id"]

    store.territory.classify_cells([(2, 0)] + [(c, 1) for c in (1, 3, 4)])  # cell 2 lies outside
    assert store.labels.false_positives_found() == 2
    assert store.labels.false_positives_found(inside_territory=False) == 3
    # a cell relabelled as a mine is no longer a hard negative; the history row stays
    store.labels.record_label(1, 2020, "mine", "bob")
    assert {r["cell_id"] for r in store.labels.hard_negatives()} == {2, 3}
    assert store.db.execute("SELECT count(*) FROM hard_negatives").fetchone()[0] == 4
