"""Sentinel-2 scenes: open them, check them, and read their pixels warped onto the cell grid.

A scene is one multi-band GeoTIFF / COG, or a set of single-band files (one per band, at native
10 / 20 / 60 m, as Sentinel-2 products deliver them). :func:`open_scene` checks that it can be a
Sentinel-2 composite (:mod:`imagery.validate`: metadata and a small pixel sample, never a full
read) and returns a frozen :class:`Scene`; every reader below opens the files only for the
duration of one call. Ingest (``pipeline.ingest``) warps a scene once, block by block, into the
imagery store (``imagery.store``); everything else reads the store.

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
    band_from_filename,
    normalise_band_name,
    select_bands,
    strict_band_name,
)
from imagery.grid import CellGrid, CellRange
from imagery.validate import (
    BANDS_HINT,
    BandSample,
    SceneError,
    check_band_set,
    check_header,
    check_path,
    check_samples,
    library_message,
    metadata_dn_offset,
    quiet_gdal,
    resolve_offset,
    sample_bands,
    unnamed_bands_error,
)

#: File suffixes taken from a directory given to :func:`open_scene`.
RASTER_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".jp2")
#: GeoTIFF tag that marks a synthetic (demo) scene, and its value.
SYNTHETIC_TAG = "MINEWATCH_SYNTHETIC"


@dataclass(frozen=True)
class Scene:
    """What MineWatch knows about a scene after :func:`open_scene` (metadata only, no pixels).

    ``bands[i]`` comes from band ``band_sources[i] = (path_index, band_index_1_based)``;
    ``nodata[path_index]`` is that file's nodata value (0 when the file has no nodata tag; None
    only in scenes built by hand); stored values times ``dn_scale``, plus ``dn_offset``, are DN
    (reflectance x 10,000). ``dn_offset`` is the processing-baseline offset (-1000 for ESA
    products of baseline 04.00 or later, 0 for Earth Engine's harmonized collections). ``bounds``
    are (minx, miny, maxx, maxy) in ``crs`` (the union over all files). ``notes`` are one-line
    remarks for the user (e.g. that 0 was taken as nodata).
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
    dn_offset: float = 0.0
    notes: tuple[str, ...] = ()

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
    check_path(path)
    if not path.exists():
        raise SceneError(f"{path.name}: file not found ({path})")
    if not path.is_file():
        raise SceneError(f"{path.name}: not a file ({path})")
    if path.stat().st_size == 0:
        raise SceneError(f"{path.name}: file is empty (0 bytes)")


def _open(path: Path) -> rasterio.io.DatasetReader:
    """Open a raster quietly, turning every rasterio failure into a SceneError naming the file."""
    _check_file(path)
    try:
        with quiet_gdal():
            return rasterio.open(path)
    except (RasterioError, OSError) as exc:
        raise SceneError(f"{path.name}: not a raster GDAL can read "
                         f"({library_message(exc, path)})") from exc


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


def _names_from_descriptions(descriptions: Sequence[str | None]) -> tuple[str, ...] | None:
    """Band names from descriptions that are all exactly Sentinel-2 band names, else None."""
    names = tuple(strict_band_name(d) for d in descriptions)
    return None if any(n is None for n in names) else names


@dataclass(frozen=True)
class _Header:
    """What one file's header says, after :func:`imagery.validate.check_header` accepted it."""

    path: Path
    crs: rasterio.crs.CRS
    bounds: tuple[float, float, float, float]
    dtype: str
    count: int
    nodata: float
    nodata_tagged: bool
    names: tuple[str, ...] | None
    synthetic: bool


def _read_header(path: Path, multi_file: bool, expect_dtype: str | None) -> _Header:
    """Open one file, run the header checks and read its band names (no pixels)."""
    with _open(path) as ds:
        _check_not_truncated(ds, path)
        check_header(ds, path)
        if multi_file and ds.count != 1:
            raise SceneError(
                f"{path.name}: has {ds.count} bands; a list of files needs one band per file"
            )
        dtype = ds.dtypes[0]
        if expect_dtype is not None and dtype != np.dtype(expect_dtype).name:
            kind = "float data" if np.issubdtype(np.dtype(dtype), np.floating) else "data"
            raise SceneError(f"{path.name}: {kind} where {expect_dtype} is declared ({dtype})")
        names = _names_from_descriptions(ds.descriptions)
        if names is None and ds.count == 1 and band_from_filename(path.stem):
            names = (band_from_filename(path.stem),)
        return _Header(
            path=path, crs=ds.crs, bounds=tuple(ds.bounds), dtype=dtype, count=ds.count,
            nodata=0.0 if ds.nodata is None else float(ds.nodata),
            nodata_tagged=ds.nodata is not None, names=names,
            synthetic=ds.tags().get(SYNTHETIC_TAG, "").lower() == "yes",
        )


def _check_crs_match(headers: Sequence[_Header]) -> None:
    first = headers[0]
    for header in headers[1:]:
        if header.crs != first.crs:
            raise SceneError(
                f"{header.path.name}: CRS {header.crs.to_string()} differs from "
                f"{first.path.name}'s CRS {first.crs.to_string()}; all band files of a scene "
                "must share one CRS"
            )


def _band_names(headers: Sequence[_Header], name: str,
                bands: Sequence[str] | None) -> list[str]:
    """Band names in file order: ``bands`` when given, else descriptions, file names or count."""
    count = sum(h.count for h in headers)
    if bands is not None:
        try:
            given = [normalise_band_name(str(b)) for b in bands]
        except ValueError as exc:
            raise SceneError(f"{name}: --bands: {exc}") from exc
        if len(given) != count:
            raise SceneError(f"{name}: the --bands option names {len(given)} bands but the "
                             f"scene has {count}")
        return given
    if len(headers) == 1 and headers[0].names is None:
        if count == len(SEED_BANDS):
            return list(SEED_BANDS)
        if count == len(L1C_BANDS):
            return list(L1C_BANDS)
        raise unnamed_bands_error(headers[0].path.name, count)
    unnamed = [h.path.name for h in headers if h.names is None]
    if unnamed:
        raise SceneError(
            f"{', '.join(unnamed)}: no Sentinel-2 band name in the file name (..._B02.tif, "
            f"..._B8A.jp2) or band description; name the files' bands in order with `{BANDS_HINT}`"
        )
    return [n for h in headers for n in (h.names or ())]


def _sample_scene(headers: Sequence[_Header], names: Sequence[str], name: str,
                  offset: float | None) -> tuple[float, float]:
    """Sample every file's pixels; return (dn_scale, dn_offset) after the pixel checks."""
    samples: list[BandSample] = []
    declared: list[tuple[float, str]] = []
    for header in headers:
        with _open(header.path) as ds:
            samples.extend(sample_bands(ds, header.path, header.nodata))
    is_float = np.issubdtype(np.dtype(headers[0].dtype), np.floating)
    label = headers[0].path.name if len(headers) == 1 else name
    dn_scale = check_samples(samples, names, label, is_float=is_float)
    for header in headers:
        with _open(header.path) as ds:
            found = metadata_dn_offset(ds, header.path, dn_scale)
        if found is not None:
            declared.append(found)
    return dn_scale, resolve_offset(declared, offset, label)


def open_scene(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    bands: Sequence[str] | None = None,
    expect_dtype: str | None = None,
    offset: float | None = None,
) -> Scene:
    """Open a scene: one multi-band GeoTIFF / COG, a list of single-band files, or a directory.

    Every file is first checked as a Sentinel-2 composite by :mod:`imagery.validate` (header,
    then a small pixel sample: never a full read), so a refused file raises SceneError before
    anything is stored; the one-line message names the file and the problem.

    Band names come from ``bands`` when given (its length must equal the number of bands in the
    files, counted before B10 is dropped), else from band descriptions that are exactly
    Sentinel-2 names (``B02``, ``B8A``) or, for single-band files, Sentinel-2 product file names
    (``s2_B8A.jp2``, ``T35JNK_..._B02.tif``; ``band1.tif`` names no band). An undescribed
    12-band file is read as :data:`SEED_BANDS`, a 13-band one as :data:`L1C_BANDS`. The names
    must form a Sentinel-2 band set (:data:`imagery.validate.KNOWN_BAND_SETS`), whatever their
    source. B10 is always dropped. Single-band files are ordered as in L1C_BANDS; the bands of
    one multi-band file keep their file order. A directory means every .tif / .tiff / .jp2 file
    in it (one band each).

    A file without a nodata tag gets 0 as nodata (0 is no data in Sentinel-2; ``notes`` says
    so). Float data is reflectance 0-1.5 (``dn_scale`` 10,000) unless its sampled maximum is
    above 1.5 (DN). ``dn_offset`` is ``offset`` (DN, e.g. -1000 for ESA products of processing
    baseline 04.00 or later whose metadata was lost) or else the offset the files' metadata
    declares (:func:`imagery.validate.metadata_dn_offset`), else 0; an ``offset`` that contradicts
    the metadata is refused. ``expect_dtype`` (e.g. ``"uint16"``) refuses other dtypes.
    """
    files, name = _list_paths(paths)
    multi_file = len(files) > 1
    headers = [_read_header(path, multi_file, expect_dtype) for path in files]
    _check_crs_match(headers)
    dtypes = sorted({h.dtype for h in headers})
    if len({np.issubdtype(np.dtype(d), np.floating) for d in dtypes}) > 1:
        raise SceneError(f"{name}: mixes float and integer band files ({', '.join(dtypes)})")
    names = _band_names(headers, name, bands)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SceneError(f"{name}: band {', '.join(duplicates)} appears more than once")
    check_band_set(names, name, given=bands is not None)
    dn_scale, dn_offset = _sample_scene(headers, names, name, offset)

    sources = [(index, b) for index, h in enumerate(headers) for b in range(1, h.count + 1)]
    pairs = [(n, s) for n, s in zip(names, sources, strict=True) if n not in DROPPED_BANDS]
    if multi_file:
        pairs.sort(key=lambda p: L1C_BANDS.index(p[0]))
    untagged = [h.path.name for h in headers if not h.nodata_tagged]
    notes = (f"{', '.join(untagged)}: no nodata tag; 0 is taken as no data (Sentinel-2's "
             "no-data value)",) if untagged else ()
    bounds = [h.bounds for h in headers]
    union = (min(b[0] for b in bounds), min(b[1] for b in bounds),
             max(b[2] for b in bounds), max(b[3] for b in bounds))
    return Scene(
        paths=tuple(files),
        bands=tuple(p[0] for p in pairs),
        band_sources=tuple(p[1] for p in pairs),
        crs=headers[0].crs.to_string(),
        bounds=union,
        dn_scale=dn_scale,
        nodata=tuple(h.nodata for h in headers),
        synthetic=any(h.synthetic for h in headers),
        name=name,
        dn_offset=dn_offset,
        notes=notes,
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
    values x ``scene.dn_scale`` + ``scene.dn_offset``, at least 1 when an offset applies, so a
    valid pixel never becomes 0), B = ``bands`` (a subset, by name, in the order given) or all the
    scene's bands; ``valid`` is bool (height, width), True where every selected band is finite.
    Pixels outside the scene or on nodata are NaN / invalid.

    Files are opened for this call only; one warp per source file (all its selected bands at once).
    Memory is bounded by the window. Raises BandMismatchError for bands the scene lacks and
    SceneError (naming the file, without its directory) when a file cannot be read or a block
    cannot be decoded (a corrupt or truncated file); GDAL's warnings stay off the screen.
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
                with quiet_gdal():
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
                raise SceneError(f"{path.name}: pixels cannot be decoded "
                                 f"({library_message(exc, path)})") from exc
            if len(items) > 1:
                out[out_idx] = dest
    _to_dn(out, scene)
    pixels = np.ascontiguousarray(np.moveaxis(out, 0, -1))
    del out
    valid = np.isfinite(pixels).all(axis=-1)
    return pixels, valid


def _to_dn(values: np.ndarray, scene: Scene) -> None:
    """Turn stored values into DN in place: x ``dn_scale``, + ``dn_offset`` (kept >= 1)."""
    if scene.dn_scale != 1.0:
        values *= np.float32(scene.dn_scale)
    if scene.dn_offset:
        values += np.float32(scene.dn_offset)
        np.maximum(values, np.float32(1.0), out=values)
