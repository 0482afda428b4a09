"""A real browser (Debian's chromium through Playwright) triages a grid page by keyboard under
the app's Content-Security-Policy: moves, marks, false colour, submit, reopen and correct, open
as a card; the database holds the decisions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from db.store import Store
from tests.browser import CHROMIUM, LAUNCH_ARGS, MARKS, served

pytest.register_assert_rewrite("fixtures_app")
from fixtures_app import PASSWORD, add_account  # noqa: E402

pytest_plugins = ["fixtures_app"]

pytestmark = MARKS


@pytest.fixture
def app_config(app_config: dict) -> dict:
    return {**app_config, "TRIAGE_GRID": "2x3", "SECOND_REVIEW_SHARE": 0.0}


@pytest.fixture
def server(app) -> Iterator[str]:
    add_account(app, "bea")
    with served(app) as url:
        yield url


def test_triage_by_keyboard(server: str, app) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 1000})
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text)
                    if "Content Security Policy" in m.text else None)
            page.goto(server + "/triage")
            page.fill("#name", "bea")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("#grid-form .tile.focused")
            assert page.url.endswith("/triage")
            cells = [t.get_attribute("data-cell") for t in page.query_selector_all(".tile")]
            assert len(cells) == 6

            def focused() -> int:
                return int(page.get_attribute(".tile.focused", "data-index"))

            def label(index: int) -> str:
                return page.get_attribute(f".tile[data-index='{index}']", "data-label")

            moves = [("l", 1), ("j", 4), ("ArrowLeft", 3), ("k", 0), ("h", 0), ("ArrowDown", 3),
                     ("ArrowUp", 0), ("ArrowRight", 1)]
            for key, expected in moves:
                page.keyboard.press(key)
                assert focused() == expected, key
            page.keyboard.press("m")
            assert label(1) == "mine"
            page.keyboard.press("ArrowRight")
            page.keyboard.press(" ")
            assert label(2) == "mine"
            page.keyboard.press(" ")  # again: unmarked
            assert label(2) == ""
            page.keyboard.press("j")
            page.keyboard.press("s")
            assert focused() == 5 and label(5) == "skip"
            page.keyboard.press("f")
            page.wait_for_selector(".triage-grid[data-view='false'] .tile .view-false",
                                   state="visible")
            page.keyboard.press("f")
            page.wait_for_selector(".triage-grid[data-view='rgb'] .tile .view-rgb",
                                   state="visible")
            with page.expect_navigation():
                page.keyboard.press("Enter")
            page.wait_for_selector("[data-recorded]")
            assert page.inner_text("[data-recorded]") == "6"
            after = [t.get_attribute("data-cell") for t in page.query_selector_all(".tile")]
            assert after and not set(after) & set(cells)
            with Store(app.config["SETTINGS"].database_path) as store:
                events = store._rows("SELECT * FROM label_events WHERE reviewer = 'bea'"
                                     " ORDER BY id")
            assert [(str(e["cell_id"]), e["label"]) for e in events] == [
                (cells[0], "background"), (cells[1], "mine"), (cells[2], "background"),
                (cells[3], "background"), (cells[4], "background"), (cells[5], "skip")]
            assert all(e["ms_spent"] is not None and e["model_version_shown"] == "m0001"
                       for e in events)

            # Backspace reopens the page with its decisions; m on tile 1 unmarks it.
            with page.expect_navigation():
                page.keyboard.press("Backspace")
            page.wait_for_selector("#grid-form[data-reopened='true'] .tile.focused")
            assert [label(i) for i in range(6)] == ["background", "mine", "background",
                                                    "background", "background", "skip"]
            page.keyboard.press("l")
            page.keyboard.press("m")
            assert label(1) == ""
            with page.expect_navigation():
                page.keyboard.press("Enter")
            assert "1 tile(s) changed" in page.inner_text("main")
            with Store(app.config["SETTINGS"].database_path) as store:
                assert store.labels.current_label(int(cells[1]), 2021)["label"] == "background"
                changes = store._rows("SELECT * FROM label_events WHERE reviewer = 'bea'"
                                      " AND request_id LIKE 'change:%'")
            assert [(str(e["cell_id"]), e["label"]) for e in changes] == [(cells[1], "background")]

            # o opens the focused tile as a full review card.
            page.wait_for_selector("#grid-form .tile.focused")
            target = page.get_attribute(".tile.focused", "data-cell")
            with page.expect_navigation():
                page.keyboard.press("o")
            page.wait_for_selector("#card-form")
            assert page.get_attribute("#card-form", "data-cell") == target
            assert violations == []
        finally:
            browser.close()
