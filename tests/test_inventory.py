"""Decisions to a clean inventory: the simulated reviewer drives the app's real loop (queue,
decide, run_cycle with re-scoring) and the inventory is measured against the truth."""

from __future__ import annotations

import pytest

from db.store import Store
from pipeline.ingest import cells_of_year, ingest_files
from pipeline.scoring import score_year
from pipeline.seeds import mine_cells, seed_labels_from_polygons
from pipeline.settings import load_settings
from pipeline.training import load_model, train_model
from simulation.inventory import (
    ORACLE,
    QueuePlan,
    Truth,
    drive_queue,
    inventory_cells,
    inventory_point,
    seed_way_plan,
    winner,
)
from tests.territory import write_territory

FAST = {"PIXEL_SIZE_M": 50.0, "FCN_WIDTHS": "4,8,8", "TRAIN_EPOCHS": 3}
YEAR = 2021


@pytest.fixture
def settings(tmp_path):
    return load_settings({"DATA_DIR": str(tmp_path / "instance"), **FAST}, environ={})


@pytest.fixture
def installation(settings, tmp_path):
    """A scored 8 km territory with its first model, and its truth (cells touching a mine box)."""
    import numpy as np
    import shapely

    from imagery.vectors import read_polygons

    territory = write_territory(tmp_path / "data", size_km=8, n_mines=8)
    with Store(settings.database_path) as store:
        ingest_files(store, settings, [territory.scene], YEAR)
        seed_labels_from_polygons(store, settings.grid, territory.mines, YEAR)
        train_model(store, settings)
        score_year(store, settings, load_model(store), YEAR)
        cells = cells_of_year(store, settings.grid, YEAR)
        polygons = read_polygons(territory.mines, to_crs=settings.grid.crs).geometries
        mines = set(mine_cells(settings.grid, cells, np.asarray(polygons)).tolist())
        assert shapely.union_all(polygons).area > 0
        truth = Truth(YEAR, frozenset(mines), frozenset(set(cells.tolist()) - mines))
        yield store, truth


def oracle_events(store: Store) -> list[dict]:
    return store.labels.label_events_by_request_prefix(f"label:{ORACLE}:")


def test_truth_answers_like_a_reviewer_and_refuses_nonsense():
    truth = Truth.from_labels(YEAR, {1: "mine", 2: "background", 3: "skip"})
    assert [truth.answer(c) for c in (1, 2, 3, 4)] == ["mine", "background", "skip", "skip"]
    with pytest.raises(ValueError, match="no mine"):
        Truth(YEAR, frozenset(), frozenset({1}))
    with pytest.raises(ValueError, match="both"):
        Truth(YEAR, frozenset({1}), frozenset({1}))


def test_inventory_is_confirmed_plus_predicted_not_rejected(installation):
    store, truth = installation
    model = store.models.active_model()
    rows = store.territory.cell_statuses(model["version"], YEAR, model["threshold"])
    predicted = {r["cell_id"] for r in rows if r["status"] == "predicted"}
    unpredicted = [r["cell_id"] for r in rows if r["status"] == "background"]
    assert predicted and unpredicted
    assert inventory_cells(store, YEAR) == predicted

    rejected, confirmed = sorted(predicted)[0], unpredicted[0]
    store.labels.record_label(rejected, YEAR, "background", "ann")
    store.labels.record_label(confirmed, YEAR, "mine", "ann")
    assert inventory_cells(store, YEAR) == predicted - {rejected} | {confirmed}

    point = inventory_point(store, truth, decisions=2, cycles=0)
    cells = predicted - {rejected} | {confirmed}
    assert point.inventory == len(cells)
    assert point.true_positives == len(cells & truth.mines)
    assert point.false_positives == len(cells & truth.background)
    assert point.recall == pytest.approx(len(cells & truth.mines) / len(truth.mines))


def test_the_seed_way_reviews_every_predicted_cell_and_never_retrains(installation, settings):
    store, truth = installation
    model = store.models.active_model()
    predicted = store.scores.predicted_mine_count(model["version"], YEAR, model["threshold"])
    run = drive_queue(store, settings, truth, seed_way_plan(10_000, batch=3,
                                                            target_precision=1.0,
                                                            target_recall=1.0))
    assert run.cycles == [] and store.models.active_model()["version"] == model["version"]
    assert run.stop in ("queue empty", "target reached")
    if run.stop == "queue empty":
        assert run.decisions == predicted == len(oracle_events(store))
        # every predicted cell has been answered by the truth: no false positive is left
        assert run.points[-1].false_positives == 0
        assert run.points[0].false_positives == predicted - run.points[0].true_positives
    decisions = [p.decisions for p in run.points]
    assert decisions == sorted(decisions) and decisions[0] == 0


def test_a_queue_with_retrains_runs_real_cycles_until_its_budget(installation, settings):
    store, truth = installation
    # a true mine that is in no scene can never be found: the target stays out of reach
    unreachable = Truth(YEAR, truth.mines | {10**12}, truth.background)
    plan = QueuePlan("uncertainty", retrain_every=3, batch=2, budget=6)
    run = drive_queue(store, settings, unreachable, plan)
    assert run.stop == "budget spent" and run.decisions == 6
    assert len(oracle_events(store)) == 6
    assert [c["after"] for c in run.cycles] == [3, 6]
    assert all(c["status"] == "succeeded" for c in run.cycles), run.cycles
    assert {c["model"] for c in run.cycles} == {"m0002", "m0003"}
    # every decision (no cell here is ambiguous) is a training label of the next cycle
    assert sum(r["source"] == "review" for r in store.labels.training_labels()) == 6
    summary = run.summary()
    assert summary["reached_at"] is None and summary["cycles"] == 2
    assert summary["final_recall"] < 1.0


def test_queue_plans_refuse_unknown_orders_and_bad_numbers():
    with pytest.raises(ValueError, match="unknown queue order"):
        QueuePlan("loudest", 10)
    with pytest.raises(ValueError, match="retrain_every"):
        QueuePlan("score", 0)


def test_the_winner_reaches_the_target_with_fewest_decisions():
    assert winner({"score": 300, "uncertainty": 120, "random": None}) == "uncertainty"
    assert winner({"score": None, "random": None}) is None
    assert winner({"mixed": 90, "random": 90}) == "random"
