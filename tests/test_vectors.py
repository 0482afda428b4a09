"""Reading polygon files: formats, CRS, and every kind of bad input."""

from __future__ import annotations

import json

import pytest
import shapely

from imagery.vectors import VectorError, read_features, read_polygons
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


def write_layer(path, geometries, *, crs="EPSG:4326", driver="GPKG", layer=None, append=False):
    import pyogrio

    pyogrio.raw.write(path, geometry=shapely.to_wkb(geometries), field_data=[], fields=[],
                      crs=crs, geometry_type="Polygon", driver=driver, layer=layer, append=append)
    return path


def write_zipped_shapefile(folder, zip_name):
    import zipfile

    write_layer(folder / "m.shp", [shapely.Polygon(SQUARE["coordinates"][0])],
                driver="ESRI Shapefile")
    with zipfile.ZipFile(folder / zip_name, "w") as archive:
        for part in folder.glob("m.*"):
            archive.write(part, part.name)
    return folder / zip_name


def renamed_shapefile(folder, stem):
    """A shapefile whose files are called ``stem``.* (pyogrio cannot write every legal name)."""
    write_layer(folder / "m.shp", [shapely.Polygon(SQUARE["coordinates"][0])],
                driver="ESRI Shapefile")
    for part in folder.glob("m.*"):
        part.rename(folder / f"{stem}{part.suffix}")
    return folder / f"{stem}.shp"


KML = ('<?xml version="1.0"?><kml xmlns="http://www.opengis.net/kml/2.2"><Document><Placemark>'
       '<name>pit</name><Polygon><outerBoundaryIs><LinearRing><coordinates>29,-26 29.01,-26 '
       '29.01,-25.99 29,-25.99 29,-26</coordinates></LinearRing></outerBoundaryIs></Polygon>'
       '</Placemark></Document></kml>')


@pytest.mark.parametrize("make", [
    lambda p: write_bytes(p / "pits.kml", KML.encode()),
    lambda p: write_zipped_shapefile(p, "mines.zip"),
    lambda p: write_zipped_shapefile(p, "mines!2021.zip"),
    lambda p: write_geojson(p / "mines!v2.geojson", [SQUARE]),
    lambda p: renamed_shapefile(p, "mines!v2"),
])
def test_kml_zips_and_any_file_name_read(tmp_path, make, recwarn):
    layer = read_polygons(make(tmp_path), to_crs="EPSG:6933")
    assert len(layer) == 1 and 1.0e6 < shapely.area(layer.geometries[0]) < 1.2e6
    assert not [w for w in recwarn if "pyogrio" in str(w.filename) or str(tmp_path) in str(w.message)]


def test_a_file_of_several_layers_needs_one_named(tmp_path, recwarn):
    path = write_layer(tmp_path / "two.gpkg", [shapely.Polygon(SQUARE["coordinates"][0])],
                       layer="mines")
    write_layer(path, [shapely.box(29, -26, 29.1, -25.9)], layer="plants", append=True)
    with pytest.raises(VectorError, match=r"two.gpkg has 2 layers \(mines, plants\).*--layer"):
        read_polygons(path, to_crs="EPSG:6933")
    assert 1.0e8 < shapely.area(read_polygons(path, to_crs="EPSG:6933", layer="plants")
                                .geometries[0]) < 1.2e8
    with pytest.raises(VectorError, match="no layer 'roads'"):
        read_polygons(path, to_crs="EPSG:6933", layer="roads")
    assert not [w for w in recwarn if str(tmp_path) in str(w.message)]


UNCLOSED = ('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, '
            '"geometry": {"type": "Polygon", "coordinates": [[[29, -26], [29.01, -26], '
            '[29.01, -25.99], [29, -25.99]]]}}]}')
#: Valid in EPSG:4326; in EPSG:6933 (y = sin(latitude)) its spike's tip crosses the long edge.
SPIKE = {"type": "Polygon", "coordinates": [[[0, 0], [10, 40], [10, 0], [5.1, 0], [5, 19.5],
                                             [4.9, 0], [0, 0]]]}
