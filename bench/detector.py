#!/usr/bin/env python3
"""The detector study (not a test): which seed-family FCN ranks tailings cells best.

Data: the shared Brazil tailings patches (``tailings_rgb_brazil/``: 448 x 448 px RGB GeoTIFFs,
masks, ``manifest.csv``, ``groups.csv``). Each patch is cut into 4 x 4 patch-local cells of
100 x 100 px (about 1 km) with a 16 px context margin (132 x 132 px inputs); a cell is a mine when
>= 5 % of it is tailings mask, background when none is, left out in between (the labels
``pipeline.seeds`` gives grid cells).

Split: per seed, whole ``groups.csv`` groups (overlapping or < 1 km apart) are held out
(``pipeline.patch_split.group_split``, a quarter of the patches); the train-test gap is checked
to be >= 1 km from the manifest bounds. Test cells of overlapping test patches are all counted.

Variants (each trained on the same split with the same epochs): ``baseline`` (the seed FCN, 3 x 3,
top-fraction cell loss), ``kernel5``, ``depth4`` (a fourth conv after the second pool), ``dense``
(plus per-block binary cross-entropy of the FCN's map against the mask's 4 x 4 block fractions),
and ``combined`` (the ``--combined`` options) as a single model and as an ensemble of
``--members`` FCNs; every row also with 4 test-time flips (``+tta``).

Output: a markdown table of test AP and precision at recall 0.9 (mean +- std over seeds) and the
AP gain over the same seed's baseline (paired: the seeds' splits differ far more than the
variants); the last line is one JSON object {variant: {ap_mean, ap_std, p90_mean, p90_std,
ap_gain_mean, ap_gain_std}}.

Small run (the defaults; 17 minutes with one TF thread on 2 shared cores)::

    python bench/detector.py --seeds 0 1 2 --epochs 8

Full study: ``python bench/detector.py --seeds 0 1 2 3 4 --epochs 30 --widths 32 64 64
--members 5 --threads 0``. ``--quick``: the baseline only, one seed, one epoch, a tiny FCN.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402

from bench.common import parse_args  # noqa: E402

SHARED = ROOT / ".." / "shared" / "data" / "tailings_rgb_brazil"
CELL_PX = 100
MARGIN = 16
OFFSET = 24  # first cell's top-left inside a 448 px patch: (448 - 4 * 100) / 2
CELLS_PER_SIDE = 4
MINE_FRACTION = 0.05


@dataclass(frozen=True)
class Spec:
    """One detector variant."""

    kernel: int = 3
    depth: int = 3
    dense: float = 0.0  # weight of the per-block loss (0: cell loss only, the seed's)


@dataclass
class Cells:
    """Cells of a set of patches: inputs, labels, per-block mask targets, patch ids."""

    x: np.ndarray      # (N, 132, 132, 3) float32 DN
    y: np.ndarray      # (N,) 1 mine, 0 background
    blocks: np.ndarray  # (N, 25, 25) float32 tailings fraction per 4 x 4 px block
    patch: np.ndarray  # (N,) patch id


def load_cells(data: Path, ids: list[int]) -> Cells:
    """Cut every patch into labelled cells (ambiguous ones left out)."""
    xs, ys, bs, ps = [], [], [], []
    side = CELL_PX + 2 * MARGIN
    for pid in ids:
        with rasterio.open(data / "img" / f"img_{pid}.tif") as src:
            img = np.moveaxis(src.read().astype(np.float32), 0, -1)
        with rasterio.open(data / "mask" / f"mask_{pid}.tif") as src:
            mask = (src.read(1) > 0).astype(np.float32)
        for r in range(CELLS_PER_SIDE):
            for c in range(CELLS_PER_SIDE):
                top, left = OFFSET + r * CELL_PX, OFFSET + c * CELL_PX
                inner = mask[top:top + CELL_PX, left:left + CELL_PX]
                frac = inner.mean()
                if 0 < frac < MINE_FRACTION:
                    continue
                xs.append(img[top - MARGIN:top - MARGIN + side, left - MARGIN:left - MARGIN + side])
                ys.append(int(frac >= MINE_FRACTION))
                bs.append(inner.reshape(25, 4, 25, 4).mean(axis=(1, 3)))
                ps.append(pid)
    return Cells(np.stack(xs), np.array(ys), np.stack(bs).astype(np.float32), np.array(ps))


def dihedral(x: np.ndarray, blocks: np.ndarray, rng: np.random.Generator):
    """The same random rotation / mirror for each cell's input and its block targets."""
    xo, bo = np.empty_like(x), np.empty_like(blocks)
    for i in range(len(x)):
        k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
        a, b = np.rot90(x[i], k), np.rot90(blocks[i], k)
        xo[i], bo[i] = (a[:, ::-1], b[:, ::-1]) if flip else (a, b)
    return xo, bo


