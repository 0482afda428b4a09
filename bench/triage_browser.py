"""Browser benchmark of the triage grid against the single card (issue 11).

A simulated reviewer drives Debian's chromium (Playwright) through the real app served by
waitress on loopback. The installation is the synthetic demo territory (``simulation.synthetic``), one
year ingested into the imagery store; the queue is every cell the demo truth calls a mine (active
mine components cover at least ``MINE_FRACTION`` of it) plus nine times as many other cells, so one
candidate in ten is a mine, with scores drawn at random (the queue order says nothing about the
truth). The reviewer knows the truth (an oracle) and spends no time looking unless ``--glance-ms``
says so: the figures are the keys and the machine's wall time per decision, not human thinking.

- Card: one key per decision (``m`` or ``b``), the next card swapped in by htmx.
- Grid: per page the reviewer walks the focus to each mine tile by arrow keys (the shortest
  path), presses ``m`` there and Enter at the end (unmarked tiles are background).
- Wall time per decision includes waiting until the next card's or page's pictures have arrived
  and decoded (``img.complete``).
- Grid page latency: from the Enter that submits a page to the moment every tile picture of the
  next page has arrived and decoded. Cold: the server's thumbnail cache
  starts empty (the pass that renders them, the prefetch of the next page included); warm: every
  picture already rendered on the server, in a fresh browser.

Last line: one JSON object (``grid_keys_per_decision``, ``card_keys_per_decision``,
``grid_s_per_decision``, ``card_s_per_decision``, ``grid_page_p95_ms_cold``,
``grid_page_p95_ms_warm``). :func:`run` is what ``bench/triage.py`` calls.

    .venv/bin/python bench/triage_browser.py [--size-km 24] [--grid 4x4] [--pages 6]
                                             [--cards 40] [--glance-ms 0]
    .venv/bin/python bench/triage_browser.py --quick     # 16 km, 2 pages, 10 cards
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import parse_args  # noqa: E402
from db.store import Store  # noqa: E402
from pipeline.ingest import ingest_files  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402
from review.thumbnails import thumbnail_path  # noqa: E402
from simulation.synthetic import build_demo, truth_mine_fraction  # noqa: E402

YEAR = 2021
#: A queue cell counts as a mine when active mine components cover at least this share of it.
MINE_FRACTION = 0.1
#: True once every picture a selector names has arrived and decoded (run in the page; the
#: bench's browser context bypasses the app's CSP for it, the app itself is unchanged).
PICTURES_READY = ("s => Array.from(document.querySelectorAll(s))"
                  ".every(i => i.complete && i.naturalWidth > 0)")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def build(root: Path, size_km: int, seed: int = 7) -> tuple[dict[str, Any], set[int]]:
    """The demo territory of one year ingested, a model and a 1-in-10 mine queue; returns the
    app config and the truth (mine cell ids)."""
    config = {"DATA_DIR": str(root), "SECRET_KEY": "bench", "SECOND_REVIEW_SHARE": 0.0,
              "LEASE_SECONDS": 600}
    settings = load_settings(config, environ={})
    territory = build_demo(root / "demo", size_km=size_km, years=(YEAR,))
    with Store(settings.database_path) as store:
        scene = ingest_files(store, settings, [territory.scenes[YEAR]], YEAR).scene
        ids = np.asarray(store.cells.cell_ids(), dtype=np.int64)
        fraction = truth_mine_fraction(territory.truth_path, settings.grid, ids, YEAR)
        mines = ids[fraction >= MINE_FRACTION]
        rng = np.random.default_rng(seed)
        others = rng.choice(ids[fraction == 0], size=min(9 * len(mines),
                                                         int((fraction == 0).sum())),
                            replace=False)
        queue = np.concatenate([mines, others])
        store.models.add_model({"version": "bench", "parent": None, "path": "models/bench.keras",
                                "bands": list(scene["bands"]), "threshold": 0.5, "metrics": {},
                                "training": {}}, activate=True)
        scores = rng.uniform(0.0, 1.0, len(queue))
        store.scores.write_scores(YEAR, "bench", scene["id"], queue.tolist(), scores.tolist(),
                                  (1 - np.abs(2 * scores - 1)).tolist(), [1.0] * len(queue))
    return config, {int(c) for c in mines}


class Server:
    """The app under waitress on a free loopback port, in a background thread."""

    def __init__(self, config: dict[str, Any]) -> None:
        import waitress

        from labeller import create_app

        self.server = waitress.create_server(create_app(config), host="127.0.0.1", port=0,
                                             threads=8)
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()


def _walk(start: int, target: int, cols: int) -> list[str]:
    """The arrow keys that move the focus from tile ``start`` to ``target`` (shortest path)."""
    (r0, c0), (r1, c1) = divmod(start, cols), divmod(target, cols)
    return (["ArrowDown"] * max(r1 - r0, 0) + ["ArrowUp"] * max(r0 - r1, 0)
            + ["ArrowRight"] * max(c1 - c0, 0) + ["ArrowLeft"] * max(c0 - c1, 0))


def grid_pass(browser, url: str, truth: set[int], pages: int, cols: int,
              glance_ms: float) -> dict[str, Any]:
    """Triage ``pages`` grid pages; keys, decisions, wall seconds and page latencies (ms)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, bypass_csp=True)
    page = context.new_page()
    page.goto(url + "/triage")
    page.wait_for_selector("#grid-form .tile.focused")
    page.wait_for_function(PICTURES_READY, arg=".tile img.view-rgb")
    keys = decisions = 0
    latencies: list[float] = []
    started = time.perf_counter()
    for _ in range(pages):
        tiles = [int(t.get_attribute("data-cell")) for t in page.query_selector_all(".tile")]
        if not tiles:
            break
        time.sleep(glance_ms * len(tiles) / 1000)
        focus = 0
        for index, cell in enumerate(tiles):
            if cell in truth:
                for key in _walk(focus, index, cols) + ["m"]:
                    page.keyboard.press(key)
                    keys += 1
                focus = index
        sent = time.perf_counter()
        with page.expect_navigation(wait_until="domcontentloaded"):
            page.keyboard.press("Enter")
        keys += 1
        decisions += len(tiles)
        page.wait_for_function(PICTURES_READY, arg=".tile img.view-rgb")
        latencies.append((time.perf_counter() - sent) * 1000)
    elapsed = time.perf_counter() - started
    context.close()
    return {"keys": keys, "decisions": decisions, "seconds": elapsed, "latencies": latencies}


