"""The imagery store: one grid-aligned mosaic per year, warped once at ingest.

An installation keeps its imagery under ``DATA_DIR/imagery/<year>/``:

- ``r<row0>_c<col0>.tif``: one tiled GeoTIFF per block of :data:`BLOCK_CELLS` x BLOCK_CELLS cells
  (``row0``, ``col0``: the block's first cell, multiples of BLOCK_CELLS), in the grid CRS at the
  grid's pixel size (EPSG:6933, 10 m: 1600 x 1600 px), aligned with the cells. Internal tiles of
  4 x 4 cells (400 px), uint16 DN (reflectance x 10,000), nodata 0, ZSTD level 1 with
  horizontal predictor 2 (:data:`COMPRESSION`: it decodes fastest), pixel-interleaved, band
  descriptions = band names.
- ``mosaic.json``: the year's bands, block size, grid and bounding cell range.
- ``mosaic.vrt``: a small VRT listing the block files by relative path, so one rasterio / GDAL
  dataset (QGIS, rio-tiler) reads the whole year.

Why tiled GeoTIFF blocks and not Zarr: no new dependency; a block is one Dask task and one map
tile source; QGIS / GDAL / rio-tiler open the files directly; and replacing one block is one
atomic ``os.replace``. Blocks that hold no valid pixel are not written.

**Validity.** A pixel is valid when it is non-zero in the store (0 is Sentinel-2's "no data").
Ingest writes 0 in *every* band where *any* band is invalid and raises valid values that would
round to 0 to 1 DN, so all bands of a pixel are valid or none is. Readers return float32 DN with
NaN where invalid and a bool ``valid`` mask, the conventions of :class:`imagery.scene.Tile`.

Reading never warps: :meth:`YearMosaic.read` does plain windowed reads of the block files its
window touches, and a window beyond the stored blocks is simply invalid (boundless).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from imagery.bands import normalise_band_name, select_bands
from imagery.grid import CellGrid, CellRange
from imagery.scene import Scene, Tile, read_pixels
from imagery.validate import library_message, quiet_gdal

#: Cells per side of a store block (one GeoTIFF file; one scoring / Dask task).
BLOCK_CELLS = 16
#: Cells per side of a GeoTIFF internal tile (4 x 4 cells = 400 px at 10 m).
TILE_CELLS = 4
#: The stored value of an invalid pixel (Sentinel-2's no-data value).
NODATA = 0
#: GeoTIFF compression of the blocks: ZSTD level 1 with horizontal predictor 2. Measured on the
#: 12-band blocks of the benchmark scene (``bench/store.py --codecs``, CPU seconds per block):
#: decoding 0.047 s (ZSTD 1) vs 0.048 s (ZSTD 9) vs 0.096 s (DEFLATE 6), writing 0.084 s vs
#: 0.154 s vs 0.520 s, the same size. Decoding is what scoring and thumbnails wait for.
COMPRESSION = "zstd"
ZSTD_LEVEL = 1
#: Sub-folder of DATA_DIR that holds the store.
STORE_DIR = "imagery"
#: Name of the per-year description and mosaic files.
MANIFEST = "mosaic.json"
MOSAIC_VRT = "mosaic.vrt"
#: Folder (under the store) where ingest stages blocks before moving them into place.
STAGING_DIR = ".staging"

#: GeoTIFF tag of a block: one "0"/"1" per cell (row-major) telling whether it has valid pixels.
VALID_CELLS_TAG = "MINEWATCH_VALID_CELLS"

_BLOCK_NAME = re.compile(r"^r(\d+)_c(\d+)\.tif$")


class MosaicError(ValueError):
    """A year has no mosaic, or its mosaic does not match the installation's grid."""


def store_root(data_dir: Path) -> Path:
    """The folder of the store of an installation (``DATA_DIR/imagery``)."""
    return Path(data_dir) / STORE_DIR


def year_dir(data_dir: Path, year: int) -> Path:
    """The folder of one year's mosaic."""
    return store_root(data_dir) / str(int(year))


