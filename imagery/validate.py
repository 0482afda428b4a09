"""Refuse what cannot be a Sentinel-2 composite, from metadata and a small sample only.

:func:`imagery.scene.open_scene` runs these checks on every file before anything is stored, and
never reads a file whole: the checks use the header (size, georeferencing, CRS, dtype, band
names, metadata) and :func:`sample_bands`, which reads at most a few thousand pixels per band
(the whole band only when it is at most :data:`FULL_SAMPLE_SIDE` pixels on its longest side,
else an overview or a sparse grid of small windows). Every refusal is a :class:`SceneError` whose
one-line message names the file and the problem; GDAL's own warnings (which print file-system
paths) are kept off the screen by :func:`quiet_gdal`.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from pyproj import CRS, Geod, Transformer
from pyproj.exceptions import CRSError, ProjError
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from imagery.bands import L1C_BANDS, L2A_10_20M_BANDS, SEED_BANDS

#: Coarsest pixel that Sentinel-2 delivers (its 60 m bands), in metres; 2 % slack for rounding.
MAX_PIXEL_M = 60.0
_PIXEL_SLACK = 1.02
#: Smallest footprint a scene may have: one 1-km cell of the grid, in square metres.
MIN_EXTENT_M2 = 1_000_000.0
#: Largest declared size of one band (width x height), refused before any pixel is read.
#: 2^32 px is 65,536 x 65,536 px, a 655 x 655 km square at 10 m.
MAX_BAND_PIXELS = 2**32
#: Largest declared uncompressed size of a file (all bands), refused before any read.
MAX_FILE_BYTES = 256 * 2**30
#: Data types a Sentinel-2 composite can have: integer DN, or float reflectance / DN.
INTEGER_DTYPES: tuple[str, ...] = ("uint16", "int16", "uint32", "int32")
FLOAT_DTYPES: tuple[str, ...] = ("float32", "float64")
#: Largest DN a Sentinel-2 band can hold (16-bit products).
MAX_DN = 65535.0
#: Float data whose sampled maximum exceeds this is DN, not reflectance 0-1.5.
FLOAT_DN_THRESHOLD = 1.5
#: Bands with a side up to this many pixels are sampled whole; larger ones sparsely.
FULL_SAMPLE_SIDE = 1024
#: Sparse sample of a large band without overviews: a grid of windows, each WINDOW x WINDOW px,
#: each aligned on a block (a few % of a Sentinel-2 tile's blocks are decoded).
SAMPLE_GRID = 4
SAMPLE_WINDOW = 64
#: The DN offset of ESA products since processing baseline 04.00 (25 January 2022).
BASELINE_04_OFFSET = -1000.0
#: Semi-major axis range (metres) of an Earth ellipsoid (WGS 84 is 6,378,137 m).
_EARTH_AXIS_M = (6_350_000.0, 6_400_000.0)
#: The grid's CRS: every scene must transform to it.
GRID_CRS = "EPSG:6933"
#: The hint a user gets when band names are missing or do not match.
BANDS_HINT = "run.py ingest FILE --year YEAR --bands B2,B3,B4"

#: Band sets a Sentinel-2 composite can have (B10 is dropped, so L1C counts as the 12-band set).
KNOWN_BAND_SETS: dict[str, frozenset[str]] = {
    "12 bands B1..B12 without B10": frozenset(SEED_BANDS),
    "13 bands B1..B12 with B10 (L1C)": frozenset(L1C_BANDS),
    "10 bands B2..B12 without B1,B9,B10 (L2A 10 m + 20 m)": frozenset(L2A_10_20M_BANDS),
    "4 bands B2,B3,B4,B8 (10 m)": frozenset({"B2", "B3", "B4", "B8"}),
    "3 bands B2,B3,B4 (RGB)": frozenset({"B2", "B3", "B4"}),
}

_GEOD = Geod(ellps="WGS84")
_QUIET_LOCK = threading.Lock()
_quiet_depth = 0
_quiet_saved: tuple[int, list] | None = None
_GENERIC_ERROR = re.compile(r"previous exception|Chunk and warp failed|^Read failed", re.I)
_OFFSET_KEY = re.compile(r"^(BOA_ADD_OFFSET|RADIO_ADD_OFFSET)", re.I)


class SceneError(ValueError):
    """A scene file is missing, unreadable or not Sentinel-2; the message names file and problem."""


@dataclass(frozen=True)
class BandSample:
    """What a sparse sample of one band showed: counts and the range of its valid values."""

    n_sampled: int
    n_valid: int
    vmin: float
    vmax: float


# quiet GDAL --------------------------------------------------------------------------------------
@contextmanager
def quiet_gdal() -> Iterator[None]:
    """Keep rasterio / GDAL warnings (NotGeoreferencedWarning, CPLE_* log lines) off the screen.

    Problems that matter are raised as SceneError by the caller; the library's own text, which
    carries full file-system paths, is dropped. Safe to nest and to use from several threads: the
    first entry silences, the last exit restores the ``rasterio`` logger and warning filters.
    """
    global _quiet_depth, _quiet_saved
    with _QUIET_LOCK:
        if _quiet_depth == 0:
            logger = logging.getLogger("rasterio")
            _quiet_saved = (logger.level, list(warnings.filters))
            logger.setLevel(logging.CRITICAL + 1)
            warnings.filterwarnings("ignore", module=r"rasterio")
            warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _quiet_saved is not None:
                logging.getLogger("rasterio").setLevel(_quiet_saved[0])
                warnings.filters[:] = _quiet_saved[1]
                _quiet_saved = None


def library_message(exc: BaseException, path: Path) -> str:
    """The first line of a library error, with the file's full path shortened to its name.

    rasterio wraps GDAL's specific error ("band 1: IReadBlock failed at X offset 0 ...") in a
    generic one ("Chunk and warp failed", "See previous exception"); the specific one is used.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    texts = [str(e).splitlines()[0] for e in chain if str(e)]
    specific = [t for t in texts if not _GENERIC_ERROR.search(t)]
    text = (specific or texts or [type(exc).__name__])[0]
    for form in {str(path), str(path.resolve()), path.as_posix()}:
        text = text.replace(form, path.name)
    return text


