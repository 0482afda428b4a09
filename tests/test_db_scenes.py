"""store.scenes: scene rows and the scenes covering a cell."""

from __future__ import annotations

from tests.db_fixtures import add_scene

pytest_plugins = ["tests.db_fixtures"]


def test_scene_json_round_trip_and_covering(store):
    scene_id = add_scene(store)
    assert add_scene(store) == scene_id  # same paths: updated, not duplicated
    scene = store.scenes.scene(scene_id)
    assert scene["bands"] == ["B2", "B3", "B4"] and scene["stretch"] == {"B4": [0, 3000]}
    assert [s["id"] for s in store.scenes.scenes_covering(5, 2020)] == [scene_id]
    assert store.scenes.scenes_covering(5, 2019) == [] and store.scenes.scenes_covering(100_005, 2020) == []
    assert store.scenes.years() == [2020]
