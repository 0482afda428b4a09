"""Fixtures for the web-app and review-domain tests: a real SQLite database built through the
Store, with two yearly 12-band GeoTIFF scenes (written by rasterio directly in the grid CRS,
EPSG:6933, aligned to the 1-km grid) ingested into the imagery store, one active model and
scores of varied uncertainty."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from db.store import Store
from imagery.bands import SEED_BANDS
from imagery.grid import CellGrid
from pipeline.ingest import ingest_files
from pipeline.settings import load_settings
from review.cards import next_cards
from review.decisions import DecisionForm

#: Top-left cell of the test territory (near Jagersfontein, South Africa) and its size in cells.
ROW0, COL0 = 10_948, 19_815
N_ROWS, N_COLS = 8, 8
YEARS = (2020, 2021)
THRESHOLD = 0.5
PIXEL_M = 20.0
METRICS = {"precision": 0.81, "recall": 0.74, "average_precision": 0.79,
           "confusion_matrix": {"tn": 50, "fp": 7, "fn": 9, "tp": 26}}
GRASS = np.array([400, 450, 650, 700, 1100, 1900, 2200, 2400, 2500, 2500, 2600, 1800])
TAILINGS = np.array([1800, 2000, 2300, 2600, 2800, 2900, 3000, 3100, 3200, 3200, 4200, 3900])


@dataclass(frozen=True)
class ReviewDb:
    """A built test database: its file, its imagery store folder (``DATA_DIR/imagery``) and the
    cells with their 2021 scores."""

    database: Path
    imagery: Path
    cell_ids: list[int]
    scores: dict[int, tuple[float, float]]  # cell_id -> (score, uncertainty), same both years


def cell_score(index: int) -> tuple[float, float]:
    """A deterministic spread of scores in [0, 1); uncertainty = 1 - |2 score - 1|."""
    score = ((index * 37) % 64) / 64
    return score, round(1.0 - abs(2.0 * score - 1.0), 6)


def write_scene(path: Path, grid: CellGrid, seed: int) -> Path:
    """A 12-band uint16 GeoTIFF covering the test cells, 20 m pixels on the grid CRS."""
    rng = np.random.default_rng(seed)
    size_m = grid.cell_size_m
    height = int(N_ROWS * size_m / PIXEL_M)
    width = int(N_COLS * size_m / PIXEL_M)
    fields = rng.uniform(0.75, 1.6, size=(height // 25 + 1, width // 25 + 1))
    noise = rng.normal(1.0, 0.06, size=(height, width)) * np.kron(fields, np.ones((25, 25)))[
        :height, :width]
    data = GRASS[:, None, None] * noise[None]
    yy, xx = np.mgrid[0:height, 0:width]
    for cy, cx, r in ((60, 70, 14), (230, 250, 22), (330, 90, 11)):
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
        data[:, blob] = TAILINGS[:, None] * rng.normal(1.0, 0.05, size=blob.sum())[None]
    minx, _, _, maxy = grid.cell_bounds(int(grid.cell_id(ROW0, COL0)))
    transform = Affine(PIXEL_M, 0.0, minx, 0.0, -PIXEL_M, maxy)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", count=12, height=height, width=width,
                       dtype="uint16", crs=grid.crs, transform=transform, nodata=0) as ds:
        ds.write(np.clip(data, 1, 10_000).astype("uint16"))
        for index, band in enumerate(SEED_BANDS, start=1):
            ds.set_band_description(index, band)
    return path


def build_review_db(root: Path) -> ReviewDb:
    """Write the scenes, ingest them into the store under ``root`` and fill the database."""
    settings = load_settings({"DATA_DIR": str(root)}, environ={})
    grid = settings.grid
    database = settings.database_path
    rows, cols = np.meshgrid(np.arange(ROW0, ROW0 + N_ROWS), np.arange(COL0, COL0 + N_COLS),
                             indexing="ij")
    ids = np.asarray(grid.cell_id(rows, cols)).ravel()
    scores: dict[int, tuple[float, float]] = {}
    with Store(database) as store:
        store.models.add_model({"version": "m0001", "parent": None, "path": "models/m0001.keras",
                                "bands": list(SEED_BANDS), "threshold": THRESHOLD, "metrics": METRICS,
                                "training": {"seed": 10}}, activate=True)
        for year in YEARS:
            path = write_scene(root / "scenes" / f"scene_{year}.tif", grid, seed=year)
            scene_id = ingest_files(store, settings, [path], year).scene["id"]
            store.db.execute("UPDATE scenes SET synthetic = 1 WHERE id = ?", [scene_id])
            values = [cell_score(i) for i in range(len(ids))]
            scores = {int(c): v for c, v in zip(ids, values, strict=True)}
            store.scores.write_scores(year, "m0001", scene_id, [int(i) for i in ids],
                                      [v[0] for v in values], [v[1] for v in values],
                                      [1.0] * len(ids))
    return ReviewDb(database, root / "imagery", [int(i) for i in ids], scores)


@pytest.fixture(scope="session")
def review_template(tmp_path_factory: pytest.TempPathFactory) -> ReviewDb:
    """The database and scenes, built once per test session (tests work on copies)."""
    return build_review_db(tmp_path_factory.mktemp("review-template"))


@pytest.fixture
def review_db(tmp_path: Path, review_template: ReviewDb) -> ReviewDb:
    """A private copy of the template database; its imagery store is shared, read-only, through
    a link at ``tmp_path/imagery`` (``tmp_path`` is the DATA_DIR of ``app_config``)."""
    database = tmp_path / "minewatch.db"
    shutil.copy(review_template.database, database)
    (tmp_path / "imagery").symlink_to(review_template.imagery, target_is_directory=True)
    return ReviewDb(database, tmp_path / "imagery", review_template.cell_ids,
                    review_template.scores)


@pytest.fixture
def app_config(tmp_path: Path, review_db: ReviewDb) -> dict:
    return {"DATA_DIR": str(tmp_path), "DATABASE": str(review_db.database),
            "THUMBNAIL_DIR": str(tmp_path / "thumbs"), "SECRET_KEY": "test-secret",
            "PREFETCH": 3, "LEASE_SECONDS": 300, "TESTING": True}


@pytest.fixture
def app(app_config: dict):
    from labeller import create_app

    return create_app(app_config)


@pytest.fixture
def client(app):
    return app.test_client()


def csrf_from(html: str) -> str:
    """The CSRF token rendered into a page."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page carries no CSRF token"
    return match.group(1)


