"""What the real-browser tests share: Debian's chromium, its flags, and a served app."""

from __future__ import annotations

import importlib.util
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
from flask import Flask
from werkzeug.serving import make_server

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
#: Headless, and no background connections: this machine has no network.
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run"]
MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                       "(`apt-get install chromium`, or `make test` installs it)"),
]


def screenshots_module() -> ModuleType:
    """docs/screenshots.py, imported from its path (docs/ is not a package): its helpers that
    start `run.py serve` (free_port, wait_until_up) serve the browser tests too."""
    path = Path(__file__).resolve().parents[1] / "docs" / "screenshots.py"
    spec = importlib.util.spec_from_file_location("screenshots", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def served(app: Flask) -> Iterator[str]:
    """The app served by werkzeug on a free port of 127.0.0.1 in a background thread; its URL."""
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(5)
