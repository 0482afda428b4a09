"""Shared fixtures: the default cell grid and a factory that writes small real GeoTIFFs."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from imagery.grid import CellGrid

#: The real data folder (../shared/data next to the repository), absent in a plain checkout.
SHARED_DATA = Path(__file__).parents[1] / ".." / "shared" / "data"

#: A UTM zone 35S origin near Jagersfontein, South Africa (about 25.4 E, 29.8 S).
UTM35S = "EPSG:32735"
UTM35S_ORIGIN = (540_000.0, 6_700_000.0)

MakeGeoTiff = Callable[..., Path]


@pytest.fixture
def grid() -> CellGrid:
    """The default grid: EPSG:6933, 1 km cells, 10 m pixels."""
    return CellGrid()


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded random generator, so every test raster is the same on every run."""
    return np.random.default_rng(20240601)


@pytest.fixture
def make_geotiff(tmp_path: Path) -> MakeGeoTiff:
    """Factory that writes a real GeoTIFF with rasterio and returns its path.

    ``make_geotiff(path, array, *, crs=UTM35S, transform=None, dtype=None, descriptions=None,
    nodata=None, tags=None, driver="GTiff", **profile)``: ``path`` is relative to ``tmp_path``
    (or absolute); ``array`` is (bands, H, W) or (H, W) for one band; ``transform`` defaults to
    10 m pixels at :data:`UTM35S_ORIGIN`; ``dtype`` defaults to the array's; ``crs=None`` writes
    a raster without CRS; extra keywords go to the profile (e.g. ``tiled=True``).
    """

    def write(
        path: str | os.PathLike,
        array: np.ndarray,
        *,
        crs: str | None = UTM35S,
        transform: Affine | None = None,
        dtype: str | np.dtype | None = None,
        descriptions: Sequence[str | None] | None = None,
        nodata: float | None = None,
        tags: Mapping[str, str] | None = None,
        driver: str = "GTiff",
        **profile: object,
    ) -> Path:
        data = np.asarray(array)
        if data.ndim == 2:
            data = data[np.newaxis]
        if data.ndim != 3:
            raise ValueError(f"array must be (bands, H, W) or (H, W), got {data.shape}")
        target = Path(path)
        if not target.is_absolute():
            target = tmp_path / target
        target.parent.mkdir(parents=True, exist_ok=True)
        dtype = np.dtype(dtype or data.dtype)
        count, height, width = data.shape
        options = dict(
            driver=driver, count=count, height=height, width=width, dtype=dtype.name,
            transform=transform or Affine(10.0, 0.0, UTM35S_ORIGIN[0], 0.0, -10.0, UTM35S_ORIGIN[1]),
            nodata=nodata,
        )
        if crs is not None:
            options["crs"] = crs
        options.update(profile)
        with rasterio.open(target, "w", **options) as ds:
            ds.write(data.astype(dtype, copy=False))
            if descriptions is not None:
                if len(descriptions) != count:
                    raise ValueError(f"{len(descriptions)} descriptions for {count} bands")
                for index, description in enumerate(descriptions, start=1):
                    if description is not None:
                        ds.set_band_description(index, description)
            if tags:
                ds.update_tags(**tags)
        return target

    return write