def card_pass(browser, url: str, truth: set[int], cards: int, glance_ms: float) -> dict[str, Any]:
    """Decide ``cards`` single cards by keyboard; keys, decisions, wall seconds."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, bypass_csp=True)
    page = context.new_page()
    page.goto(url + "/review")
    page.wait_for_selector("#card-form")
    page.wait_for_function(PICTURES_READY, arg="#card img")
    keys = decisions = 0
    started = time.perf_counter()
    for _ in range(cards):
        form = page.query_selector("#card-form")
        if form is None:  # the queue ran out
            break
        cell = form.get_attribute("data-cell")
        time.sleep(glance_ms / 1000)
        page.keyboard.press("m" if int(cell) in truth else "b")
        keys += 1
        decisions += 1
        page.wait_for_selector(f"#card-form:not([data-cell='{cell}']), .empty-card")
        page.wait_for_function(PICTURES_READY, arg="#card img")
    elapsed = time.perf_counter() - started
    context.close()
    return {"keys": keys, "decisions": decisions, "seconds": elapsed}


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95)) if values else float("nan")


def run(size_km: int = 24, grid: str = "4x4", pages: int = 4, cards: int = 40,
        glance_ms: float = 0.0, chromium: str | None = None) -> dict[str, float]:
    """Build, serve, drive chromium; print the figures and return the JSON figures."""
    from playwright.sync_api import sync_playwright

    chromium = chromium or shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        config, truth = build(root, size_km)
        config["TRIAGE_GRID"] = grid
        cols = load_settings(config, environ={}).triage_grid[1]
        with Store(load_settings(config, environ={}).database_path) as store:
            queue = store.leases.count_queue_fast("bench", YEAR)
        print(f"built demo {size_km} x {size_km} km in {time.perf_counter() - t0:.1f} s: queue "
              f"{queue} cells, {len(truth)} mines ({len(truth) / max(queue, 1):.1%})")
        with sync_playwright() as p, Server(config) as server:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                cold = grid_pass(browser, server.url, truth, pages, cols, glance_ms)
                _render_all(config)
                warm = grid_pass(browser, server.url, truth, pages, cols, glance_ms)
                card = card_pass(browser, server.url, truth, cards, glance_ms)
            finally:
                browser.close()
    grid_keys = cold["keys"] + warm["keys"]
    grid_decisions = cold["decisions"] + warm["decisions"]
    result = {
        "grid_keys_per_decision": round(grid_keys / max(grid_decisions, 1), 3),
        "card_keys_per_decision": round(card["keys"] / max(card["decisions"], 1), 3),
        "grid_s_per_decision": round(warm["seconds"] / max(warm["decisions"], 1), 4),
        "card_s_per_decision": round(card["seconds"] / max(card["decisions"], 1), 4),
        "grid_page_p95_ms_cold": round(_p95(cold["latencies"]), 1),
        "grid_page_p95_ms_warm": round(_p95(warm["latencies"]), 1),
    }
    print(f"grid {grid}: {grid_decisions} decisions with {grid_keys} keys; cold pass "
          f"{cold['seconds']:.1f} s ({cold['decisions']} decisions), warm pass "
          f"{warm['seconds']:.1f} s ({warm['decisions']})")
    print(f"card: {card['decisions']} decisions with {card['keys']} keys in "
          f"{card['seconds']:.1f} s")
    print(f"grid page latency ms: cold p50 {np.median(cold['latencies']):.0f} p95 "
          f"{result['grid_page_p95_ms_cold']:.0f}; warm p50 {np.median(warm['latencies']):.0f} "
          f"p95 {result['grid_page_p95_ms_warm']:.0f}")
    return result


def _render_all(config: dict[str, Any]) -> None:
    """Render every queued cell's natural-colour picture into the server's thumbnail cache."""
    settings = load_settings(config, environ={})
    with Store(settings.database_path) as store:
        for cell_id in store.cells.cell_ids():
            if store.scores.score(cell_id, YEAR, "bench") is not None:
                thumbnail_path(store, settings, cell_id, YEAR, "rgb", "cell")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-km", type=int, default=24, help="side of the demo territory")
    parser.add_argument("--grid", default="4x4", help="TRIAGE_GRID of the run")
    parser.add_argument("--pages", type=int, default=4,
                        help="grid pages per pass (cold, warm); the default 24 km demo's queue "
                             "holds 2 x 4 pages of 4 x 4 and then 40 cards")
    parser.add_argument("--cards", type=int, default=40, help="single cards decided")
    parser.add_argument("--glance-ms", type=float, default=0.0,
                        help="simulated looking time per decision (per tile in the grid)")
    args = parse_args(parser, size_km=16, pages=2, cards=10)
    result = run(args.size_km, args.grid, args.pages, args.cards, args.glance_ms)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
