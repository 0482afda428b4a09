"""The one table of settings: defaults, environment overrides, and docs/settings.md documents each."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.settings import load_settings, setting_help

SETTINGS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


def test_every_setting_is_documented_in_the_settings_page():
    text = SETTINGS_PAGE.read_text()
    missing = [name for name, _, _ in setting_help() if f"`{name}`" not in text]
    assert missing == []


def test_environment_and_overrides(tmp_path):
    settings = load_settings({"PORT": "5050"}, {"MINEWATCH_DATA_DIR": str(tmp_path),
                                                "MINEWATCH_LEASE_SECONDS": "30"})
    assert settings.PORT == 5050 and settings.LEASE_SECONDS == 30
    assert settings.database_path == tmp_path / "minewatch.db"
    assert settings.grid.cell_px == 100 and settings.HOST == "127.0.0.1"
    assert settings.secret_key() == settings.secret_key()  # generated once, then kept
    with pytest.raises(ValueError, match="PORT"):
        load_settings(environ={"MINEWATCH_PORT": "fifty"})
    with pytest.raises(ValueError, match="FCN_WIDTHS"):
        _ = load_settings({"FCN_WIDTHS": "8,8"}).fcn_widths


def test_fcn_depth_and_dense_loss_weight():
    assert load_settings(environ={}).fcn_depth is None  # auto
    assert load_settings(environ={}).DENSE_LOSS_WEIGHT == 0.0  # the seed's way by default
    assert load_settings({"FCN_DEPTH": "4"}, environ={}).fcn_depth == 4
    assert load_settings(environ={"MINEWATCH_FCN_DEPTH": "3"}).fcn_depth == 3
    with pytest.raises(ValueError, match="FCN_DEPTH: 3, 4 or auto, got '5'"):
        load_settings({"FCN_DEPTH": "5"}, environ={})
    assert load_settings({"DENSE_LOSS_WEIGHT": "0"}, environ={}).DENSE_LOSS_WEIGHT == 0.0
    with pytest.raises(ValueError, match="DENSE_LOSS_WEIGHT"):
        load_settings({"DENSE_LOSS_WEIGHT": "-1"}, environ={})


def test_activation_floor_and_tile_cache_settings_are_validated():
    settings = load_settings(environ={})
    assert (settings.ACTIVATION_MAX_MINE_SHARE, settings.ACTIVATION_MAX_SHARE_RATIO) == (0.5, 10.0)
    assert settings.TILE_CACHE_MB == 1024
    for name, bad in (("ACTIVATION_MAX_MINE_SHARE", "1.5"), ("ACTIVATION_MAX_SHARE_RATIO", "0.5"),
                      ("ACTIVATION_MAX_SHARE_RATIO", "inf"), ("TILE_CACHE_MB", "0")):
        with pytest.raises(ValueError, match=f"setting {name}"):
            load_settings({name: bad}, environ={})
