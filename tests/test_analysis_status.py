"""Cell statuses, mine points, the mining area and the territory/protected-area loads, checked
against hand-computed cases on a small real database."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import shapely

from analysis import AnalysisError
from analysis.area import area_km2, mining_area
from analysis.protected import load_protected_areas, protected_areas, protected_hits
from analysis.status import mine_points, resolve_model, resolve_year, year_cells
from analysis.territory import load_territory, refresh_territory_cells
from db.store import Store
from imagery.grid import CellGrid
from imagery.vectors import VectorError
from review.cards import next_cards

GRID = CellGrid()
YEARS = (2018, 2019, 2020, 2021)
BASE_ROW, BASE_COL = GRID.row_col(GRID.cell_at_lonlat(29.0, -25.9))
R = 750.0


def cid(r: int, c: int) -> int:
    """Cell id at offset (r, c) from the test block's corner."""
    return int(GRID.cell_id(BASE_ROW + r, BASE_COL + c))


#: 2021 scores of the special cells; every other cell of the 10 x 10 block scores 0.1.
A, B, C, D, E, N = cid(2, 2), cid(2, 3), cid(5, 5), cid(7, 7), cid(0, 0), cid(9, 9)
SCORES_2021 = {A: 0.9, B: 0.8, C: 0.7, D: 0.2, E: 0.6, N: None}
LABELS_2021 = {A: "mine", C: "background", D: "mine"}


def build_db(path: Path, *, scores: dict[int, dict[int, float | None]] | None = None,
             labels: dict[int, dict[int, str]] | None = None) -> Store:
    """A 10 x 10 block of real grid cells near (29.0 E, 25.9 S), a model m0001 (threshold 0.5)
    with scores for 2018-2021 and review labels. Default: SCORES_2021 / LABELS_2021 in every year."""
    store = Store(path)
    ids = np.asarray([cid(r, c) for r in range(10) for c in range(10)], dtype=np.int64)
    lon, lat = GRID.cell_centres_lonlat(ids)
    rows, cols = GRID.row_col(ids)
    store.cells.add_cells(zip(ids.tolist(), rows.tolist(), cols.tolist(), lon.tolist(), lat.tolist(),
                              strict=True))
    store.models.add_model({"version": "m0001", "parent": None, "path": "/m/m0001.keras",
                            "bands": ["B2"], "threshold": 0.5, "metrics": {}, "training": {}},
                           activate=True)
    scores = scores or {year: SCORES_2021 for year in YEARS}
    labels = labels if labels is not None else {year: LABELS_2021 for year in YEARS}
    for year, special in scores.items():
        scene = store.scenes.add_scene({"year": year, "name": f"s{year}.tif", "paths": [f"/s{year}.tif"],
                                        "bands": ["B2"], "crs": "EPSG:32735", "row0": BASE_ROW,
                                        "row1": BASE_ROW + 10, "col0": BASE_COL, "col1": BASE_COL + 10,
                                        "stretch": {}, "synthetic": 1})
        values = [special.get(int(i), 0.1) for i in ids]
        store.scores.write_scores(year, "m0001", scene, ids.tolist(),
                                  [np.nan if v is None else v for v in values],
                                  [0.5] * len(ids), [0.2 if v is None else 1.0 for v in values])
    events = [{"cell_id": c, "year": y, "label": lab, "reviewer": "ann"}
              for y, per_cell in labels.items() for c, lab in per_cell.items()]
    if events:
        store.labels.import_label_events(events)
    return store


def block_polygon(r0: int, r1: int, c0: int, c1: int) -> shapely.Polygon:
    """Grid-CRS polygon of the block's rows r0..r1-1 and columns c0..c1-1."""
    minx, _, _, maxy = GRID.cell_bounds(cid(r0, c0))
    _, miny, maxx, _ = GRID.cell_bounds(cid(r1 - 1, c1 - 1))
    return shapely.box(minx, miny, maxx, maxy)


