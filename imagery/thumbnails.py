"""Pictures of cells for reviewers: natural colour and false colour, stretched once per year.

A stretch (per-band low/high DN) is computed once per year's mosaic from a decimated sample
(:func:`stretch_of`), so that neighbouring cells look alike. :func:`render_view` turns a (H, W, B) DN array into an
RGB image; :func:`render_context` draws a 3 x 3-cell neighbourhood with the centre cell outlined;
:class:`ThumbnailCache` keeps rendered PNGs on disk so a review page never re-reads the store.

Invalid (NaN) pixels are drawn in dark magenta, :data:`INVALID_RGB`, a colour no landscape has,
so a reviewer never mistakes missing data for water or shadow.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from imagery.bands import FALSE_COLOUR_BANDS, RGB_BANDS, normalise_band_name, select_bands
from imagery.store import YearMosaic

#: Bands of each view, as (red, green, blue) channels.
VIEWS: dict[str, tuple[str, str, str]] = {"rgb": RGB_BANDS, "false": FALSE_COLOUR_BANDS}
#: Colour of invalid (NaN / nodata / outside the scene) pixels: dark magenta.
INVALID_RGB: tuple[int, int, int] = (128, 0, 128)
#: Colour and width of the centre-cell outline in a context view.
OUTLINE_RGB: tuple[int, int, int] = (255, 255, 0)
OUTLINE_PX = 2
#: Stretch used for a band with no valid pixels at all.
FALLBACK_STRETCH: tuple[float, float] = (0.0, 3000.0)
KINDS = ("cell", "context")
FORMATS = {"png": "PNG", "webp": "WEBP"}

Stretch = Mapping[str, tuple[float, float]]
Size = int | tuple[int, int] | None


def stretch_of(
    values: Mapping[str, np.ndarray], percentiles: tuple[float, float] = (2, 98),
) -> dict[str, tuple[float, float]]:
    """Per-band (low, high) DN at the given percentiles of ``values`` ({band: DN array}).

    NaN and zeros (the Sentinel-2 fill value) are ignored; a band with no valid value gets
    :data:`FALLBACK_STRETCH`. ``high`` is always above ``low``. The values are usually a
    decimated sample of a year's mosaic (``imagery.store.YearMosaic.sample``).
    """
    stretch: dict[str, tuple[float, float]] = {}
    for band, data in values.items():
        data = np.asarray(data, dtype=np.float32)
        data = data[np.isfinite(data) & (data != 0)]
        if data.size == 0:
            stretch[band] = FALLBACK_STRETCH
            continue
        low, high = (float(v) for v in np.percentile(data, percentiles))
        stretch[band] = (low, high if high > low else low + 1.0)
    return stretch


def _to_size(size: Size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


def _resize(image: Image.Image, size: Size) -> Image.Image:
    target = _to_size(size)
    if target is None or target == image.size:
        return image
    upscaling = target[0] >= image.size[0] and target[1] >= image.size[1]
    return image.resize(target, Image.Resampling.NEAREST if upscaling else Image.Resampling.BOX)


def render_view(
    pixels: np.ndarray,
    bands: Sequence[str],
    view: str,
    stretch: Stretch,
    size: Size = None,
    *,
    gamma: float = 1.0,
) -> Image.Image:
    """Render (H, W, B) DN pixels as an RGB uint8 image.

    ``view`` "rgb" shows (B4, B3, B2), "false" shows (B12, B8A, B4). Each channel is stretched
    linearly from ``stretch[band]`` = (low, high) to 0-255 and clipped (then raised to
    ``1 / gamma``; 1.0 = linear). Pixels where any shown band is not finite are drawn in
    :data:`INVALID_RGB`. ``size`` (an int for a square, or (width, height)) resizes the image:
    nearest neighbour when enlarging, box averaging when shrinking.

    Raises BandMismatchError when ``bands`` lack the view's bands (e.g. a B2, B3, B4 scene asked for
    "false") and ValueError for an unknown view or a band missing from ``stretch``.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
    if pixels.ndim != 3 or pixels.shape[-1] != len(bands):
        raise ValueError(f"pixels of shape {pixels.shape} do not match {len(bands)} bands")
    names = [normalise_band_name(b) for b in bands]
    view_name = "natural-colour (rgb) view" if view == "rgb" else "false-colour view"
    picks = select_bands(names, VIEWS[view], what=view_name)
    missing = [b for b in VIEWS[view] if b not in stretch]
    if missing:
        raise ValueError(f"stretch has no entry for {', '.join(missing)}")
    chosen = pixels[..., picks].astype(np.float32, copy=False)
    lows = np.array([stretch[b][0] for b in VIEWS[view]], dtype=np.float32)
    highs = np.array([stretch[b][1] for b in VIEWS[view]], dtype=np.float32)
    scaled = np.clip((chosen - lows) / np.maximum(highs - lows, 1e-6), 0.0, 1.0)
    if gamma != 1.0:
        scaled = scaled ** (1.0 / gamma)
    invalid = ~np.isfinite(chosen).all(axis=-1)
    rgb = np.round(np.nan_to_num(scaled, nan=0.0) * 255.0).astype(np.uint8)
    rgb[invalid] = INVALID_RGB
    return _resize(Image.fromarray(rgb, mode="RGB"), size)


