"""Screenshots of the review card, the triage grid and the map for the README, made from a real
demo so that they stay true.

Builds a small SYNTHETIC demo (`run.py demo`) in a temporary data folder, serves it with
`run.py serve` on a free loopback port (open mode: no account yet, so every page acts as the
built-in local admin), drives Debian's chromium through Playwright like the browser tests, and
writes `review.png`, `triage.png` and `map.png` into `docs/img/`:

    .venv/bin/python docs/screenshots.py [--size-km 12] [--epochs 3] [--out docs/img]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: The same flags as the browser tests (tests/browser.py): headless, no background connections.
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run"]
VIEWPORT = {"width": 1000, "height": 720}  # each picture is the whole page at this width
#: Page, what to wait for before the picture is taken, and the PNG's name.
SHOTS: list[tuple[str, str, str]] = [
    ("/review", "#card-form img", "review.png"),
    ("/triage", "#grid-form .tile.focused", "triage.png"),
    ("/map?year=2021&status=all", "#map[data-loaded]", "map.png"),
]
#: Colours kept per PNG: plenty for thumbnails and map tiles, a fraction of the bytes.
PALETTE_COLOURS = 256


def run_py(data_dir: Path, *args: str) -> list[str]:
    """The command line of `run.py` with an absolute --data-dir and the given arguments."""
    return [sys.executable, str(ROOT / "run.py"), "--data-dir", str(data_dir.resolve()), *args]


def build_demo(data_dir: Path, size_km: int, epochs: int) -> None:
    """Build the synthetic demo installation into ``data_dir`` (trained for ``epochs`` epochs)."""
    env = {**os.environ, "MINEWATCH_TRAIN_EPOCHS": str(epochs)}
    subprocess.run(run_py(data_dir, "demo", "--size-km", str(size_km)), env=env, check=True,
                   stdout=subprocess.DEVNULL, cwd=ROOT)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free at this moment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Wait until ``url`` answers; raise if the server exits or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"run.py serve exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")


@contextmanager
def serving(data_dir: Path) -> Iterator[str]:
    """`run.py serve` on a free port of 127.0.0.1 for the life of the block; yields its URL."""
    port = free_port()
    process = subprocess.Popen(run_py(data_dir, "serve", "--host", "127.0.0.1", "--port", str(port)),
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/", process)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def shrink(png: Path) -> None:
    """Rewrite ``png`` with a palette of PALETTE_COLOURS colours (same size in pixels)."""
    with Image.open(png) as image:
        small = image.convert("RGB").quantize(PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT)
    small.save(png, optimize=True)


def capture(url: str, out_dir: Path) -> list[Path]:
    """Save the SHOTS of the app at ``url`` into ``out_dir``; the paths written."""
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            for path, ready, name in SHOTS:
                page.goto(url + path)
                page.wait_for_selector(ready)
                page.wait_for_load_state("networkidle")  # thumbnails and map tiles arrived
                page.screenshot(path=out_dir / name, full_page=True)
                shrink(out_dir / name)
                written.append(out_dir / name)
        finally:
            browser.close()
    return written


def make_screenshots(out_dir: Path, size_km: int = 12, epochs: int = 3) -> list[Path]:
    """Build a demo in a temporary folder, serve it, and save the screenshots into ``out_dir``."""
    with tempfile.TemporaryDirectory(prefix="minewatch-shots-") as tmp:
        data_dir = Path(tmp) / "data"
        build_demo(data_dir, size_km, epochs)
        with serving(data_dir) as url:
            return capture(url, out_dir)


def main(argv: list[str] | None = None) -> None:
    """Command line: build, serve, capture; print each PNG written with its size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-km", type=int, default=12, help="side of the demo territory")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of the demo model")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder of the PNGs")
    args = parser.parse_args(argv)
    try:
        written = make_screenshots(args.out.resolve(), args.size_km, args.epochs)
    except subprocess.CalledProcessError as error:  # run.py printed its own Error: line
        raise SystemExit(f"Error: run.py demo exited with status {error.returncode}") from None
    except (RuntimeError, TimeoutError) as error:  # the server did not come up
        raise SystemExit(f"Error: {error}") from None
    for png in written:
        with Image.open(png) as image:
            print(f"{png}: {image.width} x {image.height} px, {png.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
