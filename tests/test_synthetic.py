"""The synthetic demo territory: files, determinism, mine life cycles, spectra and the oracle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.features import geometry_mask
from shapely.geometry import box, shape

from imagery.bands import SEED_BANDS
from imagery.grid import CellGrid
from simulation.synthetic import (
    MINE_KINDS,
    SPECTRA,
    TEXTURE,
    DemoTerritory,
    LandCover,
    build_demo,
    truth_mine_fraction,
)

SMALL_KM = 3
TWO_YEARS = (2018, 2019)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> DemoTerritory:
    """A 3 x 3 km territory over two years (built once for the module)."""
    return build_demo(tmp_path_factory.mktemp("demo_small"), size_km=SMALL_KM, years=TWO_YEARS)


@pytest.fixture(scope="module")
def four_years(tmp_path_factory: pytest.TempPathFactory) -> DemoTerritory:
    """A 4 x 4 km territory over the default four years."""
    return build_demo(tmp_path_factory.mktemp("demo_four"), size_km=4)


def _features(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["features"]


def _to_utm(geom: shapely.Geometry) -> shapely.Geometry:
    tr = Transformer.from_crs("EPSG:4326", "EPSG:32735", always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def _band_mean(scene: Path, band: str, geom_utm: shapely.Geometry) -> float:
    """Mean DN of one band inside a UTM polygon."""
    with rasterio.open(scene) as src:
        data = src.read(SEED_BANDS.index(band) + 1).astype(np.float64)
        inside = ~geometry_mask([geom_utm], out_shape=data.shape, transform=src.transform)
    assert inside.sum() > 20
    return float(data[inside].mean())


def test_tables_cover_every_land_cover() -> None:
    assert set(SPECTRA) == set(LandCover) == set(TEXTURE)
    assert all(len(values) == len(SEED_BANDS) for values in SPECTRA.values())
    assert all(0 < v < 10_000 for values in SPECTRA.values() for v in values)


def test_scenes_are_tagged_12_band_uint16_geotiffs(small: DemoTerritory) -> None:
    assert small.crs == "EPSG:32735"
    assert small.years == TWO_YEARS and set(small.scenes) == set(TWO_YEARS)
    minx, miny, maxx, maxy = small.bounds
    assert (maxx - minx, maxy - miny) == (SMALL_KM * 1000, SMALL_KM * 1000)
    for year, path in small.scenes.items():
        assert path == small.out_dir / f"demo_{year}.tif"
        with rasterio.open(path) as src:
            assert src.count == 12
            assert src.descriptions == SEED_BANDS
            assert src.crs.to_string() == "EPSG:32735"
            assert set(src.dtypes) == {"uint16"}
            assert src.nodata == 0
            assert src.res == (10.0, 10.0)
            assert src.transform.c % 10 == 0 and src.transform.f % 10 == 0
            assert src.block_shapes[0] == (256, 256)
            assert src.compression.name.lower() == "deflate"
            assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"
            tags = src.tags()
            assert tags["MINEWATCH_SYNTHETIC"] == "yes"
            assert "synthetic" in tags["DESCRIPTION"].lower()
            assert tuple(src.bounds) == small.bounds
        # About 29.2 E, 25.9 S (Mpumalanga, South Africa).
        lon, lat = Transformer.from_crs(small.crs, "EPSG:4326", always_xy=True).transform(
            (minx + maxx) / 2, (miny + maxy) / 2)
        assert abs(lon - 29.2) < 0.05 and abs(lat + 25.9) < 0.05


def test_same_seed_same_bytes_other_seed_other_scene(small: DemoTerritory, tmp_path: Path) -> None:
    again = build_demo(tmp_path / "again", size_km=SMALL_KM, years=TWO_YEARS)
    for name in ("demo_2018.tif", "demo_2019.tif", "demo_truth.geojson", "demo_mines.geojson",
                 "demo_lookalikes.geojson"):
        assert (small.out_dir / name).read_bytes() == (again.out_dir / name).read_bytes(), name
    other = build_demo(tmp_path / "other", size_km=SMALL_KM, years=TWO_YEARS, seed=7)
    with rasterio.open(small.scenes[2018]) as a, rasterio.open(other.scenes[2018]) as b:
        assert not np.array_equal(a.read(4), b.read(4))
    assert _features(other.truth_path) != _features(small.truth_path)


def test_second_year_has_a_nodata_strip(small: DemoTerritory) -> None:
    assert small.partial_year == 2019
    with rasterio.open(small.scenes[2019]) as src:
        data = src.read()
    empty = (data == 0).all(axis=0)
    assert 0.1 < empty.mean() < 0.5
    assert empty[:, -1].all() and not empty[:, 0].any()  # along the east edge
    assert ((data == 0).any(axis=0) == empty).all()  # nodata in all bands at once
    with rasterio.open(small.scenes[2018]) as src:
        assert (src.read() > 0).all()


def test_mine_inventory_is_valid_and_inside_the_scene(small: DemoTerritory) -> None:
    feats = _features(small.mines_path)
    assert feats
    scene = box(*small.bounds).buffer(1.0)
    active_2018 = {f["properties"]["site_id"] for f in _features(small.truth_path)
                   if f["properties"]["year"] == 2018 and f["properties"]["status"] == "active"}
    ids = [f["properties"]["site_id"] for f in feats]
    assert len(ids) == len(set(ids)) and set(ids) == active_2018
    for feat in feats:
        geom = shape(feat["geometry"])
        assert geom.is_valid and not geom.is_empty
        assert scene.contains(_to_utm(geom))
        assert feat["properties"]["name"] == f"Demo mine {feat['properties']['site_id']}"
        assert "synthetic" in feat["properties"]["source"].lower()


def test_truth_mines_open_and_close(small: DemoTerritory, four_years: DemoTerritory) -> None:
    def present(territory: DemoTerritory, year: int, status: str = "active") -> set[int]:
        return {f["properties"]["site_id"] for f in _features(territory.truth_path)
                if f["properties"]["year"] == year and f["properties"]["status"] == status}

    assert present(small, 2019) - present(small, 2018)  # a mine opens in the second year
    assert present(small, 2019, "closed") & present(small, 2018)  # and one closes
    years = four_years.years
    assert years == (2018, 2019, 2020, 2021)
    opened = set().union(*(present(four_years, y) for y in years[1:])) - present(four_years, 2018)
    assert opened
    closed = present(four_years, 2021, "closed")
    assert closed and closed <= present(four_years, 2018)
    for feat in _features(four_years.truth_path):
        props = feat["properties"]
        expected = MINE_KINDS if props["status"] == "active" else ("rehabilitating",)
        assert props["kind"] in expected
        assert shape(feat["geometry"]).is_valid


def test_mines_grow(four_years: DemoTerritory) -> None:
    area = {y: 0.0 for y in four_years.years}
    for feat in _features(four_years.truth_path):
        props = feat["properties"]
        if props["site_id"] == 1:
            area[props["year"]] += _to_utm(shape(feat["geometry"])).area
    assert area[2018] < area[2021]
    assert 0.1e6 < area[2018] and area[2021] < 9e6


def test_lookalikes_name_their_kind(small: DemoTerritory) -> None:
    kinds = {f["properties"]["kind"] for f in _features(small.lookalikes_path)}
    assert {"lake", "river", "road", "dam", "crop_bare"} <= kinds
    assert kinds <= {"crop_bare", "road", "river", "lake", "dam", "town", "slope"}


def test_tailings_are_bright_in_swir_and_water_dark_in_nir(small: DemoTerritory) -> None:
    scene = small.scenes[2018]
    truth = [f for f in _features(small.truth_path) if f["properties"]["year"] == 2018]
    tailings = [_to_utm(shape(f["geometry"])) for f in truth if f["properties"]["kind"] == "tailings"]
    assert tailings
    lakes = [_to_utm(shape(f["geometry"])) for f in _features(small.lookalikes_path)
             if f["properties"]["kind"] == "lake"]
    assert lakes
    everything = [_to_utm(shape(f["geometry"])).buffer(30) for f in truth]
    everything += [_to_utm(shape(f["geometry"])).buffer(30) for f in _features(small.lookalikes_path)]
    background = box(*small.bounds).difference(shapely.union_all(everything))
    b12_tailings = _band_mean(scene, "B12", tailings[0].buffer(-20))
    b12_background = _band_mean(scene, "B12", background)
    assert b12_tailings > b12_background + 500
    assert _band_mean(scene, "B8", lakes[0].buffer(-15)) < 400
    assert _band_mean(scene, "B8", background) > 1500


def test_truth_mine_fraction_is_an_oracle_per_cell(small: DemoTerritory) -> None:
    grid = CellGrid()
    tr = Transformer.from_crs(small.crs, grid.crs, always_xy=True)
    minx, miny, maxx, maxy = small.bounds
    xs, ys = tr.transform([minx, maxx, minx, maxx], [miny, miny, maxy, maxy])
    ids = grid.cell_ids_in(grid.cells_covering((min(xs), min(ys), max(xs), max(ys))))
    far = grid.cell_at_lonlat(22.0, -31.0)
    frac = truth_mine_fraction(small.truth_path, grid, np.append(ids, far), 2019)
    assert frac.shape == (len(ids) + 1,)
    assert ((frac >= 0) & (frac <= 1)).all()
    assert frac.max() > 0.5
    assert frac[-1] == 0.0
    assert (frac[:-1] == 0).any()  # some cells hold no mine
    # The fractions add up to the area of the active components (equal-area grid ~ UTM area).
    active = [_to_utm(shape(f["geometry"])) for f in _features(small.truth_path)
              if f["properties"]["year"] == 2019 and f["properties"]["status"] == "active"]
    union_km2 = shapely.union_all(active).area / 1e6
    assert frac.sum() == pytest.approx(union_km2, rel=0.01)
    assert truth_mine_fraction(small.truth_path, grid, ids, 1990).sum() == 0.0


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size_km"):
        build_demo(tmp_path, size_km=1)
    with pytest.raises(ValueError, match="years"):
        build_demo(tmp_path, size_km=3, years=())
    with pytest.raises(ValueError, match="repeat"):
        build_demo(tmp_path, size_km=3, years=(2018, 2018))


def test_progress_reports_each_scene(tmp_path: Path) -> None:
    messages: list[str] = []
    build_demo(tmp_path, size_km=2, years=(2020,), progress=messages.append)
    assert any("demo_2020.tif" in m for m in messages)