def render_context(
    pixels: np.ndarray,
    bands: Sequence[str],
    view: str,
    stretch: Stretch,
    size: Size = None,
) -> Image.Image:
    """Render a 3 x 3-cell neighbourhood (3 cp x 3 cp pixels) with the centre cell outlined.

    The outline is a :data:`OUTLINE_PX`-pixel yellow rectangle drawn after resizing, just inside
    the centre cell's edges, so it stays 2 px wide at any ``size``.
    """
    image = render_view(pixels, bands, view, stretch, size)
    width, height = image.size
    x0, y0 = round(width / 3), round(height / 3)
    x1, y1 = round(2 * width / 3) - 1, round(2 * height / 3) - 1
    ImageDraw.Draw(image).rectangle((x0, y0, x1, y1), outline=OUTLINE_RGB, width=OUTLINE_PX)
    return image


class ThumbnailCache:
    """Rendered cell pictures on disk: ``root/<key>/<cell_id>_<kind>_<view>.<fmt>``.

    ``key`` is a caller-chosen string naming the mosaic (e.g. its database id). A cached picture is
    never re-rendered: a caller who changes the stretch or the size for a mosaic should use a new
    key (or delete the key's folder).
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path_for(self, key: str, cell_id: int, view: str, kind: str, fmt: str = "png") -> Path:
        """Where the picture of one cell / view / kind lives (whether or not it exists yet)."""
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(key)).strip(".")
        if not safe:
            raise ValueError(f"cache key {key!r} has no usable characters")
        return self.root / safe / f"{int(cell_id)}_{kind}_{view}.{fmt}"

    def get(
        self,
        mosaic: YearMosaic,
        cell_id: int,
        *,
        key: str,
        stretch: Stretch,
        view: str = "rgb",
        kind: str = "cell",
        size: Size = None,
        fmt: str = "png",
    ) -> Path:
        """Path of the cell's picture, rendering it first on a miss.

        A hit returns the cached path without touching the store. A miss reads the cell (kind
        "cell") or its 3 x 3 neighbourhood (kind "context") from the year's mosaic
        (:meth:`imagery.store.YearMosaic.read`: the very pixels scoring reads), renders it with
        ``stretch`` and writes it atomically (temporary file in the same folder, then
        ``os.replace``).
        """
        path = self.path_for(key, cell_id, view, kind, fmt)
        if path.exists():
            return path
        grid = mosaic.grid
        cp = grid.cell_px
        row, col = grid.cell_pixel_origin(cell_id)
        if kind == "context":
            row, col, side = row - cp, col - cp, 3 * cp
        else:
            side = cp
        view_bands = VIEWS[view]
        select_bands(mosaic.bands, view_bands,
                     what="natural-colour (rgb) view" if view == "rgb" else "false-colour view")
        pixels, _ = mosaic.read(row, col, side, side, bands=view_bands)
        render = render_context if kind == "context" else render_view
        image = render(pixels, view_bands, view, stretch, size)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.",
                                            suffix=f".{fmt}")
        try:
            with os.fdopen(handle, "wb") as out:
                image.save(out, format=FORMATS[fmt])
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return path
