"""Labels users bring: a vector layer of points or polygons whose field says mine or background.

``run.py labels import FILE --year Y --label-field F`` calls :func:`import_labels`. The file is
read by ``imagery.vectors.read_features`` (every check of the other vector commands, ``--layer``;
a CSV is read from its lon/lat columns, so an export of any format imports back). Each feature
labels cells of the year's ingested imagery:

- a point labels the cell it falls in;
- a polygon labels the cells whose centre it covers. By centre, not by touching: a cell
  footprint touches its eight neighbours, so "touches" would spread an exported cell (or a
  digitised pit) over its neighbourhood; the centre is the rule that gives every exported cell
  back exactly. A polygon smaller than a cell that covers no centre labels the cell its
  representative point lies in.

Values map to mine / background (``MINE_VALUES``, ``BACKGROUND_VALUES``, case-insensitive;
``mapping`` overrides); an empty value or ``skip`` leaves the feature out (``IGNORE_VALUES``).
All or nothing: every feature is checked first (unknown values, features outside every ingested
cell, one cell-year given both labels) and any problem is one error naming the feature and the
value, with nothing stored. The labels are stored as label events of the reserved account
``IMPORT_NAME`` with the file's name and sha256 as their source, in one transaction; each
cell-year's idempotency key derives from the file's hash, so importing the same file again stores
nothing twice. They count for training like reviews (``store.labels.training_labels``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from db.store import Store
from imagery.grid import CellGrid
from imagery.vectors import POLYGONAL_IDS, VectorLayer, read_features
from pipeline.ingest import cells_of_year, check_year
from review.accounts import IMPORT_NAME

#: Values (case-insensitive) read as a mine by default.
MINE_VALUES: tuple[str, ...] = ("mine", "1", "true", "yes")
#: Values (case-insensitive) read as background by default.
BACKGROUND_VALUES: tuple[str, ...] = ("background", "0", "false", "no", "rejected")
#: Values that leave a feature out by default (no label to bring).
IGNORE_VALUES: tuple[str, ...] = ("", "skip")
#: What ``--map VALUE=TARGET`` may map a value to.
TARGETS: tuple[str, ...] = ("mine", "background", "ignore")
#: Sidecars of a shapefile whose bytes are part of its content (the values live in the .dbf).
SHAPEFILE_PARTS: tuple[str, ...] = (".shp", ".shx", ".dbf", ".prj", ".cpg")
#: Problems listed in one error before "and N more".
SHOWN = 3


class LabelImportError(ValueError):
    """A label file that cannot be imported; nothing was stored."""


@dataclass(frozen=True)
class ImportResult:
    """What one ``import_labels`` call found and stored."""

    source: str        # file name and sha256, as the label events' source
    year: int
    features: int      # features read
    ignored: int       # features left out (empty or ignored values)
    mines: int         # cells labelled mine
    background: int    # cells labelled background
    stored: int        # label events stored by this call (0 when the file was imported before)


def parse_mapping(pairs: Sequence[str]) -> dict[str, str]:
    """``["Operating=mine", "Closed=background"]`` as {value (case-folded): target}."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        value, sep, target = pair.rpartition("=")
        if not sep or target.strip().lower() not in TARGETS:
            raise LabelImportError(f"--map {pair!r}: expected VALUE={'|'.join(TARGETS)}")
        mapping[value.strip().casefold()] = target.strip().lower()
    return mapping


def value_text(value: Any) -> str:
    """A field value as the text the mapping matches: None and NaN are "", 1.0 is "1"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def target_of(value: Any, mapping: Mapping[str, str]) -> str | None:
    """mine, background or ignore for a field value (``mapping`` first), None when unknown."""
    text = value_text(value).casefold()
    if text in mapping:
        return mapping[text]
    for target, values in (("mine", MINE_VALUES), ("background", BACKGROUND_VALUES),
                           ("ignore", IGNORE_VALUES)):
        if text in values:
            return target
    return None


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes (a shapefile's with its sidecars, in a fixed order)."""
    parts = [path]
    if path.suffix.lower() == ".shp":
        parts = sorted((p for p in path.parent.iterdir()
                        if p.stem == path.stem and p.suffix.lower() in SHAPEFILE_PARTS),
                       key=lambda p: p.suffix.lower())
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.read_bytes())
    return digest.hexdigest()


def _count(n: int, noun: str) -> str:
    """ "1 feature", "3 features"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _listed(items: Sequence[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return "; ".join(items[:SHOWN]) + more


def _cell_of_xy(grid: CellGrid, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Ids of the grid cells holding points (grid CRS)."""
    cols = np.floor((x - grid.origin_x) / grid.cell_size_m).astype(np.int64)
    rows = np.floor((grid.origin_y - y) / grid.cell_size_m).astype(np.int64)
    return np.asarray(grid.cell_id(rows, cols), dtype=np.int64)


def _grouped(owner: np.ndarray, values: np.ndarray, n: int) -> list[np.ndarray]:
    """``values`` split by ``owner`` (0..n-1): the unique values of each owner."""
    if n == 0:
        return []
    order = np.argsort(owner, kind="stable")
    parts = np.split(values[order], np.searchsorted(owner[order], np.arange(1, n)))
    return [np.unique(part) for part in parts]


