"""A real browser (Debian's chromium through Playwright) logs in, reviews cells by keyboard under
the app's Content-Security-Policy, and logs out."""

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
def server(app) -> Iterator[str]:
    add_account(app, "bea")
    with served(app) as url:
        yield url


def test_review_by_keyboard(server: str, review_db, tmp_path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text)
                    if "Content Security Policy" in m.text else None)
            page.goto(server + "/review")
            assert "/login?next=/review" in page.url
            # a wrong password shows an error and logs nobody in
            page.fill("#name", "bea")
            page.fill("#password", "not the password")
            page.click("button[type=submit]")
            assert "Wrong name or password" in page.inner_text("p.error")
            page.fill("#name", "bea")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("#card-form")
            assert page.url.endswith("/review") and page.inner_text(".reviewer-name") == "bea"

            def current() -> str:
                return page.get_attribute("#card-form", "data-cell")

            def press(key: str) -> str:
                before = current()
                page.keyboard.press(key)
                # (a selector, not wait_for_function: the page's CSP forbids eval, Playwright's too)
                page.wait_for_selector(f"#card-form:not([data-cell='{before}'])")
                return before

            mined = press("m")
            background = press("b")
            skipped = press("s")
            # undo brings the skipped cell back as the current card
            press("u")
            assert current() == skipped
            # typing in a form control does not decide anything
            page.focus("select[name=strategy]")
            page.keyboard.press("m")
            page.keyboard.press("b")
            page.wait_for_timeout(300)
            assert current() == skipped
            page.focus("body")
            page.evaluate("document.activeElement.blur()")
            # f toggles the false-colour view
            assert page.get_attribute("#card .thumb", "data-view") == "rgb"
            page.keyboard.press("f")
            assert page.get_attribute("#card .thumb", "data-view") == "false"
            assert page.is_visible("#card .thumb img.view-false")
            page.keyboard.press("f")
            assert page.is_visible("#card .thumb img.view-rgb")
            # the recent list and counters followed without a reload
            assert page.inner_text("#counters").startswith("2")
            # images of the current card loaded (prefetched ones too)
            page.wait_for_load_state("networkidle")
            assert page.evaluate(
                "[...document.querySelectorAll('#card img')].every(i => i.complete && i.naturalWidth > 0)")
            # server-computed widths still apply without inline styles
            assert page.evaluate("document.querySelector('#card .scorebar span').style.width")
            page.screenshot(path=str(tmp_path / "review.png"), full_page=True)
            assert violations == []
            page.click("text=log out")
            page.wait_for_selector("#password")
            page.goto(server + "/review")
            assert "/login" in page.url
        finally:
            browser.close()

    with Store(review_db.database) as store:
        events = store.db.execute(
            "SELECT cell_id, kind, label, ms_spent FROM label_events WHERE reviewer = 'bea'"
            " ORDER BY id").fetchall()
        assert [(e[1], e[2]) for e in events] == [
            ("label", "mine"), ("label", "background"), ("label", "skip"), ("undo", None)]
        assert [str(e[0]) for e in events[:3]] == [mined, background, skipped]
        assert all(e[3] is not None and e[3] > 0 for e in events[:3])
        assert store.labels.current_label(int(mined), 2021)["label"] == "mine"
        assert store.labels.current_label(int(background), 2021)["label"] == "background"
        assert store.labels.current_label(int(skipped), 2021) is None
