"""Every benchmark's ``--quick`` mode runs as its own process, exits 0 and prints figures that
parse (the last line, one JSON object), so that a benchmark broken by a change fails the suite.

The benchmarks that measure an existing installation get one small demo built once by
``run.py demo``; those that need ../shared/data or Debian's chromium are skipped without them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.browser import CHROMIUM

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
BRAZIL = ROOT / ".." / "shared" / "data" / "tailings_rgb_brazil"
#: Marker of the benchmark that needs the demo installation of the ``demo`` fixture.
DEMO = "<demo>"
#: Marker of the benchmark that needs a scratch folder of its own.
SCRATCH = "<scratch>"
#: Seconds one quick run may take on a loaded 2-core machine before it counts as broken.
TIMEOUT_S = 600

pytestmark = pytest.mark.bench

needs_brazil = [pytest.mark.shared_data,
                pytest.mark.skipif(not (BRAZIL / "groups.csv").is_file(),
                                   reason=f"shared Brazil patches absent at {BRAZIL}")]
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
#: bench/triage.py runs these three quick runs itself (and prints their figures together).
in_triage = pytest.mark.skipif(CHROMIUM is not None, reason="run (and checked) by bench/triage.py")

#: (script, its arguments, keys its last line must hold).
CASES = [
    pytest.param("score.py", [], {"ratio", "score_km2_s", "ingest_km2_s"}, id="score"),
    pytest.param("store.py", [], {"ingest_km2_s", "store_read_km2_s"}, id="store"),
    pytest.param("tiles.py", [], {"tile_p95_ms_cold", "tile_p95_ms_warm"}, id="tiles",
                 marks=in_triage),
    pytest.param("country.py", [], {"score_s_per_1000_km2", "hours_score_4_years"},
                 id="country"),
    pytest.param("train_memory.py", [], {"labels_10k_rss_mib", "labels_100k_rss_mib"},
                 id="train_memory"),
    pytest.param("export.py", [], {"csv"}, id="export"),
    pytest.param("similar.py", [], {"similar_p95_ms", "similar_precision_at_20", "base_rate"},
                 id="similar", marks=in_triage),
    pytest.param("inventory.py", ["--out", SCRATCH],
                 {"decisions_default_queue", "decisions_seed_way", "winner"}, id="inventory"),
    pytest.param("cycles.py", ["--data-dir", DEMO], {"db_mib", "score_rows"}, id="cycles"),
    pytest.param("review.py", ["--data-dir", DEMO],
                 {"next card, uncertainty, n=1", "thumbnail warm (cache hit)"}, id="review"),
    pytest.param("second_review.py", ["--data-dir", DEMO],
                 {"next_card_with_tasks_p95_ms", "decide_p95_ms"}, id="second_review"),
    pytest.param("review_profile.py", ["--data-dir", DEMO], {"p95_ms", "sql_per_decision"},
                 id="review_profile"),
    pytest.param("detector.py", [], {"baseline"}, id="detector", marks=needs_brazil),
    pytest.param("real_data.py", [], {"ap_mean", "p90_mean"}, id="real_data",
                 marks=needs_brazil),
    pytest.param("triage.py", [], {"grid_keys_per_decision", "grid_page_p95_ms_warm",
                                   "tile_p95_ms_cold", "similar_precision_at_20"},
                 id="triage (triage_browser, tiles, similar)", marks=needs_chromium),
]


def run_bench(script: str, args: list[str]) -> dict:
    """Run ``bench/<script> args`` from the repository root; its last line's JSON object.

    Its temporary folders land in a short folder of its own, removed afterwards: under pytest's
    long tmp paths chromium's socket path passes the 107-character limit and chromium aborts."""
    with tempfile.TemporaryDirectory(prefix="mw-bench-") as scratch:
        done = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=ROOT,
                              env={**os.environ, "TMPDIR": scratch}, capture_output=True,
                              text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, (
        f"bench/{script} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines, f"bench/{script} printed nothing"
    figures = json.loads(lines[-1])
    assert isinstance(figures, dict) and figures, lines[-1]
    return figures


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """One small demo installation, built as a team builds one: `run.py demo`."""
    data = tmp_path_factory.mktemp("bench-demo") / "instance"
    done = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--data-dir", str(data), "demo", "--size-km", "12"],
        cwd=ROOT, env={**os.environ, "MINEWATCH_TRAIN_EPOCHS": "2"}, capture_output=True,
        text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return data


@pytest.mark.parametrize("script, args, keys", CASES)
def test_quick_run_prints_its_figures(script, args, keys, tmp_path, request) -> None:
    if DEMO in args:
        args = [str(request.getfixturevalue("demo")) if a == DEMO else a for a in args]
    args = [str(tmp_path / "out") if a == SCRATCH else a for a in args]
    figures = run_bench(script, ["--quick", *args])
    assert keys <= set(figures), f"bench/{script}: no {sorted(keys - set(figures))} in {figures}"


def test_demo_truth_reads_the_demo(demo) -> None:
    figures = run_bench("demo_truth.py", [str(demo)])
    assert set(figures) == {str(demo)} and figures[str(demo)]["cells"] > 0


def test_http_load_loses_nothing(demo) -> None:
    figures = run_bench("http_load.py", ["--quick", "--data-dir", str(demo)])
    assert figures["acknowledged"] > 0
    assert (figures["lost"], figures["double_served"], figures["errors"]) == (0, 0, 0)


def test_every_bench_script_is_run_here() -> None:
    covered = {p.values[0] for p in CASES} | {"demo_truth.py", "http_load.py",
                                              "triage_browser.py"}
    scripts = {p.name for p in BENCH.glob("*.py")} - {"common.py"}
    assert scripts == covered, f"benchmarks without a quick run here: {scripts - covered}"
