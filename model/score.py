"""Score a whole scene: one mine score and one uncertainty per 1-km cell.

A year's mosaic is read in tiles (pipeline.scoring reads one grid-aligned store block at a time
with imagery.store.YearMosaic.read_tile, plain reads, no warp), each with MARGIN_PX pixels of real
context on every side and only the model's bands, selected by name. The FCN runs once per tile
(:func:`score_tile`; :func:`score_block` cuts a block into smaller passes, several of one
shape per call: :func:`score_tiles`); its output map is
cropped by MARGIN_PX / STRIDE blocks per side, which leaves exactly (cp / STRIDE) x (cp / STRIDE)
blocks per cell, and model.reduce.cell_scores turns those into one score per cell for the whole
tile at once (no per-cell Python loop). The same pass also returns the last hidden layer's
activations, cropped the same way; their mean over a cell's outputs, quantised to uint8 with one
scale (:func:`quantise_embeddings`), is the cell's embedding (64 bytes + a 4-byte scale for the
seed's FCN), used by "more like this".

Seams: the FCN's receptive field reaches 7 px beyond an output's own block (model/fcn.py) and every
tile starts on a cell boundary, minus MARGIN_PX (a multiple of STRIDE), so the pooling grid is the
same in every tile and each interior output sees only real pixels. A cell therefore gets the same
score whatever the tile size. Cells whose interior has less than ``min_valid_fraction`` valid
pixels get NaN score and uncertainty. Memory is bounded by one tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imagery.grid import CellGrid, CellRange
from imagery.scene import Tile
from imagery.store import YearMosaic
from model.bundle import ModelBundle
from model.fcn import MARGIN_PX, STRIDE
from model.reduce import cell_scores

#: Quantisation levels of an embedding component (uint8: 0 .. 255).
EMBEDDING_LEVELS = 255


@dataclass
class CellScores:
    """Scores of a set of cells: ids (int64), score and uncertainty (float32, NaN where not
    scored), valid fraction of each cell's interior (float32), and optionally each cell's
    embedding: ``embeddings`` uint8 (N, D) and ``embedding_scale`` float32 (N,) (see
    :func:`quantise_embeddings`; rows of unscored cells are zero)."""

    cell_ids: np.ndarray
    scores: np.ndarray
    uncertainty: np.ndarray
    valid_fraction: np.ndarray
    embeddings: np.ndarray | None = None
    embedding_scale: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.cell_ids)

    def subset(self, keep: np.ndarray) -> CellScores:
        """The cells selected by the boolean or index array ``keep``."""
        emb = self.embeddings is not None
        return CellScores(self.cell_ids[keep], self.scores[keep], self.uncertainty[keep],
                          self.valid_fraction[keep], self.embeddings[keep] if emb else None,
                          self.embedding_scale[keep] if emb else None)

    @classmethod
    def concat(cls, parts: list[CellScores]) -> CellScores:
        """Join several CellScores (e.g. all the tiles of a scene); embeddings are kept when
        every part has them."""
        if not parts:
            empty = np.empty(0, dtype=np.float32)
            return cls(np.empty(0, dtype=np.int64), empty, empty.copy(), empty.copy())
        joined = [np.concatenate([getattr(p, f) for p in parts])
                  for f in ("cell_ids", "scores", "uncertainty", "valid_fraction")]
        if all(p.embeddings is not None for p in parts):
            joined += [np.concatenate([p.embeddings for p in parts]),
                       np.concatenate([p.embedding_scale for p in parts])]
        return cls(*joined)


def quantise_embeddings(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantise non-negative (N, D) features to uint8 with one float32 scale per row.

    Component j of row i is ``q[i, j] / EMBEDDING_LEVELS * scale[i]`` (scale = the row's largest
    component; ReLU features are >= 0), so a row costs D bytes plus its scale. Rows of zeros get
    scale 0.
    """
    x = np.maximum(np.asarray(features, dtype=np.float32), 0.0)
    scale = x.max(axis=1) if x.size else np.zeros(len(x), dtype=np.float32)
    safe = np.where(scale > 0, scale, 1.0)[:, None]
    q = np.rint(x / safe * EMBEDDING_LEVELS).astype(np.uint8)
    return q, scale.astype(np.float32)


