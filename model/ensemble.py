"""An ensemble of FCNs with optional test-time flips.

Every member is a seed FCN (``model.fcn.build_fcn``, any kernel or depth) trained from its own
initialisation. The ensemble's mine probability map is the mean of its members' maps over the
test-time views, and the standard deviation over the same maps is its disagreement: an uncertainty
that needs no second model.

Test-time flips: with ``flips=4`` each input is also seen mirrored left-right, up-down and both;
each output map is flipped back before averaging. An input whose height and width are multiples of
``STRIDE`` flips its pooling blocks onto each other exactly, so the flipped-back maps line up.

Saved as a folder: ``member_0.keras`` ... plus ``ensemble.json`` (member files and ``flips``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from model.fcn import MINE_CHANNEL, STRIDE

#: Test-time views: 1 (as is), 2 (plus left-right) or 4 (plus up-down and both).
FLIP_CHOICES = (1, 2, 4)
#: (flip rows, flip columns) of each view, in order.
_VIEWS = ((False, False), (False, True), (True, False), (True, True))
MANIFEST = "ensemble.json"


def _flip(x: np.ndarray, rows: bool, cols: bool) -> np.ndarray:
    """Flip (batch, H, W, ...) arrays along H and/or W."""
    if rows:
        x = x[:, ::-1]
    if cols:
        x = x[:, :, ::-1]
    return x


@dataclass
class FcnEnsemble:
    """Members (Keras FCNs with the same bands) and the number of test-time views."""

    members: Sequence[keras.Model]
    flips: int = 1

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        if self.flips not in FLIP_CHOICES:
            raise ValueError(f"flips must be one of {FLIP_CHOICES}, got {self.flips}")
        bands = {m.input_shape[-1] for m in self.members}
        if len(bands) != 1:
            raise ValueError(f"members take different band counts: {sorted(bands)}")

    def member_maps(self, x: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """Mine probability maps, one per member and view: (members * flips, batch, H/S, W/S)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] % STRIDE or x.shape[2] % STRIDE:
            raise ValueError(f"input must be (batch, H, W, bands) with H and W multiples of "
                             f"{STRIDE}, got {x.shape}")
        maps = []
        for model in self.members:
            for rows, cols in _VIEWS[:self.flips]:
                view = np.ascontiguousarray(_flip(x, rows, cols))
                prob = model.predict(view, batch_size=batch_size, verbose=0)[..., MINE_CHANNEL]
                maps.append(_flip(prob, rows, cols))
        return np.stack(maps).astype(np.float32)

    def predict(self, x: np.ndarray, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of the mine probability maps over members and views, (batch, H/S, W/S)."""
        maps = self.member_maps(x, batch_size)
        return maps.mean(axis=0), maps.std(axis=0)

    def save(self, folder: Path) -> None:
        """Write the members and ``ensemble.json`` into ``folder`` (created if missing)."""
        folder.mkdir(parents=True, exist_ok=True)
        names = [f"member_{i}.keras" for i in range(len(self.members))]
        for model, name in zip(self.members, names, strict=True):
            model.save(folder / name)
        (folder / MANIFEST).write_text(json.dumps({"members": names, "flips": self.flips}))


def load_ensemble(folder: Path) -> FcnEnsemble:
    """Read an ensemble written by ``FcnEnsemble.save``; a clear ValueError when it is broken."""
    manifest = folder / MANIFEST
    try:
        spec = json.loads(manifest.read_text())
        names, flips = list(spec["members"]), int(spec["flips"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{manifest}: not an ensemble manifest ({exc})") from None
    members = []
    for name in names:
        path = folder / Path(name).name
        try:
            members.append(keras.saving.load_model(path, compile=False))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot load ensemble member ({exc})") from None
    return FcnEnsemble(members, flips)
