"""Sentinel-2 scenes: open them, check them, and read their pixels warped onto the cell grid.

A scene is one multi-band GeoTIFF / COG, or a set of single-band files (one per band, at native
10 / 20 / 60 m, as Sentinel-2 products deliver them). :func:`open_scene` reads only metadata (plus
at most one small decimated read for float data) and returns a frozen :class:`Scene`; every reader
below opens the files only for the duration of one call. Ingest (``pipeline.ingest``) warps a
scene once, block by block, into the imagery store (``imagery.store``); everything else reads the
store.

Pixels always come out channels-last, as float32 digital numbers (DN = reflectance x 10,000),
warped onto the fixed grid (:class:`imagery.grid.CellGrid`, 10 m pixels) with bilinear resampling.
Invalid pixels (outside the scene, or nodata) are NaN in ``pixels`` and False in ``valid``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject, transform_bounds

from imagery.bands import (
    DROPPED_BANDS,
    L1C_BANDS,
    SEED_BANDS,
    normalise_band_name,
    select_bands,
)
from imagery.grid import CellGrid, CellRange

#: File suffixes taken from a directory given to :func:`open_scene`.
RASTER_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".jp2")
#: GeoTIFF tag that marks a synthetic (demo) scene, and its value.
SYNTHETIC_TAG = "MINEWATCH_SYNTHETIC"
#: Float data whose (decimated) maximum exceeds this is taken as DN, not reflectance 0-1.
FLOAT_DN_THRESHOLD = 1.5
#: Longest side of the decimated read used to tell reflectance floats from DN floats.
_PROBE_PX = 256


class SceneError(ValueError):
    """A scene file is missing, unreadable or inconsistent; the message names file and problem."""


@dataclass(frozen=True)
class Scene:
    """What MineWatch knows about a scene after :func:`open_scene` (metadata only, no pixels).

    ``bands[i]`` comes from band ``band_sources[i] = (path_index, band_index_1_based)``;
    ``nodata[path_index]`` is that file's nodata value (None when unset); stored values times
    ``dn_scale`` are DN (reflectance x 10,000). ``bounds`` are (minx, miny, maxx, maxy) in ``crs``
    (the union over all files).
    """

    paths: tuple[Path, ...]
    bands: tuple[str, ...]
    band_sources: tuple[tuple[int, int], ...]
    crs: str
    bounds: tuple[float, float, float, float]
    dn_scale: float
    nodata: tuple[float | None, ...]
    synthetic: bool
    name: str

    def __post_init__(self) -> None:
        if len(self.bands) != len(self.band_sources):
            raise ValueError("bands and band_sources differ in length")
        if len(self.nodata) != len(self.paths):
            raise ValueError("nodata needs one entry per path")


@dataclass
class Tile:
    """A block of cells read with ``margin_px`` extra pixels of context on every side.

    ``pixels`` is float32 (n_rows * cell_px + 2m, n_cols * cell_px + 2m, B) in DN and ``valid`` the
    matching bool mask; the interior (without margin) covers exactly ``cells``.
    """

    cells: CellRange
    margin_px: int
    pixels: np.ndarray
    valid: np.ndarray

    @property
    def interior(self) -> tuple[np.ndarray, np.ndarray]:
        """(pixels, valid) of the tile without its margin (views, not copies)."""
        m = self.margin_px
        h, w = self.valid.shape
        return self.pixels[m:h - m, m:w - m], self.valid[m:h - m, m:w - m]

    def transform(self, grid: CellGrid) -> Affine:
        """Affine transform of ``pixels`` (margin included) in the grid CRS."""
        return grid.pixel_transform(self.cells.row0 * grid.cell_px - self.margin_px,
                                    self.cells.col0 * grid.cell_px - self.margin_px)


# opening -----------------------------------------------------------------------------------------
def _list_paths(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[list[Path], str]:
    """Expand the ``paths`` argument into files and a display name."""
    if isinstance(paths, (str, os.PathLike)):
        path = Path(paths)
        if path.is_dir():
            files = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
            if not files:
                raise SceneError(f"{path.name}: directory holds no .tif/.tiff/.jp2 files")
            return files, path.name
        return [path], path.name
    files = [Path(p) for p in paths]
    if not files:
        raise SceneError("no scene files given")
    name = files[0].name if len(files) == 1 else (files[0].parent.name or files[0].name)
    return files, name


def _check_file(path: Path) -> None:
    if not path.exists():
        raise SceneError(f"{path.name}: file not found ({path})")
    if not path.is_file():
        raise SceneError(f"{path.name}: not a file ({path})")
    if path.stat().st_size == 0:
        raise SceneError(f"{path.name}: file is empty (0 bytes)")


def _open(path: Path) -> rasterio.io.DatasetReader:
    """Open a raster, turning every rasterio failure into a SceneError naming the file."""
    _check_file(path)
    try:
        return rasterio.open(path)
    except (RasterioError, OSError) as exc:
        raise SceneError(f"{path.name}: not a readable GeoTIFF ({exc})") from exc


def _check_not_truncated(ds: rasterio.io.DatasetReader, path: Path) -> None:
    """Raise when a GeoTIFF's last data block lies beyond the end of the file (a cut download)."""
    if ds.driver != "GTiff":
        return
    size = path.stat().st_size
    rows, cols = ds.block_shapes[0]
    last = (math.ceil(ds.width / cols) - 1, math.ceil(ds.height / rows) - 1)
    for bidx in sorted({1, ds.count}):
        for bx, by in ((0, 0), last):
            offset = ds.get_tag_item(f"BLOCK_OFFSET_{bx}_{by}", "TIFF", bidx=bidx)
            nbytes = ds.get_tag_item(f"BLOCK_SIZE_{bx}_{by}", "TIFF", bidx=bidx)
            if offset and nbytes and int(offset) + int(nbytes) > size:
                raise SceneError(
                    f"{path.name}: file is truncated (band {bidx} data ends at byte "
                    f"{int(offset) + int(nbytes)} but the file has {size} bytes)"
                )


