"""One Store per request on ``g``, closed at teardown (background jobs open their own)."""

from __future__ import annotations

from flask import Flask, current_app, g

from db.store import Store


def get_store() -> Store:
    """The request's Store, opened on first use."""
    if "store" not in g:
        g.store = Store(current_app.config["SETTINGS"].database_path)
    return g.store


def close_store(_error: BaseException | None = None) -> None:
    store = g.pop("store", None)
    if store is not None:
        store.close()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(close_store)
