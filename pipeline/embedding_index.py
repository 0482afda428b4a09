"""The similarity index of a year's embeddings: built, cached on disk, dropped when stale.

Scoring stores one embedding per scored cell (``model.score``: the mean of the last hidden
layer's activations over the cell, uint8 + one scale; ``embeddings`` table). Similarity is the
cosine of the dequantised vectors (inner product of L2-normalised ones), so brightness changes
that scale every activation matter less than the pattern. The review's "more like this"
(``review.similar``) queries this index; scoring and cycles drop the files their pruning made
stale, which is why the index lives with the steps from imagery to scores.

Index: faiss (faiss-cpu wheels, Meta's library, maintained since 2017). Up to ``EXACT_MAX`` cells
a flat inner-product index (exact); above, an inverted file of ``sqrt(N)`` lists with 8-bit
scalar quantisation (``IndexIVFScalarQuantizer``, 64 bytes a cell in memory), ``NPROBE`` lists
searched per query. One index per (model version, year), built lazily on the first query, written
under ``DATA_DIR/similarity/`` named by a fingerprint of the stored embeddings (count and last
finished block: a new scoring run invalidates it) and kept loaded once per process.
:func:`drop_stale_indexes` deletes the files of versions whose embeddings are gone (score
retention) or changed.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from db.store import Store
from model.score import dequantise_embeddings

#: Largest index built as an exact flat index.
EXACT_MAX = 20_000
#: Inverted lists searched per query (IVF index).
NPROBE = 16
#: k-means iterations training the inverted lists (faiss' default is 25).
KMEANS_ITERATIONS = 10
#: Training points per inverted list (faiss wants at least 39).
TRAIN_PER_LIST = 48
#: File suffix of a stored index.
SUFFIX = ".faiss"


class NoEmbeddingError(LookupError):
    """The cell has no stored embedding for the model and year (the message says why)."""


def normalised(vectors: np.ndarray, scale: np.ndarray, *, chunk: int = 100_000) -> np.ndarray:
    """Dequantised, L2-normalised float32 (N, D) rows (all-zero rows stay zero), computed
    ``chunk`` rows at a time (memory: the result plus one chunk)."""
    out = np.empty(vectors.shape, dtype=np.float32)
    for start in range(0, len(vectors), chunk):
        x = dequantise_embeddings(vectors[start:start + chunk], scale[start:start + chunk])
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        out[start:start + chunk] = x / np.where(norm > 0, norm, 1.0)
    return out


def build_index(ids: np.ndarray, vectors: np.ndarray, *, exact_max: int = EXACT_MAX,
                seed: int = 0):
    """A faiss inner-product index of normalised float32 ``vectors`` with int64 ``ids``."""
    import faiss

    n, dim = vectors.shape
    if n <= exact_max:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    else:
        nlist = max(1, min(int(math.sqrt(n)), n // TRAIN_PER_LIST))
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, nlist,
                                              faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = KMEANS_ITERATIONS
        sample = np.random.default_rng(seed).choice(n, min(n, nlist * TRAIN_PER_LIST),
                                                    replace=False)
        index.train(vectors[np.sort(sample)])
        index.nprobe = min(NPROBE, nlist)
    index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
    return index


@dataclass
class SimilarityIndex:
    """A loaded index of one (model version, year) and the fingerprint it was built from."""

    model_version: str
    year: int
    fingerprint: str
    index: object

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest cell ids to one normalised vector and their cosines, best first."""
        sims, ids = self.index.search(np.asarray(vector, np.float32).reshape(1, -1),
                                      max(1, min(k, len(self))))
        keep = ids[0] >= 0
        return ids[0][keep], sims[0][keep]


_loaded: dict[tuple[str, str, int], SimilarityIndex] = {}
_lock = threading.Lock()


def index_path(folder: Path, model_version: str, year: int, fingerprint: str) -> Path:
    """Where the index of (model_version, year) with ``fingerprint`` is stored."""
    digest = hashlib.sha1(fingerprint.encode()).hexdigest()[:12]
    return Path(folder) / f"{model_version}__{year}__{digest}{SUFFIX}"


def similarity_index(store: Store, folder: Path, model_version: str, year: int
                     ) -> SimilarityIndex:
    """The index of (model_version, year): kept in this process, else read from ``folder``,
    else built from the stored embeddings and written there. NoEmbeddingError when none are
    stored."""
    import faiss

    fingerprint = store.embeddings.embedding_fingerprint(model_version, year)
    if not fingerprint:
        raise NoEmbeddingError(f"model {model_version} stored no embeddings for {year}: "
                               f"score {year} with it again (`run.py score --year {year} --model "
                               f"{model_version} --restart`)")
    key = (str(Path(folder).resolve()), model_version, int(year))
    with _lock:
        cached = _loaded.get(key)
        if cached is not None and cached.fingerprint == fingerprint:
            return cached
        path = index_path(folder, model_version, year, fingerprint)
        if path.exists():
            index = faiss.read_index(str(path))
        else:
            ids, vectors, scale = store.embeddings.embeddings(model_version, year)
            index = build_index(ids, normalised(vectors, scale))
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.part")
            faiss.write_index(index, str(partial))
            os.replace(partial, path)
        _loaded[key] = SimilarityIndex(model_version, int(year), fingerprint, index)
    drop_stale_indexes(store, folder)
    return _loaded[key]


def drop_stale_indexes(store: Store, folder: Path) -> list[Path]:
    """Delete the index files whose (model version, year) has no embeddings any more or whose
    embeddings changed since; forget them in this process. Returns the files deleted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    current = {(v, y): index_path(folder, v, y, store.embeddings.embedding_fingerprint(v, y)).name
               for v, y in store.embeddings.embedded_versions()}
    deleted = []
    for path in folder.glob(f"*{SUFFIX}"):
        version, _, rest = path.name.rpartition("__")[0].rpartition("__")
        try:
            key = (version, int(rest))
        except ValueError:
            continue
        if current.get(key) != path.name:
            path.unlink(missing_ok=True)
            deleted.append(path)
    resolved = str(folder.resolve())
    with _lock:
        for key in [k for k in _loaded if k[0] == resolved and (k[1], k[2]) not in current]:
            del _loaded[key]
    return deleted