def train_fcn(train: Cells, spec: Spec, *, seed: int, epochs: int, widths, batch: int = 32):
    """Train one FCN with the cell (top-fraction) loss plus ``spec.dense`` x the block loss."""
    import keras
    import tensorflow as tf

    from model.fcn import MARGIN_PX, STRIDE, build_fcn
    from model.reduce import TopFractionMean

    flat = train.x.reshape(-1, train.x.shape[-1])
    fcn = build_fcn(["B2", "B3", "B4"], flat.mean(0), flat.std(0), seed=seed,
                    widths=widths, kernel=spec.kernel, depth=spec.depth)
    crop = MARGIN_PX // STRIDE
    top = TopFractionMean(channel=1)
    opt = keras.optimizers.Adam(1e-3)
    pos = train.y.mean()
    weight = np.where(train.y == 1, 0.5 / pos, 0.5 / (1 - pos)).astype(np.float32)

    @tf.function(reduce_retracing=True)
    def step(x, y, blocks, w):
        with tf.GradientTape() as tape:
            prob = fcn(x, training=True)[:, crop:-crop, crop:-crop, :]
            score = tf.clip_by_value(top(prob)[:, 0], 1e-6, 1 - 1e-6)
            cell = -(y * tf.math.log(score) + (1 - y) * tf.math.log(1 - score))
            loss = tf.reduce_mean(w * cell)
            if spec.dense:
                p = tf.clip_by_value(prob[..., 1], 1e-6, 1 - 1e-6)
                bce = -(blocks * tf.math.log(p) + (1 - blocks) * tf.math.log(1 - p))
                loss += spec.dense * tf.reduce_mean(w * tf.reduce_mean(bce, axis=(1, 2)))
        grads = tape.gradient(loss, fcn.trainable_variables)
        opt.apply_gradients(zip(grads, fcn.trainable_variables, strict=True))

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(train.y))
        for s in range(0, len(order), batch):
            sel = order[s:s + batch]
            x, b = dihedral(train.x[sel], train.blocks[sel], rng)
            step(x, train.y[sel].astype(np.float32), b, weight[sel])
    return fcn


def cell_score_of(fcns, flips: int, x: np.ndarray) -> np.ndarray:
    """Cell scores of the ensemble's mean map (top-fraction mean of the cropped map)."""
    from model.ensemble import FcnEnsemble
    from model.fcn import MARGIN_PX, STRIDE
    from model.reduce import cell_scores

    mean, _ = FcnEnsemble(fcns, flips).predict(x)
    crop = MARGIN_PX // STRIDE
    return cell_scores(mean[:, crop:-crop, crop:-crop], (1, 1), 25)[0][:, 0, 0]


def metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Test AP and the best precision at recall >= 0.9."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    p, r, _ = precision_recall_curve(y, scores)
    return {"ap": float(average_precision_score(y, scores)), "p90": float(p[r >= 0.9].max())}


