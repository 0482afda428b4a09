"""The similarity index of a year's embeddings (pipeline/embedding_index.py): faiss against brute
force, and the index files and embeddings that score retention deletes."""

from __future__ import annotations

import numpy as np
import pytest

from db.store import Store
from model.score import quantise_embeddings
from pipeline.embedding_index import NoEmbeddingError, build_index, drop_stale_indexes, normalised, similarity_index
from pipeline.scoring import prune_old_scores, score_year
from pipeline.training import register_model
from review.similar import nearest_cells
from tests.territory import write_territory
from tests.test_scoring import installation, tiny_bundle


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_territory(tmp_path_factory.mktemp("scene"), size_km=8, n_mines=3).scene


def test_index_returns_the_exact_nearest_neighbours(tmp_path) -> None:
    rng = np.random.default_rng(1)
    q, scale = quantise_embeddings(rng.gamma(1.5, 1.0, size=(3000, 16)))
    vectors = normalised(q, scale)
    ids = np.arange(3000, dtype=np.int64) * 7 + 5
    exact = build_index(ids, vectors)
    approximate = build_index(ids, vectors, exact_max=100)  # the IVF + 8-bit path
    recalls = []
    for row in rng.choice(3000, 20, replace=False):
        truth = ids[np.argsort(-(vectors @ vectors[row]), kind="stable")[:10]]
        sims, got = exact.search(vectors[row][None], 10)
        assert np.allclose(sims[0], np.sort(vectors @ vectors[row])[::-1][:10], atol=1e-5)
        assert set(got[0]) == set(truth) or np.isclose(sims[0][-1], sims[0][-2])
        _, near = approximate.search(vectors[row][None], 10)
        recalls.append(len(set(near[0]) & set(truth)) / 10)
    assert np.mean(recalls) >= 0.8


def test_retention_deletes_embeddings_and_index_files(tmp_path, scene) -> None:
    settings = installation(tmp_path, "a", scene)
    with Store(settings.database_path) as store:
        score_year(store, settings, tiny_bundle(), 2021)
        cell = int(store.embeddings.embeddings("m0001", 2021)[0][0])
        near = nearest_cells(store, settings.similarity_dir, "m0001", 2021, cell, 5)
        assert len(near) == 5 and cell not in [c for c, _ in near]
        assert len(list(settings.similarity_dir.glob("*.faiss"))) == 1
        register_model(store, settings, tiny_bundle("m0002", parent="m0001", seed=1),
                       activate=True)
        score_year(store, settings, tiny_bundle("m0002", parent="m0001", seed=1), 2021)
        nearest_cells(store, settings.similarity_dir, "m0002", 2021, cell, 5)
        assert prune_old_scores(store, keep=1) == ["m0001"]
        assert store.embeddings.embeddings("m0001", 2021)[0].size == 0
        deleted = drop_stale_indexes(store, settings.similarity_dir)
        assert [p.name.split("__")[0] for p in deleted] == ["m0001"]
        assert [p.name.split("__")[0] for p in settings.similarity_dir.glob("*.faiss")] == [
            "m0002"]
        with pytest.raises(NoEmbeddingError, match="m0001 stored no embeddings"):
            similarity_index(store, settings.similarity_dir, "m0001", 2021)
        with pytest.raises(NoEmbeddingError, match="pruned"):
            nearest_cells(store, settings.similarity_dir, "m0001", 2021, cell, 5)
        store.scores.delete_model_scores("m0002")
        assert store.embeddings.embeddings("m0002", 2021)[0].size == 0