def _band_from_filename(path: Path) -> str | None:
    """The band named in a file name (``s2_B8A.jp2``, ``..._B02.tif``), or None."""
    tokens = path.stem.replace("-", "_").replace(".", "_").split("_")
    for token in reversed(tokens):
        try:
            return normalise_band_name(token)
        except ValueError:
            continue
    return None


def _names_from_descriptions(descriptions: Sequence[str | None]) -> tuple[str, ...] | None:
    """Canonical names from band descriptions, or None when any is missing or unparseable."""
    names = []
    for description in descriptions:
        if not description:
            return None
        try:
            names.append(normalise_band_name(description))
        except ValueError:
            return None
    return tuple(names)


def _probe_dn_scale(ds: rasterio.io.DatasetReader, path: Path) -> float:
    """1.0 when float data holds DN (max > 1.5), 10,000 when it holds reflectance 0-1."""
    factor = max(ds.width, ds.height) / _PROBE_PX
    shape = (max(1, round(ds.height / factor)), max(1, round(ds.width / factor))) \
        if factor > 1 else (ds.height, ds.width)
    try:
        sample = ds.read(1, out_shape=shape, masked=True, resampling=Resampling.nearest)
    except (RasterioError, OSError) as exc:
        raise SceneError(f"{path.name}: pixels cannot be read ({exc})") from exc
    values = np.asarray(sample.filled(np.nan), dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size and float(values.max()) > FLOAT_DN_THRESHOLD:
        return 1.0
    return 10000.0


def open_scene(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    bands: Sequence[str] | None = None,
    expect_dtype: str | None = None,
) -> Scene:
    """Open a scene: one multi-band GeoTIFF / COG, a list of single-band files, or a directory.

    Band names come from ``bands`` when given (its length must equal the number of bands in the
    files, counted before B10 is dropped), else from the band descriptions (multi-band file) or
    the file names / descriptions (single-band files: ``s2_B8A.jp2``, ``T35JNK_..._B02.tif``).
    An undescribed 12-band file is read as :data:`SEED_BANDS`, a 13-band one as
    :data:`L1C_BANDS`. B10 is always dropped. Single-band files are ordered as in SEED_BANDS; the
    bands of one multi-band file keep their file order. A directory means every .tif / .tiff /
    .jp2 file in it (one band each).

    Float data is probed with one small decimated read: values above 1.5 are DN (``dn_scale``
    1), otherwise reflectance 0-1 (``dn_scale`` 10,000). ``expect_dtype`` (e.g. ``"uint16"``)
    declares the dtype the caller expects; a file of another dtype is an error.

    Raises SceneError (naming the file and the problem) for a missing, empty, truncated or
    unreadable file, a file without CRS, files in different CRSs, a band count that does not
    match ``bands``, unknown or repeated bands, and data of an undeclared dtype.
    """
    files, name = _list_paths(paths)
    names: list[str] = []
    sources: list[tuple[int, int]] = []
    nodata: list[float | None] = []
    crs_text: str | None = None
    bounds: list[tuple[float, float, float, float]] = []
    dtypes: list[str] = []
    synthetic = False
    float_probe: tuple[int, Path] | None = None
    multi_file = len(files) > 1

    for index, path in enumerate(files):
        with _open(path) as ds:
            _check_not_truncated(ds, path)
            if ds.crs is None:
                raise SceneError(f"{path.name}: raster has no CRS (georeferencing is required)")
            text = ds.crs.to_string()
            if crs_text is None:
                crs_text, first_crs, first_name = text, ds.crs, path.name
            elif ds.crs != first_crs:
                raise SceneError(
                    f"{path.name}: CRS {text} differs from {first_name}'s CRS {crs_text}; "
                    "all band files of a scene must share one CRS"
                )
            if multi_file and ds.count != 1:
                raise SceneError(
                    f"{path.name}: has {ds.count} bands; a list of files needs one band per file"
                )
            dtype = ds.dtypes[0]
            if expect_dtype is not None and dtype != np.dtype(expect_dtype).name:
                if np.issubdtype(np.dtype(dtype), np.floating):
                    raise SceneError(
                        f"{path.name}: float data where {expect_dtype} is declared ({dtype})"
                    )
                raise SceneError(f"{path.name}: {dtype} data where {expect_dtype} is declared")
            dtypes.append(dtype)
            if np.issubdtype(np.dtype(dtype), np.floating) and float_probe is None:
                float_probe = (index, path)
            synthetic = synthetic or ds.tags().get(SYNTHETIC_TAG, "").lower() == "yes"
            nodata.append(None if ds.nodata is None else float(ds.nodata))
            bounds.append(tuple(ds.bounds))
            if multi_file:
                found = _band_from_filename(path) or _names_from_descriptions(ds.descriptions)
                names.extend([found] if isinstance(found, str) else (found or ["?"]))
            else:
                found = _names_from_descriptions(ds.descriptions)
                if found is None and ds.count == 1 and _band_from_filename(path):
                    found = (_band_from_filename(path),)
                if found is None and bands is None:
                    if ds.count == len(SEED_BANDS):
                        found = SEED_BANDS
                    elif ds.count == len(L1C_BANDS):
                        found = L1C_BANDS
                    else:
                        raise SceneError(
                            f"{path.name}: {ds.count} bands without band descriptions; pass "
                            "bands=(...) to name them"
                        )
                names.extend(found or ["?"] * ds.count)
            sources.extend((index, b) for b in range(1, ds.count + 1))

    if bands is not None:
        try:
            given = [normalise_band_name(str(b)) for b in bands]
        except ValueError as exc:
            raise SceneError(f"{name}: bands option: {exc}") from exc
        if len(given) != len(sources):
            raise SceneError(
                f"{name}: the bands option names {len(given)} bands but the scene has "
                f"{len(sources)}"
            )
        names = given
    unknown = [files[sources[i][0]].name for i, n in enumerate(names) if n == "?"]
    if unknown:
        raise SceneError(
            f"{', '.join(unknown)}: band name not found in file name or description; "
            "pass bands=(...)"
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SceneError(f"{name}: band {', '.join(duplicates)} appears more than once")

    kinds = {np.issubdtype(np.dtype(d), np.floating) for d in dtypes}
    if len(kinds) > 1:
        raise SceneError(f"{name}: mixes float and integer band files ({', '.join(dtypes)})")
    dn_scale = 1.0
    if float_probe is not None:
        with _open(float_probe[1]) as ds:
            dn_scale = _probe_dn_scale(ds, float_probe[1])

    pairs = [(n, s) for n, s in zip(names, sources, strict=True) if n not in DROPPED_BANDS]
    if multi_file:
        pairs.sort(key=lambda p: L1C_BANDS.index(p[0]) if p[0] in L1C_BANDS else len(L1C_BANDS))
    if not pairs:
        raise SceneError(f"{name}: no usable bands (only {', '.join(names)})")
    union = (min(b[0] for b in bounds), min(b[1] for b in bounds),
             max(b[2] for b in bounds), max(b[3] for b in bounds))
    return Scene(
        paths=tuple(files),
        bands=tuple(p[0] for p in pairs),
        band_sources=tuple(p[1] for p in pairs),
        crs=str(crs_text),
        bounds=union,
        dn_scale=dn_scale,
        nodata=tuple(nodata),
        synthetic=synthetic,
        name=name,
    )


# geometry ----------------------------------------------------------------------------------------
def scene_grid_bounds(scene: Scene, grid: CellGrid) -> tuple[float, float, float, float]:
    """The scene's bounds in the grid CRS (edges densified, so the box holds the whole scene)."""
    return tuple(transform_bounds(scene.crs, grid.crs, *scene.bounds, densify_pts=21))


def scene_cells(scene: Scene, grid: CellGrid) -> CellRange:
    """The smallest rectangle of cells that covers the scene (edge cells may be partly empty)."""
    return grid.cells_covering(scene_grid_bounds(scene, grid))


# reading -----------------------------------------------------------------------------------------
def _select(scene: Scene, bands: Sequence[str] | None) -> list[int]:
    if bands is None:
        return list(range(len(scene.bands)))
    wanted = [normalise_band_name(b) for b in bands]
    return select_bands(scene.bands, wanted, what="caller")


def read_pixels(
    scene: Scene,
    grid: CellGrid,
    pixel_row: int,
    pixel_col: int,
    height: int,
    width: int,
    bands: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp a window of the scene onto the grid and return (pixels, valid).

    The window's top-left pixel is global grid pixel (``pixel_row``, ``pixel_col``); it is
    ``height`` x ``width`` grid pixels (``grid.pixel_size_m``). Every band, whatever its native
    resolution (10, 20 or 60 m), is warped with **bilinear** resampling (smooth upsampling of the
    coarse bands; no blocky 60 m squares). ``pixels`` is float32 (height, width, B) in DN (stored
    values x ``scene.dn_scale``), B = ``bands`` (a subset, by name, in the order given) or all the
    scene's bands; ``valid`` is bool (height, width), True where every selected band is finite.
    Pixels outside the scene or on nodata are NaN / invalid.

    Files are opened for this call only; one warp per source file (all its selected bands at once).
    Memory is bounded by the window. Raises BandMismatchError for bands the scene lacks and
    SceneError when a file cannot be read.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"window must be positive, got {height} x {width}")
    picks = _select(scene, bands)
    out = np.full((len(picks), height, width), np.nan, dtype=np.float32)
    dst_transform = grid.pixel_transform(pixel_row, pixel_col)
    by_file: dict[int, list[tuple[int, int]]] = {}
    for out_index, band_index in enumerate(picks):
        path_index, bidx = scene.band_sources[band_index]
        by_file.setdefault(path_index, []).append((out_index, bidx))
    for path_index, items in by_file.items():
        path = scene.paths[path_index]
        with _open(path) as ds:
            out_idx = [i for i, _ in items]
            bidx = [b for _, b in items]
            dest = out[out_idx[0]] if len(items) == 1 else np.full(
                (len(items), height, width), np.nan, dtype=np.float32)
            try:
                reproject(
                    source=rasterio.band(ds, bidx[0] if len(items) == 1 else bidx),
                    destination=dest,
                    src_transform=ds.transform,
                    src_crs=ds.crs,
                    src_nodata=scene.nodata[path_index],
                    dst_transform=dst_transform,
                    dst_crs=grid.crs,
                    dst_nodata=np.nan,
                    resampling=Resampling.bilinear,
                )
            except (RasterioError, OSError) as exc:
                raise SceneError(f"{path.name}: pixels cannot be read ({exc})") from exc
            if len(items) > 1:
                out[out_idx] = dest
    if scene.dn_scale != 1.0:
        out *= np.float32(scene.dn_scale)
    pixels = np.ascontiguousarray(np.moveaxis(out, 0, -1))
    del out
    valid = np.isfinite(pixels).all(axis=-1)
    return pixels, valid
