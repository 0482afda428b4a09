"""store.models: the model registry and its one active model."""

from __future__ import annotations

import pytest

from db.store import StoreError
from tests.db_fixtures import add_model

pytest_plugins = ["tests.db_fixtures"]


def test_one_active_model(store):
    add_model(store, "m0001")
    add_model(store, "m0002")
    assert store.models.active_model()["version"] == "m0002"
    store.models.activate_model("m0001")
    assert store.models.active_model()["version"] == "m0001"
    assert sum(m["active"] for m in store.models.models()) == 1
    assert store.models.next_model_version() == "m0003"
    with pytest.raises(StoreError):
        store.models.activate_model("nope")
