"""Per-cell fractions of a binary mask raster (e.g. a tailings-dam mask), on the cell grid.

A mask GeoTIFF (1 = feature, 0 = not; any CRS) is warped onto the grid's pixels with nearest
resampling and averaged per cell. This is how a labelled segmentation data set (such as the
Brazilian tailings patches) becomes per-cell labels and the oracle of a simulated reviewer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject, transform_bounds

from imagery.grid import CellGrid
from imagery.validate import SceneError, library_message, quiet_gdal


def mask_cell_fractions(
    mask_path: str | Path, grid: CellGrid
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell_ids, feature_fraction, valid_fraction) for every cell the mask touches.

    ``feature_fraction`` is the share of the cell's *valid* mask pixels that are 1 (NaN where the
    cell has no valid pixel); ``valid_fraction`` the share of the cell the mask covers.
    """
    path = Path(mask_path)
    if not path.exists():
        raise SceneError(f"{path.name}: no such file")
    try:
        with quiet_gdal(), rasterio.open(path) as ds:
            if ds.crs is None:
                raise SceneError(f"{path.name}: the mask has no CRS")
            bounds = transform_bounds(ds.crs, grid.crs, *ds.bounds, densify_pts=21)
            cells = grid.cells_covering(bounds)
            cp = grid.cell_px
            warped = np.full((cells.n_rows * cp, cells.n_cols * cp), 255, dtype=np.uint8)
            reproject(source=rasterio.band(ds, 1), destination=warped, src_transform=ds.transform,
                      src_crs=ds.crs, src_nodata=ds.nodata, dst_transform=grid.pixel_transform(
                          cells.row0 * cp, cells.col0 * cp),
                      dst_crs=grid.crs, dst_nodata=255, resampling=Resampling.nearest)
    except RasterioError as error:
        raise SceneError(f"{path.name}: not a readable mask raster "
                         f"({library_message(error, path)})") from error
    blocks = warped.reshape(cells.n_rows, cp, cells.n_cols, cp).swapaxes(1, 2).reshape(
        cells.n_rows, cells.n_cols, cp * cp)
    valid = blocks != 255
    n_valid = valid.sum(axis=-1)
    positives = ((blocks > 0) & valid).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(n_valid > 0, positives / np.maximum(n_valid, 1), np.nan)
    return (grid.cell_ids_in(cells), fraction.ravel().astype(np.float32),
            (n_valid / (cp * cp)).ravel().astype(np.float32))