def staging_dir(data_dir: Path, year: int) -> Path:
    """The folder where ingest stages a year's blocks (``DATA_DIR/imagery/.staging/<year>``)."""
    return store_root(data_dir) / STAGING_DIR / str(int(year))


def block_name(block: CellRange) -> str:
    """File name of a block (``r<row0>_c<col0>.tif``)."""
    return f"r{block.row0:06d}_c{block.col0:06d}.tif"


def block_of_name(name: str) -> CellRange | None:
    """The block a file name stands for, or None when it is not a block file name."""
    match = _BLOCK_NAME.match(name)
    if match is None:
        return None
    row0, col0 = int(match.group(1)), int(match.group(2))
    return CellRange(row0, row0 + BLOCK_CELLS, col0, col0 + BLOCK_CELLS)


def blocks_covering(cells: CellRange) -> list[CellRange]:
    """The aligned blocks that together cover ``cells``, row-major."""
    if cells.n_cells == 0:
        return []
    b = BLOCK_CELLS
    return [CellRange(r, r + b, c, c + b)
            for r in range(cells.row0 // b * b, cells.row1, b)
            for c in range(cells.col0 // b * b, cells.col1, b)]


def grid_facts(grid: CellGrid) -> dict[str, float | str]:
    """The grid's CRS, cell and pixel size and origin, as manifests record them."""
    return {"crs": grid.crs, "cell_size_m": grid.cell_size_m, "pixel_size_m": grid.pixel_size_m,
            "origin_x": grid.origin_x, "origin_y": grid.origin_y}


def _tile_px(grid: CellGrid) -> int:
    """Internal GeoTIFF tile side: 4 cells when that is a multiple of 16 px (GeoTIFF's rule)."""
    px = TILE_CELLS * grid.cell_px
    return px if px % 16 == 0 else 256


# reading ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class YearMosaic:
    """The stored mosaic of one year (``root`` = ``DATA_DIR/imagery/<year>``); see the module doc.

    Opening reads only ``mosaic.json``; each read opens the block files it needs for that call
    only, so a YearMosaic can be shared between threads and pickled to Dask workers.
    """

    root: Path
    grid: CellGrid
    year: int
    bands: tuple[str, ...]
    cells: CellRange

    @property
    def name(self) -> str:
        """A display name (``"2021 mosaic"``)."""
        return f"{self.year} mosaic"

    def block_path(self, block: CellRange) -> Path:
        """Path of a block's file (whether or not it exists)."""
        return self.root / block_name(block)

    def blocks(self) -> list[CellRange]:
        """The blocks that hold data, each aligned to BLOCK_CELLS, sorted (row-major)."""
        found = (block_of_name(p.name) for p in self.root.iterdir())
        return sorted((b for b in found if b is not None), key=lambda b: (b.row0, b.col0))

    def cell_range(self) -> CellRange:
        """The bounding range of the cells with valid pixels."""
        return self.cells

    def _picks(self, bands: Sequence[str] | None) -> list[int]:
        if bands is None:
            return list(range(len(self.bands)))
        return select_bands(self.bands, [normalise_band_name(b) for b in bands], what="caller")

    def read(self, pixel_row: int, pixel_col: int, height: int, width: int,
             bands: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(float32 (H, W, B) DN with NaN where invalid, bool (H, W) valid) of a window.

        The window starts at global grid pixel (``pixel_row``, ``pixel_col``); ``bands`` selects
        by name, in the order given (BandMismatchError for bands the year lacks). No warp: plain
        windowed reads of the block files the window touches; outside them pixels are invalid.
        Each block's part is converted and interleaved in one pass; validity is read from the
        first selected band (ingest stores all bands of a pixel as 0 or none).
        """
        if height <= 0 or width <= 0:
            raise ValueError(f"window must be positive, got {height} x {width}")
        indexes = [i + 1 for i in self._picks(bands)]
        pixels = np.empty((height, width, len(indexes)), dtype=np.float32)
        valid = np.zeros((height, width), dtype=bool)
        side = BLOCK_CELLS * self.grid.cell_px
        for br in range(max(pixel_row // side, 0), (pixel_row + height - 1) // side + 1):
            for bc in range(max(pixel_col // side, 0), (pixel_col + width - 1) // side + 1):
                block = CellRange(br * BLOCK_CELLS, (br + 1) * BLOCK_CELLS,
                                  bc * BLOCK_CELLS, (bc + 1) * BLOCK_CELLS)
                path = self.block_path(block)
                if not path.exists():
                    continue
                r0, c0 = max(pixel_row, br * side), max(pixel_col, bc * side)
                r1 = min(pixel_row + height, (br + 1) * side)
                c1 = min(pixel_col + width, (bc + 1) * side)
                window = Window(c0 - bc * side, r0 - br * side, c1 - c0, r1 - r0)
                try:
                    with quiet_gdal(), rasterio.open(path) as ds:
                        data = ds.read(indexes, window=window)
                except (RasterioError, OSError) as exc:
                    raise MosaicError(f"{self.name}: block {path.name} cannot be read "
                                      f"({library_message(exc, path)})") from exc
                part = (slice(r0 - pixel_row, r1 - pixel_row), slice(c0 - pixel_col, c1 - pixel_col))
                pixels[part] = data.transpose(1, 2, 0)
                valid[part] = data[0] != NODATA
        if not valid.all():
            pixels[~valid] = np.nan
        return pixels, valid

    def read_tile(self, cells: CellRange, margin_px: int,
                  bands: Sequence[str] | None = None) -> Tile:
        """The cells of ``cells`` with ``margin_px`` pixels of context on every side, as a Tile."""
        if margin_px < 0:
            raise ValueError("margin_px must be non-negative")
        cp = self.grid.cell_px
        pixels, valid = self.read(cells.row0 * cp - margin_px, cells.col0 * cp - margin_px,
                                  cells.n_rows * cp + 2 * margin_px,
                                  cells.n_cols * cp + 2 * margin_px, bands)
        return Tile(cells=cells, margin_px=margin_px, pixels=pixels, valid=valid)

    def iter_tiles(self, *, tile_cells: int = BLOCK_CELLS, margin_px: int = 0,
                   bands: Sequence[str] | None = None,
                   cells: CellRange | None = None) -> Iterator[Tile]:
        """Tiles of ``tile_cells`` x ``tile_cells`` cells over the stored blocks (or ``cells``).

        Without ``cells`` the stored blocks are walked (a tile never crosses a block edge, so
        ``tile_cells`` >= BLOCK_CELLS means one tile per block; a block without data is skipped);
        tiles go row by row, west to east; every cell is in exactly one tile's interior.
        """
        if tile_cells <= 0:
            raise ValueError("tile_cells must be positive")
        for area in ([cells] if cells is not None else self.blocks()):
            for r0 in range(area.row0, area.row1, tile_cells):
                for c0 in range(area.col0, area.col1, tile_cells):
                    part = CellRange(r0, min(r0 + tile_cells, area.row1),
                                     c0, min(c0 + tile_cells, area.col1))
                    yield self.read_tile(part, margin_px, bands)

    def read_cells(self, cell_ids: Sequence[int] | np.ndarray, *, margin_px: int,
                   bands: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read cells (e.g. training patches) with ``margin_px`` of context around each.

        Returns float32 (N, cp + 2m, cp + 2m, B) pixels in DN (NaN where invalid), in the order
        of ``cell_ids``, and the float32 (N,) fraction of valid pixels in each cell's interior.
        Cells are grouped by store block; each group is read once (the rectangle of its cells,
        with margin) and sliced. Pixels are identical to :meth:`read` of the same window.
        """
        if margin_px < 0:
            raise ValueError("margin_px must be non-negative")
        ids = np.asarray(cell_ids, dtype=np.int64).ravel()
        picks = self._picks(bands)
        cp = self.grid.cell_px
        side = cp + 2 * margin_px
        pixels = np.full((ids.size, side, side, len(picks)), np.nan, dtype=np.float32)
        fraction = np.zeros(ids.size, dtype=np.float32)
        rows, cols = self.grid.row_col(ids)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
            groups.setdefault((r // BLOCK_CELLS, c // BLOCK_CELLS), []).append(i)
        wanted = [self.bands[i] for i in picks]
        for members in groups.values():
            r0, r1 = int(rows[members].min()), int(rows[members].max()) + 1
            c0, c1 = int(cols[members].min()), int(cols[members].max()) + 1
            part, valid = self.read(r0 * cp - margin_px, c0 * cp - margin_px,
                                    (r1 - r0) * cp + 2 * margin_px,
                                    (c1 - c0) * cp + 2 * margin_px, wanted)
            for i in members:
                y, x = (int(rows[i]) - r0) * cp, (int(cols[i]) - c0) * cp
                pixels[i] = part[y:y + side, x:x + side]
                fraction[i] = valid[y + margin_px:y + margin_px + cp,
                                    x + margin_px:x + margin_px + cp].mean()
        return pixels, fraction

    def valid_cells(self, block: CellRange) -> np.ndarray:
        """Ids (int64, sorted) of the block's cells that hold at least one valid pixel.

        Read from the block's :data:`VALID_CELLS_TAG` (no pixel is decoded); empty when the
        block has no file.
        """
        path = self.block_path(block)
        if not path.exists():
            return np.empty(0, dtype=np.int64)
        return block_valid_cells(path, self.grid, block)

    def sample(self, bands: Sequence[str] | None = None, *,
               max_blocks: int = 64, step_px: int = 16) -> dict[str, np.ndarray]:
        """A decimated sample of the year for statistics: {band: float32 1-D DN, NaN-free}.

        Reads every ``step_px``-th pixel of at most ``max_blocks`` blocks spread evenly over the
        stored ones, so the cost is bounded whatever the year's size.
        """
        names = list(self.bands) if bands is None else \
            [b for b in (normalise_band_name(x) for x in bands) if b in self.bands]
        blocks = self.blocks()
        if len(blocks) > max_blocks:
            blocks = [blocks[i] for i in np.linspace(0, len(blocks) - 1, max_blocks).astype(int)]
        parts: list[np.ndarray] = []
        side = BLOCK_CELLS * self.grid.cell_px
        indexes = [self.bands.index(b) + 1 for b in names]
        shape = (len(indexes), max(1, side // step_px), max(1, side // step_px))
        for block in blocks:
            with rasterio.open(self.block_path(block)) as ds:
                data = ds.read(indexes, out_shape=shape, resampling=Resampling.nearest)
            data = data.reshape(len(indexes), -1)
            parts.append(data[:, (data != NODATA).all(axis=0)])
        joined = np.concatenate(parts, axis=1) if parts else np.zeros((len(names), 0), np.uint16)
        return {band: joined[i].astype(np.float32) for i, band in enumerate(names)}


def open_year(data_dir: Path, grid: CellGrid, year: int) -> YearMosaic:
    """The stored mosaic of ``year``; MosaicError when there is none or its grid differs."""
    root = year_dir(data_dir, year)
    try:
        facts = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        raise MosaicError(f"no imagery for {year}: ingest it with "
                          f"`run.py ingest FILE... --year {year}`") from None
    except (OSError, ValueError) as exc:
        raise MosaicError(f"{year} mosaic: {root / MANIFEST} is unreadable ({exc})") from exc
    if facts.get("grid") != grid_facts(grid) or facts.get("block_cells") != BLOCK_CELLS:
        raise MosaicError(f"{year} mosaic was built for grid {facts.get('grid')} with blocks of "
                          f"{facts.get('block_cells')} cells, not this installation's grid")
    return YearMosaic(root=root, grid=grid, year=int(year), bands=tuple(facts["bands"]),
                      cells=CellRange(*facts["cells"]))


# writing ---------------------------------------------------------------------------------------
def block_valid_cells(path: Path, grid: CellGrid, block: CellRange) -> np.ndarray:
    """Ids (int64, sorted) of the cells with valid pixels in a block file, from its tag."""
    with rasterio.open(path) as ds:
        bits = ds.tags().get(VALID_CELLS_TAG)
    if bits is None or len(bits) != block.n_cells:
        raise MosaicError(f"block {path.name} lacks a valid {VALID_CELLS_TAG} tag")
    has = np.frombuffer(bits.encode(), dtype=np.uint8) == ord("1")
    return np.sort(grid.cell_ids_in(block)[has])


def to_store_dn(pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """float32 (H, W, B) DN + bool (H, W) mask -> uint16 (H, W, B) as stored.

    Values are rounded and clipped to 1..65535 where valid (so a valid pixel never reads as
    no data) and 0 in every band where invalid.
    """
    out = np.clip(np.rint(np.nan_to_num(pixels, nan=0.0)), 1, 65535).astype(np.uint16)
    out[~valid] = NODATA
    return out


def merge_keep_existing(stored: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The per-pixel overlap rule: a pixel valid in ``stored`` keeps its value; ``new`` fills only
    pixels invalid in ``stored``. Both uint16 (H, W, B) as stored; returns ``stored`` updated."""
    fill = (stored == NODATA).any(axis=-1) & (new != NODATA).all(axis=-1)
    stored[fill] = new[fill]
    return stored


def warp_into_block(data: np.ndarray, scenes: Sequence[Scene], grid: CellGrid,
                    block: CellRange, bands: Sequence[str]) -> np.ndarray:
    """Warp each scene once onto ``block`` and merge it into ``data`` (uint16 (H, W, B) as
    stored, updated in place and returned) by :func:`merge_keep_existing`, in the order given.

    Each warp is ``imagery.scene.read_pixels`` (bilinear) of the block's window in ``bands``, which
    applies the scene's processing-baseline offset (``Scene.dn_offset``). Raises SceneError when a
    file cannot be decoded.
    """
    cp = grid.cell_px
    for scene in scenes:
        pixels, valid = read_pixels(scene, grid, block.row0 * cp, block.col0 * cp,
                                    block.n_rows * cp, block.n_cols * cp, bands=bands)
        merge_keep_existing(data, to_store_dn(pixels, valid))
        del pixels, valid
    return data


def write_block(path: Path, grid: CellGrid, block: CellRange, data: np.ndarray,
                bands: Sequence[str]) -> None:
    """Write a block (uint16 (H, W, B) as stored) atomically: temporary file, then rename.

    The file's :data:`VALID_CELLS_TAG` records which of its cells hold valid pixels.
    """
    cp = grid.cell_px
    if data.shape[2] != len(bands):
        raise ValueError(f"block data {data.shape} does not match {block} in {len(bands)} bands")
    valid = (data != NODATA).all(axis=-1)
    has = valid.reshape(block.n_rows, cp, block.n_cols, cp).any(axis=(1, 3)).ravel()
    write_grid_tiff(path, grid, block, data, nodata=NODATA, descriptions=bands,
                    tags={VALID_CELLS_TAG: "".join("1" if v else "0" for v in has)})


def write_grid_tiff(path: Path, grid: CellGrid, block: CellRange, data: np.ndarray, *,
                    nodata: int, descriptions: Sequence[str],
                    tags: dict[str, str] | None = None) -> None:
    """Write (H, W, B) ``data`` covering ``block`` as a grid-aligned tiled GeoTIFF (the store's
    compression and tiling, ``data``'s dtype) atomically: temporary file, then rename."""
    cp = grid.cell_px
    height, width, count = data.shape
    if (height, width) != (block.n_rows * cp, block.n_cols * cp) or count != len(descriptions):
        raise ValueError(f"block data {data.shape} does not match {block} in "
                         f"{len(descriptions)} bands")
    path.parent.mkdir(parents=True, exist_ok=True)
    tile = _tile_px(grid)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tif")
    os.close(handle)
    try:
        with rasterio.open(
            tmp, "w", driver="GTiff", width=width, height=height, count=count,
            dtype=data.dtype.name, crs=grid.crs,
            transform=grid.pixel_transform(block.row0 * cp, block.col0 * cp),
            nodata=nodata, tiled=True, blockxsize=tile, blockysize=tile,
            compress=COMPRESSION, zstd_level=ZSTD_LEVEL, predictor=2, interleave="pixel",
        ) as ds:
            ds.write(np.moveaxis(data, -1, 0))
            ds.descriptions = tuple(descriptions)
            if tags:
                ds.update_tags(**tags)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_block(path: Path) -> np.ndarray:
    """A whole block file as uint16 (H, W, B)."""
    with rasterio.open(path) as ds:
        return np.moveaxis(ds.read(), 0, -1)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename, so a
    reader sees the old file or the new one, never a part (the folder is created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_manifest(root: Path, grid: CellGrid, bands: Sequence[str], cells: CellRange) -> None:
    """Write ``mosaic.json`` (bands, block size, grid, bounding cell range) atomically."""
    root.mkdir(parents=True, exist_ok=True)
    facts = {"bands": list(bands), "block_cells": BLOCK_CELLS, "grid": grid_facts(grid),
             "cells": [cells.row0, cells.row1, cells.col0, cells.col1],
             "dtype": "uint16", "nodata": NODATA}
    write_atomic(root / MANIFEST, json.dumps(facts, indent=1) + "\n")


def write_vrt(mosaic: YearMosaic) -> Path:
    """Write ``mosaic.vrt`` over the year's blocks (relative paths) and return its path."""
    grid, blocks = mosaic.grid, mosaic.blocks()
    cp, side = mosaic.grid.cell_px, BLOCK_CELLS * mosaic.grid.cell_px
    rows = [b.row0 * cp for b in blocks] or [0]
    cols = [b.col0 * cp for b in blocks] or [0]
    row0, col0 = min(rows), min(cols)
    height, width = max(rows) + side - row0, max(cols) + side - col0
    t = grid.pixel_transform(row0, col0)
    crs = rasterio.crs.CRS.from_user_input(grid.crs).to_wkt()
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
             f"  <SRS>{escape(crs)}</SRS>",
             f"  <GeoTransform>{t.c!r}, {t.a!r}, 0.0, {t.f!r}, 0.0, {t.e!r}</GeoTransform>"]
    for index, band in enumerate(mosaic.bands, start=1):
        lines += [f'  <VRTRasterBand dataType="UInt16" band="{index}">',
                  f"    <Description>{escape(band)}</Description>",
                  f"    <NoDataValue>{NODATA}</NoDataValue>"]
        for block in blocks:
            y, x = block.row0 * cp - row0, block.col0 * cp - col0
            lines += ["    <SimpleSource>",
                      f'      <SourceFilename relativeToVRT="1">{block_name(block)}'
                      "</SourceFilename>",
                      f"      <SourceBand>{index}</SourceBand>",
                      f'      <SrcRect xOff="0" yOff="0" xSize="{side}" ySize="{side}"/>',
                      f'      <DstRect xOff="{x}" yOff="{y}" xSize="{side}" ySize="{side}"/>',
                      "    </SimpleSource>"]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    path = mosaic.root / MOSAIC_VRT
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def stored_bands(data_dir: Path, year: int) -> tuple[str, ...] | None:
    """The bands of a year's mosaic, or None when the year has none yet."""
    try:
        return tuple(json.loads((year_dir(data_dir, year) / MANIFEST).read_text())["bands"])
    except FileNotFoundError:
        return None


def union_range(ranges: Sequence[CellRange]) -> CellRange:
    """The bounding range of several non-empty ranges (ValueError when there are none)."""
    if not ranges:
        raise ValueError("no cell ranges")
    return CellRange(min(r.row0 for r in ranges), max(r.row1 for r in ranges),
                     min(r.col0 for r in ranges), max(r.col1 for r in ranges))


def ids_range(grid: CellGrid, cell_ids: np.ndarray) -> CellRange:
    """The bounding range of a non-empty set of cell ids."""
    rows, cols = grid.row_col(np.asarray(cell_ids, dtype=np.int64))
    return CellRange(int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1)

