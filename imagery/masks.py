"""Binary masks (e.g. tailings dams) on the cell grid: per-cell fractions and the mask layer.

A mask GeoTIFF (1 = feature, 0 = not; any CRS) is warped onto the grid's pixels with nearest
resampling and averaged per cell. This is how a labelled segmentation data set (such as the
Brazilian tailings patches) becomes per-cell labels and the oracle of a simulated reviewer.

**The mask layer.** Where seed labels come from masks (or from mine polygons, rasterised), the
per-pixel truth is kept next to the imagery store, so training can supervise the FCN's map and
not only its cell score: ``DATA_DIR/masks/<year>/`` holds one grid-aligned 1-band uint8 GeoTIFF
per store block that has any mask (``r<row0>_c<col0>.tif``, the store's block names, tiling and
compression; 1 = feature, 0 = not, :data:`MASK_NODATA` = no mask here) and ``layer.json`` (grid,
block size, where the mask came from). Writing a year's layer replaces the previous one whole.
Paths derive from DATA_DIR, so the installation folder can move.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.features import rasterize
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window

from imagery.grid import CellGrid, CellRange
from imagery.store import (
    BLOCK_CELLS,
    block_name,
    blocks_covering,
    grid_facts,
    write_atomic,
    write_grid_tiff,
)
from imagery.validate import SceneError, library_message, quiet_gdal

#: Sub-folder of DATA_DIR holding the mask layers, one folder per year.
MASK_DIR = "masks"
#: The description file of a year's mask layer.
LAYER_MANIFEST = "layer.json"
#: Stored value of a pixel without mask (0 and 1 are the mask's values).
MASK_NODATA = 255


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
    cells = _mask_cells(path, grid)
    cp = grid.cell_px
    warped = _warp_mask(path, grid, cells)
    blocks = warped.reshape(cells.n_rows, cp, cells.n_cols, cp).swapaxes(1, 2).reshape(
        cells.n_rows, cells.n_cols, cp * cp)
    valid = blocks != MASK_NODATA
    n_valid = valid.sum(axis=-1)
    positives = (blocks == 1).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(n_valid > 0, positives / np.maximum(n_valid, 1), np.nan)
    return (grid.cell_ids_in(cells), fraction.ravel().astype(np.float32),
            (n_valid / (cp * cp)).ravel().astype(np.float32))


# the mask layer ---------------------------------------------------------------------------------
class MaskLayerError(ValueError):
    """A year's mask layer is unreadable or was built for another grid."""


def mask_layer_dir(data_dir: Path, year: int) -> Path:
    """The folder of one year's mask layer (``DATA_DIR/masks/<year>``)."""
    return Path(data_dir) / MASK_DIR / str(int(year))


