"""Sentinel-2 band sets as data.

A scene declares its bands (GeoTIFF band descriptions, file names, or an explicit option) and a
model declares the bands it was trained on. Names are normalised (``B01`` -> ``B1``, ``b8a`` ->
``B8A``) so both sides compare equal, and a mismatch is an error naming both lists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

#: The seed's 12 Sentinel-2 bands, in the order the seed FCN was trained on (B10, cirrus, dropped).
SEED_BANDS: tuple[str, ...] = (
    "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12",
)
#: All 13 bands of an L1C product, in product order.
L1C_BANDS: tuple[str, ...] = SEED_BANDS[:10] + ("B10",) + SEED_BANDS[10:]
#: Bands that never enter a MineWatch band set (B10 is a cirrus band with no surface signal).
DROPPED_BANDS: frozenset[str] = frozenset({"B10"})
#: The 10 m and 20 m bands of an L2A product, without the 60 m atmospheric bands (B1, B9, B10):
#: the stack many users export.
L2A_10_20M_BANDS: tuple[str, ...] = (
    "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12",
)
#: Native ground resolution of each band in metres.
NATIVE_RESOLUTION_M: dict[str, int] = {
    "B1": 60, "B2": 10, "B3": 10, "B4": 10, "B5": 20, "B6": 20, "B7": 20, "B8": 10,
    "B8A": 20, "B9": 60, "B10": 60, "B11": 20, "B12": 20,
}
#: Bands of the natural-colour (red, green, blue) and false-colour (SWIR2, NIR narrow, red) views.
RGB_BANDS: tuple[str, str, str] = ("B4", "B3", "B2")
FALSE_COLOUR_BANDS: tuple[str, str, str] = ("B12", "B8A", "B4")

_BAND_PATTERN = re.compile(
    r"(?<![A-Za-z0-9])B(?:AND)?[_ ]?0?(1[0-2]|[1-9]|8A)(?![0-9A-Za-z])", re.I
)

#: A band exactly as Sentinel-2 products and Earth Engine name it: B01 / B1 .. B12, B8A.
_STRICT_BAND = re.compile(r"B(0?[1-9]|1[0-2]|8A)", re.I)
#: A resolution suffix after the band in L2A product file names (``..._B02_10m.jp2``).
_RESOLUTION_TOKEN = re.compile(r"\d{2}m")


class BandMismatchError(ValueError):
    """A scene lacks bands that a model (or a view) needs."""


def normalise_band_name(name: str) -> str:
    """Return the canonical name of a band (``'B01'`` -> ``'B1'``, ``'b8a'`` -> ``'B8A'``).

    Raises ValueError when ``name`` names no Sentinel-2 band.
    """
    match = _BAND_PATTERN.search(name.strip())
    if match is None:
        raise ValueError(f"{name!r} is not a Sentinel-2 band name (expected B1..B12 or B8A)")
    return "B" + match.group(1).upper()


def strict_band_name(text: str | None) -> str | None:
    """The canonical band ``text`` names when it is exactly a Sentinel-2 band name, else None.

    ``'B02'``, ``'b8a'`` and ``'B12'`` are bands; ``'band1'``, ``'Band 2'`` or ``'B2 blue'`` are
    not (a generic "band 1" is not Sentinel-2's B1).
    """
    if not text:
        return None
    match = _STRICT_BAND.fullmatch(text.strip())
    return None if match is None else "B" + match.group(1).upper().lstrip("0")


def band_from_filename(stem: str) -> str | None:
    """The band a Sentinel-2 product file name ends with, or None.

    The last ``_``-separated token of ``stem`` (after an optional ``10m`` / ``20m`` / ``60m``
    resolution token) must be exactly a band: ``T35JNK_20220101T080000_B02``, ``s2_B8A``,
    ``..._B11_20m``, ``B03``; ``landsat_band1`` or ``dem_b1x`` name no band.
    """
    tokens = stem.replace("-", "_").replace(".", "_").split("_")
    if len(tokens) > 1 and _RESOLUTION_TOKEN.fullmatch(tokens[-1]):
        tokens.pop()
    return strict_band_name(tokens[-1])


def parse_band_list(names: str | Iterable[str]) -> tuple[str, ...]:
    """Parse ``"B2,B3,B4"`` or an iterable of names into canonical names, rejecting duplicates."""
    items = names.split(",") if isinstance(names, str) else list(names)
    bands = tuple(normalise_band_name(item) for item in items if str(item).strip())
    duplicates = sorted({band for band in bands if bands.count(band) > 1})
    if duplicates:
        raise ValueError(f"band list repeats {', '.join(duplicates)}: {', '.join(bands)}")
    if not bands:
        raise ValueError("band list is empty")
    return bands


def select_bands(
    available: Sequence[str], wanted: Sequence[str], *, what: str = "model"
) -> list[int]:
    """Return the positions of ``wanted`` bands within ``available``.

    Raises BandMismatchError naming both lists when any wanted band is missing.
    """
    missing = [band for band in wanted if band not in available]
    if missing:
        raise BandMismatchError(
            f"the {what} needs bands {', '.join(wanted)} but the scene has {', '.join(available)} "
            f"(missing {', '.join(missing)})"
        )
    return [list(available).index(band) for band in wanted]
