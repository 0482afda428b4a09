"""The README and docs/: every relative link (and its #anchor) leads somewhere, the README stays
short and shows the screenshots."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """The #fragment GitHub gives a Markdown heading (lower case, punctuation dropped)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The #fragments of every heading of ``page``."""
    return {github_anchor(line.lstrip("#")) for line in page.read_text().splitlines()
            if line.startswith("#")}


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file, or heading, does not exist."""
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (fragment and file.suffix == ".md"
                                 and fragment not in anchors(file)):
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_exists(page):
    assert broken_links(page) == []


def test_the_readme_is_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    for page in ("user-guide", "settings", "operations", "benchmarks", "design"):
        assert f"(docs/{page}.md)" in readme
    for picture in ("review", "triage", "map"):
        assert f"(docs/img/{picture}.png)" in readme and (ROOT / f"docs/img/{picture}.png").exists()


def test_github_anchor():
    assert github_anchor(" Detector study (clean geographic split)") == \
        "detector-study-clean-geographic-split"
    assert github_anchor(" bench/http_load.py") == "benchhttp_loadpy"
