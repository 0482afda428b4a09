"""From a probability map to one score per cell: labels are per patch, not per pixel.

The FCN gives one mine probability per STRIDE x STRIDE pixel block, so a cell of ``cp`` pixels
(100 at 10 m) gets a k x k = (cp / STRIDE)^2 = 25 x 25 map. Reviewers and the seed labels say only
"this 1-km patch contains a mine" or "it does not", so both the training loss and the per-cell
score must be defined from the patch, not from pixels:

* **cell score** = the mean of the top-q fraction (q = TOP_FRACTION = 0.1) of the cell's mine
  probabilities, over the cell interior only (the context margin is cropped off first). It is a
  soft maximum: a mine that covers a tenth of the cell still scores as high as its own pixels
  (the top 10 % are all mine pixels), whereas one bright block among 625 moves the score by at
  most 1/63. A plain mean would drown a small mine in its background; a plain max would let one
  noisy block flag a cell; top-q mean sits between them and has a gradient through every selected
  block.
* **uncertainty** = closeness of the score to the model's threshold (its operating point):
  ``1 - |score - threshold| / max(threshold, 1 - threshold)``, 1 at the threshold and 0 at the
  farther end of [0, 1]. Ordering by it (largest first) is ordering by ``|score - threshold|``
  (smallest first), so "most uncertain" means "closest to being called the other way" whatever
  threshold validation chose, not "closest to 0.5".

Training uses the same reduction as a Keras layer (``TopFractionMean``) after the FCN and the
margin crop, and the loss is binary cross-entropy of that reduced score against the patch label
(multiple-instance learning with a soft-max pooling). Scoring uses the numpy version
(``cell_scores``), vectorised over a whole tile; the two compute the same number (tests check it),
so a threshold chosen on validation scores means the same thing on scored scenes.

The number of blocks averaged is ``top_count(k * k, q) = max(1, ceil(q * k * k))`` (63 of 625).
"""

from __future__ import annotations

import math

import keras
import numpy as np

#: Fraction of the cell's probability blocks that are averaged into its score.
TOP_FRACTION = 0.1
#: The reduction, as recorded in model sidecars.
REDUCTION = f"top-fraction-mean q={TOP_FRACTION}"


def top_count(n: int, q: float = TOP_FRACTION) -> int:
    """How many of ``n`` blocks the top-``q`` mean averages: ``max(1, ceil(q * n))``."""
    if n <= 0:
        raise ValueError(f"a cell needs at least one probability block, got {n}")
    if not 0.0 < q <= 1.0:
        raise ValueError(f"top fraction must be in (0, 1], got {q}")
    return max(1, math.ceil(q * n - 1e-9))


def threshold_closeness(scores: np.ndarray, threshold: float) -> np.ndarray:
    """``1 - |scores - threshold| / max(threshold, 1 - threshold)`` (NaN stays NaN), float64.

    The uncertainty of a score at the model's operating point: 1 at the threshold, falling
    linearly to 0 at whichever end of [0, 1] is farther from it.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    s = np.asarray(scores, dtype=np.float64)
    return 1.0 - np.abs(s - threshold) / max(threshold, 1.0 - threshold)


def cell_scores(
    prob_map: np.ndarray, cells_shape: tuple[int, int], k: int, q: float = TOP_FRACTION,
    threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce a cropped mine-probability map to one score and one uncertainty per cell.

    ``prob_map`` has shape (..., n_rows * k, n_cols * k): the FCN's channel-1 output over a block
    of n_rows x n_cols cells with the margin already cropped (leading batch dimensions allowed).
    Returns float32 arrays (..., n_rows, n_cols): the mean of the top-``q`` fraction of each cell's
    k x k probabilities, and its uncertainty at ``threshold`` (:func:`threshold_closeness`).
    """
    prob_map = np.asarray(prob_map, dtype=np.float32)
    n_rows, n_cols = (int(v) for v in cells_shape)
    if prob_map.ndim < 2 or prob_map.shape[-2:] != (n_rows * k, n_cols * k):
        raise ValueError(
            f"probability map of shape {prob_map.shape} does not hold {n_rows} x {n_cols} cells "
            f"of {k} x {k} blocks"
        )
    lead = prob_map.shape[:-2]
    blocks = prob_map.reshape(*lead, n_rows, k, n_cols, k)
    blocks = np.moveaxis(blocks, -3, -2).reshape(*lead, n_rows, n_cols, k * k)
    n_top = top_count(k * k, q)
    top = np.partition(blocks, k * k - n_top, axis=-1)[..., k * k - n_top:]
    # Sum in float64 so that the order of the partition does not change the last digits.
    scores = top.astype(np.float64).mean(axis=-1)
    return scores.astype(np.float32), threshold_closeness(scores, threshold).astype(np.float32)


@keras.saving.register_keras_serializable(package="minewatch")
class TopFractionMean(keras.layers.Layer):
    """Mean of the top-``q`` fraction of a probability map, one score per example.

    Input (batch, k, k, channels) (one cell per example, margin already cropped); output
    (batch, 1): the training-time twin of ``cell_scores`` for the given ``channel``.
    """

    def __init__(self, q: float = TOP_FRACTION, channel: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        top_count(1, q)  # validates q
        self.q = float(q)
        self.channel = int(channel)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def call(self, inputs):
        h, w = inputs.shape[1], inputs.shape[2]
        if h is None or w is None:
            raise ValueError("TopFractionMean needs a static patch size (patches are fixed)")
        n = int(h) * int(w)
        probs = keras.ops.reshape(inputs[..., self.channel], (-1, n))
        top, _ = keras.ops.top_k(probs, top_count(n, self.q), sorted=False)
        return keras.ops.mean(top, axis=-1, keepdims=True)

    def get_config(self) -> dict:
        return {**super().get_config(), "q": self.q, "channel": self.channel}
