"""Scoring a year block by block: prefetching reader, one writer, resume after SIGKILL, and the
pruning of old models' scores to per-year summaries."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from db.store import Store, StoreError
from imagery.bands import SEED_BANDS
from imagery.grid import CellRange
from imagery.store import block_name, block_of_name, year_dir
from model.bundle import ModelBundle
from model.fcn import MARGIN_PX, build_fcn
from model.score import score_block, score_tile
from pipeline.ingest import cells_of_year, ingest_files
from pipeline.jobs import settings_environment
from pipeline.scoring import (
    ScoringOptions,
    local_runner,
    prefetched_tiles,
    prune_old_scores,
    score_year,
    scoring_options,
    year_recipe,
)
from pipeline.settings import load_settings
from pipeline.training import register_model
from tests.territory import GRASS, write_territory
from tests.test_ingest import write_utm

REPO = Path(__file__).resolve().parents[1]
#: 400 m cells of 40 px: a 16 x 16-cell block is 6.4 km, so a small scene has many blocks.
SMALL_CELLS = {"CELL_SIZE_M": 400.0, "PIXEL_SIZE_M": 10.0}


def tiny_bundle(version: str = "m0001", parent: str | None = None, seed: int = 0,
                widths: tuple[int, int, int] = (4, 8, 8)) -> ModelBundle:
    """An untrained FCN (deterministic for its seed), enough to compare scores."""
    mean, std = GRASS.astype(float), np.full(12, 300.0)
    return ModelBundle(model=build_fcn(SEED_BANDS, mean, std, seed=seed, widths=widths),
                       version=version, parent=parent, bands=SEED_BANDS, mean=list(mean),
                       std=list(std), threshold=0.5)


def installation(tmp_path: Path, name: str, scene: Path, *, widths=(4, 8, 8), **overrides):
    """A data folder with ``scene`` ingested for 2021 and an active tiny model m0001."""
    settings = load_settings({"DATA_DIR": str(tmp_path / name), **SMALL_CELLS, **overrides},
                             environ={})
    with Store(settings.database_path) as store:
        ingest_files(store, settings, [scene], 2021)
        register_model(store, settings, tiny_bundle(widths=widths), activate=True)
    return settings


def all_scores(path: Path) -> dict[int, tuple]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT cell_id, score, uncertainty, valid_fraction FROM scores"
                            " WHERE model_version = 'm0001' AND year = 2021").fetchall()
    return {r[0]: r[1:] for r in rows}


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return write_territory(tmp_path_factory.mktemp("scene"), size_km=14, n_mines=6).scene


def test_blocks_score_like_the_whole_scene(tmp_path, scene):
    settings = installation(tmp_path, "a", scene)
    with Store(settings.database_path) as store:
        bundle = tiny_bundle()
        km2 = []
        done = score_year(store, settings, bundle, 2021, progress=km2.append,
                          options=ScoringOptions(prefetch=2, write_every=3, fcn_tile_cells=5))
        recipe = year_recipe(store, settings, 2021)
        blocks = recipe.open().blocks()
        assert done.blocks_scored == done.blocks_total == len(blocks) > 4
        assert len(store.scores.scored_blocks("m0001", 2021)) == len(blocks)
        # Reference: the year's whole cell range in one tile, scored in one FCN pass.
        source = recipe.open()
        everything = CellRange(min(b.row0 for b in blocks), max(b.row1 for b in blocks),
                               min(b.col0 for b in blocks), max(b.col1 for b in blocks))
        whole = score_tile(bundle, source.read_tile(everything, MARGIN_PX, bundle.bands),
                           settings.grid)
        has_pixels = whole.valid_fraction > 0
        stored = all_scores(settings.database_path)
        assert sorted(stored) == sorted(whole.cell_ids[has_pixels].tolist())  # each cell once
        got = np.array([stored[c] for c in whole.cell_ids[has_pixels]], dtype=float)
        np.testing.assert_allclose(got[:, 0], whole.scores[has_pixels], atol=1e-5)
        np.testing.assert_allclose(got[:, 2], whole.valid_fraction[has_pixels], atol=1e-6)
        assert sum(km2) == pytest.approx(sum(b.n_cells for b in blocks) * 0.16)
        assert done.scored + done.not_scored == len(stored)
        summary = store.scores.year_summary("m0001", 2021)
        assert (summary["scored"], summary["predicted_mines"]) == (done.scored,
                                                                    done.predicted_mines)
        # A second run finds every block done: it writes nothing and reports the whole area.
        before = store.db.execute("SELECT max(finished_at) FROM scored_blocks").fetchone()
        km2.clear()
        again = score_year(store, settings, bundle, 2021, progress=km2.append)
        assert again.blocks_scored == 0 and again.scored == done.scored
        assert sum(km2) == pytest.approx(sum(b.n_cells for b in blocks) * 0.16)
        assert store.db.execute("SELECT max(finished_at) FROM scored_blocks").fetchone() == before


def test_a_finished_block_is_never_written_twice(tmp_path, scene):
    settings = installation(tmp_path, "a", scene)
    with Store(settings.database_path) as store:
        score_year(store, settings, tiny_bundle(), 2021)
        block = min(store.scores.scored_blocks("m0001", 2021))
        rows = store.db.execute("SELECT count(*) FROM scores").fetchone()
        from model.score import CellScores

        one = CellScores(np.array([block[0] * 100_000 + block[1]]), np.array([0.9], np.float32),
                         np.array([0.1], np.float32), np.array([1.0], np.float32))
        with pytest.raises(StoreError, match="already scored"):
            store.scores.write_scored_blocks(2021, "m0001", store.scenes.scenes(2021)[0]["id"],
                                             [((block[0] + 16, block[0] + 32, 0, 16), one),
                                              ((block[0], block[0] + 16, block[1], block[1] + 16), one)])
        assert store.db.execute("SELECT count(*) FROM scores").fetchone() == rows  # all rolled back


class CountingSource:
    """Wraps a real block source and records how many tiles were read but not yet released."""

    def __init__(self, inner) -> None:
        self.inner, self.bands = inner, inner.bands
        self.read, self.lock = 0, threading.Lock()

    def blocks(self):
        return self.inner.blocks()

    def read_tile(self, cells, margin_px, bands=None):
        tile = self.inner.read_tile(cells, margin_px, bands)
        with self.lock:
            self.read += 1
        return tile


def test_prefetch_keeps_order_and_bounds_memory(tmp_path, scene):
    settings = installation(tmp_path, "a", scene)
    with Store(settings.database_path) as store:
        source = CountingSource(year_recipe(store, settings, 2021).open())
    blocks = source.blocks()
    seen, ahead = [], []
    for tile in prefetched_tiles(source, blocks, SEED_BANDS, prefetch=2, readers=2):
        time.sleep(0.05)  # a slow FCN: the readers get as far ahead as they may
        seen.append(tile.cells)
        ahead.append(source.read - len(seen))
    assert seen == blocks
    assert max(ahead) <= 2 and max(ahead) >= 1  # reads overlap, never more than 2 blocks ahead
    # A consumer that stops early leaves no read running behind it.
    reader = prefetched_tiles(source, blocks, SEED_BANDS, prefetch=2)
    next(reader)
    reader.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("block-reader")]


def test_score_survives_sigkill_and_resumes_without_rewriting(tmp_path, scene):
    settings = installation(tmp_path, "killed", scene, widths=(32, 64, 64))
    env = {**os.environ, **settings_environment(settings), "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(REPO / "run.py"), "score", "--year", "2021"]
    worker = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    db = settings.database_path
    finished: list[tuple] = []
    deadline = time.monotonic() + 180
    while worker.poll() is None and time.monotonic() < deadline:
        try:
            with sqlite3.connect(db, timeout=1) as conn:
                finished = conn.execute("SELECT row0, col0, finished_at FROM scored_blocks"
                                        " ORDER BY row0, col0").fetchall()
        except sqlite3.OperationalError:
            finished = []
        if finished:
            worker.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL, worker.stdout.read().decode()
    with Store(db) as store:
        total = len(year_recipe(store, settings, 2021).open().blocks())
        finished = store.db.execute("SELECT row0, col0, finished_at FROM scored_blocks"
                                    " ORDER BY row0, col0").fetchall()  # as the kill left it
    assert 0 < len(finished) < total, "the kill came too late to interrupt scoring"

    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(finished)} of {total} blocks were already done" in rerun.stdout
    with sqlite3.connect(db) as conn:
        blocks = conn.execute("SELECT row0, col0, finished_at FROM scored_blocks"
                              " ORDER BY row0, col0").fetchall()
    assert len(blocks) == total and set(finished) <= set(blocks)  # earlier blocks untouched

    reference = installation(tmp_path, "uninterrupted", scene, widths=(32, 64, 64))
    with Store(reference.database_path) as store:
        score_year(store, reference, tiny_bundle(widths=(32, 64, 64)), 2021)
    resumed, whole = all_scores(db), all_scores(reference.database_path)
    assert resumed.keys() == whole.keys()
    for cell, row in whole.items():
        assert resumed[cell] == pytest.approx(row, nan_ok=True, abs=1e-6)


def test_old_models_keep_summaries_only(tmp_path, scene):
    settings = installation(tmp_path, "a", scene)
    with Store(settings.database_path) as store:
        versions = ["m0001", "m0002", "m0003", "m0004"]
        score_year(store, settings, tiny_bundle(), 2021)
        for i, version in enumerate(versions[1:], start=1):
            bundle = tiny_bundle(version, parent=versions[i - 1], seed=i)
            register_model(store, settings, bundle, activate=False)
            score_year(store, settings, bundle, 2021)
            store.models.activate_model(version)
        summaries = {v: store.scores.year_summary(v, 2021) for v in versions}
        counts = {v: store.db.execute("SELECT count(*) FROM scores WHERE model_version = ?",
                                      [v]).fetchone()[0] for v in versions}

        assert prune_old_scores(store, keep=2) == ["m0001", "m0002"]
        for version in versions:
            left = store.db.execute("SELECT count(*) FROM scores WHERE model_version = ?",
                                    [version]).fetchone()[0]
            assert left == (counts[version] if version in ("m0003", "m0004") else 0)
            assert store.scores.year_summary(version, 2021) == summaries[version]
        assert not store.scores.scored_blocks("m0001", 2021)
        assert prune_old_scores(store, keep=2) == []  # nothing left to prune
        with pytest.raises(ValueError, match="at least 1"):
            prune_old_scores(store, keep=0)

        from analysis import AnalysisError
        from analysis.report import _trend
        from analysis.status import resolve_year

        trend = {row["model_version"]: row["predicted"] for row in _trend(store, 2021)}
        assert trend == {v: summaries[v]["predicted_mines"] for v in versions}
        assert store.scores.summarised_years("m0001") == [2021] and not store.scores.scored_years("m0001")
        with pytest.raises(AnalysisError, match="pruned"):
            resolve_year(store, store.models.model("m0001"))


def test_options_are_checked():
    for name in ("prefetch", "readers", "write_every", "fcn_tile_cells", "batch"):
        with pytest.raises(ValueError, match=name):
            ScoringOptions(**{name: 0})
    assert ScoringOptions().prefetch == 2


def test_a_file_added_to_a_scored_year_gets_exactly_its_blocks_scored_again(tmp_path):
    first = write_utm(tmp_path / "src" / "a.tif", "EPSG:32735", 25.0, -29.0, 5, 5)
    # 4 km further east: it shares blocks with ``a`` and reaches blocks ``a`` never touched
    second = write_utm(tmp_path / "src" / "b.tif", "EPSG:32735", 25.041, -29.0, 5, 5)
    settings = installation(tmp_path, "a", first)
    asked: list[set[tuple[int, int]]] = []

    def runner(bundle, recipe, blocks):
        asked.append({(b.row0, b.col0) for b in blocks})
        return local_runner()(bundle, recipe, blocks)

    with Store(settings.database_path) as store:
        bundle = tiny_bundle()
        score_year(store, settings, bundle, 2021, runner=runner)
        before = {p.name: p.stat().st_mtime_ns for p in year_dir(settings.data_dir, 2021).iterdir()}
        ingest_files(store, settings, [second], 2021)
        after = {p.name: p.stat().st_mtime_ns for p in year_dir(settings.data_dir, 2021).iterdir()}
        touched = {(b.row0, b.col0) for b in map(block_of_name, after)
                   if b is not None and before.get(block_name(b)) != after[block_name(b)]}
        assert touched & asked[0] and touched - asked[0]  # one shared block and one new one
        assert store.scores.scored_blocks("m0001", 2021) == asked[0] - touched
        score_year(store, settings, bundle, 2021, runner=runner)
        assert asked[1] == touched
        cells = set(cells_of_year(store, settings.grid, 2021).tolist())
        scored = {c for c, (score, *_rest) in all_scores(settings.database_path).items()
                  if score is not None}

    reference = installation(tmp_path, "both", first)
    with Store(reference.database_path) as store:
        ingest_files(store, reference, [second], 2021)
        score_year(store, reference, tiny_bundle(), 2021)
        assert cells == set(cells_of_year(store, reference.grid, 2021).tolist())
    whole = all_scores(reference.database_path)
    assert scored == {c for c, (score, *_rest) in whole.items() if score is not None}
    assert cells <= set(whole)  # every cell of both files has its score row


def test_inactive_candidates_are_pruned_once_a_newer_cycle_supersedes_them(tmp_path, scene):
    from labeller import create_app
    from tests.fixtures_app import csrf_from

    settings = installation(tmp_path, "a", scene)
    with Store(settings.database_path) as store:
        score_year(store, settings, tiny_bundle(), 2021)
        for seed, version in enumerate(("m0002", "m0003"), start=1):  # two cycles kept inactive
            bundle = tiny_bundle(version, parent="m0001", seed=seed)
            register_model(store, settings, bundle, activate=False)
            score_year(store, settings, bundle, 2021)
            if version == "m0002":  # the last cycle's candidate is kept for a lead to judge
                assert prune_old_scores(store, keep=2) == []
        summary = store.scores.year_summary("m0002", 2021)

        assert prune_old_scores(store, keep=2) == ["m0002"]
        rows = {table: store.db.execute(f"SELECT model_version, count(*) FROM {table}"
                                        " GROUP BY model_version").fetchall()
                for table in ("scores", "embeddings")}
        assert {v for table in rows.values() for v, n in table if n} == {"m0001", "m0003"}
        assert store.scores.year_summary("m0002", 2021) == summary  # the cycle's figures stay
        assert store.models.active_model()["version"] == "m0001"

    app = create_app({"DATA_DIR": settings.DATA_DIR, "TESTING": True, "SECRET_KEY": "x",
                      **SMALL_CELLS})
    client = app.test_client()
    token = csrf_from(client.get("/cycles").get_data(as_text=True))
    refused = client.post("/models/m0002/activate", data={"csrf_token": token})
    assert refused.status_code == 409
    assert "run.py score --model m0002" in refused.get_data(as_text=True)
    assert client.post("/models/m0003/activate", data={"csrf_token": token}).status_code == 302
    with Store(settings.database_path) as store:
        assert store.models.active_model()["version"] == "m0003"
        score_year(store, settings, tiny_bundle("m0002", parent="m0001", seed=1), 2021)
    assert client.post("/models/m0002/activate", data={"csrf_token": token}).status_code == 302


def test_batched_passes_score_like_one_pass_per_call(tmp_path, scene):
    # 5 x 5-cell passes of a 16 x 16-cell block: passes of four shapes (5 x 5, 5 x 1, 1 x 5,
    # 1 x 1), so batches of 4 both fill and run short; cells off the imagery are in some.
    settings = installation(tmp_path, "a", scene)
    bundle = tiny_bundle()
    forward, batches = bundle.probability_and_features, []
    bundle.probability_and_features = lambda x: batches.append(len(x)) or forward(x)
    with Store(settings.database_path) as store:
        source = year_recipe(store, settings, 2021).open()
    for block in source.blocks()[:3]:
        tile = source.read_tile(block, MARGIN_PX, bundle.bands)
        one = score_block(bundle, tile, settings.grid, fcn_tile_cells=5, batch=1)
        many = score_block(bundle, tile, settings.grid, fcn_tile_cells=5, batch=4)
        assert np.array_equal(one.cell_ids, many.cell_ids) and np.isfinite(one.scores).any()
        np.testing.assert_allclose(many.scores, one.scores, atol=1e-5, equal_nan=True)
        np.testing.assert_allclose(many.uncertainty, one.uncertainty, atol=1e-5, equal_nan=True)
        np.testing.assert_array_equal(many.valid_fraction, one.valid_fraction)
        assert np.abs(many.embeddings.astype(int) - one.embeddings.astype(int)).max() <= 1
    assert max(batches) == 4 and set(batches) <= {1, 2, 3, 4}
    with pytest.raises(ValueError, match="batch"):
        score_block(bundle, tile, settings.grid, batch=0)


def test_the_settings_and_the_cli_reach_the_scoring_options(tmp_path, scene):
    settings = load_settings({"SCORE_BATCH": "8", "SCORE_READERS": "3"}, environ={})
    assert scoring_options(settings) == ScoringOptions(readers=3, batch=8)
    assert scoring_options(settings, batch=2, prefetch=None).batch == 2
    with pytest.raises(ValueError, match="SCORE_BATCH"):
        load_settings({"SCORE_BATCH": "0"}, environ={})
    local = installation(tmp_path, "local", scene)
    with Store(local.database_path) as store:
        score_year(store, local, tiny_bundle(), 2021)
    batched = installation(tmp_path, "batched", scene, SCORE_BATCH=4)
    env = {**os.environ, **settings_environment(batched), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "run.py"), "score", "--readers", "2",
                           "--prefetch", "3"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    expected, got = all_scores(local.database_path), all_scores(batched.database_path)
    assert len(expected) > 0 and got.keys() == expected.keys()
    for cell, row in expected.items():
        assert got[cell] == pytest.approx(row, nan_ok=True, abs=1e-5)
    refused = subprocess.run([sys.executable, str(REPO / "run.py"), "score", "--batch", "0"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "--batch" in refused.stderr
