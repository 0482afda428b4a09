"""The seed's fully convolutional network (FCN).

The seed study describes "three convolution layers, two pooling layers and a dropout layer; input
of unspecified height and width with the 12 Sentinel-2 bands; output a 1 x 1 convolution with two
filters (mine, background)". This module builds exactly that::

    Input (None, None, B)  raw DN (reflectance x 10,000)
    Normalization          (x - mean) / std per band; the statistics live inside the .keras file
    Conv2D 32, k x k, relu, same      (k = KERNEL = 3, the seed's; 5 is an option)
    MaxPool 2
    Conv2D 64, k x k, relu, same
    MaxPool 2
    Conv2D 64, k x k, relu, same
    [Conv2D 64, k x k, relu, same]    only with depth = 4 (DEPTH = 3, the seed's, by default)
    Dropout 0.5
    Conv2D 2, 1x1, softmax  channel 0 = background, channel 1 = mine

On an H x W input the output is an (H / STRIDE) x (W / STRIDE) map (H and W multiples of STRIDE):
one probability per 4 x 4 pixel block (40 m at 10 m pixels), a sliding-window classifier computed in
one pass.

Receptive field: for k = 3, output position j covers the pooled block of input pixels 4j .. 4j+3
and sees input pixels 4j-7 .. 4j+10, i.e. 18 px (conv 3 -> pool 2 -> conv 3 -> pool 2 -> conv 3:
3, 4, 8, 10, 18 px), reaching 7 px before and after its block (RECEPTIVE_FIELD_BEFORE_PX,
RECEPTIVE_FIELD_AFTER_PX); for k = 5 it is 32 px, reaching 14 px; for k = 3 at depth 4 it is
26 px, reaching 11 px (k = 5 at depth 4 would reach 22 px and is refused). So an output whose block lies
at least that far inside a tile never sees the "same" zero padding at the tile edge: MARGIN_PX =
16 (>= 14 and a multiple of STRIDE, so that the pooling grid of every tile lines up with the
global pixel grid) of real context around a cell or tile makes per-cell scores independent of
how a scene is cut into tiles.

Invalid pixels (NaN) must be replaced with the band mean before the forward pass (0 after the
normalisation layer, the same value the zero padding stands for); ``ModelBundle.mine_probability``
does that.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

#: Pool size of each of the two pooling layers.
POOL = 2
#: Output stride: product of the pooling strides. One output per STRIDE x STRIDE pixel block.
STRIDE = POOL * POOL
#: Side of the three convolution kernels: the seed's (and Balaniuk's) 3 by default; 5 is allowed.
KERNEL = 3
#: Number of convolution layers: the seed's three; a fourth (same stride, after the second pool)
#: widens the receptive field without changing the output grid.
DEPTH = 3
DEPTHS: tuple[int, ...] = (3, 4)
#: Context read around a cell or a tile; >= the receptive-field reach and a multiple of STRIDE.
MARGIN_PX = 16


def receptive_field_px(kernel: int = KERNEL, depth: int = 3) -> int:
    """Receptive field of one output in input pixels: conv k, pool 2, conv k, pool 2, conv k
    gives k, k + 1, 3k - 1, 3k + 1, 7k - 3 (18 px for k = 3, 32 px for k = 5); each further conv
    after the second pool (``depth`` > 3) adds STRIDE * (k - 1) (26 px for k = 3, depth 4)."""
    return 7 * kernel - 3 + (depth - DEPTH) * STRIDE * (kernel - 1)


def receptive_reach_px(kernel: int = KERNEL, depth: int = 3) -> int:
    """How far the receptive field reaches before (and after) the output's own STRIDE block."""
    return (receptive_field_px(kernel, depth) - STRIDE) // 2


#: The default network's receptive field and its reach on each side of an output's block.
RECEPTIVE_FIELD_PX = receptive_field_px()
RECEPTIVE_FIELD_BEFORE_PX = RECEPTIVE_FIELD_AFTER_PX = receptive_reach_px()
#: Default conv widths and dropout rate (the seed's).
WIDTHS: tuple[int, int, int] = (32, 64, 64)
DROPOUT = 0.5
#: Output channels.
N_CLASSES = 2
MINE_CHANNEL = 1
#: Smallest standard deviation used in the normalisation (a constant band would divide by zero).
MIN_STD = 1e-3

