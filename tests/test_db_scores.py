"""store.scores: score rows, scored blocks, summaries and pruning."""

from __future__ import annotations

import pytest

from db.store import StoreError
from tests.db_fixtures import add_model, add_scene

pytest_plugins = ["tests.db_fixtures"]


def test_scores_keep_the_better_covered_scene(store):
    add_model(store)
    scene_id = add_scene(store)
    store.scores.write_scores(2020, "m0001", scene_id, [1, 2], [0.9, float("nan")], [0.4, None], [1.0, 0.2])
    store.scores.write_scores(2020, "m0001", scene_id, [1], [0.1], [0.4], [0.5])  # worse coverage: kept
    assert store.scores.score(1, 2020, "m0001")["score"] == pytest.approx(0.9)
    assert store.scores.score(2, 2020, "m0001")["score"] is None  # not scored, says so via coverage
    assert store.scores.score_summary("m0001", 0.5) == [
        {"year": 2020, "scored": 1, "not_scored": 1, "predicted_mines": 1}]
    assert store.scores.score_histogram("m0001", 2020, bins=10)[9] == 1


def test_scored_blocks_are_written_with_their_scores(store):
    import numpy as np

    from model.score import CellScores

    add_model(store)
    scene_id = add_scene(store)
    cells = CellScores(np.array([1, 2]), np.array([0.9, np.nan], np.float32),
                       np.array([0.3, np.nan], np.float32), np.array([1.0, 0.1], np.float32))
    assert store.scores.write_scored_blocks(2020, "m0001", scene_id, [((0, 16, 0, 16), cells)]) == 2
    assert store.scores.scored_blocks("m0001", 2020) == {(0, 0)}
    with pytest.raises(StoreError, match="already scored"):
        store.scores.write_scored_blocks(2020, "m0001", scene_id, [((0, 16, 0, 16), cells)])
    live = store.scores.year_summary("m0001", 2020)  # no kept row yet: counted from the scores
    assert (live["scored"], live["predicted_mines"], live["summarised_at"]) == (1, 1, None)
    assert store.scores.summarise_scores("m0001", 2020, 0.5)["predicted_mines"] == 1
    assert store.scores.prune_scores(["m0001"]) == 2
    assert store.scores.score(1, 2020, "m0001") is None and store.scores.scored_blocks("m0001", 2020) == set()
    assert store.scores.summarised_years("m0001") == [2020]
    store.scores.delete_model_scores("m0001")  # a failed cycle's version leaves nothing behind
    assert store.scores.year_summary("m0001", 2020) is None
    with pytest.raises(StoreError, match="unknown model"):
        store.scores.prune_scores(["m0009"])


def test_predicted_mine_count_leaves_out_cells_outside_the_territory(store):
    scene_id = add_scene(store)
    add_model(store, "m0001", threshold=0.5)
    store.scores.write_scores(2020, "m0001", scene_id, [1, 2, 3], [0.9, 0.8, 0.1], [0.1] * 3, [1.0] * 3)
    assert store.scores.predicted_mine_count("m0001", 2020, 0.5) == 2
    store.territory.classify_cells([(1, 0), (2, 1), (3, 1)])
    assert store.scores.predicted_mine_count("m0001", 2020, 0.5) == 1