def feature_cells(grid: CellGrid, geometries: np.ndarray, candidates: np.ndarray
                  ) -> list[np.ndarray]:
    """Per feature (grid CRS), the ``candidates`` cells it labels (see the module doc)."""
    n = len(geometries)
    polygonal = np.isin(shapely.get_type_id(geometries), POLYGONAL_IDS)
    cells = [np.zeros(0, dtype=np.int64)] * n
    if polygonal.any():
        centres = shapely.points(*grid.cell_centres(candidates))
        hits, found = shapely.STRtree(centres).query(geometries[polygonal], predicate="covers")
        covered = _grouped(np.flatnonzero(polygonal)[hits], candidates[found], n)
        cells = [covered[i] if polygonal[i] else cells[i] for i in range(n)]
    anchored = np.flatnonzero([not polygonal[i] or cells[i].size == 0 for i in range(n)])
    anchors = np.asarray([geometries[i] if not polygonal[i] else
                          shapely.point_on_surface(geometries[i]) for i in anchored], dtype=object)
    xy, owner = shapely.get_coordinates(anchors, return_index=True)
    ids = _cell_of_xy(grid, xy[:, 0], xy[:, 1])
    inside = np.isin(ids, candidates)
    for i, part in zip(anchored, _grouped(owner[inside], ids[inside], len(anchored)), strict=True):
        cells[i] = part
    return cells


def _field_values(layer: VectorLayer, field: str) -> list[Any]:
    if field not in layer.attributes:
        raise LabelImportError(f"{layer.path.name}: no field {field!r} (fields: "
                               f"{', '.join(layer.attributes) or 'none'})")
    return layer.column(field)


def _targets(layer: VectorLayer, field: str, mapping: Mapping[str, str]) -> list[str]:
    """Each feature's target; an unknown value is an error naming the features."""
    values = _field_values(layer, field)
    targets = [target_of(v, mapping) for v in values]
    unknown = [f"feature {layer.positions[i]}: {field}={value_text(values[i])!r}"
               for i, t in enumerate(targets) if t is None]
    if unknown:
        raise LabelImportError(
            f"{layer.path.name}: {_count(len(unknown), 'feature')} with a value that is neither mine nor "
            f"background ({_listed(unknown)}); map it with --map VALUE=mine|background|ignore")
    return [t for t in targets if t is not None]


def _cell_labels(layer: VectorLayer, field: str, targets: list[str], cells: list[np.ndarray],
                 year: int) -> dict[int, str]:
    """{cell id: label} of the labelled features; a feature outside every ingested cell, or a
    cell given both labels, is an error naming the features and values."""
    values = _field_values(layer, field)
    described = [f"feature {layer.positions[i]} ({field}={value_text(values[i])!r})"
                 for i in range(len(targets))]
    outside = [described[i] for i, t in enumerate(targets) if t != "ignore" and cells[i].size == 0]
    if outside:
        raise LabelImportError(f"{layer.path.name}: {_count(len(outside), 'feature')} outside "
                               f"every ingested cell of {year} ({_listed(outside)})")
    labels: dict[int, str] = {}
    by: dict[int, int] = {}
    conflicts: dict[int, str] = {}     # cell -> its first conflict
    for i, target in enumerate(targets):
        if target == "ignore":
            continue
        for cell in cells[i].tolist():
            if labels.setdefault(cell, target) != target and cell not in conflicts:
                conflicts[cell] = (f"cell {cell}: {described[by[cell]]} says {labels[cell]}, "
                                   f"{described[i]} says {target}")
            by.setdefault(cell, i)
    if conflicts:
        raise LabelImportError(f"{layer.path.name}: {_count(len(conflicts), 'cell')} of {year} "
                               f"given both labels ({_listed(list(conflicts.values()))})")
    return labels


def _require_import_account(store: Store) -> None:
    """Refuse when an account holds the reserved import name (one made before it was reserved):
    its decisions and the imported ones would be one reviewer's."""
    taken = store.accounts.account_for_login(IMPORT_NAME)
    if taken is not None:
        raise LabelImportError(f"an account named {taken['name']!r} exists, but imported labels "
                               f"are recorded as {IMPORT_NAME!r}; disable and rename it first")


def import_labels(store: Store, grid: CellGrid, path: str | Path, *, year: int,
                  label_field: str, mapping: Mapping[str, str] | None = None,
                  layer: str | None = None) -> ImportResult:
    """Import a label file into ``year``'s labels, all or nothing (see the module doc)."""
    path = Path(path)
    check_year(year)
    features = read_features(path, to_crs=grid.crs, layer=layer)
    targets = _targets(features, label_field, mapping or {})
    cells = feature_cells(grid, features.geometries, cells_of_year(store, grid, year))
    labels = _cell_labels(features, label_field, targets, cells, year)
    _require_import_account(store)
    digest = file_digest(path)
    source = f"{path.name} sha256:{digest}"
    prefix = f"import:{digest[:32]}:{year}:"
    rows = [{"cell_id": cell, "year": year, "label": label, "reviewer": IMPORT_NAME,
             "request_id": f"{prefix}{cell}", "source": source}
            for cell, label in sorted(labels.items())]
    with store.atomic():
        done = {e["request_id"] for e in store.labels.label_events_by_request_prefix(prefix)}
        stored = store.labels.import_label_events(r for r in rows if r["request_id"] not in done)
    mines = sum(1 for label in labels.values() if label == "mine")
    return ImportResult(source=source, year=year, features=len(features),
                        ignored=targets.count("ignore"), mines=mines,
                        background=len(labels) - mines, stored=stored)
