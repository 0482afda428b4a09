"""The report (Table 1 on a small real database), its page, downloads and the CLI commands."""

from __future__ import annotations

import re
import time

import pytest
from click.testing import CliRunner

from analysis.report import build_report, to_csv, to_markdown
from analysis.territory import load_territory
from labeller import create_app
from pipeline.settings import load_settings
from run import cli
from tests.fixtures_app import csrf_from
from tests.test_analysis_status import A, block_polygon, build_db, write_polygons

#: Seconds a test waits for a background export job.
JOB_WAIT_S = 120


def finished_download(client, token: str, **form: str):
    """POST an export/report job like the report page's buttons, wait for it, download it."""
    started = client.post("/exports", data={"csrf_token": token, **form})
    assert started.status_code == 302, started.get_data(as_text=True)[:500]
    deadline = time.monotonic() + JOB_WAIT_S
    while True:
        listing = client.get("/exports/list").get_data(as_text=True)
        newest = re.search(r'data-job="(\d+)"', listing).group(1)
        done = client.get(f"/exports/{newest}/download")
        if done.status_code == 200 or time.monotonic() > deadline:
            return done
        assert "failed" not in listing.split('data-job="')[1], listing
        time.sleep(0.3)


@pytest.fixture
def data(tmp_path):
    build_db(tmp_path / "minewatch.db").close()
    territory = write_polygons(tmp_path / "territory.geojson", [block_polygon(1, 10, 0, 10)],
                               "EPSG:4326", {"name": ["Block"]}, driver="GeoJSON")
    return tmp_path, territory


def test_table_one(data):
    folder, territory = data
    settings = load_settings({"DATA_DIR": str(folder)}, environ={})
    from db.store import Store

    with Store(settings.database_path) as store:
        before = build_report(store, settings, year=2021)
        assert before.table["theoretical_cells"] == 99 and before.notes   # scored cells, says so
        load_territory(store, settings.grid, territory)
        report = build_report(store, settings, year=2021)
    t = report.table
    assert (t["predicted_bbox"], t["predicted_inside"], t["dropped"]) == (4, 3, 1)
    assert (t["confirmed"], t["false_positives"], t["unreviewed"]) == (2, 1, 1)
    assert t["theoretical_cells"] == 90 and t["misinterpreted_pct"] == pytest.approx(100 / 90)
    assert t["mine_points"] == 3                                   # A, B (adjacent) and D
    assert 4.0 < t["mining_area_km2"] < 3 * 1.7672                 # A-B overlap, D alone
    assert [f["year"] for f in report.per_year] == [2018, 2019, 2020, 2021]
    assert report.trend[0]["model_version"] == "m0001" and report.trend[0]["predicted"] == 3
    assert report.trend[0]["false_positives_found"] == 1               # inside the territory
    assert report.change.counts["persistent"] == 3                 # the same mines every year
    markdown = to_markdown(report)
    assert "| Cells the model predicts as mines in the imagery's bounding box | 4 |" in markdown
    assert "| False positives found by review (cells any model version predicted" in markdown
    assert "| Theoretical number of 1-km cells in the territory | 90 |" in markdown
    assert "table1,dropped,1,cells,2021,m0001" in to_csv(report)


