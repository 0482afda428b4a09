"""A real browser (Debian's chromium through Playwright): a lead logs in and adjudicates two
disagreements by keyboard."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from db.store import Store
from review import second_review as sr
from review.decisions import DecisionForm, decide
from tests.browser import CHROMIUM, LAUNCH_ARGS, MARKS, served

pytest.register_assert_rewrite("fixtures_app")
from fixtures_app import PASSWORD, add_account  # noqa: E402

pytest_plugins = ["fixtures_app"]

pytestmark = MARKS


@pytest.fixture
def disagreements(app, review_db) -> list[int]:
    """Accounts (two reviewers, one lead) and two cells the reviewers disagree on, oldest first."""
    cells = review_db.cell_ids[:2]
    for name, role in (("ana", "reviewer"), ("ben", "reviewer"), ("lea", "lead")):
        add_account(app, name, role)
    with Store(review_db.database) as store:
        for cell in cells:
            for reviewer, label in (("ana", "mine"), ("ben", "background")):
                decide(store, reviewer=reviewer, cell_id=cell, year=2021,
                               form=DecisionForm(label, f"{reviewer}-{cell}"),
                               policy=sr.SecondReviewPolicy(share=1.0))
    return cells


@pytest.fixture
def server(app, disagreements) -> Iterator[str]:
    with served(app) as url:
        yield url


def test_lead_adjudicates_by_keyboard(server: str, review_db, disagreements, tmp_path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    first, second = disagreements
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.goto(server + "/adjudicate")
            assert "/login" in page.url
            page.fill("#name", "lea")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("#adjudication-form")
            assert page.get_attribute("#adjudication-form", "data-cell") == str(first)
            assert "mine" in page.inner_text(".first-label") and "ana" in page.inner_text(
                ".first-label")
            assert "background" in page.inner_text(".second-label")
            assert "2 disagreements waiting" in page.inner_text("#waiting")
            page.keyboard.press("m")
            page.wait_for_selector(f'#adjudication-form[data-cell="{second}"]')
            assert f"Adjudicated cell {first} (2021) as mine" in page.inner_text("#card")
            page.keyboard.press("b")
            page.wait_for_selector("text=Nothing to adjudicate")
            page.screenshot(path=str(tmp_path / "adjudicate.png"), full_page=True)
        finally:
            browser.close()

    with Store(review_db.database) as store:
        assert store.second_review.second_review(first, 2021)["adjudicated_label"] == "mine"
        assert store.second_review.second_review(second, 2021)["adjudicated_label"] == "background"
        assert {store.second_review.second_review(c, 2021)["adjudicated_by"] for c in (first, second)} == {"lea"}
        assert {(r["cell_id"], r["label"]) for r in store.labels.training_labels()
                if r["cell_id"] in (first, second) and r["year"] == 2021} == {
            (first, "mine"), (second, "background")}
