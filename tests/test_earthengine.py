"""Earth Engine composites: the request, the export arguments and the composite's recipe.

Earth Engine itself needs an account and a network, neither of which a test has; the recipe is
checked against a recording stand-in for the ``ee`` module.
"""

from __future__ import annotations

import pytest
from shapely.geometry import box

from imagery.bands import SEED_BANDS
from imagery.earthengine import (
    CompositeRequest,
    build_composite,
    export_parameters,
    requests_for_years,
    utm_crs,
)

EMALAHLENI = box(29.0, -26.1, 29.4, -25.7)


def test_utm_zones():
    assert utm_crs(29.2, -25.9) == "EPSG:32735"
    assert utm_crs(-75.9, 37.5) == "EPSG:32618"
    assert utm_crs(180, 0) == "EPSG:32660"
    with pytest.raises(ValueError):
        utm_crs(0, 85)


def test_request_defaults_follow_the_seed():
    request = CompositeRequest(region=EMALAHLENI, year=2021, name="emalahleni_2021")
    assert request.max_cloud_percent == 20 and request.bands == SEED_BANDS
    assert request.collection == "COPERNICUS/S2_HARMONIZED" and request.crs == "EPSG:32735"
    assert request.date_range == ("2021-01-01", "2022-01-01")
    params = export_parameters(request, folder="minewatch")
    assert params["scale"] == 10 and params["maxPixels"] >= 1e12
    assert params["region"]["type"] == "Polygon" and params["fileNamePrefix"] == "emalahleni_2021"
    assert params["formatOptions"] == {"cloudOptimized": True}


@pytest.mark.parametrize(("changes", "message"), [
    ({"year": 2012}, "2015"),
    ({"max_cloud_percent": 0}, "cloud"),
    ({"level": "l3"}, "level"),
    ({"name": "has space"}, "letters"),
    ({"region": box(500_000, 7_000_000, 510_000, 7_010_000)}, "lon/lat"),
    ({"bands": ("B2", "B2")}, "repeats"),
])
def test_bad_requests(changes, message):
    values = {"region": EMALAHLENI, "year": 2021, "name": "x", **changes}
    with pytest.raises(ValueError, match=message):
        CompositeRequest(**values)


class Recorder:
    """Stands in for the ee module and every object it returns, recording each call."""

    def __init__(self, calls=None, path="ee"):
        self.calls, self.path = [] if calls is None else calls, path

    def __getattr__(self, name):
        return Recorder(self.calls, f"{self.path}.{name}")

    def __call__(self, *args, **kwargs):
        self.calls.append((self.path.rsplit(".", 1)[-1], args))
        return Recorder(self.calls, f"{self.path}()")


def test_composite_recipe():
    ee = Recorder()
    request = CompositeRequest(region=EMALAHLENI, year=2020, name="x", level="l2a",
                               bands=("B2", "B3", "B4"))
    build_composite(ee, request)
    names = [name for name, _ in ee.calls]
    assert names == ["Geometry", "ImageCollection", "filterBounds", "filterDate", "lt", "filter",
                     "select", "median", "toUint16", "clip"]
    args = dict(ee.calls)
    assert args["ImageCollection"] == ("COPERNICUS/S2_SR_HARMONIZED",)
    assert args["filterDate"] == ("2020-01-01", "2021-01-01")
    assert args["lt"] == ("CLOUDY_PIXEL_PERCENTAGE", 20.0)
    assert args["select"] == (["B2", "B3", "B4"],)


def test_one_request_per_year():
    made = requests_for_years(EMALAHLENI, [2018, 2019], prefix="zaf", max_cloud_percent=10)
    assert [r.name for r in made] == ["zaf_2018", "zaf_2019"]
    assert all(r.max_cloud_percent == 10 for r in made)