def check_path(path: Path) -> None:
    """Refuse GDAL virtual paths (/vsizip/, zip://) and archives: only local rasters are read."""
    text = str(path)
    if text.startswith("/vsi") or "://" in text:
        raise SceneError(f"{path.name}: GDAL virtual paths (/vsizip/, URLs) are not read; "
                         "give the raster as a local file")
    if path.suffix.lower() in {".zip", ".gz", ".tar", ".7z"}:
        raise SceneError(f"{path.name}: an archive, not a raster; unpack it and ingest the "
                         "Sentinel-2 GeoTIFF inside")


# header checks -----------------------------------------------------------------------------------
def check_header(ds: rasterio.io.DatasetReader, path: Path) -> float:
    """Run every check that needs only the header; return the pixel size in metres.

    Refuses: a container of subdatasets, a declared size above the limits, georeferencing by
    GCPs / RPCs only or none, a rotated or south-up transform, no CRS, a CRS not on Earth or not
    transformable to the grid, bounds off the Earth, pixels coarser than 60 m, an extent smaller
    than one cell, and data types that cannot be Sentinel-2.
    """
    name = path.name
    if ds.subdatasets:
        raise SceneError(f"{name}: a container of {len(ds.subdatasets)} subdatasets "
                         f"({ds.driver}), not one raster; export the Sentinel-2 bands as a GeoTIFF")
    _check_size(ds, name)
    _check_georeferencing(ds, name)
    crs = _check_crs(ds, name)
    size_m = _pixel_size_m(ds, crs, name)
    if max(size_m) > MAX_PIXEL_M * _PIXEL_SLACK:
        raise SceneError(f"{name}: {max(size_m):,.0f} m pixels are coarser than Sentinel-2's "
                         f"{MAX_PIXEL_M:.0f} m; --bands cannot change this")
    area = ds.width * size_m[0] * ds.height * size_m[1]
    if area < MIN_EXTENT_M2 * 0.99:  # 1 % slack: a cell's pixels measured on the ellipsoid
        raise SceneError(f"{name}: covers {area / 1e6:.3f} km2 ({ds.width} x {ds.height} px), "
                         f"less than one {math.sqrt(MIN_EXTENT_M2) / 1000:g}-km cell")
    check_dtype(ds.dtypes, name)
    return max(size_m)


def _check_size(ds: rasterio.io.DatasetReader, name: str) -> None:
    pixels = ds.width * ds.height
    nbytes = pixels * ds.count * max(_itemsize(d) for d in ds.dtypes)
    if pixels > MAX_BAND_PIXELS or nbytes > MAX_FILE_BYTES:
        raise SceneError(
            f"{name}: declares {ds.width:,} x {ds.height:,} px x {ds.count} band(s) "
            f"= {pixels:,} px per band, {nbytes / 2**30:,.1f} GiB uncompressed; the limits are "
            f"{MAX_BAND_PIXELS:,} px per band and {MAX_FILE_BYTES / 2**30:,.0f} GiB per file "
            "(split it into tiles)"
        )