#: The password of every account the tests create.
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real argon2id with the cheapest parameters: the app's default (64 MiB, 3 passes) would
    make every login of the suite cost a quarter of a second on a busy CI runner."""
    from argon2 import PasswordHasher

    from review import accounts

    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=8,
                                                            parallelism=1))


def add_account(app, name: str, role: str = "reviewer") -> None:
    """Create an account in the app's database (once; a second call is a no-op)."""
    from review.accounts import create_account

    with Store(app.config["SETTINGS"].database_path) as store:
        if store.accounts.account(name) is None:
            create_account(store, name, role, PASSWORD)


def login(client, name: str = "ana", role: str = "reviewer") -> str:
    """Log in as ``name`` (the account is created with ``role`` if missing); returns the new
    session's CSRF token."""
    add_account(client.application, name, role)
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"name": name, "password": PASSWORD,
                                           "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)
    return csrf_from(client.get("/login").get_data(as_text=True))


def card_fields(html: str) -> dict:
    """The current card's cell, year and hidden fields, parsed from the card partial."""
    form = re.search(r'<form id="card-form"[^>]*data-cell="(\d+)" data-year="(\d+)"', html)
    assert form, "no card in the page"
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"',
                             html[form.start():html.index("</form>", form.start())]))
    return {"cell_id": int(form.group(1)), "year": int(form.group(2)), **fields}


def cards(store: Store, reviewer: str = "ana", **kwargs) -> list[dict]:
    """Up to 4 (``n``) cards leased to ``reviewer``."""
    kwargs.setdefault("n", 4)
    return next_cards(store, reviewer=reviewer, **kwargs)


def form(label: str = "mine", request_id: str = "r1", **kwargs) -> DecisionForm:
    """A decision form, by default "mine" with token "r1"."""
    return DecisionForm(label=label, request_id=request_id, **kwargs)