@dataclass(frozen=True)
class MaskLayer:
    """A year's stored mask layer (see the module doc); each read opens the blocks it needs."""

    root: Path
    grid: CellGrid
    year: int
    source: str

    def read_cells(self, cell_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 (N, cp, cp): each cell's interior as stored, MASK_NODATA where no mask covers it
        (a cell in a block without a file is MASK_NODATA throughout). One window read per store
        block, covering that block's requested cells."""
        ids = np.asarray(cell_ids, dtype=np.int64).ravel()
        cp = self.grid.cell_px
        out = np.full((ids.size, cp, cp), MASK_NODATA, dtype=np.uint8)
        rows, cols = self.grid.row_col(ids)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
            groups.setdefault((r // BLOCK_CELLS, c // BLOCK_CELLS), []).append(i)
        for (br, bc), members in groups.items():
            block = CellRange(br * BLOCK_CELLS, (br + 1) * BLOCK_CELLS,
                              bc * BLOCK_CELLS, (bc + 1) * BLOCK_CELLS)
            path = self.root / block_name(block)
            if not path.exists():
                continue
            r0, c0 = int(rows[members].min()), int(cols[members].min())
            r1, c1 = int(rows[members].max()) + 1, int(cols[members].max()) + 1
            window = Window((c0 - block.col0) * cp, (r0 - block.row0) * cp,
                            (c1 - c0) * cp, (r1 - r0) * cp)
            try:
                with quiet_gdal(), rasterio.open(path) as ds:
                    part = ds.read(1, window=window)
            except (RasterioError, OSError) as exc:
                raise MaskLayerError(f"{self.year} mask layer: block {path.name} cannot be read "
                                     f"({library_message(exc, path)})") from exc
            for i in members:
                y, x = (int(rows[i]) - r0) * cp, (int(cols[i]) - c0) * cp
                out[i] = part[y:y + cp, x:x + cp]
        return out


def open_mask_layer(data_dir: Path, grid: CellGrid, year: int) -> MaskLayer | None:
    """The year's mask layer, or None when it has none; MaskLayerError when its description is
    unreadable or it was built for another grid or block size."""
    root = mask_layer_dir(data_dir, year)
    try:
        facts = json.loads((root / LAYER_MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise MaskLayerError(f"{year} mask layer: {root / LAYER_MANIFEST} is unreadable "
                             f"({exc})") from exc
    if facts.get("grid") != grid_facts(grid) or facts.get("block_cells") != BLOCK_CELLS:
        raise MaskLayerError(f"{year} mask layer was built for grid {facts.get('grid')} with "
                             f"blocks of {facts.get('block_cells')} cells, not this "
                             "installation's grid")
    return MaskLayer(root=root, grid=grid, year=int(year), source=str(facts.get("source", "")))


def write_mask_layer(data_dir: Path, grid: CellGrid, year: int,
                     blocks: Iterable[tuple[CellRange, np.ndarray]], source: str) -> MaskLayer:
    """Store a year's mask layer from (block, uint8 (H, W) array) pairs, replacing the old one
    (``stage_mask_layer`` then ``commit_mask_layer``): a failure leaves the old layer intact."""
    return commit_mask_layer(data_dir, stage_mask_layer(data_dir, grid, year, blocks, source))


def _staging_dir(data_dir: Path) -> Path:
    return Path(data_dir) / MASK_DIR / ".staging"


def stage_mask_layer(data_dir: Path, grid: CellGrid, year: int,
                     blocks: Iterable[tuple[CellRange, np.ndarray]], source: str) -> MaskLayer:
    """Write a year's mask layer aside, into ``DATA_DIR/masks/.staging/<year>``, without
    touching the year's current layer; a block with no mask pixel is not written.

    The staged layer reads like a stored one (training can use it) until
    ``commit_mask_layer`` moves it into place or ``discard_mask_layer`` removes it; a failure
    while writing leaves nothing staged.
    """
    staged = _staging_dir(data_dir) / str(int(year))
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    layer = MaskLayer(root=staged, grid=grid, year=int(year), source=source)
    try:
        for block, data in blocks:
            if (data != MASK_NODATA).any():
                write_grid_tiff(staged / block_name(block), grid, block, data[..., None],
                                nodata=MASK_NODATA, descriptions=["mask"])
        write_atomic(staged / LAYER_MANIFEST, json.dumps(
            {"grid": grid_facts(grid), "block_cells": BLOCK_CELLS, "source": source,
             "values": {"feature": 1, "background": 0, "nodata": MASK_NODATA}}, indent=1) + "\n")
    except BaseException:
        discard_mask_layer(data_dir, layer)
        raise
    return layer


def commit_mask_layer(data_dir: Path, staged: MaskLayer) -> MaskLayer:
    """Move a staged layer into the year's place by rename (the old layer is removed after)."""
    final = mask_layer_dir(data_dir, staged.year)
    old = _staging_dir(data_dir) / f"{final.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staged.root.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    discard_mask_layer(data_dir, None)
    return MaskLayer(root=final, grid=staged.grid, year=staged.year, source=staged.source)


def discard_mask_layer(data_dir: Path, staged: MaskLayer | None) -> None:
    """Remove a staged layer (None: none), and the staging folder once it is empty."""
    if staged is not None:
        shutil.rmtree(staged.root, ignore_errors=True)
    with contextlib.suppress(OSError):
        _staging_dir(data_dir).rmdir()


def mask_raster_blocks(grid: CellGrid, mask_paths: Sequence[str | Path]
                       ) -> Iterator[tuple[CellRange, np.ndarray]]:
    """(block, uint8 (H, W)) for every store block the mask rasters touch, one block at a time.

    Each mask is warped onto the block's pixels (nearest); where masks overlap, a feature pixel
    wins, and a pixel no mask covers is MASK_NODATA.
    """
    ranges = [(Path(path), _mask_cells(Path(path), grid)) for path in mask_paths]
    touched = {(b.row0, b.col0): b for _, cells in ranges for b in blocks_covering(cells)}
    cp = grid.cell_px
    for key in sorted(touched):
        block = touched[key]
        out = np.full((block.n_rows * cp, block.n_cols * cp), MASK_NODATA, dtype=np.uint8)
        for path, cells in ranges:
            if _overlaps(cells, block):
                _merge_mask(out, _warp_mask(path, grid, block))
        yield block, out


def _mask_cells(path: Path, grid: CellGrid) -> CellRange:
    """The cells a mask raster's bounds touch (SceneError when it is unreadable or has no CRS)."""
    try:
        with quiet_gdal(), rasterio.open(path) as ds:
            if ds.crs is None:
                raise SceneError(f"{path.name}: the mask has no CRS")
            bounds = transform_bounds(ds.crs, grid.crs, *ds.bounds, densify_pts=21)
    except RasterioError as error:
        raise SceneError(f"{path.name}: not a readable mask raster "
                         f"({library_message(error, path)})") from error
    return grid.cells_covering(bounds)


def _overlaps(a: CellRange, b: CellRange) -> bool:
    return a.row0 < b.row1 and b.row0 < a.row1 and a.col0 < b.col1 and b.col0 < a.col1


def _warp_mask(path: Path, grid: CellGrid, cells: CellRange) -> np.ndarray:
    """uint8 0/1 of a mask raster on ``cells``' pixels, MASK_NODATA where it has no data."""
    cp = grid.cell_px
    warped = np.full((cells.n_rows * cp, cells.n_cols * cp), MASK_NODATA, dtype=np.uint8)
    try:
        with quiet_gdal(), rasterio.open(path) as ds:
            source = ds.read(1)
            nodata = ds.nodata
            binary = np.where(source > 0, 1, 0).astype(np.uint8)
            if nodata is not None:
                binary[source == nodata] = MASK_NODATA
            reproject(source=binary, destination=warped, src_transform=ds.transform,
                      src_crs=ds.crs, src_nodata=MASK_NODATA,
                      dst_transform=grid.pixel_transform(cells.row0 * cp, cells.col0 * cp),
                      dst_crs=grid.crs, dst_nodata=MASK_NODATA, resampling=Resampling.nearest)
    except RasterioError as error:
        raise SceneError(f"{path.name}: not a readable mask raster "
                         f"({library_message(error, path)})") from error
    return warped


def _merge_mask(out: np.ndarray, new: np.ndarray) -> None:
    """Merge ``new`` into ``out`` in place: covered pixels fill uncovered ones, 1 beats 0."""
    covered = new != MASK_NODATA
    fill = covered & ((out == MASK_NODATA) | (new > out))
    out[fill] = new[fill]


def polygon_blocks(grid: CellGrid, polygons: np.ndarray, cell_ids: np.ndarray
                   ) -> Iterator[tuple[CellRange, np.ndarray]]:
    """(block, uint8 (H, W)) rasterised polygons (grid CRS; 1 inside, pixel centres) over the
    cells ``cell_ids`` only, MASK_NODATA elsewhere, for every store block holding such a cell."""
    ids = np.asarray(cell_ids, dtype=np.int64)
    if ids.size == 0:
        return
    cp = grid.cell_px
    rows, cols = grid.row_col(ids)
    tree = shapely.STRtree(polygons)
    keys = np.unique(np.stack([rows // BLOCK_CELLS, cols // BLOCK_CELLS], axis=1), axis=0)
    for br, bc in keys.tolist():
        block = CellRange(br * BLOCK_CELLS, (br + 1) * BLOCK_CELLS,
                          bc * BLOCK_CELLS, (bc + 1) * BLOCK_CELLS)
        inside = (rows // BLOCK_CELLS == br) & (cols // BLOCK_CELLS == bc)
        top_left = grid.pixel_transform(block.row0 * cp, block.col0 * cp)
        bottom_right = grid.pixel_transform(block.row1 * cp, block.col1 * cp)
        x0, y1, x1, y0 = top_left.c, top_left.f, bottom_right.c, bottom_right.f
        near = polygons[tree.query(shapely.box(x0, y0, x1, y1), predicate="intersects")]
        shape = (block.n_rows * cp, block.n_cols * cp)
        burnt = rasterize(((g, 1) for g in near), out_shape=shape, fill=0, dtype="uint8",
                          transform=grid.pixel_transform(block.row0 * cp, block.col0 * cp)
                          ) if len(near) else np.zeros(shape, dtype=np.uint8)
        out = np.full(shape, MASK_NODATA, dtype=np.uint8)
        for r, c in zip(rows[inside] - block.row0, cols[inside] - block.col0, strict=True):
            part = (slice(int(r) * cp, (int(r) + 1) * cp), slice(int(c) * cp, (int(c) + 1) * cp))
            out[part] = burnt[part]
        yield block, out


def block_fractions(cells: np.ndarray, block_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-block (feature fraction, covered share) of uint8 (N, cp, cp) mask cells.

    Blocks are ``block_px`` x ``block_px`` pixels (cp a multiple of it). Returns float32 arrays
    (N, cp / block_px, cp / block_px): the share of each block's covered pixels that are 1 (0
    where none is covered) and the share of its pixels that are covered.
    """
    n, cp = cells.shape[0], cells.shape[-1]
    if cells.shape[1:] != (cp, cp) or cp % block_px:
        raise ValueError(f"mask cells {cells.shape} are not square with a side a multiple of "
                         f"{block_px}")
    k = cp // block_px
    blocks = cells.reshape(n, k, block_px, k, block_px)
    covered = (blocks != MASK_NODATA).sum(axis=(2, 4))
    feature = (blocks == 1).sum(axis=(2, 4))
    fraction = np.where(covered > 0, feature / np.maximum(covered, 1), 0.0)
    return fraction.astype(np.float32), (covered / block_px ** 2).astype(np.float32)