def write_polygons(path: Path, polygons: list, crs: str, fields: dict[str, list] | None = None,
                   driver: str | None = None) -> Path:
    """Write grid-CRS polygons into a vector file in ``crs`` (reprojected by pyproj)."""
    from pyproj import Transformer

    t = Transformer.from_crs(GRID.crs, crs, always_xy=True)
    geoms = shapely.transform(np.asarray(polygons, dtype=object),
                              lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
    fields = fields or {}
    pyogrio.raw.write(path, shapely.to_wkb(geoms), [np.asarray(v, dtype=object) for v in
                                                    fields.values()],
                      list(fields), driver=driver, crs=crs, geometry_type="Polygon")
    return path


@pytest.fixture
def store(tmp_path):
    with build_db(tmp_path / "mw.db") as opened:
        yield opened


def test_statuses_of_a_year(store):
    cells = year_cells(store, resolve_model(store), 2021)
    status = dict(zip(cells.cell_id.tolist(), cells.status.tolist(), strict=True))
    assert status[A] == "confirmed" and status[D] == "confirmed"   # label mine, whatever the score
    assert status[B] == "predicted" and status[E] == "predicted"
    assert status[C] == "rejected"
    assert status[N] == "background" and np.isnan(cells.score[cells.cell_id == N][0])
    assert cells.count("background") == 100 - 5
    points = mine_points(cells, GRID)
    assert sorted(points.cell_id.tolist()) == sorted([A, B, D, E])
    x, y = GRID.cell_centres(np.asarray([A]))
    i = points.cell_id.tolist().index(A)
    assert (points.x[i], points.y[i]) == (x[0], y[0])


def test_skip_is_not_a_review(tmp_path):
    with build_db(tmp_path / "s.db", labels={2021: {B: "skip"}}) as store:
        cells = year_cells(store, resolve_model(store), 2021)
        assert cells.status[cells.cell_id == B][0] == "predicted"


def test_model_and_year_errors(store, tmp_path):
    model = resolve_model(store)
    assert resolve_year(store, model) == 2021
    with pytest.raises(AnalysisError, match="no scores for year 2017.*2018, 2019, 2020, 2021"):
        resolve_year(store, model, 2017)
    with pytest.raises(AnalysisError, match="unknown model version 'm9'"):
        resolve_model(store, "m9")
    with Store(tmp_path / "empty.db") as empty, pytest.raises(AnalysisError, match="no active model"):
        resolve_model(empty)


def lens(r: float, d: float) -> float:
    """Overlap area of two circles of radius r whose centres are d apart (d < 2r)."""
    return 2 * r * r * math.acos(d / (2 * r)) - d / 2 * math.sqrt(4 * r * r - d * d)


def test_three_points_a_km_apart():
    # 3 circles of 750 m, centres 1 km apart in a row: neighbours overlap, the ends do not.
    expected = 3 * math.pi * R * R - 2 * lens(R, 1000.0)
    assert expected == pytest.approx(4_527_067, abs=1)   # by hand: 3 x 1,767,146 - 2 x 387,186
    area = mining_area(np.array([0.0, 1000.0, 2000.0]), np.zeros(3), R)
    assert area.geom_type == "Polygon"
    assert area_km2(area) == pytest.approx(expected / 1e6, rel=2e-3)   # a 64-gon per circle
    far = mining_area(np.array([0.0, 5000.0]), np.zeros(2), R)
    assert area_km2(far) == pytest.approx(2 * math.pi * R * R / 1e6, rel=2e-3)
    assert area_km2(mining_area(np.zeros(0), np.zeros(0), R)) == 0.0
    with pytest.raises(ValueError):
        mining_area(np.zeros(1), np.zeros(1), 0)


def test_territory_in_another_crs_drops_cells(store, tmp_path):
    # Rows 1-9 of the block, written in UTM 35S as a GeoPackage: row 0 (cell E) is outside.
    path = write_polygons(tmp_path / "t.gpkg", [block_polygon(1, 10, 0, 10)], "EPSG:32735",
                          {"name": ["Block"]})
    done = load_territory(store, GRID, path)
    assert (done.name, done.cells_inside, done.cells_outside) == ("Block", 90, 10)
    assert done.area_km2 == pytest.approx(90, rel=1e-6)
    cells = year_cells(store, resolve_model(store), 2021, inside_only=True)
    assert E not in cells.cell_id and A in cells.cell_id and len(cells) == 90
    # the review queue drops the outside cells too
    queue = store.leases.queue_candidates("m0001", 2021, "score", "ann", 200)
    assert E not in {row["cell_id"] for row in queue}
    assert store.leases.count_queue("m0001", 2021) == 90 - 3 - 1   # minus labelled A, C, D and N
    assert store.leases.count_queue_fast("m0001", 2021) == store.leases.count_queue("m0001", 2021)
    for strategy in ("uncertainty", "score", "random", "mixed"):  # the app's queue, every order
        cards = next_cards(store, reviewer=f"r-{strategy}", strategy=strategy, year=2021, n=40)
        assert cards and E not in {card["cell_id"] for card in cards}
    # cells added later are classified on refresh
    extra = cid(-1, 0)
    lon, lat = GRID.cell_centres_lonlat(np.asarray([extra]))
    store.cells.add_cells([(extra, BASE_ROW - 1, BASE_COL, float(lon[0]), float(lat[0]))])
    assert refresh_territory_cells(store, GRID) == 1
    assert store.territory.count_territory_cells() == {"inside": 90, "outside": 11}


def test_territory_selection_and_bad_files(store, tmp_path):
    path = write_polygons(tmp_path / "two.geojson",
                          [block_polygon(0, 5, 0, 10), block_polygon(5, 10, 0, 10)], "EPSG:4326",
                          {"name": ["North", "South"], "iso3": ["NNN", "SSS"]}, driver="GeoJSON")
    done = load_territory(store, GRID, path, where="iso3=sss")
    assert (done.name, done.cells_inside) == ("South", 50)
    done = load_territory(store, GRID, path, where="ISO3=NNN,SSS")
    assert (done.name, done.cells_inside) == ("North + South", 100)
    with pytest.raises(AnalysisError, match=r"two.geojson: no feature with iso3 = XXX"):
        load_territory(store, GRID, path, where="iso3=XXX")
    with pytest.raises(AnalysisError, match="no attribute 'iso2'"):
        load_territory(store, GRID, path, where="iso2=ZA")
    empty = tmp_path / "empty.geojson"
    empty.write_text("")
    with pytest.raises(VectorError, match="empty.geojson: the file is empty"):
        load_territory(store, GRID, empty)
    bowtie = tmp_path / "bowtie.geojson"
    bowtie.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", '
                      '"properties": {}, "geometry": {"type": "Polygon", "coordinates": '
                      '[[[29, -26], [29.1, -25.9], [29.1, -26], [29, -25.9], [29, -26]]]}}]}')
    with pytest.raises(VectorError, match="bowtie.geojson: 1 invalid geometries"):
        load_territory(store, GRID, bowtie)
    assert store.territory.territory()["name"] == "North + South"   # a failed load changes nothing