def dequantise_embeddings(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float32 (N, D) features back from :func:`quantise_embeddings`' output."""
    return (np.asarray(q, dtype=np.float32) / EMBEDDING_LEVELS
            * np.asarray(scale, dtype=np.float32)[:, None])


def pool_cell_features(features: np.ndarray, shape: tuple[int, int], per_cell: int) -> np.ndarray:
    """Mean of (rows * per_cell, cols * per_cell, C) features over each cell's per_cell^2
    outputs: float32 (rows * cols, C), cells in row-major order."""
    rows, cols = shape
    blocks = features.reshape(rows, per_cell, cols, per_cell, features.shape[-1])
    return blocks.mean(axis=(1, 3), dtype=np.float64).astype(np.float32).reshape(rows * cols, -1)


def _cell_geometry(grid: CellGrid, margin_px: int) -> tuple[int, int]:
    cp = grid.cell_px
    if cp % STRIDE:
        raise ValueError(f"cell of {cp} px is not a multiple of the model stride {STRIDE}")
    if margin_px % STRIDE or margin_px < 0:
        raise ValueError(f"tile margin {margin_px} px must be a non-negative multiple of {STRIDE}")
    return cp, margin_px // STRIDE


def score_tile(
    bundle: ModelBundle, tile, grid: CellGrid, *, min_valid_fraction: float = 0.5
) -> CellScores:
    """Score every cell of one ``imagery.scene.Tile`` whose pixels are in the bundle's bands."""
    return score_tiles(bundle, [tile], grid, min_valid_fraction=min_valid_fraction)[0]


@dataclass
class _Frame:
    """What a tile's cells are before the FCN: ids, valid fractions, which get a score."""

    ids: np.ndarray
    valid_fraction: np.ndarray
    scored: np.ndarray


def _frame(bundle: ModelBundle, tile: Tile, grid: CellGrid, min_valid_fraction: float) -> _Frame:
    cp = grid.cell_px
    cells, m = tile.cells, tile.margin_px
    height, width = cells.n_rows * cp + 2 * m, cells.n_cols * cp + 2 * m
    if tile.pixels.shape != (height, width, len(bundle.bands)):
        raise ValueError(
            f"tile pixels {tile.pixels.shape} do not match {cells.n_rows} x {cells.n_cols} cells "
            f"of {cp} px with a {m} px margin in the model's {len(bundle.bands)} bands"
        )
    ids = np.asarray(grid.cell_ids_in(cells), dtype=np.int64)
    interior_valid = tile.valid[m:height - m, m:width - m]
    blocks = interior_valid.reshape(cells.n_rows, cp, cells.n_cols, cp)
    valid_fraction = blocks.mean(axis=(1, 3), dtype=np.float64).astype(np.float32).ravel()
    return _Frame(ids, valid_fraction, valid_fraction >= min_valid_fraction)


def score_tiles(
    bundle: ModelBundle, tiles: list[Tile], grid: CellGrid, *, min_valid_fraction: float = 0.5
) -> list[CellScores]:
    """Score tiles of one pixel shape and margin with ONE FCN call: the tiles that hold a cell to
    score are stacked along the batch axis (a GPU's way of being kept busy). Each tile's scores
    equal :func:`score_tile` on it alone, within float tolerance."""
    if len({(t.pixels.shape, t.margin_px) for t in tiles}) > 1:
        raise ValueError("tiles scored in one batch must have the same pixel shape and margin")
    if not tiles:
        return []
    cp, crop = _cell_geometry(grid, tiles[0].margin_px)
    frames = [_frame(bundle, t, grid, min_valid_fraction) for t in tiles]
    width = bundle.model.get_layer("classes").input.shape[-1]
    results = [CellScores(f.ids, np.full(len(f.ids), np.nan, dtype=np.float32),
                          np.full(len(f.ids), np.nan, dtype=np.float32), f.valid_fraction,
                          np.zeros((len(f.ids), width), dtype=np.uint8),
                          np.zeros(len(f.ids), dtype=np.float32)) for f in frames]
    todo = [i for i, f in enumerate(frames) if f.scored.any()]
    if not todo:
        return results
    shape, per_cell = (tiles[0].cells.n_rows, tiles[0].cells.n_cols), cp // STRIDE
    prob, features = bundle.probability_and_features(np.stack([tiles[i].pixels for i in todo]))
    prob = prob[:, crop:prob.shape[1] - crop, crop:prob.shape[2] - crop]
    features = features[:, crop:features.shape[1] - crop, crop:features.shape[2] - crop]
    for k, i in enumerate(todo):
        scored, out = frames[i].scored, results[i]
        s, u = cell_scores(prob[k], shape, per_cell, threshold=bundle.threshold)
        out.scores[scored] = s.ravel()[scored]
        out.uncertainty[scored] = u.ravel()[scored]
        q, sc = quantise_embeddings(pool_cell_features(features[k], shape, per_cell))
        out.embeddings[scored], out.embedding_scale[scored] = q[scored], sc[scored]
    return results


def fcn_passes(tile: Tile, grid: CellGrid, fcn_tile_cells: int) -> list[Tile]:
    """Views of a large tile, at most ``fcn_tile_cells`` x ``fcn_tile_cells`` cells each with its
    own margin of real pixels, in row-major order."""
    if fcn_tile_cells <= 0:
        raise ValueError(f"fcn_tile_cells must be positive, got {fcn_tile_cells}")
    cells, m, cp = tile.cells, tile.margin_px, grid.cell_px
    parts = []
    for r0 in range(cells.row0, cells.row1, fcn_tile_cells):
        for c0 in range(cells.col0, cells.col1, fcn_tile_cells):
            sub = CellRange(r0, min(r0 + fcn_tile_cells, cells.row1), c0,
                            min(c0 + fcn_tile_cells, cells.col1))
            y0, x0 = (r0 - cells.row0) * cp, (c0 - cells.col0) * cp
            window = (slice(y0, y0 + sub.n_rows * cp + 2 * m),
                      slice(x0, x0 + sub.n_cols * cp + 2 * m))
            parts.append(Tile(cells=sub, margin_px=m, pixels=tile.pixels[window],
                              valid=tile.valid[window]))
    return parts


def score_block(
    bundle: ModelBundle, tile: Tile, grid: CellGrid, *, min_valid_fraction: float = 0.5,
    fcn_tile_cells: int = 4, batch: int = 1,
) -> CellScores:
    """Score a large ``Tile`` (e.g. one store block) through FCN passes of at most
    ``fcn_tile_cells`` x ``fcn_tile_cells`` cells, up to ``batch`` passes of one shape per FCN
    call (stacked along the batch axis; the block's edge passes may be smaller).

    Each pass is a view of the tile with its own margin of real pixels, so the scores equal
    :func:`score_tile` on the whole tile (see the module docstring) while the network's
    activations stay small (a 16 x 16-cell block in one pass needs about 0.7 GB of them) and in
    cache: on the 2-core CPU box 4 x 4-cell passes ran 1.2-3.5 x faster per km² than 8 x 8 or
    16 x 16. A batch above 1 is for a GPU, which one 432 x 432 pass leaves mostly idle.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    passes = fcn_passes(tile, grid, fcn_tile_cells)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, part in enumerate(passes):
        by_shape.setdefault(part.pixels.shape, []).append(i)
    scored: dict[int, CellScores] = {}
    for indices in by_shape.values():
        for start in range(0, len(indices), batch):
            chunk = indices[start:start + batch]
            results = score_tiles(bundle, [passes[i] for i in chunk], grid,
                                  min_valid_fraction=min_valid_fraction)
            scored.update(zip(chunk, results, strict=True))
    return CellScores.concat([scored[i] for i in range(len(passes))])


def patch_scores(bundle: ModelBundle, pixels: np.ndarray, idx: np.ndarray | None = None, *,
                 training: bool = False, batch_size: int = 64) -> np.ndarray:
    """Cell score of each (cp + 2 MARGIN_PX)^2 patch (rows ``idx`` of ``pixels``), float32 (N,).

    The same path as scene scoring (NaN filled with the band mean, margin cropped, numpy top-q
    reduction), in batches of ``batch_size`` patches. ``training=True`` keeps dropout active.
    """
    idx = np.arange(len(pixels)) if idx is None else np.asarray(idx)
    crop = MARGIN_PX // STRIDE
    out = np.empty(len(idx), dtype=np.float32)
    for start in range(0, len(idx), batch_size):
        sel = idx[start:start + batch_size]
        prob = bundle.mine_probability(pixels[sel], training=training)
        prob = prob[:, crop:prob.shape[1] - crop, crop:prob.shape[2] - crop]
        scores, _ = cell_scores(prob, (1, 1), prob.shape[1])
        out[start:start + len(sel)] = scores[:, 0, 0]
    return out


def mc_dropout_scores(
    bundle: ModelBundle,
    pixels: np.ndarray,
    n_samples: int = 20,
    *,
    seed: int = 0,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Monte-Carlo dropout: mean and standard deviation of the cell score over ``n_samples``
    forward passes with dropout active.

    ``pixels``: (N, cp + 2 MARGIN_PX, cp + 2 MARGIN_PX, B) patches in the bundle's bands (as
    imagery.store.YearMosaic.read_cells returns them). Returns float32 (N,) mean and (N,) std.
    """
    import keras

    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 4 or pixels.shape[1] != pixels.shape[2]:
        raise ValueError(f"pixels must be (N, P, P, B) square patches, got {pixels.shape}")
    if (pixels.shape[1] - 2 * MARGIN_PX) <= 0 or (pixels.shape[1] - 2 * MARGIN_PX) % STRIDE:
        raise ValueError(
            f"patch side {pixels.shape[1]} px is not a cell plus a {MARGIN_PX} px margin"
        )
    # Restart every dropout layer's random stream from ``seed`` so that the same call gives the
    # same samples (the layers' own generators otherwise advance from call to call).
    keras.utils.set_random_seed(seed)
    generators = [layer.seed_generator for layer in bundle.model.layers
                  if isinstance(layer, keras.layers.Dropout) and layer.seed_generator is not None]
    saved = [keras.ops.convert_to_numpy(g.state.value) for g in generators]
    for g in generators:
        g.state.assign(np.array([seed, 0], dtype=saved[0].dtype))
    try:
        samples = np.stack([patch_scores(bundle, pixels, training=True, batch_size=batch_size)
                            for _ in range(n_samples)])
    finally:
        for g, state in zip(generators, saved, strict=True):
            g.state.assign(state)
    return samples.mean(axis=0).astype(np.float32), samples.std(axis=0).astype(np.float32)


#: A scene band whose median lies this many training standard deviations from the training mean
#: makes the scores suspect (another processing level, sensor or season than the model knows).
SHIFT_Z_LIMIT = 4.0


def distribution_shift(bundle: ModelBundle, mosaic: YearMosaic, *,
                       z_limit: float = SHIFT_Z_LIMIT, max_blocks: int = 64) -> list[str]:
    """Warnings for bands whose median over the year's mosaic is far from the model's training
    distribution.

    The FCN saturates on inputs unlike anything it was trained on (e.g. a model trained on
    surface reflectance scoring a top-of-atmosphere L1C scene, whose B1 is hazier): its scores
    there mean little. Compares the median of a decimated sample of each model band
    (``YearMosaic.sample`` of at most ``max_blocks`` blocks) with the normalisation stored in the
    model, in units of its standard deviation.
    """
    medians = {band: float(np.median(values)) if values.size else np.nan
               for band, values in mosaic.sample(bundle.bands, max_blocks=max_blocks).items()}
    warnings = []
    for band, mean, std in zip(bundle.bands, bundle.mean, bundle.std, strict=True):
        z = (medians.get(band, np.nan) - mean) / max(std, 1e-6)
        if np.isfinite(z) and abs(z) > z_limit:
            warnings.append(f"{mosaic.name}: band {band} median {medians[band]:.0f} DN is "
                            f"{z:+.1f} standard deviations from model {bundle.version}'s training "
                            f"mean {mean:.0f}: scores may be meaningless (another processing "
                            "level, sensor or season?)")
    return warnings
