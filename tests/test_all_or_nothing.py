"""Commands that change stored state are all or nothing: a failing train --mines, territory,
protected-areas, ingest or demo leaves every table row and every file of the installation as
it was, and says why in one ``Error:`` line, never a traceback."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from pyproj import Transformer

from db.store import Store
from run import cli
from tests.snapshot import snapshot
from tests.territory import CRS, ORIGIN, write_territory

FAST_ENV = {"MINEWATCH_PIXEL_SIZE_M": "50", "MINEWATCH_FCN_WIDTHS": "4,8,8",
            "MINEWATCH_TRAIN_EPOCHS": "2"}
SIZE_KM = 8


def invoke(data_dir, *args):
    return CliRunner(env=FAST_ENV).invoke(cli, ["--data-dir", str(data_dir), *map(str, args)])


def lonlat_ring(x0, y0, x1, y1):
    to_lonlat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    return [list(to_lonlat.transform(x, y)) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1),
                                                         (x0, y0))]


def geojson(path, rings, text=None):
    """A GeoJSON of one polygon per ring (``text``: the file's raw text instead)."""
    features = [{"type": "Feature", "properties": {"name": f"area {i}"},
                 "geometry": {"type": "Polygon", "coordinates": [ring]}}
                for i, ring in enumerate(rings or [])]
    path.write_text(text or json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def one_line_error(result, *words, progress=False):
    """Exit 1 with one ``Error:`` line holding ``words`` (with ``progress``, after or among the
    command's progress lines), no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert "Traceback" not in result.output and "Warning" not in result.output
    assert [line.startswith("Error: ") for line in lines].count(True) == 1, result.output
    assert progress or len(lines) == 1, result.output
    for word in words:
        assert word in result.output, result.output


@pytest.fixture(scope="module")
def installation(tmp_path_factory):
    """An installation with a scene, seed labels, a model, a territory and 2 protected areas."""
    root = tmp_path_factory.mktemp("installed")
    territory = write_territory(root / "files", size_km=SIZE_KM, n_mines=8)
    data = root / "instance"
    x0, y1 = ORIGIN
    x1, y0 = x0 + SIZE_KM * 1000, y1 - SIZE_KM * 1000
    border = geojson(root / "files" / "border.geojson", [lonlat_ring(x0, y0, x1, y1)])
    parks = root / "files" / "parks.gpkg"
    pyogrio.raw.write(parks, geometry=shapely.to_wkb([shapely.box(x0, y0, x0 + 2000, y0 + 2000),
                                                      shapely.box(x1 - 2000, y0, x1, y0 + 2000)]),
                      field_data=[np.array(["a", "b"], dtype=object)], fields=["name"],
                      crs=CRS, geometry_type="Polygon", driver="GPKG")
    for args in (["ingest", territory.scene, "--year", 2021],
                 ["train", "--mines", territory.mines, "--year", 2021],
                 ["territory", border], ["protected-areas", parks]):
        result = invoke(data, *args)
        assert result.exit_code == 0, result.output
    return root


def write_bad(folder, kind, scene=None):
    """A broken input of ``kind``, written into ``folder`` (``scene``: a good GeoTIFF to
    truncate); returns its path."""
    x0, y1 = ORIGIN
    if kind == "tiny_mines":  # one mine cell: too few to train on
        return geojson(folder / "tiny.geojson", [lonlat_ring(x0 + 2100, y1 - 2900, x0 + 2200,
                                                             y1 - 2800)])
    if kind == "unclosed":
        ring = lonlat_ring(x0 + 1000, y1 - 3000, x0 + 3000, y1 - 1000)[:-1]
        return geojson(folder / "unclosed.geojson", [ring])
    if kind == "two_layers":
        path = folder / "two.gpkg"
        for i, name in enumerate(("mines", "plants")):
            pyogrio.raw.write(path, geometry=shapely.to_wkb([shapely.box(x0, y1 - 1000, x0 + 1000,
                                                                         y1)]),
                              field_data=[], fields=[], crs=CRS, geometry_type="Polygon",
                              driver="GPKG", layer=name, append=bool(i))
        return path
    if kind == "far_away":
        return geojson(folder / "far.geojson", [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]])
    if kind == "nan":
        return geojson(folder / "nan.geojson", None, text=json.dumps({
            "type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                                                       "geometry": {"type": "Polygon", "coordinates": [
                [[29, -26], [float("nan"), -26], [29.1, -25.9], [29, -26]]]}}]}))
    if kind == "invalid_projected":  # valid in degrees, its spike crosses an edge in EPSG:6933
        return geojson(folder / "spike.geojson", [[[0, 0], [10, 40], [10, 0], [5.1, 0],
                                                   [5, 19.5], [4.9, 0], [0, 0]]])
    if kind == "out_of_range":
        return geojson(folder / "range.geojson", [[[200, -26], [201, -26], [201, -25], [200, -26]]])
    if kind == "corrupt_tif":
        good = scene.read_bytes()
        path = folder / "corrupt.tif"
        path.write_bytes(good[: len(good) // 3])
        return path
    path = folder / "three_bands.tif"  # "three_bands"
    with rasterio.open(path, "w", driver="GTiff", width=40, height=40, count=3, dtype="uint16",
                       crs=CRS, transform=rasterio.transform.from_origin(*ORIGIN, 50, 50)) as ds:
        ds.write(np.full((3, 40, 40), 1000, dtype=np.uint16))
    return path


@pytest.mark.parametrize(("command", "kind", "words"), [
    (["train", "--year", "2021", "--mines"], "tiny_mines", ["too few to train on some and validate"]),
    (["train", "--year", "2021", "--mines"], "unclosed", ["unclosed.geojson", "feature 0"]),
    (["train", "--year", "2021", "--mines"], "two_layers", ["two.gpkg", "mines, plants",
                                                           "--layer"]),
    (["territory"], "far_away", ["far.geojson", "no ingested cell", "lon 0.000..1.000",
                                 "the imagery lon 28."]),
    (["territory"], "nan", ["nan.geojson", "non-finite"]),
    (["protected-areas"], "invalid_projected", ["spike.geojson", "after projection to EPSG:6933"]),
    (["protected-areas"], "out_of_range", ["range.geojson", "longitude -180..180"]),
    (["ingest", "--year", "2021"], "corrupt_tif", ["corrupt.tif"]),
    (["ingest", "--year", "2021"], "three_bands", ["three_bands.tif"]),
])
def test_a_failing_command_changes_nothing(installation, tmp_path, command, kind, words):
    data = tmp_path / "instance"
    shutil.copytree(installation / "instance", data)
    bad = write_bad(tmp_path, kind, installation / "files" / "scene.tif")
    before = snapshot(data)
    result = invoke(data, *command, bad)
    one_line_error(result, *words)
    assert snapshot(data) == before


def test_a_layer_is_chosen_by_name(installation, tmp_path):
    data = tmp_path / "instance"
    shutil.copytree(installation / "instance", data)
    result = invoke(data, "protected-areas", write_bad(tmp_path, "two_layers"), "--layer", "plants")
    assert result.exit_code == 0 and "1 protected areas loaded" in result.output, result.output
    result = invoke(data, "protected-areas", tmp_path / "two.gpkg", "--layer", "roads")
    one_line_error(result, "no layer 'roads'", "mines, plants")


def test_a_failing_demo_leaves_nothing_behind(tmp_path, monkeypatch):
    import simulation.demo

    def failing(*args, **kwargs):
        raise ValueError("scoring failed on purpose")

    data = tmp_path / "instance"
    Store(data / "minewatch.db").close()
    before = snapshot(data)
    monkeypatch.setattr(simulation.demo, "score_years", failing)  # after ingest, seeds and training
    one_line_error(invoke(data, "demo", "--size-km", SIZE_KM), "scoring failed on purpose",
                   progress=True)
    assert snapshot(data) == before
    with Store(data / "minewatch.db") as store:
        assert not store.scenes.scenes()  # so `demo --if-empty` builds it next time


def test_demo_sizes_too_small_to_train_are_refused_up_front(tmp_path):
    result = invoke(tmp_path / "instance", "demo", "--size-km", 7)
    assert result.exit_code == 2 and "8<=x<=200" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "instance" / "demo").exists()
