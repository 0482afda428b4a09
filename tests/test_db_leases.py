"""store.leases: the review queue, leases, and query plans that need no statistics."""

from __future__ import annotations

from db.store import Store
from tests.db_fixtures import add_model, add_scene

pytest_plugins = ["tests.db_fixtures"]


def test_queue_orders_and_skips_labelled_and_leased(store):
    add_model(store)
    scene_id = add_scene(store)
    cells = list(range(1, 11))
    scores = [c / 10 for c in cells]
    uncertainty = [1 - abs(s - 0.5) * 2 for s in scores]
    store.scores.write_scores(2020, "m0001", scene_id, cells, scores, uncertainty, [1.0] * 10)
    by_uncertainty = store.leases.queue_candidates("m0001", 2020, "uncertainty", "ann", 3)
    assert by_uncertainty[0]["cell_id"] == 5
    assert [r["cell_id"] for r in store.leases.queue_candidates("m0001", 2020, "score", "ann", 2)] == [10, 9]
    assert len(store.leases.queue_candidates("m0001", 2020, "random", "ann", 10)) == 10
    store.labels.record_label(10, 2020, "mine", "ann")
    assert store.leases.lease_cells([(9, 2020)], "bob", 60) == [(9, 2020)]
    assert store.leases.lease_cells([(9, 2020)], "ann", 60) == []  # bob holds it
    top = [r["cell_id"] for r in store.leases.queue_candidates("m0001", 2020, "score", "ann", 2)]
    assert top == [8, 7]
    assert [r["cell_id"] for r in store.leases.queue_candidates("m0001", 2020, "score", "bob", 1)] == [9]
    assert store.leases.count_queue("m0001", 2020) == 9
    assert store.leases.count_queue("m0001", 2020, min_score=0.75) == 2
    # an expired lease no longer blocks
    assert store.leases.queue_candidates("m0001", 2020, "score", "ann", 1, now=10**12)[0]["cell_id"] == 9


def _plan(store: Store, sql: str, params: list) -> list[str]:
    return [row[-1] for row in store.db.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()]


def test_review_query_plans_do_not_depend_on_statistics(store):
    """Never ANALYZEd (as the app's database): leased_to starts at the reviewer's leases, the
    queue count at the year's labels, the territory check at one index entry."""
    add_model(store)
    scene_id = add_scene(store)
    store.scores.write_scores(2020, "m0001", scene_id, list(range(1, 11)), [c / 10 for c in range(1, 11)],
                              [0.5] * 10, [1.0] * 10)
    assert store.db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'"
                            ).fetchone()[0] == 0
    statements = []
    store.db.conn.set_trace_callback(statements.append)
    store.leases.leased_to("m0001", 2020, "ann")
    store.leases.count_queue_fast("m0001", 2020)
    store._not_outside()
    store.db.conn.set_trace_callback(None)
    leased, labelled, outside = (next(sql for sql in statements if part in sql) for part in (
        "FROM leases l", "count(*) FROM current_labels c", "FROM territory_cells"))
    assert _plan(store, leased, [])[:2] == [
        "SEARCH l USING INDEX leases_reviewer (reviewer=?)",
        "SEARCH s USING PRIMARY KEY (cell_id=? AND year=? AND model_version=?)"]
    assert _plan(store, labelled, [])[0].startswith(
        "SEARCH c USING COVERING INDEX current_labels_year (year=?)")
    assert _plan(store, outside, []) == [
        "SEARCH territory_cells USING COVERING INDEX territory_cells_outside (inside=?)"]