def test_protected_areas_with_and_without_names(store, tmp_path):
    named = write_polygons(tmp_path / "pa.geojson", [block_polygon(2, 3, 2, 3)], "EPSG:4326",
                           {"NAME": ["Reserve"], "DESIG_ENG": ["Nature Reserve"]}, driver="GeoJSON")
    done = load_protected_areas(store, GRID, named)
    assert (done.count, done.name_field, done.designation_field, done.notes) == (
        1, "NAME", "DESIG_ENG", [])
    anonymous = write_polygons(tmp_path / "anon.geojson",
                               [block_polygon(2, 3, 2, 3), block_polygon(7, 8, 7, 8)], "EPSG:4326",
                               driver="GeoJSON")
    done = load_protected_areas(store, GRID, anonymous)
    assert done.unnamed == 2 and "unnamed area 1" in done.notes[0]
    areas = protected_areas(store)
    assert [a.name for a in areas] == ["unnamed area 1", "unnamed area 2"]
    points = mine_points(year_cells(store, resolve_model(store), 2021), GRID)
    mining = mining_area(points.x, points.y, R)
    hits = protected_hits(areas, points, mining)
    assert [row["points"] for row in hits.rows] == [1, 1]    # A in area 1, D in area 2
    assert hits.points_inside == 2
    # a cell's corners are 707 m from its centre, inside the 750 m buffer: the mining area
    # inside each 1-km protected area is that whole cell
    assert hits.rows[0]["mining_km2"] == pytest.approx(1.0, rel=1e-3)
    assert hits.share == pytest.approx(2.0 / area_km2(mining))
