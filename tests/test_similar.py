"""More like this: embeddings stored by scoring, the review queue of look-alikes and its web flow
(Flask test client). The index itself: tests/test_embedding_index.py."""

from __future__ import annotations

import numpy as np
import pytest

pytest.register_assert_rewrite("fixtures_app")
from fixtures_app import add_account, card_fields, csrf_from, login  # noqa: E402

from db.store import Store  # noqa: E402
from model.score import CellScores, dequantise_embeddings, quantise_embeddings  # noqa: E402
from pipeline.embedding_index import NoEmbeddingError  # noqa: E402
from pipeline.scoring import score_year  # noqa: E402
from review.cards import SIMILAR, next_cards  # noqa: E402
from review.errors import ReviewError  # noqa: E402
from tests.territory import write_territory  # noqa: E402
from tests.test_scoring import installation, tiny_bundle  # noqa: E402

pytest_plugins = ["fixtures_app"]

WIDTH = 8  # the tiny bundle's last hidden layer


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_territory(tmp_path_factory.mktemp("scene"), size_km=8, n_mines=3).scene


def test_quantisation_round_trip() -> None:
    x = np.random.default_rng(0).gamma(2.0, 1.0, size=(50, 64)).astype(np.float32)
    x[3] = 0.0
    q, scale = quantise_embeddings(x)
    assert q.dtype == np.uint8 and q.shape == (50, 64) and scale.dtype == np.float32
    assert scale[3] == 0 and not q[3].any()
    back = dequantise_embeddings(q, scale)
    assert np.abs(back - x).max() <= scale.max() / 255 / 2 + 1e-6


def test_scoring_stores_an_embedding_for_every_scored_cell(tmp_path, scene) -> None:
    settings = installation(tmp_path, "a", scene)
    with Store(settings.database_path) as store:
        score_year(store, settings, tiny_bundle(), 2021)
        scored = {r[0] for r in store.db.execute(
            "SELECT cell_id FROM scores WHERE score IS NOT NULL").fetchall()}
        ids, vectors, scale = store.embeddings.embeddings("m0001", 2021)
        sizes = {r[0] for r in store.db.execute("SELECT length(vector) FROM embeddings")}
    assert set(ids.tolist()) == scored and len(scored) > 100
    assert vectors.shape == (len(ids), WIDTH) and sizes == {WIDTH}
    assert (scale > 0).all() and (vectors.max(axis=1) == 255).all()


def add_embeddings(database, cell_ids: list[int], year: int = 2021) -> dict[int, int]:
    """Give the review database's cells embeddings in two tight clusters (even / odd index);
    returns cell id -> cluster."""
    rng = np.random.default_rng(3)
    centres = rng.gamma(2.0, 1.0, size=(2, 16))
    cluster = {c: i % 2 for i, c in enumerate(cell_ids)}
    features = np.stack([centres[cluster[c]] + rng.normal(0, 0.05, 16) for c in cell_ids])
    q, scale = quantise_embeddings(features)
    ids = np.asarray(cell_ids, dtype=np.int64)
    with Store(database) as store:
        rows = {r["cell_id"]: r for r in store.db.query(
            "SELECT * FROM scores WHERE model_version = 'm0001' AND year = ?", [year])}
        cells = CellScores(ids, np.array([rows[c]["score"] for c in cell_ids], np.float32),
                           np.array([rows[c]["uncertainty"] for c in cell_ids], np.float32),
                           np.array([rows[c]["valid_fraction"] for c in cell_ids], np.float32),
                           q, scale)
        store.scores.write_scored_blocks(year, "m0001", store.scenes.scenes(year)[-1]["id"],
                                         [((0, 1, 0, 1), cells)])
    return cluster


