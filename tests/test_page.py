"""The web page in a real browser (Playwright driving Debian's headless chromium, which
``make test`` installs where missing) against a real stack: a photo's label, bars and
suggestion in both languages, a refused file's message, an evaluation's progress bar,
metrics and confusion matrix, and the versions list. Each main state is saved as a
screenshot in ``var/screenshots/``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, ConsoleMessage, Page, Response, expect, sync_playwright

from common.labels import CLASSES, ENGLISH_NAMES, SUGGESTIONS
from tests.conftest import photo, run_stack
from tests.test_evaluate import dataset_zip

SCREENSHOTS = Path(__file__).resolve().parents[1] / "var" / "screenshots"
ADMIN_KEY = "page-admin-key-0123456789"
TIMEOUT_MS = 60_000
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1100, "height": 900}


@pytest.fixture(scope="module")
def page_stack(redis_url, tmp_path_factory):
    yield from run_stack(
        redis_url.rsplit("/", 1)[0] + "/9", tmp_path_factory.mktemp("page"),
        {"ADMIN_API_KEY": ADMIN_KEY},
    )  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make test` installs it"
    with sync_playwright() as playwright:
        # --no-sandbox: chromium's sandbox refuses to start as root, as CI runs.
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser, page_stack) -> Iterator[Page]:
    context = browser.new_context(viewport=PHONE, base_url=page_stack.base_url)
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # A refused upload's 4xx is logged by the browser too; those are the tests' to check.
        if message.type == "error" and "Failed to load resource" not in message.text:
            errors.append(message.text)

    def on_response(response: Response) -> None:
        if response.status >= 500 or (response.status == 404 and response.request.method == "GET"):
            errors.append(f"{response.status} {response.url}")

    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("console", on_console)
    opened.on("response", on_response)
    opened.goto("/")
    yield opened
    context.close()
    assert not errors, errors  # no script error, CSP violation, missing file or 5xx


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def test_a_photo_gets_its_label_bars_and_suggestion_in_both_languages(page, tmp_path):
    camera = page.locator("#camera")
    assert camera.get_attribute("accept") == "image/*"
    assert camera.get_attribute("capture") == "environment"  # a phone opens its camera
    screenshot(page, "1-start")

    path = tmp_path / "bottle.jpg"
    path.write_bytes(photo("Plastik", seed=3))
    page.locator("#chooser").set_input_files(path)
    expect(page.locator("#result")).to_be_visible()
    label = page.locator("#label").inner_text()
    assert label in CLASSES
    expect(page.locator("#suggestion")).to_have_text(SUGGESTIONS["id"][label])
    bars = page.locator("#bars li")
    expect(bars).to_have_count(len(CLASSES))
    assert sorted(bars.evaluate_all("items => items.map(i => i.dataset.label)")) == sorted(CLASSES)
    shown = [float(v.rstrip("%")) for v in page.locator("#bars .value").all_inner_texts()]
    assert shown == sorted(shown, reverse=True) and abs(sum(shown) - 100) < 0.5
    assert bars.first.get_attribute("data-label") == label
    screenshot(page, "2-result-id")

    page.get_by_role("button", name="EN").click()
    expect(page.locator("#suggestion")).to_have_text(SUGGESTIONS["en"][label])
    expect(page.locator("#label")).to_have_text(f"{ENGLISH_NAMES[label]} ({label})")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    screenshot(page, "3-result-en")


def test_a_refused_file_shows_the_apis_message(page, tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_bytes(b"not a photo at all")
    page.locator("#chooser").set_input_files(path)
    expect(page.locator("#photo-status")).to_contain_text("image")
    expect(page.locator("#result")).to_be_hidden()


def test_the_operator_view_evaluates_a_zip_and_lists_versions(page, page_stack, tmp_path):
    page.set_viewport_size(DESKTOP)
    page.get_by_role("button", name="Operator").click()
    active = requests.get(page_stack.url("/model-info"), timeout=10).json()["version"]
    expect(page.locator("#model-info")).to_contain_text(active)
    expect(page.locator("#models-status")).to_contain_text("admin")  # no key given yet

    page.locator("summary").click()
    page.locator("#admin-key").fill(ADMIN_KEY)
    page.locator("#admin-key").dispatch_event("change")
    expect(page.locator("#versions tr.active")).to_contain_text(active)

    per_class = 4
    path = tmp_path / "dataset.zip"
    path.write_bytes(dataset_zip(per_class=per_class))
    page.locator("#dataset").set_input_files(path)
    page.get_by_role("button", name="Mulai evaluasi").click()
    expect(page.locator("#report")).to_be_visible()
    assert page.locator("#progress").evaluate("bar => bar.value") == 100
    # The test split's photos of each class (its broken photo skipped), in every count.
    rows = page.locator("#per-class tbody tr td:first-child").all_inner_texts()
    assert rows == list(CLASSES)  # in the model's order, as the matrix
    supports = page.locator("#per-class tbody tr td:last-child").all_inner_texts()
    cells = page.locator("#confusion tbody td:not(:first-child)").all_inner_texts()
    assert len(cells) == len(CLASSES) ** 2
    assert sum(map(int, cells)) == sum(map(int, supports)) >= per_class * len(CLASSES)
    expect(page.locator("#summary")).to_contain_text("Accuracy")
    screenshot(page, "4-evaluation")
