"""A snapshot of an installation: every row of every table of its database and every file under
its data folder (path and sha256), to show that a failed command changed nothing."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

DATABASE = "minewatch.db"


def database_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Table name -> all its rows, sorted (an absent database is empty)."""
    if not path.exists():
        return {}
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}


def files(data_dir: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``data_dir`` but the database's own files."""
    if not data_dir.exists():
        return {}
    return {str(p.relative_to(data_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data_dir.rglob("*"))
            if p.is_file() and not p.name.startswith(DATABASE)}


def snapshot(data_dir: Path) -> dict[str, Any]:
    """Every table's rows and every file's hash of the installation in ``data_dir``."""
    return {"tables": database_rows(data_dir / DATABASE), "files": files(data_dir)}