def _itemsize(dtype: str) -> int:
    """Bytes per pixel of a rasterio dtype name (``complex_int16`` is 4)."""
    if dtype == "complex_int16":
        return 4
    return np.dtype(dtype).itemsize


def _check_georeferencing(ds: rasterio.io.DatasetReader, name: str) -> None:
    t = ds.transform
    if t.is_identity:
        if ds.gcps[0]:
            raise SceneError(f"{name}: georeferenced by {len(ds.gcps[0])} ground control points "
                             "only; warp it onto a grid first (gdalwarp)")
        if ds.rpcs is not None:
            raise SceneError(f"{name}: georeferenced by RPCs only; orthorectify it first")
        raise SceneError(f"{name}: has no georeferencing (no geotransform)")
    if t.b != 0 or t.d != 0:
        raise SceneError(f"{name}: rotated or sheared geotransform {tuple(t)[:6]}; warp it "
                         "north-up first (gdalwarp)")
    if t.e > 0:
        raise SceneError(f"{name}: south-up raster (positive y pixel size {t.e:g}); warp it "
                         "north-up first (gdalwarp)")
    if t.a <= 0:
        raise SceneError(f"{name}: negative x pixel size {t.a:g}")


def _check_crs(ds: rasterio.io.DatasetReader, name: str) -> CRS:
    if ds.crs is None:
        raise SceneError(f"{name}: raster has no CRS (georeferencing is required)")
    try:
        crs = CRS.from_wkt(ds.crs.to_wkt())
    except CRSError as exc:
        raise SceneError(f"{name}: CRS cannot be read ({str(exc).splitlines()[0]})") from exc
    if not (crs.is_geographic or crs.is_projected):
        raise SceneError(f"{name}: CRS {crs.name!r} is not a geographic or projected CRS on "
                         "Earth (engineering / local CRS)")
    axis = crs.ellipsoid.semi_major_metre if crs.ellipsoid else float("nan")
    if not _EARTH_AXIS_M[0] <= axis <= _EARTH_AXIS_M[1]:
        body = crs.ellipsoid.name if crs.ellipsoid else "no ellipsoid"
        raise SceneError(f"{name}: CRS {crs.name!r} is not on Earth ({body})")
    left, bottom, right, top = ds.bounds
    if crs.is_geographic and (min(left, right) < -180.001 or max(left, right) > 180.001
                              or min(bottom, top) < -90.001 or max(bottom, top) > 90.001):
        raise SceneError(f"{name}: bounds {tuple(round(v, 3) for v in ds.bounds)} lie off the "
                         "Earth (longitude beyond +-180 or latitude beyond +-90)")
    try:
        grid_box = transform_bounds(ds.crs, GRID_CRS, *ds.bounds, densify_pts=21)
    except (RasterioError, ProjError, ValueError) as exc:
        raise SceneError(f"{name}: cannot be transformed to the grid CRS {GRID_CRS}") from exc
    if not all(math.isfinite(v) for v in grid_box):
        raise SceneError(f"{name}: its bounds cannot be transformed to the grid CRS {GRID_CRS} "
                         "(off the Earth for its CRS)")
    return crs


def _pixel_size_m(ds: rasterio.io.DatasetReader, crs: CRS, name: str) -> tuple[float, float]:
    """Ground size (x, y) in metres of the scene's centre pixel."""
    t = ds.transform
    col, row = ds.width / 2, ds.height / 2
    xs = [t.c + t.a * col, t.c + t.a * (col + 1), t.c + t.a * col]
    ys = [t.f + t.e * row, t.f + t.e * row, t.f + t.e * (row + 1)]
    try:
        lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    except ProjError as exc:
        raise SceneError(f"{name}: cannot be transformed to longitude / latitude") from exc
    if not all(math.isfinite(v) for v in (*lon, *lat)):
        raise SceneError(f"{name}: its centre pixel lies off the Earth for its CRS")
    _, _, dx = _GEOD.inv(lon[0], lat[0], lon[1], lat[1])
    _, _, dy = _GEOD.inv(lon[0], lat[0], lon[2], lat[2])
    return abs(dx), abs(dy)


