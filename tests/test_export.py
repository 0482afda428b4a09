"""Exports: GeoPackage / GeoJSON / CSV read back with pyogrio and opened by GDAL's ogrinfo; an
export that fails leaves the previous file untouched."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pyogrio
import pytest

from analysis import AnalysisError
from analysis import export as export_module
from analysis.export import export
from analysis.protected import load_protected_areas
from analysis.territory import load_territory
from pipeline.settings import load_settings
from tests.test_analysis_status import A, B, C, D, E, block_polygon, build_db, write_polygons


@pytest.fixture
def loaded(tmp_path):
    with build_db(tmp_path / "mw.db") as store:
        settings = load_settings({"DATA_DIR": str(tmp_path)}, environ={})
        load_territory(store, settings.grid, write_polygons(
            tmp_path / "t.geojson", [block_polygon(1, 10, 0, 10)], "EPSG:4326", driver="GeoJSON"))
        load_protected_areas(store, settings.grid, write_polygons(
            tmp_path / "pa.geojson", [block_polygon(2, 3, 2, 3)], "EPSG:4326",
            {"name": ["Reserve"], "designation": ["Nature Reserve"]}, driver="GeoJSON"))
        yield store, settings, tmp_path


def ogrinfo(path) -> str:
    if shutil.which("ogrinfo") is None:
        pytest.skip("GDAL's ogrinfo (Debian gdal-bin) is not installed")
    done = subprocess.run(["ogrinfo", "-so", "-al", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "ERROR" not in done.stderr, done.stderr
    return done.stdout


def test_geopackage_layers(loaded):
    store, settings, tmp = loaded
    out = tmp / "out.gpkg"
    done = export(store, settings, "gpkg", out, year=2021)
    assert done.layers == {"cells": 90, "mine_points": 3, "mining_area": 1, "protected_hits": 1,
                           "change": 3}
    assert [name for name, _ in pyogrio.list_layers(out)] == list(done.layers)
    info = ogrinfo(out)
    for name, count in done.layers.items():
        assert f"Layer name: {name}\n" in info and f"Feature Count: {count}\n" in info
    meta, _, geometry, fields = pyogrio.raw.read(out, layer="cells")
    values = dict(zip(meta["fields"], fields, strict=True))
    status = dict(zip(values["cell_id"].tolist(), values["status"].tolist(), strict=True))
    assert E not in status                              # outside the territory
    assert (status[A], status[B], status[C], status[D]) == ("confirmed", "predicted", "rejected",
                                                            "confirmed")
    assert set(values["year"].tolist()) == {2021} and set(values["model_version"]) == {"m0001"}
    assert "EASE-Grid 2.0" in meta["crs"] or meta["crs"] == "EPSG:6933"
    meta, _, _, fields = pyogrio.raw.read(out, layer="protected_hits")
    hit = dict(zip(meta["fields"], [f[0] for f in fields], strict=True))
    assert (hit["name"], hit["mine_points"]) == ("Reserve", 1)
    assert hit["mining_km2"] == pytest.approx(1.0, rel=1e-3)
    meta, _, _, fields = pyogrio.raw.read(out, layer="mining_area")
    area = dict(zip(meta["fields"], [f[0] for f in fields], strict=True))
    assert area["mine_points"] == 3 and 4.0 < area["area_km2"] < 5.3


def test_geojson_and_csv(loaded):
    store, settings, tmp = loaded
    cells = export(store, settings, "geojson", tmp / "cells.geojson")
    assert cells.layers == {"cells": 4 * 90} and cells.years == [2018, 2019, 2020, 2021]
    info = ogrinfo(tmp / "cells.geojson")
    assert "Feature Count: 360" in info and "Polygon" in info
    meta, _, geometry, fields = pyogrio.raw.read(tmp / "cells.geojson")
    assert meta["crs"] in ("EPSG:4326", "OGC:CRS84")
    points = export(store, settings, "csv", tmp / "points.csv", year=2021, layer="mine_points")
    assert points.layers == {"mine_points": 3}
    assert "Feature Count: 3" in ogrinfo(tmp / "points.csv")
    meta, _, _, fields = pyogrio.raw.read(tmp / "points.csv")
    assert meta["fields"].tolist()[:4] == ["cell_id", "year", "model_version", "status"]
    assert sorted(int(v) for v in fields[0]) == sorted([A, B, D])
    with pytest.raises(AnalysisError, match="one layer"):
        export(store, settings, "csv", tmp / "x.csv", layer="change")
    with pytest.raises(AnalysisError, match="no scores for year 2030"):
        export(store, settings, "csv", tmp / "x.csv", year=2030)


def test_a_failed_export_leaves_the_good_file(loaded, monkeypatch):
    store, settings, tmp = loaded
    out = tmp / "out.gpkg"
    export(store, settings, "gpkg", out)
    before = out.read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_module, "change_over_years", broken)   # fails after 4 layers
    with pytest.raises(RuntimeError, match="disk full"):
        export(store, settings, "gpkg", out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".out")) == []
    assert np.asarray(pyogrio.list_layers(out)).shape == (5, 2)


@pytest.mark.parametrize("fmt", ["csv", "geojson", "gpkg"])
def test_exports_written_in_small_chunks_match_one_chunk(loaded, fmt):
    store, settings, tmp = loaded
    shares = []
    whole = export(store, settings, fmt, tmp / f"whole.{fmt}")
    chunked = export(store, settings, fmt, tmp / f"chunked.{fmt}", chunk_cells=7,
                     progress=lambda share, message: shares.append(share))
    assert chunked.layers == whole.layers
    assert len(shares) >= 360 // 7 and shares == sorted(shares) and shares[-1] == 1.0
    for layer in chunked.layers if fmt == "gpkg" else [None]:
        one = pyogrio.raw.read(tmp / f"whole.{fmt}", layer=layer)
        many = pyogrio.raw.read(tmp / f"chunked.{fmt}", layer=layer)
        for a, b in zip(one[3], many[3], strict=True):
            assert np.array_equal(a, b) or all(x == y or (x != x and y != y)
                                               for x, y in zip(a, b, strict=True))
        assert np.array_equal(np.asarray(one[2]), np.asarray(many[2]))   # same geometries
