"""The SQLite store: schema migrations and the one module that writes SQL (``db.store``)."""
