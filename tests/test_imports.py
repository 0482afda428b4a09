"""Labels users bring (``run.py labels import``): points and polygons to cells, value mapping, all
or nothing, idempotent re-import, the export round trip, and the shared coal-mine points."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely
from click.testing import CliRunner
from pyproj import Transformer

from analysis.export import export
from db.store import Store
from pipeline.settings import load_settings
from review.accounts import IMPORT_NAME, AccountError, check_name
from review.imports import (
    BACKGROUND_VALUES,
    MINE_VALUES,
    LabelImportError,
    import_labels,
    parse_mapping,
    target_of,
)
from run import cli
from tests.conftest import SHARED_DATA
from tests.snapshot import snapshot
from tests.test_analysis_status import GRID, block_polygon, build_db, cid

YEAR = 2021
COAL_MINES = SHARED_DATA / "mines_south_africa" / "coal_mines_zaf.geojson"


def centre(r: int, c: int, dx: float = 0.0, dy: float = 0.0) -> shapely.Point:
    """A grid-CRS point at the centre of the block's cell (r, c), moved by (dx, dy) metres."""
    x, y = GRID.cell_centres(np.asarray([cid(r, c)]))
    return shapely.Point(float(x[0]) + dx, float(y[0]) + dy)


def write_features(path: Path, geometries: list, fields: dict[str, list], crs: str = "EPSG:4326",
                   driver: str | None = None, geometry_type: str = "Unknown") -> Path:
    """Write grid-CRS geometries into a vector file in ``crs``."""
    t = Transformer.from_crs(GRID.crs, crs, always_xy=True)
    geoms = shapely.transform(np.asarray(geometries, dtype=object),
                              lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
    pyogrio.raw.write(path, shapely.to_wkb(geoms), [np.asarray(v, dtype=object)
                                                    for v in fields.values()],
                      list(fields), driver=driver, crs=crs, geometry_type=geometry_type)
    return path


@pytest.fixture
def installation(tmp_path):
    """An installation folder whose database has the 10 x 10 test block (imagery 2018-2021,
    scores of m0001) and no labels."""
    build_db(tmp_path / "minewatch.db", labels={}).close()
    return tmp_path


def invoke(data_dir: Path, *args):
    return CliRunner().invoke(cli, ["--data-dir", str(data_dir), *map(str, args)])


def current_labels(data_dir: Path) -> dict[tuple[int, int], str]:
    with Store(data_dir / "minewatch.db") as store:
        rows = store.db.execute("SELECT cell_id, year, label FROM current_labels").fetchall()
    return {(cell, year): label for cell, year, label in rows}


def test_points_and_polygons_label_their_cells(installation):
    small = shapely.box(*centre(8, 8, 100, 100).buffer(50).bounds)   # covers no cell centre
    path = write_features(installation / "labels.geojson", [
        centre(1, 1, 300, -200), centre(1, 2), block_polygon(3, 5, 3, 5), small, centre(6, 6),
        shapely.MultiPoint([centre(0, 5), centre(0, 6)])],
        {"status": ["Mine", 0, "rejected", "YES", None, "true"]}, driver="GeoJSON")
    with Store(installation / "minewatch.db") as store:
        done = import_labels(store, GRID, path, year=YEAR, label_field="status")
        events = store.labels.label_events_by_request_prefix("import:")
        training = {(r["cell_id"], r["year"]): r["label"] for r in store.labels.training_labels()}
    block = {cid(r, c) for r in (3, 4) for c in (3, 4)}
    expected = {cid(1, 1): "mine", cid(1, 2): "background", cid(8, 8): "mine", cid(0, 5): "mine",
                cid(0, 6): "mine", **{cell: "background" for cell in block}}
    assert current_labels(installation) == {(cell, YEAR): lab for cell, lab in expected.items()}
    assert (done.features, done.ignored, done.mines, done.background, done.stored) == (6, 1, 4, 5, 9)
    assert {e["reviewer"] for e in events} == {IMPORT_NAME}
    assert {e["source"] for e in events} == {done.source}
    assert done.source.startswith("labels.geojson sha256:") and len(done.source) == 22 + 64
    assert {k: v for k, v in training.items() if k[1] == YEAR} == {
        (cell, YEAR): lab for cell, lab in expected.items()}


def test_values_map_case_insensitively_and_map_overrides():
    mapping = parse_mapping(["Operating=mine", "closed=Background", "Proposed=ignore", "a=b=mine"])
    assert mapping == {"operating": "mine", "closed": "background", "proposed": "ignore",
                       "a=b": "mine"}
    assert [target_of(v, mapping) for v in ("OPERATING", "Closed", "proposed", "a=b")] == [
        "mine", "background", "ignore", "mine"]
    assert [target_of(v, {}) for v in ("MINE", 1, 1.0, True, "No", 0, "Rejected", "", None,
                                       float("nan"), "skip", "maybe")] == [
        "mine", "mine", "mine", "mine", "background", "background", "background", "ignore",
        "ignore", "ignore", "ignore", None]
    assert target_of("yes", parse_mapping(["yes=background"])) == "background"
    with pytest.raises(LabelImportError, match="VALUE=mine"):
        parse_mapping(["Operating=mines"])
    with pytest.raises(LabelImportError, match="VALUE=mine"):
        parse_mapping(["Operating"])


def test_the_user_guide_lists_the_default_values():
    guide = (Path(__file__).parents[1] / "docs" / "user-guide.md").read_text()
    section = guide.split("## Importing labels")[1].split("\n## ")[0]
    for value in (*MINE_VALUES, *BACKGROUND_VALUES, "skip"):
        assert f"`{value}`" in section


def test_the_import_account_is_reserved():
    for name in ("import", "Import"):
        with pytest.raises(AccountError, match="reserved for imported labels"):
            check_name(name)


@pytest.mark.parametrize(("geometries", "values", "message"), [
    ([centre(1, 1), centre(2, 2), centre(3, 3)], ["mine", "mine", "maybe"],
     "1 feature with a value that is neither mine nor background (feature 2: status='maybe'); "
     "map it with --map"),
    ([centre(1, 1), centre(20, 20)], ["mine", "no"],
     "1 feature outside every ingested cell of 2021 (feature 1 (status='no'))"),
    ([centre(1, 1), centre(1, 1, 200, 200), block_polygon(0, 2, 0, 2)], ["mine", "mine", "0"],
     f"1 cell of 2021 given both labels (cell {cid(1, 1)}: feature 0 (status='mine') says "
     "mine, feature 2 (status='0') says background)"),
])
def test_a_bad_feature_is_one_error_and_stores_nothing(installation, geometries, values, message):
    path = write_features(installation / "bad.gpkg", geometries, {"status": values}, driver="GPKG")
    before = snapshot(installation)
    result = invoke(installation, "labels", "import", path, "--year", YEAR,
                    "--label-field", "status")
    assert result.exit_code == 1
    assert result.output.startswith("Error: bad.gpkg: ") and message in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert snapshot(installation) == before


def test_missing_field_year_or_file_is_one_error(installation):
    path = write_features(installation / "l.geojson", [centre(1, 1)], {"status": ["mine"]},
                          driver="GeoJSON")
    before = snapshot(installation)
    for args, message in (
            ((path, "--year", YEAR, "--label-field", "label"), "no field 'label' (fields: status)"),
            ((path, "--year", 2017, "--label-field", "status"), "no imagery for 2017"),
            ((installation / "none.shp", "--year", YEAR, "--label-field", "status"),
             "none.shp: no such file"),
            ((path, "--year", YEAR, "--label-field", "status", "--map", "x"), "VALUE=mine")):
        result = invoke(installation, "labels", "import", *args)
        assert result.exit_code == 1 and message in result.output, result.output
        assert result.output.count("\n") == 1
    assert snapshot(installation) == before


def test_importing_the_same_file_twice_stores_nothing_twice(installation):
    path = write_features(installation / "pts.shp", [centre(1, 1), centre(2, 2), centre(2, 2, 50)],
                          {"label": ["1", "0", "0"]}, crs="EPSG:32735",
                          driver="ESRI Shapefile", geometry_type="Point")
    args = ("labels", "import", path, "--year", YEAR, "--label-field", "label")
    first = invoke(installation, *args)
    assert first.exit_code == 0, first.output
    assert "3 features, 0 left out; 2021: 1 mine, 1 background cells; 2 labels stored" in first.output
    after_first = snapshot(installation)
    second = invoke(installation, *args)
    assert second.exit_code == 0 and "0 labels stored (imported before: nothing new)" in second.output
    assert snapshot(installation)["tables"]["label_events"] == after_first["tables"]["label_events"]
    assert current_labels(installation) == {(cid(1, 1), YEAR): "mine",
                                            (cid(2, 2), YEAR): "background"}


@pytest.mark.parametrize(("fmt", "extra"), [("geojson", ()), ("gpkg", ("--layer", "cells")),
                                            ("csv", ())])
def test_an_export_imports_back_to_the_same_labels(tmp_path, fmt, extra):
    reviewed, fresh = tmp_path / "reviewed", tmp_path / "fresh"
    reviewed.mkdir()
    fresh.mkdir()
    labels = {cid(2, 2): "mine", cid(5, 5): "background", cid(7, 7): "mine", cid(0, 9): "skip"}
    with build_db(reviewed / "minewatch.db", labels={YEAR: labels}) as store:
        settings = load_settings({"DATA_DIR": str(reviewed)}, environ={})
        export(store, settings, fmt, tmp_path / f"cells.{fmt}", year=YEAR)
    build_db(fresh / "minewatch.db", labels={}).close()
    result = invoke(fresh, "labels", "import", tmp_path / f"cells.{fmt}", "--year", YEAR,
                    "--label-field", "label", *extra)
    assert result.exit_code == 0, result.output
    want = {k: v for k, v in current_labels(reviewed).items() if v != "skip"}
    assert current_labels(fresh) == want and len(want) == 3


def coal_mines_shapefile(folder: Path) -> Path:
    """The shared coal-mine points written as a shapefile (pyogrio), with their Status field."""
    meta, _, wkb, fields = pyogrio.raw.read(COAL_MINES, columns=["Mine Name", "Status"])
    path = folder / "coal_mines.shp"
    pyogrio.raw.write(path, wkb, fields, ["name", "status"], driver="ESRI Shapefile",
                      crs="EPSG:4326", geometry_type="Point")
    return path


def register_cells(store: Store, lonlat: np.ndarray) -> np.ndarray:
    """Register the grid cells under lon/lat points and a 2021 mosaic around them; their ids."""
    ids = np.unique([GRID.cell_at_lonlat(lon, lat) for lon, lat in lonlat])
    rows, cols = GRID.row_col(ids)
    lon, lat = GRID.cell_centres_lonlat(ids)
    store.cells.add_cells(zip(ids.tolist(), rows.tolist(), cols.tolist(), lon.tolist(),
                              lat.tolist(), strict=True))
    store.scenes.add_scene({"year": YEAR, "name": "s.tif", "paths": ["s.tif"], "bands": ["B2"],
                            "crs": "EPSG:32735", "row0": int(rows.min()), "row1": int(rows.max()) + 1,
                            "col0": int(cols.min()), "col1": int(cols.max()) + 1, "stretch": {},
                            "synthetic": 1})
    return ids


@pytest.mark.shared_data
def test_the_coal_mine_points_import_as_a_shapefile(tmp_path):
    if not COAL_MINES.exists():
        pytest.skip("shared coal-mine points absent")
    path = coal_mines_shapefile(tmp_path)
    features = json.loads(COAL_MINES.read_text())["features"]
    lonlat = np.asarray([f["geometry"]["coordinates"] for f in features])
    statuses = [f["properties"]["Status"] for f in features]
    with Store(tmp_path / "minewatch.db") as store:
        register_cells(store, lonlat[:40])       # imagery under the first 40 mines only
    before = snapshot(tmp_path)
    mapping = ("--map", "Operating=mine", "--map", "Closed=mine", "--map", "Mothballed=mine",
               "--map", "Proposed=background", "--map", "Shelved=ignore", "--map",
               "Cancelled=ignore")
    args = ("labels", "import", path, "--year", YEAR, "--label-field", "status", *mapping)
    refused = invoke(tmp_path, *args)
    assert refused.exit_code == 1 and "outside every ingested cell of 2021" in refused.output
    assert "feature 40 (status=" in refused.output and snapshot(tmp_path) == before
    unmapped = invoke(tmp_path, "labels", "import", path, "--year", YEAR, "--label-field", "status")
    assert unmapped.exit_code == 1 and "status='Proposed'" in unmapped.output
    with Store(tmp_path / "minewatch.db") as store:
        register_cells(store, lonlat)
    conflicting = invoke(tmp_path, *args)     # proposed mines share cells with operating ones
    assert conflicting.exit_code == 1 and "given both labels (cell " in conflicting.output
    assert "(status='Operating') says mine" in conflicting.output
    assert snapshot(tmp_path)["tables"]["label_events"] == []
    args = (*args[:-len(mapping)], "--map", "Operating=mine", "--map", "Closed=mine", "--map",
            "Mothballed=mine", "--map", "Proposed=ignore", "--map", "Shelved=ignore", "--map",
            "Cancelled=background")
    done = invoke(tmp_path, *args)
    assert done.exit_code == 0, done.output
    wanted = {"Operating": "mine", "Closed": "mine", "Mothballed": "mine",
              "Cancelled": "background"}
    expected = {(GRID.cell_at_lonlat(lon, lat), YEAR): wanted[status]
                for (lon, lat), status in zip(lonlat, statuses, strict=True) if status in wanted}
    assert current_labels(tmp_path) == expected and len(expected) > 50