def check_dtype(dtypes: Sequence[str], name: str) -> None:
    """Refuse data types that cannot hold Sentinel-2 DN or reflectance (8-bit, complex, ...)."""
    for dtype in sorted(set(dtypes)):
        if dtype in INTEGER_DTYPES or dtype in FLOAT_DTYPES:
            continue
        if dtype.startswith("complex"):
            why = "complex values are not reflectance"
        elif dtype in ("uint8", "int8", "bool"):
            why = "8-bit data cannot hold Sentinel-2's 12-bit+ DN (a picture, not reflectance)"
        else:
            why = "not a Sentinel-2 data type"
        raise SceneError(f"{name}: {dtype} data: {why}; expected uint16/int16/uint32/int32 DN or "
                         "float32/float64 reflectance; --bands cannot change this")


# band sets ---------------------------------------------------------------------------------------
def known_set_of(names: Sequence[str]) -> str | None:
    """The name of the Sentinel-2 band set ``names`` forms, or None."""
    if len(set(names)) != len(names):
        return None
    for label, members in KNOWN_BAND_SETS.items():
        if set(names) == members:
            return label
    return None


def _sets_text() -> str:
    return "; ".join(KNOWN_BAND_SETS)


def check_band_set(names: Sequence[str], label: str, *, given: bool) -> None:
    """Refuse band names that form no Sentinel-2 band set (``given``: they came from --bands)."""
    if known_set_of(names) is not None:
        return
    source = "the --bands option names" if given else "has bands"
    raise SceneError(f"{label}: {source} {','.join(names)}, which is no Sentinel-2 band set "
                     f"(known: {_sets_text()})")


def unnamed_bands_error(label: str, count: int) -> SceneError:
    """The refusal for a file whose ``count`` bands carry no Sentinel-2 names."""
    sizes = sorted({len(members) for members in KNOWN_BAND_SETS.values()})
    if count not in sizes:
        return SceneError(
            f"{label}: {count} band(s) without Sentinel-2 band names, and no Sentinel-2 band set "
            f"has {count} (known: {_sets_text()}); --bands cannot help")
    return SceneError(
        f"{label}: {count} band(s) without Sentinel-2 band names; if it is a Sentinel-2 "
        f"composite, name them in file order, e.g. `{BANDS_HINT}` (known: {_sets_text()})")


# pixel sample ------------------------------------------------------------------------------------
def sample_bands(ds: rasterio.io.DatasetReader, path: Path,
                 nodata: float) -> list[BandSample]:
    """Sample every band cheaply and count its valid pixels (not ``nodata``, finite).

    Small bands are read whole; a large one through its coarsest useful overview when it has
    overviews, otherwise as a sparse grid of :data:`SAMPLE_GRID` ^ 2 windows of
    :data:`SAMPLE_WINDOW` px aligned on blocks, so a large file costs about 16 blocks, never a
    full read.
    """
    try:
        with quiet_gdal():
            data = _read_sample(ds)
    except (RasterioError, OSError) as exc:
        raise SceneError(f"{path.name}: pixels cannot be decoded "
                         f"({library_message(exc, path)})") from exc
    samples = []
    for band in data:
        values = band.astype(np.float64, copy=False).ravel()
        good = values[np.isfinite(values) & (values != nodata)]
        samples.append(BandSample(values.size, good.size,
                                  float(good.min()) if good.size else math.nan,
                                  float(good.max()) if good.size else math.nan))
    return samples