def run_seed(data: Path, seed: int, args, specs: dict[str, Spec]) -> dict[str, dict]:
    """All variants on one seed's group split."""
    from pipeline.patch_split import check_gap, group_split, read_bounds, read_groups

    groups = read_groups(data / "groups.csv")
    mines = {pid: bool(load_cells(data, [pid]).y.any()) for pid in groups}
    train_ids, test_ids = group_split(groups, args.test_fraction, seed, mines)
    gap = check_gap(read_bounds(data / "manifest.csv"), train_ids, test_ids)
    train, test = load_cells(data, train_ids), load_cells(data, test_ids)
    print(f"seed {seed}: {len(train_ids)}/{len(test_ids)} patches, train cells "
          f"{int(train.y.sum())} mine/{int((1 - train.y).sum())} bg, test "
          f"{int(test.y.sum())}/{int((1 - test.y).sum())}, gap {gap:.2f} km", flush=True)
    out: dict[str, dict] = {}
    for name, spec in specs.items():
        started = time.perf_counter()
        n = args.members if name == "combined" else 1
        fcns = [train_fcn(train, spec, seed=seed * 1000 + m, epochs=args.epochs,
                          widths=args.widths) for m in range(n)]
        rows = {name: [fcns[0]]}
        if n > 1:
            rows[f"combined ensemble x{n}"] = fcns
        for row, members in rows.items():
            for flips, suffix in ((1, ""), (4, " +tta")):
                out[row + suffix] = metrics(test.y, cell_score_of(members, flips, test.x))
        print(f"  {name}: {out[name]} ({time.perf_counter() - started:.0f} s)", flush=True)
    return out


def summarise(per_seed: list[dict[str, dict]]) -> dict[str, dict[str, float]]:
    """Mean and std over seeds of each variant's AP and precision at recall 0.9."""
    summary = {}
    for name in per_seed[0]:
        ap = np.array([s[name]["ap"] for s in per_seed])
        p90 = np.array([s[name]["p90"] for s in per_seed])
        summary[name] = {"ap_mean": round(float(ap.mean()), 3), "ap_std": round(float(ap.std()), 3),
                         "p90_mean": round(float(p90.mean()), 3),
                         "p90_std": round(float(p90.std()), 3)}
        if "baseline" in per_seed[0]:
            delta = ap - np.array([s["baseline"]["ap"] for s in per_seed])
            summary[name] |= {"ap_gain_mean": round(float(delta.mean()), 3),
                              "ap_gain_std": round(float(delta.std()), 3)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--widths", type=int, nargs=3, default=[16, 32, 32])
    parser.add_argument("--members", type=int, default=3, help="ensemble size of 'combined'")
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--combined", nargs=3, type=float, default=[3, 4, 1.0],
                        metavar=("KERNEL", "DEPTH", "DENSE"),
                        help="the combined variant's kernel, depth and dense-loss weight")
    parser.add_argument("--variants", nargs="+",
                        default=["baseline", "kernel5", "depth4", "dense", "combined"])
    parser.add_argument("--threads", type=int, default=1,
                        help="TF intra- and inter-op threads (0: TF's default)")
    args = parse_args(parser, seeds=[0], epochs=1, widths=[4, 8, 8], variants=["baseline"])
    if not (args.data / "groups.csv").is_file():
        raise SystemExit(f"{args.data}: no groups.csv (the Brazil tailings folder is needed)")
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    k, d, w = args.combined
    all_specs = {"baseline": Spec(), "kernel5": Spec(kernel=5), "depth4": Spec(depth=4),
                 "dense": Spec(dense=1.0), "combined": Spec(int(k), int(d), w)}
    unknown = set(args.variants) - set(all_specs)
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(all_specs)}")
    specs = {n: all_specs[n] for n in args.variants}
    per_seed = [run_seed(args.data, s, args, specs) for s in args.seeds]
    summary = summarise(per_seed)
    print(f"\nseeds {args.seeds}, {args.epochs} epochs, widths {args.widths}, combined = kernel "
          f"{int(k)}, depth {int(d)}, dense weight {w}\n")
    print("| variant | test AP | precision at recall 0.9 | AP gain over baseline (same seed) |\n"
          "|---|---|---|---|")
    for name, row in summary.items():
        gain = (f"{row['ap_gain_mean']:+.3f} ± {row['ap_gain_std']:.3f}"
                if "ap_gain_mean" in row else "")
        print(f"| {name} | {row['ap_mean']:.3f} ± {row['ap_std']:.3f} | "
              f"{row['p90_mean']:.3f} ± {row['p90_std']:.3f} | {gain} |")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