FLAT = {"type": "Polygon", "coordinates": [[[29, -26], [29.01, -26], [29.02, -26], [29, -26]]]}


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: write_bytes(p / "unclosed.geojson", UNCLOSED.encode()),
     "feature 0: .*closed linestring.*--repair"),
    (lambda p: write_bytes(p / "nan.geojson", json.dumps({"type": "Polygon", "coordinates": [
        [[29, -26], [float("nan"), -26], [29.01, -25.99], [29, -26]]]}).encode()),
     "non-finite coordinates in the file .*feature 0"),
    (lambda p: write_geojson(p / "range.geojson", [{"type": "Polygon", "coordinates": [
        [[290, -26], [291, -26], [291, -25], [290, -26]]]}]), "outside longitude -180..180"),
    (lambda p: write_geojson(p / "spike.geojson", [SQUARE, SPIKE]),
     "invalid geometries after projection to EPSG:6933 .feature 1: Self-intersection"),
])
def test_geometry_checked_in_the_file_and_after_projection(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(VectorError, match=message) as error:
        read_polygons(path, to_crs="EPSG:6933")
    assert str(error.value).startswith(path.name)


def test_repair_keeps_polygons_and_never_changes_dimension(tmp_path):
    spike = read_polygons(write_geojson(tmp_path / "spike.geojson", [SPIKE]), to_crs="EPSG:6933",
                          repair=True).geometries
    unclosed = read_polygons(write_bytes(tmp_path / "u.geojson", UNCLOSED.encode()),
                             to_crs="EPSG:6933", repair=True).geometries
    for geometries in (spike, unclosed):
        assert shapely.is_valid(geometries).all()
        assert set(shapely.get_type_id(geometries).tolist()) <= {3, 6}
        assert (shapely.area(geometries) > 0).all()
    with pytest.raises(VectorError, match="flat.geojson: 1 geometries have no area left once "
                                          "repaired .feature 0"):
        read_polygons(write_geojson(tmp_path / "flat.geojson", [FLAT]), to_crs="EPSG:6933",
                      repair=True)


def test_read_features_takes_points_and_polygons_and_keeps_file_positions(tmp_path):
    point = {"type": "Point", "coordinates": [29.005, -25.995]}
    line = {"type": "LineString", "coordinates": [[29, -26], [29.01, -25.99]]}
    path = write_geojson(tmp_path / "f.geojson", [point, None, SQUARE],
                         [{"v": "a"}, {"v": "b"}, {"v": "c"}])
    layer = read_features(path, to_crs="EPSG:6933")
    assert [g.geom_type for g in layer.geometries] == ["Point", "Polygon"]
    assert layer.positions.tolist() == [0, 2] and layer.column("v") == ["a", "c"]
    with pytest.raises(VectorError, match="expected points or polygons, found LineString"):
        read_features(write_geojson(tmp_path / "l.geojson", [point, line]), to_crs="EPSG:6933")
    bad = write_geojson(tmp_path / "nan.geojson", [{"type": "Point", "coordinates": [200, 10]}])
    with pytest.raises(VectorError, match="feature 0: spans x 200"):
        read_features(bad, to_crs="EPSG:6933")


def test_read_features_reads_a_csv_from_its_lon_lat_columns(tmp_path):
    (tmp_path / "p.csv").write_text("label,lon,lat\nmine,29.005,-25.995\n")
    layer = read_features(tmp_path / "p.csv", to_crs="EPSG:4326")
    assert shapely.get_coordinates(layer.geometries).tolist() == [[29.005, -25.995]]
    (tmp_path / "q.csv").write_text("label,x\nmine,1\n")
    with pytest.raises(VectorError, match=r"a CSV needs lon and lat columns\), found no geometry"):
        read_features(tmp_path / "q.csv", to_crs="EPSG:4326")
