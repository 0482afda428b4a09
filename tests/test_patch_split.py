"""Tests for pipeline.patch_split: whole groups, and >= 1 km between train and test."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.patch_split import (
    MIN_GAP_KM,
    Bounds,
    check_gap,
    distance_km,
    group_split,
    min_gap_km,
    read_bounds,
    read_groups,
)

BRAZIL = Path(__file__).parents[1] / ".." / "shared" / "data" / "tailings_rgb_brazil"


def synthetic(tmp_path: Path) -> Path:
    """A manifest of 12 patches (0.04 degree boxes) in 6 groups: each group two overlapping
    patches, groups 0.1 degree (about 11 km) apart; written as manifest.csv and groups.csv."""
    rows, groups = [], []
    for i in range(12):
        g = i // 2
        left = -44.0 + 0.1 * g + 0.02 * (i % 2)
        rows.append(f"{i + 1},448,448,{left},-21.0,{left + 0.04},-20.96,0.05")
        groups.append(f"{i + 1},{g}")
    (tmp_path / "manifest.csv").write_text(
        "id,width,height,left,bottom,right,top,mask_fraction\n" + "\n".join(rows) + "\n")
    (tmp_path / "groups.csv").write_text("id,group\n" + "\n".join(groups) + "\n")
    return tmp_path


@pytest.fixture(params=["synthetic", "brazil"])
def folder(request, tmp_path: Path) -> Path:
    if request.param == "brazil":
        if not (BRAZIL / "groups.csv").is_file():
            pytest.skip(f"shared Brazil patches absent at {BRAZIL}")
        return BRAZIL
    return synthetic(tmp_path)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_split_keeps_groups_whole_and_1_km_apart(folder: Path, seed: int) -> None:
    groups, bounds = read_groups(folder / "groups.csv"), read_bounds(folder / "manifest.csv")
    train, test = group_split(groups, 0.25, seed)
    assert sorted(train + test) == sorted(groups) and not set(train) & set(test)
    assert not {groups[i] for i in train} & {groups[i] for i in test}
    assert 0.15 * len(groups) <= len(test) <= 0.5 * len(groups)
    assert min_gap_km(bounds, train, test) >= MIN_GAP_KM
    assert check_gap(bounds, train, test) >= MIN_GAP_KM


def test_split_keeps_a_mine_on_both_sides() -> None:
    groups = {i: i for i in range(8)}
    mines = {i: i == 5 or i == 6 for i in range(8)}
    for seed in range(5):
        train, test = group_split(groups, 0.25, seed, mines)
        assert any(mines[i] for i in train) and any(mines[i] for i in test)


def test_distance_between_boxes() -> None:
    a = Bounds(0.0, 0.0, 0.01, 0.01)
    assert distance_km(a, Bounds(0.005, 0.005, 0.02, 0.02)) == 0.0
    assert distance_km(a, Bounds(0.02, 0.0, 0.03, 0.01)) == pytest.approx(1.112, abs=1e-3)
    assert distance_km(a, Bounds(0.0, 0.02, 0.01, 0.03)) == pytest.approx(1.112, abs=1e-3)


def test_too_close_groups_are_reported(tmp_path: Path) -> None:
    bounds = read_bounds(synthetic(tmp_path) / "manifest.csv")
    with pytest.raises(ValueError, match="km from a training patch"):
        check_gap(bounds, [1], [2])  # two overlapping patches of one group


@pytest.mark.parametrize("content, message", [
    ("id,grp\n1,0\n", "missing column"), (None, "no such file")])
def test_bad_groups_file(tmp_path: Path, content, message) -> None:
    path = tmp_path / "groups.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_groups(path)


def test_one_group_cannot_be_split() -> None:
    with pytest.raises(ValueError, match="at least two groups"):
        group_split({1: 0, 2: 0}, 0.25, 0)