def test_false_positives_found_by_review_outlive_a_retrain(data):
    """A retrained model that no longer predicts the rejected cell does not erase it from
    Table 1 (the old definition, "reviewed background still predicted", fell to 0)."""
    folder, territory = data
    settings = load_settings({"DATA_DIR": str(folder)}, environ={})
    from db.store import Store

    with Store(settings.database_path) as store:
        load_territory(store, settings.grid, territory)
        before = build_report(store, settings, year=2021).table["false_positives"]
        rows = store.db.query("SELECT * FROM scores WHERE model_version = 'm0001'")
        rows = list(rows)
        store.models.add_model({"version": "m0002", "parent": "m0001", "path": "/m/m0002.keras",
                                "bands": ["B2"], "threshold": 0.99, "metrics": {}, "training": {}},
                               activate=True)
        for year in {r["year"] for r in rows}:
            mine = [r for r in rows if r["year"] == year]
            store.scores.write_scores(year, "m0002", mine[0]["scene_id"], [r["cell_id"] for r in mine],
                                      [0.5 if r["score"] is not None else None for r in mine],
                                      [0.5] * len(mine), [r["valid_fraction"] for r in mine])
        store.labels.record_predicted_rejections("m0002")
        report = build_report(store, settings, year=2021)
    t = report.table
    assert before == 1 and t["false_positives"] == 1 and t["predicted_inside"] == 0
    assert t["misinterpreted_pct"] == pytest.approx(100 / 90)
    assert [(r["model_version"], r["false_positives_found"]) for r in report.trend] == \
        [("m0001", 1), ("m0002", 0)]
    assert "trend,false_positives_found:m0001,1,cells,2021,m0001" in to_csv(report)


def test_pages_and_downloads(data):
    folder, _ = data
    app = create_app({"DATA_DIR": str(folder), "TESTING": True, "SECRET_KEY": "x"})
    client = app.test_client()
    page = client.get("/report?year=2020")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-key="predicted_bbox"' in html and "synthetic demo data" in html
    assert 'href="/map"' in html and 'href="/report"' in html          # in the navigation
    assert html.count('action="/exports"') == 8 and "Exports</a>" in html   # download buttons
    token = csrf_from(html)
    csv = finished_download(client, token, kind="report", format="csv", year="2020")
    assert csv.status_code == 200 and "attachment" in csv.headers["Content-Disposition"]
    assert "table1,predicted_bbox,4,cells,2020,m0001" in csv.get_data(as_text=True)
    markdown = finished_download(client, token, kind="report", format="md")
    assert markdown.get_data(as_text=True).startswith("# MineWatch report")
    gpkg = finished_download(client, token, kind="export", format="gpkg", year="2021",
                             model="m0001")
    assert gpkg.status_code == 200 and gpkg.data[:16] == b"SQLite format 3\x00"
    assert "minewatch_all_layers_m0001_2021.gpkg" in gpkg.headers["Content-Disposition"]
    assert not list((folder / "exports").glob(".*"))                # no temporary file left
    missing = client.get("/report?year=1999")
    assert missing.status_code == 404 and "no scores for year 1999" in missing.get_data(as_text=True)
    cells = client.get("/map/cells.geojson?year=2021&status=mines").get_json()
    assert cells["count"] == 4 and not cells["truncated"]
    first = cells["features"][0]["properties"]
    assert first["review_url"] == f"/review?cell={first['cell_id']}&year=2021"
    assert client.get("/map/cells.geojson?status=nope").status_code == 400
    assert client.get("/map").status_code == 200


def test_cli_commands(data):
    folder, territory = data
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, ["--data-dir", str(folder), *map(str, args)])

    for command in ("territory", "protected-areas", "report", "export"):
        assert run(command, "--help").exit_code == 0
    done = run("territory", territory)
    assert done.exit_code == 0 and "90 cells inside, 10 outside (dropped)" in done.output
    bad = run("territory", territory, "--where", "name=Nowhere")
    assert bad.exit_code == 1 and "no feature with name = Nowhere" in bad.output
    anonymous = write_polygons(folder / "pa.geojson", [block_polygon(2, 3, 2, 3)], "EPSG:4326",
                               driver="GeoJSON")
    done = run("protected-areas", anonymous)
    assert done.exit_code == 0 and "unnamed area 1" in done.output
    done = run("report", "--year", 2021, "--format", "markdown")
    assert done.exit_code == 0 and "| Predicted cells dropped (centre outside the territory) | 1 |" \
        in done.output and "| unnamed area 1 |  | 1 |" in done.output
    assert run("report", "--year", 1999).output.startswith("Error: no scores for year 1999")
    done = run("export", "--format", "gpkg", "--out", folder / "x.gpkg", "--year", 2021)
    assert done.exit_code == 0 and "mine_points 3" in done.output
    assert str(A) not in run("report", "--format", "csv").output   # figures, not cells
