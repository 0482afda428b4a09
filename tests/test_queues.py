"""One source for the default review queue: the code's DEFAULT_STRATEGY is the measured winner
of the committed bench/inventory.py summary, and the README, the user guide (docs/user-guide.md),
`run.py serve --help` and the review page all say the same sentence."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from db.store import QUEUE_STRATEGIES
from review.queues import DEFAULT_EVIDENCE, DEFAULT_STRATEGY, QUEUE_NAMES, default_queue_sentence

pytest.register_assert_rewrite("fixtures_app")
from fixtures_app import login  # noqa: E402

pytest_plugins = ["fixtures_app"]

ROOT = Path(__file__).resolve().parents[1]


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_the_default_queue_is_the_measured_winner():
    summary = json.loads((ROOT / DEFAULT_EVIDENCE).read_text())
    assert summary["default_queue"] == DEFAULT_STRATEGY
    assert summary["winner"] == DEFAULT_STRATEGY, (
        f"{DEFAULT_EVIDENCE} measured {summary['winner']!r} as the winner")
    primary = next(iter(summary["territories"].values()))
    reached = {name: plan["reached_at"] for name, plan in primary["plans"].items()
               if name in QUEUE_STRATEGIES}
    assert reached[DEFAULT_STRATEGY] is not None
    assert all(r is None or r >= reached[DEFAULT_STRATEGY] for r in reached.values())
    assert summary["decisions_default_queue"] == reached[DEFAULT_STRATEGY]
    assert summary["ratio"] == round(summary["decisions_seed_way"] / reached[DEFAULT_STRATEGY], 2)


@pytest.mark.parametrize("page", ["README.md", "docs/user-guide.md"])
def test_the_readme_and_user_guide_say_the_default_sentence(page):
    text = flat((ROOT / page).read_text())
    assert default_queue_sentence() in text
    others = [QUEUE_NAMES[s] for s in QUEUE_STRATEGIES if s != DEFAULT_STRATEGY]
    assert not any(f"start on the {name!r}" in text for name in others)


def test_serve_help_says_the_default_sentence():
    from run import cli

    result = CliRunner().invoke(cli, ["serve", "--help"], terminal_width=1000)
    assert result.exit_code == 0 and default_queue_sentence() in flat(result.output)


def test_the_review_page_starts_on_the_default_and_says_so(client):
    login(client)
    page = client.get("/review").get_data(as_text=True)
    assert default_queue_sentence() in html.unescape(flat(page))
    assert re.search(rf'<option value="{DEFAULT_STRATEGY}"\s+selected>[^<]*\(default\)', page)