def test_similar_queue_serves_unreviewed_look_alikes(review_db, tmp_path) -> None:
    cluster = add_embeddings(review_db.database, review_db.cell_ids)
    anchor = review_db.cell_ids[0]
    same = [c for c in review_db.cell_ids if cluster[c] == 0 and c != anchor]
    folder = tmp_path / "similarity"
    with Store(review_db.database) as store:
        labelled, held = same[0], same[1]
        store.labels.record_label(labelled, 2021, "background", "bo")
        store.leases.lease_cells([(held, 2021)], "bo", 600)
        cards = next_cards(store, reviewer="ana", strategy=SIMILAR,
                                   anchor=anchor, year=2021, n=5, similar_dir=folder)
        served = [c["cell_id"] for c in cards]
        assert len(served) == 5 and all(cluster[c] == 0 for c in served)
        assert anchor not in served and labelled not in served and held not in served
        sims = [c["similarity"] for c in cards]
        assert all(s > 0.9 for s in sims)
        with pytest.raises(ReviewError, match="anchor"):
            next_cards(store, reviewer="ana", strategy=SIMILAR, year=2021,
                               similar_dir=folder)
        with pytest.raises(NoEmbeddingError, match="2020"):
            next_cards(store, reviewer="ana", strategy=SIMILAR, anchor=anchor,
                               year=2020, similar_dir=folder)


def test_more_like_this_through_the_web_app(client, review_db) -> None:
    cluster = add_embeddings(review_db.database, review_db.cell_ids)
    anchor = review_db.cell_ids[2]
    token = login(client, "ana")
    page = client.get(f"/review?cell={anchor}&year=2021").get_data(as_text=True)
    assert f"/cells/{anchor}/2021/similar" in page and 'data-key="l"' in page
    response = client.post(f"/cells/{anchor}/2021/similar", data={"csrf_token": token},
                           headers={"HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and f"More like cell {anchor}" in html
    first = card_fields(html)["cell_id"]
    assert cluster[first] == cluster[anchor] and first != anchor
    # Deciding keeps the sweep going: the next card is another look-alike.
    response = client.post(f"/cells/{first}/2021/label",
                           data={"csrf_token": token, "label": "background",
                                 "request_id": card_fields(html)["request_id"]},
                           headers={"HX-Request": "true"})
    second = card_fields(response.get_data(as_text=True))["cell_id"]
    assert second not in (first, anchor) and cluster[second] == cluster[anchor]
    page = client.get("/review").get_data(as_text=True)
    assert f"more like cell {anchor}" in page
    # Bad input: an unknown cell, a year the model stored no embeddings for.
    assert client.post("/cells/1/2021/similar", data={"csrf_token": token}).status_code == 404
    missing = client.post(f"/cells/{anchor}/2020/similar", data={"csrf_token": token})
    assert missing.status_code == 409
    assert "no embedding" in missing.get_data(as_text=True)
    # Choosing another order leaves the sweep.
    client.post("/review/queue", data={"csrf_token": token, "strategy": "score", "year": 2021})
    assert "more like cell" not in client.get("/review").get_data(as_text=True)


def test_more_like_this_needs_a_login(client, review_db) -> None:
    add_embeddings(review_db.database, review_db.cell_ids)
    add_account(client.application, "ana")  # an account exists: no open mode
    token = csrf_from(client.get("/login").get_data(as_text=True))
    anchor = review_db.cell_ids[0]
    response = client.post(f"/cells/{anchor}/2021/similar", data={"csrf_token": token})
    assert response.status_code == 401
    with Store(review_db.database) as store:
        assert store.db.execute("SELECT count(*) FROM leases").fetchone()[0] == 0


def test_a_sweep_whose_anchor_lost_its_embedding_falls_back(client, review_db) -> None:
    add_embeddings(review_db.database, review_db.cell_ids)
    anchor = review_db.cell_ids[4]
    token = login(client, "ana")
    assert client.post(f"/cells/{anchor}/2021/similar", data={"csrf_token": token},
                       headers={"HX-Request": "true"}).status_code == 200
    with Store(review_db.database) as store, store.atomic():
        store.db.execute("DELETE FROM embeddings")  # as after scoring without embeddings
    html = client.get("/review/card", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "no embedding" in html and "Back to the usual queue" in html
    assert card_fields(html)["cell_id"] in review_db.cell_ids
    assert "more like cell" not in client.get("/review").get_data(as_text=True)