def _read_sample(ds: rasterio.io.DatasetReader) -> np.ndarray:
    side = max(ds.width, ds.height)
    if side <= FULL_SAMPLE_SIDE or ds.overviews(1):
        factor = max(1.0, side / (FULL_SAMPLE_SIDE // 4 if side > FULL_SAMPLE_SIDE else side))
        shape = (ds.count, max(1, round(ds.height / factor)), max(1, round(ds.width / factor)))
        return ds.read(out_shape=shape, resampling=Resampling.nearest)
    block_rows, block_cols = ds.block_shapes[0]
    parts = []
    for row in _window_starts(ds.height, block_rows):
        for col in _window_starts(ds.width, block_cols):
            window = Window(col, row, min(SAMPLE_WINDOW, ds.width), min(SAMPLE_WINDOW, ds.height))
            parts.append(ds.read(window=window).reshape(ds.count, -1))
    return np.concatenate(parts, axis=1)


def _window_starts(size: int, block: int) -> list[int]:
    """:data:`SAMPLE_GRID` window starts spread over ``size``, each at a block's first pixel, so a
    window touches as few blocks as the block size allows (one, for blocks of 64 px or more)."""
    last = max(size - SAMPLE_WINDOW, 0)
    targets = np.linspace(0, last, SAMPLE_GRID).astype(int)
    return sorted({min(int(t) // block * block, last) for t in targets})


def check_samples(samples: Sequence[BandSample], names: Sequence[str], name: str,
                  *, is_float: bool) -> float:
    """Refuse bands without a valid pixel or values outside the DN range; return ``dn_scale``.

    ``names`` are the band names of ``samples`` (same order). Float data whose largest sampled
    value is at most 1.5 is reflectance (``dn_scale`` 10,000); otherwise the values are DN.
    """
    empty = [n for n, s in zip(names, samples, strict=True) if s.n_valid == 0]
    if len(empty) == len(samples):
        total = sum(s.n_sampled for s in samples)
        raise SceneError(f"{name}: no valid pixel in a sample of {total:,} (all nodata, or 0, "
                         "which is no data in Sentinel-2)")
    if empty:
        raise SceneError(f"{name}: band {', '.join(empty)} has no valid pixel (all nodata / 0) "
                         "where the other bands have data")
    vmin = min(s.vmin for s in samples if s.n_valid)
    vmax = max(s.vmax for s in samples if s.n_valid)
    dn_scale = 10000.0 if is_float and vmax <= FLOAT_DN_THRESHOLD else 1.0
    if vmin * dn_scale < -MAX_DN / 64 or vmax * dn_scale > MAX_DN:
        raise SceneError(f"{name}: values {vmin:g}..{vmax:g} lie outside Sentinel-2's DN range "
                         f"0..{MAX_DN:,.0f} (or reflectance 0..{FLOAT_DN_THRESHOLD})")
    return dn_scale


# processing-baseline offset ----------------------------------------------------------------------
def metadata_dn_offset(ds: rasterio.io.DatasetReader, path: Path,
                       dn_scale: float) -> tuple[float, str] | None:
    """The DN offset the file's metadata declares, and where it was found; None when none is.

    Looks, in this order, at ESA's BOA_ADD_OFFSET* / RADIO_ADD_OFFSET* items (dataset or band
    metadata), GDAL band offsets (``ds.offsets`` with ``ds.scales`` 1 or 1e-4), and
    PROCESSING_BASELINE (>= 04.00 means -1,000). Offsets that differ between bands are refused.
    """
    found: set[float] = set()
    tag_sets = [ds.tags()] + [ds.tags(b) for b in ds.indexes]
    for tags in tag_sets:
        for key, value in tags.items():
            if _OFFSET_KEY.match(key):
                found.add(_as_float(value, key, path.name))
    if found:
        return _one_offset(found, path.name), "BOA_ADD_OFFSET / RADIO_ADD_OFFSET metadata"
    band_offsets = set()
    for offset, scale in zip(ds.offsets, ds.scales, strict=True):
        if offset == 0:
            continue
        if math.isclose(scale, 1.0):
            band_offsets.add(offset * dn_scale)
        elif math.isclose(scale, 1e-4):
            band_offsets.add(offset * 10000.0)
        else:
            raise SceneError(f"{path.name}: band scale {scale:g} with offset {offset:g} is not "
                             "Sentinel-2 DN or reflectance")
    if band_offsets:
        return _one_offset(band_offsets, path.name), "band offset metadata"
    for tags in tag_sets:
        for key, value in tags.items():
            if key.upper() == "PROCESSING_BASELINE":
                baseline = _as_float(value, key, path.name)
                return (BASELINE_04_OFFSET if baseline >= 4.0 else 0.0,
                        f"processing baseline {value}")
    return None


def _as_float(value: str, key: str, name: str) -> float:
    try:
        return float(value)
    except ValueError as exc:
        raise SceneError(f"{name}: metadata {key}={value!r} is not a number") from exc


def _one_offset(values: set[float], name: str) -> float:
    if len(values) > 1:
        raise SceneError(f"{name}: bands declare different DN offsets "
                         f"({', '.join(f'{v:g}' for v in sorted(values))})")
    return values.pop()


def resolve_offset(declared: list[tuple[float, str]], given: float | None, name: str) -> float:
    """The scene's DN offset: ``given`` (the --offset option) or what the files declare.

    Refuses files that declare different offsets, and an option that contradicts the files.
    """
    values = {value for value, _ in declared}
    if len(values) > 1:
        raise SceneError(f"{name}: its files declare different DN offsets "
                         f"({', '.join(f'{v:g}' for v in sorted(values))})")
    if given is not None:
        if values and values != {float(given)}:
            raise SceneError(f"{name}: --offset {given:g} contradicts the file's "
                             f"{declared[0][1]} ({declared[0][0]:g})")
        return float(given)
    return values.pop() if values else 0.0
