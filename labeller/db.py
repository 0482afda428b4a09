"""One Store per serving thread, reused by its requests (background jobs open their own).

Opening a connection costs more than most review requests' queries together: the pragmas, the
migration check, SQLite reading the schema again and starting with a cold page cache (and,
under load, closing it). So each thread that serves requests (waitress has 8) keeps its Store
in a thread-local of the app and reuses it; a thread that ends takes its connection with it.
Every write runs in its own ``Store.atomic`` transaction and reads run in autocommit mode, so
nothing is carried from one request to the next; a transaction a failed request left open is
rolled back at teardown.
"""

from __future__ import annotations

import threading

from flask import Flask, current_app, g

from db.store import Store

EXTENSION = "minewatch_stores"


def get_store() -> Store:
    """The serving thread's Store (opened on its first request)."""
    if "store" not in g:
        local = current_app.extensions[EXTENSION]
        store = getattr(local, "store", None)
        if store is None:
            store = local.store = Store(current_app.config["SETTINGS"].database_path)
        g.store = store
    return g.store


def end_request(_error: BaseException | None = None) -> None:
    """Roll back a transaction the request left open; the connection stays for the next one."""
    store = g.pop("store", None)
    if store is not None and store.db.conn.in_transaction:
        store.db.conn.execute("ROLLBACK")


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION] = threading.local()
    app.teardown_appcontext(end_request)
