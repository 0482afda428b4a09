"""The pipeline end to end on a tiny real territory: ingest, seed labels, train, score, cycle."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from db.store import Store
from imagery.bands import L2A_10_20M_BANDS, SEED_BANDS, BandMismatchError
from imagery.scene import SceneError
from imagery.vectors import VectorError
from pipeline.cycle import run_cycle
from pipeline.ingest import cells_of_year, ingest_files
from pipeline.scoring import score_year
from pipeline.seeds import seed_labels_from_polygons
from pipeline.settings import load_settings
from pipeline.training import (
    LabelledPatches,
    fixed_validation,
    label_summary,
    load_model,
    spatial_groups,
    train_model,
    validation_block,
)
from review.cards import next_cards
from tests.territory import write_territory

#: A fast installation: 50 m pixels (20 px cells), a tiny FCN, few epochs.
FAST = {"PIXEL_SIZE_M": 50.0, "FCN_WIDTHS": "4,8,8", "TRAIN_EPOCHS": 4}


@pytest.fixture
def settings(tmp_path):
    return load_settings({"DATA_DIR": str(tmp_path / "instance"), **FAST}, environ={})


@pytest.fixture
def territory(tmp_path):
    return write_territory(tmp_path / "data", size_km=8, n_mines=8)


@pytest.fixture
def store(settings):
    with Store(settings.database_path) as opened:
        yield opened


def counts(store: Store) -> dict[str, int]:
    return {table: store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("cells", "scenes", "models", "scores", "seed_labels", "label_events")}


def test_ingest_registers_the_year_mosaic_and_its_cells(store, settings, territory):
    record = ingest_files(store, settings, [territory.scene], 2021).scene
    assert record["paths"] == ["imagery/2021"] and record["name"] == "2021 mosaic"
    assert record["year"] == 2021 and record["bands"][0] == "B1" and len(record["bands"]) == 12
    assert set(record["stretch"]) >= {"B4", "B3", "B2", "B12", "B8A"}
    n_cells = (record["row1"] - record["row0"]) * (record["col1"] - record["col0"])
    assert store.cells.count_cells() == n_cells and 64 <= n_cells <= 100  # 8 x 8 km, unaligned
    assert len(cells_of_year(store, settings.grid, 2021)) == n_cells
    with pytest.raises(ValueError, match="no imagery for 2019"):
        cells_of_year(store, settings.grid, 2019)


def test_bad_scenes_change_nothing(store, settings, territory, tmp_path):
    ingest_files(store, settings, [territory.scene], 2021)
    before = counts(store)
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(territory.scene.read_bytes()[:5000])
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    for bad in (truncated, empty, tmp_path / "missing.tif"):
        with pytest.raises(SceneError, match=bad.name):
            ingest_files(store, settings, [bad], 2021)
    with pytest.raises(SceneError):
        ingest_files(store, settings, [territory.scene], 2021, bands=["B2", "B3", "B4"])
    with pytest.raises(ValueError, match="outside"):
        ingest_files(store, settings, [territory.scene], 1999)
    assert counts(store) == before


def test_seed_labels_train_and_score(store, settings, territory):
    ingest_files(store, settings, [territory.scene], 2021)
    seeded = seed_labels_from_polygons(store, settings.grid, territory.mines, 2021)
    assert seeded.mines >= 8 and 0 < seeded.background <= seeded.mines  # as many as lie far off
    labels = store.labels.seed_labels(2021)
    mine_cells = {r["cell_id"] for r in labels if r["label"] == "mine"}
    for row in labels:  # background cells keep two cells away from every mine cell
        if row["label"] == "background":
            r, c = divmod(row["cell_id"], 100_000)
            assert all(max(abs(r - m // 100_000), abs(c - m % 100_000)) > 1 for m in mine_cells)
    record, result = train_model(store, settings)
    assert record["active"] == 1 and record["version"] == "m0001"
    assert {"precision", "recall", "average_precision", "confusion_matrix"} <= set(result.metrics)
    assert record["training"]["seed_mines"] + record["training"]["seed_background"] > 0
    bundle = load_model(store)
    done = score_year(store, settings, bundle, 2021)
    assert done.scored + done.not_scored == store.cells.count_cells()
    mine_scores = [s for c in mine_cells if (s := store.scores.score(c, 2021, "m0001")["score"]) is not None]
    others = [r["score"] for r in store.db.query(
        "SELECT score FROM scores WHERE score IS NOT NULL")]
    assert np.mean(mine_scores) > np.mean(others)  # bright squares score above grassland


def test_seed_errors(store, settings, territory, tmp_path):
    with pytest.raises(ValueError, match="no imagery for 2021"):
        seed_labels_from_polygons(store, settings.grid, territory.mines, 2021)
    ingest_files(store, settings, [territory.scene], 2021)
    empty = tmp_path / "none.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(VectorError, match="no features"):
        seed_labels_from_polygons(store, settings.grid, empty, 2021)
    assert store.labels.seed_labels() == []


def test_model_band_mismatch_is_clear(store, settings, territory, tmp_path):
    ingest_files(store, settings, [territory.scene], 2021)
    seed_labels_from_polygons(store, settings.grid, territory.mines, 2021)
    train_model(store, settings, bands=["B2", "B3", "B4", "B8"])
    three_band = write_territory(tmp_path / "rgb", size_km=4)
    import rasterio

    with rasterio.open(three_band.scene) as src:
        profile, data = src.profile, src.read([2, 3, 4])
    profile.update(count=3)
    rgb_path = tmp_path / "rgb" / "rgb.tif"
    with rasterio.open(rgb_path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = ("B2", "B3", "B4")
    ingest_files(store, settings, [rgb_path], 2020)
    with pytest.raises(BandMismatchError, match="B8"):
        score_year(store, settings, load_model(store), 2020)


def test_cycle_folds_reviews_in_and_failure_keeps_the_old_model(store, settings, territory):
    ingest_files(store, settings, [territory.scene], 2021)
    seed_labels_from_polygons(store, settings.grid, territory.mines, 2021)
    train_model(store, settings)
    score_year(store, settings, load_model(store), 2021)
    ranked = store.leases.queue_candidates("m0001", 2021, "score", "ann", 6)
    for i, row in enumerate(ranked):
        store.labels.record_label(row["cell_id"], 2021, "background" if i % 2 else "mine", "ann")
    row = run_cycle(store, settings)
    assert row["status"] == "succeeded", row["message"]
    assert row["new_model"] == "m0002" and store.models.active_model()["version"] == "m0002"
    assert row["n_mines"] + row["n_hard_negatives"] >= 1
    assert set(row["predicted_mines"]) == {"2021"} and row["history"]["loss"]
    assert store.models.model("m0002")["parent"] == "m0001"

    store_folder = settings.data_dir / "imagery" / "2021"
    shutil.move(store_folder, store_folder.with_name("2021.moved"))
    failed = run_cycle(store, settings)
    assert failed["status"] == "failed" and "no imagery for 2021" in failed["message"]
    assert store.models.active_model()["version"] == "m0002"


def test_cycle_keeps_older_scores_as_summaries_only(store, settings, territory):
    from dataclasses import replace

    ingest_files(store, settings, [territory.scene], 2021)
    seed_labels_from_polygons(store, settings.grid, territory.mines, 2021)
    train_model(store, settings)
    first = score_year(store, settings, load_model(store), 2021)
    refused = run_cycle(store, replace(settings, KEEP_SCORED_MODELS=0))
    assert refused["status"] == "failed" and "KEEP_SCORED_MODELS" in refused["message"]
    assert store.models.active_model()["version"] == "m0001" and store.scores.scored_years("m0001") == [2021]

    row = run_cycle(store, replace(settings, KEEP_SCORED_MODELS=1))
    assert row["status"] == "succeeded", row["message"]
    assert "m0001" in row["message"] and "summaries" in row["message"]
    assert store.scores.scored_years("m0001") == [] and store.scores.scored_years(row["new_model"]) == [2021]
    kept = store.scores.year_summary("m0001", 2021)
    assert (kept["scored"], kept["predicted_mines"]) == (first.scored, first.predicted_mines)


def labelled(rows: list[tuple[int, int, str]]) -> LabelledPatches:
    """Patches without pixels (the split needs only cells, labels and sources)."""
    cell_ids = np.array([c for c, _, _ in rows], dtype=np.int64)
    return LabelledPatches(pixels=np.zeros((len(rows), 1, 1, 1), np.float32),
                           labels=np.array([lab for _, lab, _ in rows], dtype=np.int8),
                           groups=spatial_groups(cell_ids), cell_ids=cell_ids,
                           years=np.full(len(rows), 2021), sources=[s for _, _, s in rows],
                           hard_negative=np.zeros(len(rows), bool), skipped=0)


def test_fixed_validation_blocks_stay_the_same_across_cycles():
    rows = [(r * 100_000 + c, (r + c) % 2, "review") for r in range(0, 60, 3)
            for c in range(0, 60, 3)]
    rows += [(r * 100_000 + 1, 1, "seed") for r in range(0, 60, 3)]
    patches = labelled(rows)
    held = fixed_validation(patches, 0.2)
    assert held is not None and all(patches.sources[i] == "review" for i in held)
    held_blocks = set(patches.groups[held].tolist())
    fitted = np.setdiff1d(np.arange(len(rows)), held)
    reviews_fitted = [i for i in fitted if patches.sources[i] == "review"]
    assert held_blocks.isdisjoint(patches.groups[reviews_fitted].tolist())
    # every other label trains: reviews outside the validation blocks and every seed label
    assert len(reviews_fitted) + len(held) == 400 and len(fitted) == len(rows) - len(held)
    summary = label_summary(patches, held)
    assert summary["n"] == len(fitted) and summary["validation_reviews"] == len(held)
    # more reviews later (cycle n + 1): the blocks already chosen stay validation blocks
    more = labelled(rows + [(r * 100_000 + c + 1, 0, "review") for r in range(0, 60, 3)
                            for c in range(0, 60, 3)])
    later = fixed_validation(more, 0.2)
    assert set(more.groups[later].tolist()) == held_blocks
    assert fixed_validation(labelled(rows[:3]), 0.2) is None  # too few: geographic split
    # blocks holding (nearly) every review would leave one class to train on: geographic split
    assert fixed_validation(patches, 0.999) is None
    share = validation_block(np.arange(20_000), 0.2).mean()
    assert 0.18 < share < 0.22
    assert not validation_block(np.arange(100), 0.0).any()
    with pytest.raises(ValueError, match="share"):
        validation_block(np.arange(3), 1.0)


def test_scoring_warns_when_a_scene_is_far_from_the_training_data(store, settings, territory,
                                                                   tmp_path):
    ingest_files(store, settings, [territory.scene], 2021)
    seed_labels_from_polygons(store, settings.grid, territory.mines, 2021)
    train_model(store, settings)
    assert score_year(store, settings, load_model(store), 2021).warnings == ()
    import rasterio

    with rasterio.open(territory.scene) as src:
        profile, data = src.profile, src.read()
    data[0] = np.minimum(data[0].astype(np.int64) * 6, 10_000)  # a hazy top-of-atmosphere B1
    hazy = tmp_path / "hazy.tif"
    with rasterio.open(hazy, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = tuple(f"B{b}" for b in range(1, 9)) + ("B8A", "B9", "B11", "B12")
    ingest_files(store, settings, [hazy], 2020)
    done = score_year(store, settings, load_model(store), 2020)
    assert done.scored > 0 and len(done.warnings) == 1
    assert "band B1 median" in done.warnings[0] and "2020 mosaic" in done.warnings[0]


def test_launch_cycle_runs_in_its_own_process(store, settings, territory):
    import time

    from pipeline.cycle import launch_cycle

    ingest_files(store, settings, [territory.scene], 2021)
    seed_labels_from_polygons(store, settings.grid, territory.mines, 2021)
    train_model(store, settings)
    score_year(store, settings, load_model(store), 2021)
    cycle_id = launch_cycle(settings)
    deadline = time.monotonic() + 240
    while store.cycles.cycle(cycle_id)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    row = store.cycles.cycle(cycle_id)
    log = (settings.data_dir / "cycles" / f"cycle_{cycle_id}.log").read_text()
    assert row["status"] == "succeeded", (row["message"], log[-2000:])
    assert store.models.active_model()["version"] == row["new_model"] == "m0002"


def test_thumbnails_of_a_13_band_l1c_scene(store, settings, tmp_path):
    import rasterio

    from review.thumbnails import thumbnail_path

    territory = write_territory(tmp_path / "l1c", size_km=3, n_mines=1)
    with rasterio.open(territory.scene) as src:
        profile, data = src.profile, src.read()
    profile.update(count=13)
    l1c = tmp_path / "l1c" / "l1c.tif"
    with rasterio.open(l1c, "w", **profile) as dst:  # no band descriptions: L1C product order
        dst.write(np.concatenate([data[:10], data[9:10], data[10:]]))
    record = ingest_files(store, settings, [l1c], 2021).scene
    assert "B10" not in record["bands"] and len(record["bands"]) == 12
    cell_id = (record["row0"] + 1) * 100_000 + record["col0"] + 1
    path, _ = thumbnail_path(store, settings, cell_id, 2021, "false")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_uncertainty_queue_is_centred_on_the_model_threshold(store, settings, territory):
    ingest_files(store, settings, [territory.scene], 2021)
    seed_labels_from_polygons(store, settings.grid, territory.mines, 2021)
    train_model(store, settings)
    bundle = load_model(store)
    scores = []
    for threshold in (0.5, 0.2):
        bundle.threshold = threshold
        store.db.execute("UPDATE models SET threshold = ?", [threshold])
        score_year(store, settings, bundle, 2021, restart=True)
        rows = [r for r in store.db.query("SELECT score, uncertainty FROM scores"
                                          " WHERE score IS NOT NULL")]
        scores = np.array([r["score"] for r in rows])
        np.testing.assert_allclose([r["uncertainty"] for r in rows],
                                   1 - np.abs(scores - threshold) / max(threshold, 1 - threshold),
                                   atol=1e-5)
    cards = next_cards(store, reviewer="ann", strategy="uncertainty", n=3)
    closest = np.sort(np.abs(scores - 0.2))[:10]
    assert abs(cards[0]["score"] - 0.2) == pytest.approx(closest[0], abs=1e-6)
    assert all(abs(c["score"] - 0.2) <= closest[-1] + 1e-6 for c in cards)  # de-dup may skip


def test_cycles_validate_on_the_same_fixed_blocks_and_keep_every_lesson(tmp_path, territory):
    settings = load_settings({"DATA_DIR": str(tmp_path / "fixed"), **FAST,
                              "VALIDATION_BLOCK_SHARE": 0.99}, environ={})
    with Store(settings.database_path) as store:
        ingest_files(store, settings, [territory.scene], 2021)
        seed_labels_from_polygons(store, settings.grid, territory.mines, 2021)
        train_model(store, settings)
        score_year(store, settings, load_model(store), 2021)
        threshold = store.models.active_model()["threshold"]
        ranked = store.leases.queue_candidates("m0001", 2021, "score", "ann", 12)
        predicted = [r for r in ranked if r["score"] >= threshold]
        for i, row in enumerate(ranked):
            store.labels.record_label(row["cell_id"], 2021, "background" if i % 2 else "mine", "ann",
                                      score_shown=row["score"], model_version_shown="m0001")
        rejected = {r["cell_id"] for i, r in enumerate(ranked) if i % 2 and r in predicted}
        first = run_cycle(store, settings)
        assert first["status"] == "succeeded", first["message"]
        assert first["metrics"]["fixed_blocks"] is True
        assert "fixed validation blocks" in first["metrics"]["validated_on"]
        assert first["validation_ap"] == pytest.approx(first["metrics"]["average_precision"])
        assert first["false_positives_found"] == len(rejected)
        assert {r["cell_id"] for r in store.labels.hard_negatives()
                if r["model_version"] == "m0001"} == rejected
        n_val = first["metrics"]["n_val"]
        # reviewed labels in the validation blocks are not trained on; the same cells (and the
        # new reviews there) validate the next cycle
        assert store.models.model("m0002")["training"]["review_mines"] == 0
        more = store.leases.queue_candidates("m0002", 2021, "random", "ann", 4)
        for i, row in enumerate(more):
            store.labels.record_label(row["cell_id"], 2021, "mine" if i % 2 else "background", "ann")
        second = run_cycle(store, settings)
        assert second["status"] == "succeeded", second["message"]
        assert second["metrics"]["n_val"] == n_val + len(more)
        assert second["validation_ap"] is not None


def test_a_ten_band_l2a_stack_ingests_trains_scores_and_a_12_band_model_refuses_it(
        store, settings, territory, tmp_path):
    ingest_files(store, settings, [territory.scene], 2021)
    seed_labels_from_polygons(store, settings.grid, territory.mines, 2021)
    seed_model, _ = train_model(store, settings)
    ten = write_territory(tmp_path / "l2a", size_km=8, n_mines=8, year_shift=1,
                          bands=L2A_10_20M_BANDS)
    assert ingest_files(store, settings, [ten.scene], 2022).scene["bands"] == list(L2A_10_20M_BANDS)
    with pytest.raises(BandMismatchError) as refused:
        score_year(store, settings, load_model(store, seed_model["version"]), 2022)
    assert str(refused.value) == (
        f"the model {seed_model['version']} needs bands {', '.join(SEED_BANDS)} but the scene has "
        f"{', '.join(L2A_10_20M_BANDS)} (missing B1, B9)")
    assert 2022 not in store.scores.scored_years(seed_model["version"])  # nothing written

    seed_labels_from_polygons(store, settings.grid, ten.mines, 2022)
    ten_band, _ = train_model(store, settings, years=[2022], bands=list(L2A_10_20M_BANDS))
    assert ten_band["bands"] == list(L2A_10_20M_BANDS)
    scored = score_year(store, settings, load_model(store, ten_band["version"]), 2022)
    cells = len(cells_of_year(store, settings.grid, 2022))
    assert scored.scored + scored.not_scored == cells and scored.scored > cells / 2  # edges: part-covered
    assert store.scores.year_summary(ten_band["version"], 2022)["scored"] == scored.scored
