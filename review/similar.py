"""More like this: the cells nearest to a cell in the FCN's embedding space.

The anchor's stored embedding (normalised like the index's vectors) is searched in the year's
similarity index (``pipeline.embedding_index``); the queue of look-alikes
(``review.cards.next_cards(strategy=SIMILAR)``) serves the unreviewed ones nearest first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from db.store import Store
from pipeline.embedding_index import NoEmbeddingError, normalised, similarity_index

#: Most neighbours one query asks for while looking for unreviewed cells.
MAX_K = 20_000


def anchor_vector(store: Store, model_version: str, year: int, cell_id: int) -> np.ndarray:
    """The normalised embedding of a cell; NoEmbeddingError saying why there is none."""
    stored = store.embeddings.embedding(model_version, year, cell_id)
    if stored is None:
        score = store.scores.score(cell_id, year, model_version)
        if score is None:
            why = (f"model {model_version} has no score for it (never scored, or its scores "
                   "were pruned: only the latest KEEP_SCORED_MODELS models keep them)")
        elif score["score"] is None:
            why = "it was not scored (too few valid pixels)"
        else:
            why = ("it was scored before scoring stored embeddings; score the year again "
                   f"(`run.py score --year {year} --model {model_version} --restart`)")
        raise NoEmbeddingError(f"cell {cell_id} has no embedding for model {model_version} in "
                               f"{year}: {why}")
    vector, scale = stored
    return normalised(vector[None], np.array([scale], np.float32))[0]


def nearest_cells(store: Store, folder: Path, model_version: str, year: int, cell_id: int,
                  k: int) -> list[tuple[int, float]]:
    """The ``k`` cells nearest to ``cell_id`` (itself excluded) as (cell id, cosine), best
    first."""
    vector = anchor_vector(store, model_version, year, cell_id)
    ids, sims = similarity_index(store, folder, model_version, year).search(vector, k + 1)
    return [(int(i), float(s)) for i, s in zip(ids, sims, strict=True) if i != cell_id][:k]
