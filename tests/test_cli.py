"""The click CLI: every command has --help; user mistakes are one line and a non-zero exit."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from db.store import Store
from run import cli
from tests.territory import write_territory

FAST_ENV = {"MINEWATCH_PIXEL_SIZE_M": "50", "MINEWATCH_FCN_WIDTHS": "4,8,8",
            "MINEWATCH_TRAIN_EPOCHS": "3"}


@pytest.fixture
def runner():
    return CliRunner(env=FAST_ENV)


def invoke(runner, data_dir, *args):
    return runner.invoke(cli, ["--data-dir", str(data_dir), *map(str, args)])


@pytest.mark.parametrize("command", ["demo", "ingest", "train", "score", "cycle", "serve",
                                     "ee-export", "territory", "protected-areas", "report",
                                     "export"])
def test_every_command_has_help(runner, command):
    result = runner.invoke(cli, [command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_ingest_train_score_cycle(runner, tmp_path):
    territory = write_territory(tmp_path / "data", size_km=8, n_mines=8)
    data = tmp_path / "instance"
    result = invoke(runner, data, "ingest", territory.scene, "--year", 2021)
    assert result.exit_code == 0, result.output
    assert "2021: 1 file(s) warped into" in result.output
    assert "mosaic bands B1,B2" in result.output
    result = invoke(runner, data, "train", "--mines", territory.mines, "--year", 2021)
    assert result.exit_code == 0, result.output
    assert "Seed labels 2021 from mines.geojson" in result.output and "m0001 (active)" in result.output
    # the polygons became the year's mask layer; by default (DENSE_LOSS_WEIGHT 0) the model
    # still trains the seed's way
    assert (data / "masks" / "2021" / "layer.json").is_file()
    with Store(data / "minewatch.db") as store:
        training = store.models.model("m0001")["training"]
    assert training["depth"] == 3 and not training["dense_supervision"]["used"]
    result = invoke(runner, data, "score")
    assert result.exit_code == 0, result.output
    assert "cells scored by m0001" in result.output
    with Store(data / "minewatch.db") as store:
        store.labels.record_label(store.leases.queue_candidates("m0001", 2021, "score", "a", 1)[0]["cell_id"],
                                  2021, "background", "ann")
    result = invoke(runner, data, "cycle")
    assert result.exit_code == 0, result.output
    assert "m0002 is active" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "{tmp}/missing.tif", "--year", "2021"], "missing.tif"),
        (["ingest", "{tmp}/zero.tif", "--year", "2021"], "zero.tif"),
        (["ingest", "{scene}", "--year", "2021", "--bands", "B2,B3"], "band"),
        (["ingest", "{scene}", "--year", "2021", "--bands", "B2,B2"], "repeats B2"),
        (["train", "--mines", "{mines}", "--year", "2019"], "no imagery for 2019"),
        (["train"], "no training labels"),
        (["score"], "no active model"),
    ],
)
def test_user_mistakes_are_one_line(runner, tmp_path, args, message):
    territory = write_territory(tmp_path / "data", size_km=3, n_mines=1)
    (tmp_path / "zero.tif").write_bytes(b"")
    args = [a.format(tmp=tmp_path, scene=territory.scene, mines=territory.mines) for a in args]
    result = invoke(runner, tmp_path / "instance", *args)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_demo_builds_once_and_is_marked_synthetic(runner, tmp_path):
    data = tmp_path / "instance"
    result = invoke(runner, data, "demo", "--size-km", 8, "--if-empty")
    assert result.exit_code == 0, result.output
    assert "2021:" in result.output and "Demo ready" in result.output
    with Store(data / "minewatch.db") as store:
        assert store.scenes.years() == [2018, 2019, 2020, 2021]
        assert all(scene["synthetic"] for scene in store.scenes.scenes())
        assert store.models.active_model()["version"] == "m0001"
        assert store.labels.seed_labels(2018)
    again = invoke(runner, data, "demo", "--if-empty")
    assert again.exit_code == 0 and "skipping the demo build" in again.output


def test_cells_ingested_after_a_territory_are_classified(runner, tmp_path):
    import json

    first = write_territory(tmp_path / "a", size_km=4, n_mines=1)
    later = write_territory(tmp_path / "b", size_km=8, n_mines=1, year_shift=1)
    data = tmp_path / "instance"
    assert invoke(runner, data, "ingest", first.scene, "--year", 2020).exit_code == 0
    box = [[29.0, -26.5], [29.5, -26.5], [29.5, -25.5], [29.0, -25.5], [29.0, -26.5]]
    border = tmp_path / "territory.geojson"
    border.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "t"},
         "geometry": {"type": "Polygon", "coordinates": [box]}}]}))
    assert invoke(runner, data, "territory", border).exit_code == 0
    result = invoke(runner, data, "ingest", later.scene, "--year", 2021)
    assert result.exit_code == 0 and "classified as inside or outside" in result.output
    with Store(data / "minewatch.db") as store:
        assert store.territory.unclassified_cells() == []


def test_earth_engine_without_an_account_is_one_line(tmp_path):
    region = tmp_path / "region.geojson"
    region.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", '
                      '"properties": {}, "geometry": {"type": "Polygon", "coordinates": '
                      '[[[29, -26], [29.1, -26], [29.1, -25.9], [29, -25.9], [29, -26]]]}}]}')
    runner = CliRunner(env={"HOME": str(tmp_path), "GOOGLE_APPLICATION_CREDENTIALS": None,
                            "EE_CREDENTIALS": None})
    result = runner.invoke(cli, ["ee-export", "--region", str(region), "--year", "2021"])
    assert result.exit_code == 1 and "Earth Engine is not available" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_ingest_several_files_of_two_utm_zones_into_one_mosaic(runner, tmp_path):
    from tests.test_ingest import two_zone_files

    files = two_zone_files(tmp_path / "src")
    data = tmp_path / "instance"
    result = invoke(runner, data, "ingest", *files, "--year", 2021)
    assert result.exit_code == 0, result.output
    assert "2021: 3 file(s) warped into" in result.output and "km²" in result.output
    broken = tmp_path / "src" / "broken.tif"
    broken.write_bytes(files[0].read_bytes()[:3000])
    result = invoke(runner, data, "ingest", files[0], broken, "--year", 2021)
    assert result.exit_code == 1 and "broken.tif" in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error")]) == 1
    with Store(data / "minewatch.db") as store:
        assert len(store.scenes.scenes(2021)) == 1 and len(store.scenes.scene_files(2021)) == 3


def test_non_sentinel2_file_is_refused_in_one_line_and_changes_nothing(runner, tmp_path):
    import numpy as np
    import rasterio
    from affine import Affine

    territory = write_territory(tmp_path / "data", size_km=3, n_mines=1)
    data = tmp_path / "instance"
    assert invoke(runner, data, "ingest", territory.scene, "--year", 2021).exit_code == 0
    with Store(data / "minewatch.db") as store:
        before = (store.scenes.scenes(), store.cells.count_cells())
    hillshade = tmp_path / "hillshade.tif"
    with rasterio.open(hillshade, "w", driver="GTiff", width=200, height=200, count=1,
                       dtype="uint8", crs="EPSG:32735",
                       transform=Affine(10.0, 0, 540_000, 0, -10.0, 6_700_000)) as ds:
        ds.write(np.full((1, 200, 200), 180, np.uint8))
    result = invoke(runner, data, "ingest", hillshade, "--year", 2022, "--bands", "B4")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("Error: hillshade.tif: uint8 data")
    assert "--bands cannot change this" in result.output and str(tmp_path) not in result.output
    with Store(data / "minewatch.db") as store:
        assert (store.scenes.scenes(), store.cells.count_cells()) == before
    assert "--offset DN" in runner.invoke(cli, ["ingest", "--help"]).output


@pytest.mark.parametrize(("env", "message"), [
    ({"MINEWATCH_SECOND_REVIEW_SHARE": "10"}, "SECOND_REVIEW_SHARE: a share from 0 to 1"),
    ({"MINEWATCH_SECOND_REVIEW_ALL_MINES": "maybe"}, "'maybe' is not true or false"),
    ({"MINEWATCH_PORT": "fifty"}, "setting PORT"),
])
def test_a_bad_setting_is_one_line(tmp_path, env, message):
    result = CliRunner(env=env).invoke(cli, ["--data-dir", str(tmp_path), "report"])
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert message in result.output and "Traceback" not in result.output


def test_users_add_and_serve_say_how_to_make_the_first_admin(runner, tmp_path, monkeypatch):
    import waitress

    from review.accounts import FIRST_ADMIN_HINT

    class NotListening:  # the server is built but never listens
        def print_listen(self, line: str) -> None:
            pass

        def run(self) -> None:
            pass

    monkeypatch.setattr(waitress, "create_server", lambda app, **kw: NotListening())
    monkeypatch.setattr("labeller._preload_cycle_module", lambda: None)
    data = tmp_path / "instance"
    served = invoke(runner, data, "serve")
    assert served.exit_code == 0 and FIRST_ADMIN_HINT in served.output    # first run
    for name, role, hinted in (("rita", "reviewer", True), ("adm", "admin", False),
                               ("lea", "lead", False)):
        added = runner.invoke(cli, ["--data-dir", str(data), "users", "add", name, "--role",
                                    role, "--password-stdin"], input="a long password\n")
        assert added.exit_code == 0, added.output
        assert (FIRST_ADMIN_HINT in added.output) == hinted, (name, added.output)
    served = invoke(runner, data, "serve")
    assert served.exit_code == 0 and FIRST_ADMIN_HINT not in served.output
    assert "3 account(s): everyone logs in." in served.output
