"""The one table of MineWatch settings.

Every setting has a name, a default and a help text; each can be set by the environment variable
``MINEWATCH_<NAME>`` (or, for the web app, by ``create_app(test_config)``). docs/settings.md
documents every setting; ``tests/test_settings.py`` checks that it does.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from imagery.grid import CellGrid

ENV_PREFIX = "MINEWATCH_"


def _setting(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Settings:
    """Every setting of an installation (see docs/settings.md)."""

    DATA_DIR: str = _setting("instance", "Folder for the database, models, thumbnails, the "
                             "imagery store (DATA_DIR/imagery) and the demo territory; relative "
                             "paths are relative to the working folder.")
    DATABASE: str = _setting("", "SQLite database file (default: DATA_DIR/minewatch.db).")
    MODELS_DIR: str = _setting("", "Folder of saved models, .keras + .json sidecar "
                               "(default: DATA_DIR/models).")
    THUMBNAIL_DIR: str = _setting("", "Thumbnail cache folder (default: DATA_DIR/thumbnails).")
    DEMO_DIR: str = _setting("", "Where `run.py demo` writes the synthetic territory "
                             "(default: DATA_DIR/demo).")
    GRID_CRS: str = _setting("EPSG:6933", "Equal-area CRS of the fixed cell grid. Changing it "
                             "after ingesting scenes invalidates every cell id.")
    CELL_SIZE_M: float = _setting(1000.0, "Side of a grid cell in metres (the seed used 1 km).")
    PIXEL_SIZE_M: float = _setting(10.0, "Pixel size in metres that scenes are resampled to.")
    MIN_VALID_FRACTION: float = _setting(0.5, "A cell with a smaller share of valid pixels in a "
                                         "scene is not scored.")
    TRAIN_EPOCHS: int = _setting(40, "Most training epochs per model; training stops sooner once "
                                 "the validation loss has not dropped for a few epochs "
                                 "(model/train.py PATIENCE, MIN_DELTA) and keeps the best "
                                 "epoch's weights.")
    FCN_WIDTHS: str = _setting("32,64,64", "Filters of the FCN's three convolution layers.")
    FCN_KERNEL: int = _setting(3, "Side of the FCN's convolution kernels: 3 (the seed's) or 5 "
                               "(a 320 m receptive field instead of 180 m).")
    FCN_DEPTH: str = _setting("auto", "Hidden convolutions of the FCN: 3 (the seed's), 4 (one "
                              "more after the second pool: a 260 m receptive field), or auto: 4 "
                              "when training uses dense supervision (DENSE_LOSS_WEIGHT > 0 and "
                              "a mask layer, from seeds made from mask rasters or polygons), "
                              "else 3. Kernel 5 allows only 3.")
    DENSE_LOSS_WEIGHT: float = _setting(0.0, "Weight of the per-block loss on cells with a mask "
                                        "(mask fraction of each 40 m output block against the "
                                        "FCN's map), added to the cell loss; 0 (the default: "
                                        "not better on the Brazil patches through this path, "
                                        "see docs/design.md) trains on the cell loss only; "
                                        "1.0 is the studied weight.")
    HARD_NEGATIVE_WEIGHT: float = _setting(2.0, "Loss weight of hard negatives: reviewed "
                                           "background cells that any model version predicted "
                                           "as mines (kept for every later model).")
    VALIDATION_BLOCK_SHARE: float = _setting(0.2, "Share of the 10 x 10 km blocks that are the "
                                             "installation's fixed validation blocks (chosen by "
                                             "a hash of the block id, the same every cycle); "
                                             "reviewed labels there validate, all others train.")
    HOST: str = _setting("127.0.0.1", "Address the web app listens on; set 0.0.0.0 to open it to "
                         "the team's network.")
    PORT: int = _setting(5000, "Port of the web app.")
    LEASE_SECONDS: int = _setting(300, "How long a served card stays reserved for its reviewer.")
    PREFETCH: int = _setting(4, "How many next cards the review page loads ahead.")
    TRIAGE_GRID: str = _setting("4x4", "Rows x columns of a triage grid page (1 to 10 each).")
    SECRET_KEY: str = _setting("", "Flask secret key (sessions, CSRF tokens); generated into "
                               "DATA_DIR/secret_key when empty.")
    BASEMAP_URL: str = _setting("", "Optional XYZ tile URL for the map background; empty means "
                                "no remote tiles (works offline).")
    KEEP_SCORED_MODELS: int = _setting(2, "Model versions whose score rows are kept: the active "
                                       "model and its nearest ancestors (2 = active + parent), "
                                       "plus the newest inactive candidate; other versions keep "
                                       "per-year summaries only.")
    SCHEDULER: str = _setting("", "Dask scheduler that scoring sends blocks to: an address "
                              "(tcp://host:8786) or local:N for N local worker processes; empty "
                              "scores in this process.")
    SCORE_PREFETCH: int = _setting(2, "Store blocks that scoring reads ahead of the FCN (memory "
                                   "holds at most this + 1 blocks).")
    SCORE_READERS: int = _setting(1, "Reader threads of scoring; raise it when the FCN outruns "
                                  "one reader (a GPU).")
    SCORE_BATCH: int = _setting(1, "FCN passes of one shape stacked into one FCN call when "
                                "scoring (1 on a CPU; 8-32 keeps a GPU busy).")
    INGEST_THREADS: int = _setting(2, "Store blocks that ingest warps at once (threads: GDAL's warp "
                                   "releases Python's lock); each holds about 0.4 GB for 12 bands.")
    BUFFER_M: float = _setting(750.0, "Buffer around each mine point for the mining area, metres.")
    ACTIVATION_MARGIN: float = _setting(0.05, "A cycle's new model becomes active only if its "
                                        "average precision on the held-out reviewed cells is at "
                                        "most this much below the active model's on the same "
                                        "cells; otherwise it stays inactive for a lead to judge.")
    ACTIVATION_MAX_MINE_SHARE: float = _setting(0.5, "A cycle's new model stays inactive (for a "
                                                "lead to judge) when it predicts more than this "
                                                "share of the scored cells as mines (cells at "
                                                "or above its threshold / cells scored), 0 to 1.")
    ACTIVATION_MAX_SHARE_RATIO: float = _setting(10.0, "A cycle's new model stays inactive (for "
                                                 "a lead to judge) when its predicted-mine "
                                                 "share is more than this many times the active "
                                                 "model's on the same years (not applied when "
                                                 "the active model predicts no mine).")
    TILE_CACHE_MB: int = _setting(1024, "Largest size of the map tile cache (DATA_DIR/tiles) in "
                                  "MiB; when a new tile takes it over, the least recently used "
                                  "tiles are deleted until it is back under 90 % of this.")
    EXPORT_RETENTION_DAYS: float = _setting(7.0, "Finished exports and reports (files and their "
                                            "rows in the download list) older than this are "
                                            "deleted by the job runner's cleanup.")
    SESSION_HOURS: float = _setting(12.0, "A login lasts this many hours; then the browser must "
                                    "log in again.")
    BEHIND_HTTPS_PROXY: bool = _setting(False, "Set true when a reverse proxy serves the app over "
                                        "HTTPS: cookies are then Secure-only and the proxy's "
                                        "X-Forwarded-For/-Proto/-Host headers (one proxy) are "
                                        "trusted.")
    ALLOWED_HOSTS: str = _setting("", "Comma-separated host names the app answers to (the Host "
                                  "header; '*' for any). Empty: localhost, 127.0.0.1, ::1 and "
                                  "HOST. Others get 400 (stops DNS rebinding).")
    LOGIN_RATE_LIMIT: str = _setting("10 per minute", "Most failed login attempts per account "
                                     "name (any case, any address), in Flask-Limiter's notation.")
    LOGIN_ADDRESS_LIMIT: str = _setting("100 per hour", "Most failed login attempts per client "
                                        "address over all names (stops a password spray).")
    MAX_REQUEST_KB: int = _setting(64, "Largest accepted request body in KiB; a larger one is "
                                   "refused with 413 before it is read.")
    SECOND_REVIEW_SHARE: float = _setting(0.10, "Share of first decisions (mine or background) "
                                          "that go blind to a second reviewer, 0 to 1; picked "
                                          "by a hash of cell and year, so reruns agree.")
    SECOND_REVIEW_ALL_MINES: bool = _setting(False, "Send every first decision 'mine' to a "
                                             "second reviewer as well (true/false).")
    WORKER_NICE: int = _setting(10, "Niceness added to background workers (retrain cycles, "
                                "exports, reports), 0 to 19, so that review requests get the "
                                "CPU first; 0 runs them at the app's priority.")

    def __post_init__(self) -> None:
        if not 0.0 <= self.ACTIVATION_MAX_MINE_SHARE <= 1.0:
            raise ValueError("setting ACTIVATION_MAX_MINE_SHARE: a share from 0 to 1, got "
                             f"{self.ACTIVATION_MAX_MINE_SHARE}")
        if not 1.0 <= self.ACTIVATION_MAX_SHARE_RATIO < float("inf"):
            raise ValueError("setting ACTIVATION_MAX_SHARE_RATIO: a finite ratio >= 1, got "
                             f"{self.ACTIVATION_MAX_SHARE_RATIO}")
        for name in ("SCORE_PREFETCH", "SCORE_READERS", "SCORE_BATCH"):
            if getattr(self, name) < 1:
                raise ValueError(f"setting {name}: at least 1, got {getattr(self, name)}")
        if self.TILE_CACHE_MB < 1:
            raise ValueError(f"setting TILE_CACHE_MB: at least 1, got {self.TILE_CACHE_MB}")
        if not 0 <= self.WORKER_NICE <= 19:
            raise ValueError(f"setting WORKER_NICE: 0 to 19, got {self.WORKER_NICE}")
        if not 0.0 <= self.SECOND_REVIEW_SHARE <= 1.0:
            raise ValueError("setting SECOND_REVIEW_SHARE: a share from 0 to 1, got "
                             f"{self.SECOND_REVIEW_SHARE}")
        self.triage_grid  # noqa: B018  (validates TRIAGE_GRID)
        self.fcn_depth  # noqa: B018  (validates FCN_DEPTH)
        if not 0.0 <= self.DENSE_LOSS_WEIGHT < float("inf"):
            raise ValueError("setting DENSE_LOSS_WEIGHT: a finite weight >= 0, got "
                             f"{self.DENSE_LOSS_WEIGHT}")

    @property
    def data_dir(self) -> Path:
        return Path(self.DATA_DIR)

    @property
    def database_path(self) -> Path:
        return Path(self.DATABASE) if self.DATABASE else self.data_dir / "minewatch.db"

    @property
    def models_dir(self) -> Path:
        return Path(self.MODELS_DIR) if self.MODELS_DIR else self.data_dir / "models"

    @property
    def thumbnail_dir(self) -> Path:
        return Path(self.THUMBNAIL_DIR) if self.THUMBNAIL_DIR else self.data_dir / "thumbnails"

    @property
    def similarity_dir(self) -> Path:
        """Where the "more like this" indexes are cached (pipeline.embedding_index)."""
        return self.data_dir / "similarity"

    @property
    def demo_dir(self) -> Path:
        return Path(self.DEMO_DIR) if self.DEMO_DIR else self.data_dir / "demo"

    def data_path(self, stored: str | Path) -> Path:
        """A path as stored in the database: relative ones are relative to DATA_DIR."""
        stored = Path(stored)
        return stored if stored.is_absolute() else self.data_dir / stored

    def stored_path(self, path: str | Path) -> str:
        """``path`` as the database stores it: relative to DATA_DIR when it lies inside it
        (so a copied or moved data folder keeps working), else absolute."""
        absolute = Path(os.path.abspath(path))
        try:
            return absolute.relative_to(os.path.abspath(self.data_dir)).as_posix()
        except ValueError:
            return str(absolute)

    @property
    def fcn_widths(self) -> tuple[int, int, int]:
        widths = tuple(int(w) for w in self.FCN_WIDTHS.split(","))
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"FCN_WIDTHS must be three positive integers, got {self.FCN_WIDTHS!r}")
        return widths  # type: ignore[return-value]

    @property
    def fcn_depth(self) -> int | None:
        """FCN_DEPTH as model.train.TrainConfig takes it: 3, 4, or None for auto."""
        value = str(self.FCN_DEPTH).strip().lower()
        if value == "auto":
            return None
        if value not in ("3", "4"):
            raise ValueError(f"setting FCN_DEPTH: 3, 4 or auto, got {self.FCN_DEPTH!r}")
        return int(value)

    @property
    def triage_grid(self) -> tuple[int, int]:
        """(rows, columns) of a triage page, from TRIAGE_GRID ("4x4")."""
        match = re.fullmatch(r"\s*(\d{1,2})\s*[xX]\s*(\d{1,2})\s*", str(self.TRIAGE_GRID))
        shape = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
        if not all(1 <= side <= 10 for side in shape):
            raise ValueError("setting TRIAGE_GRID: rows x columns from 1 to 10 each, like 4x4; "
                             f"got {self.TRIAGE_GRID!r}")
        return shape

    @property
    def grid(self) -> CellGrid:
        return CellGrid(crs=self.GRID_CRS, cell_size_m=self.CELL_SIZE_M,
                        pixel_size_m=self.PIXEL_SIZE_M)

    def secret_key(self) -> str:
        """SECRET_KEY, or one generated once and kept in DATA_DIR/secret_key."""
        if self.SECRET_KEY:
            return self.SECRET_KEY
        path = self.data_dir / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip()


def setting_help() -> list[tuple[str, Any, str]]:
    """(name, default, help) of every setting, in table order."""
    return [(f.name, f.default, f.metadata["help"]) for f in fields(Settings)]


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from defaults, then ``MINEWATCH_*`` environment variables, then ``overrides``."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = environ.get(ENV_PREFIX + f.name)
        if raw is not None:
            values[f.name] = _convert(f.name, type(f.default), raw)
    for name, value in (overrides or {}).items():
        if name in {f.name for f in fields(Settings)} and value is not None:
            values[name] = _convert(name, type(Settings.__dataclass_fields__[name].default), value)
    return _absolute_paths(replace(Settings(), **values))


#: Settings that name a file or folder; relative ones are relative to the working folder.
PATH_SETTINGS: tuple[str, ...] = ("DATA_DIR", "DATABASE", "MODELS_DIR", "THUMBNAIL_DIR", "DEMO_DIR")


def _absolute_paths(settings: Settings) -> Settings:
    """``settings`` with every path setting made absolute against the working folder, once, so
    that no relative path reaches a consumer with another idea of "relative" (Flask's
    ``send_file`` resolves one against the app's root folder)."""
    values = {name: os.path.abspath(getattr(settings, name))
              for name in PATH_SETTINGS if getattr(settings, name)}
    return replace(settings, **values)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _convert(name: str, kind: type, raw: Any) -> Any:
    if kind is bool and isinstance(raw, str):
        if raw.strip().lower() not in _TRUE | _FALSE:
            raise ValueError(f"setting {name}: {raw!r} is not true or false")
        return raw.strip().lower() in _TRUE
    try:
        return kind(raw)
    except (TypeError, ValueError) as error:
        raise ValueError(f"setting {name}: {raw!r} is not a valid {kind.__name__}") from error
