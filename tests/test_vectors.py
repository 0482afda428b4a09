"""Reading polygon files: formats, CRS, and every kind of bad input."""

from __future__ import annotations

import json

import pytest
import shapely

from imagery.vectors import VectorError, read_polygons
from tests.conftest import SHARED_DATA


def write_geojson(path, geometries, properties=None):
    features = [{"type": "Feature", "properties": (properties or [{}] * len(geometries))[i],
                 "geometry": g} for i, g in enumerate(geometries)]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def write_bytes(path, content):
    path.write_bytes(content)
    return path


SQUARE = {"type": "Polygon", "coordinates": [[[29, -26], [29.01, -26], [29.01, -25.99], [29, -25.99],
                                              [29, -26]]]}
BOWTIE = {"type": "Polygon", "coordinates": [[[29, -26], [29.01, -25.99], [29.01, -26], [29, -25.99],
                                              [29, -26]]]}


def test_reprojects_to_the_grid_crs(tmp_path):
    layer = read_polygons(write_geojson(tmp_path / "m.geojson", [SQUARE], [{"name": "a"}]),
                          to_crs="EPSG:6933")
    assert len(layer) == 1 and layer.column("name") == ["a"]
    assert 1.0e6 < shapely.area(layer.geometries[0]) < 1.2e6  # about 1 x 1.1 km at 26 S
    assert layer.column("designation", "unknown") == ["unknown"]


@pytest.mark.parametrize(("name", "driver"), [("m.gpkg", "GPKG"), ("m.shp", "ESRI Shapefile")])
def test_geopackage_and_shapefile_in_another_crs(tmp_path, name, driver):
    import pyogrio

    path = tmp_path / name
    geometry = shapely.box(700_000, 7_130_000, 701_000, 7_131_000)
    pyogrio.raw.write(path, geometry=shapely.to_wkb([geometry]), field_data=[], fields=[],
                      crs="EPSG:32735", geometry_type="Polygon", driver=driver)
    layer = read_polygons(path, to_crs="EPSG:32735")
    assert shapely.equals(layer.geometries[0], geometry)
    assert 0.9e6 < shapely.area(read_polygons(path, to_crs="EPSG:6933").geometries[0]) < 1.1e6


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.geojson", "no such file"),
        (lambda p: write_bytes(p / "empty.geojson", b""), "empty"),
        (lambda p: write_bytes(p / "junk.geojson", b"{not json"), "not a readable"),
        (lambda p: write_geojson(p / "none.geojson", []), "no features"),
        (lambda p: write_geojson(p / "pts.geojson", [{"type": "Point", "coordinates": [29, -26]}]),
         "expected polygons"),
        (lambda p: write_geojson(p / "bowtie.geojson", [BOWTIE]), "invalid geometries"),
    ],
)
def test_bad_files_name_the_file_and_problem(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(VectorError, match=message) as error:
        read_polygons(path, to_crs="EPSG:6933")
    assert path.name in str(error.value)


def test_repair_mends_invalid_geometries(tmp_path):
    layer = read_polygons(write_geojson(tmp_path / "b.geojson", [BOWTIE]), to_crs="EPSG:6933",
                          repair=True)
    assert shapely.is_valid(layer.geometries).all()


@pytest.mark.shared_data
def test_real_mine_polygons_and_boundaries():
    mines = SHARED_DATA / "mines_south_africa" / "mine_polygons_zaf.geojson"
    if not mines.exists():
        pytest.skip("../shared/data is absent (real mine polygons)")
    layer = read_polygons(mines, to_crs="EPSG:6933")
    assert len(layer) == 11 and shapely.is_valid(layer.geometries).all()
    borders = read_polygons(SHARED_DATA / "boundaries" / "zaf_lso_swz_ne10m_mainland.geojson",
                            to_crs="EPSG:6933")
    assert 1.1e12 < shapely.area(borders.geometries).sum() < 1.4e12  # ~1.27 M km²