assert MARGIN_PX % STRIDE == 0 and MARGIN_PX >= RECEPTIVE_FIELD_BEFORE_PX
#: Kernels whose receptive field stays within MARGIN_PX (so tiling leaves no seams).
KERNELS: tuple[int, ...] = tuple(k for k in (1, 3, 5, 7, 9) if receptive_reach_px(k) <= MARGIN_PX)


def build_fcn(
    bands: Sequence[str],
    mean: np.ndarray,
    std: np.ndarray,
    *,
    seed: int = 0,
    widths: Sequence[int] = WIDTHS,
    dropout: float = DROPOUT,
    kernel: int = KERNEL,
    depth: int = DEPTH,
) -> keras.Model:
    """Build the seed FCN for ``bands`` with per-band normalisation ``mean`` / ``std`` (DN).

    Input: (batch, H, W, len(bands)) float32 DN with no NaN; output: (batch, H/STRIDE, W/STRIDE, 2)
    softmax, channel 1 = mine. The weights are initialised from ``seed``. ``depth`` 4 adds a conv
    ``conv4`` (width ``widths[2]``) after ``conv3``; ``widths`` keeps its three values.
    """
    n_bands = len(bands)
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    std = np.asarray(std, dtype=np.float64).reshape(-1)
    if n_bands == 0:
        raise ValueError("build_fcn needs at least one band")
    if mean.shape != (n_bands,) or std.shape != (n_bands,):
        raise ValueError(
            f"mean and std need one value per band ({n_bands}: {', '.join(bands)}), "
            f"got {mean.shape[0]} and {std.shape[0]}"
        )
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        raise ValueError("mean and std must be finite")
    if len(widths) != 3 or any(int(w) <= 0 for w in widths):
        raise ValueError(f"widths must be three positive integers, got {tuple(widths)}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(map(str, KERNELS))} (its receptive "
                         f"field must fit the {MARGIN_PX} px context margin), got {kernel}")
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {', '.join(map(str, DEPTHS))}, got {depth}")
    if receptive_reach_px(kernel, depth) > MARGIN_PX:
        raise ValueError(f"kernel {kernel} at depth {depth} reaches "
                         f"{receptive_reach_px(kernel, depth)} px, beyond the {MARGIN_PX} px "
                         "context margin")
    variance = np.maximum(std, MIN_STD) ** 2

    keras.utils.set_random_seed(seed)
    w1, w2, w3 = (int(w) for w in widths)
    inputs = keras.Input(shape=(None, None, n_bands), name="dn")
    x = keras.layers.Normalization(
        axis=-1, mean=mean.tolist(), variance=variance.tolist(), name="normalise"
    )(inputs)
    x = keras.layers.Conv2D(w1, kernel, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(POOL, name="pool1")(x)
    x = keras.layers.Conv2D(w2, kernel, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(POOL, name="pool2")(x)
    x = keras.layers.Conv2D(w3, kernel, padding="same", activation="relu", name="conv3")(x)
    for extra in range(DEPTH + 1, depth + 1):
        x = keras.layers.Conv2D(w3, kernel, padding="same", activation="relu",
                                name=f"conv{extra}")(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    outputs = keras.layers.Conv2D(N_CLASSES, 1, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="minewatch_fcn")


def architecture_of(model: keras.Model) -> dict[str, int | list[int]]:
    """The FCN's kernel side, depth (number of hidden convolutions) and conv widths, read from
    its layers (``conv1`` .. ``conv<depth>``), as the model sidecar records them."""
    convs = []
    while True:
        try:
            convs.append(model.get_layer(f"conv{len(convs) + 1}"))
        except ValueError:
            break
    if not convs:
        raise ValueError(f"model {model.name} has no conv1 layer: not a MineWatch FCN")
    return {"kernel": int(convs[0].kernel_size[0]), "depth": len(convs),
            "widths": [int(layer.filters) for layer in convs]}


def normalisation_of(model: keras.Model) -> tuple[np.ndarray, np.ndarray]:
    """The (mean, std) stored in a model's normalisation layer."""
    layer = model.get_layer("normalise")
    mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), dtype=np.float64).reshape(-1)
    variance = np.asarray(keras.ops.convert_to_numpy(layer.variance), dtype=np.float64).reshape(-1)
    return mean, np.sqrt(variance)
