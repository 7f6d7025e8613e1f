"""The demo page driven the way a person uses it, in headless Chromium (Debian's `chromium` + `chromium-driver`):
load the page, upload a picture (or pick an example), press Submit, wait for the result and read what the page
shows, for each task, and for a file that is not an image. Screenshots go to the test's tmp dir, and one per task to
/tmp/demo_screens/ for people to look at.

Without Chromium the tests skip with the command that installs it; with CI set they fail instead."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from demo_helpers import (
    CHROMIUM_INSTALL,
    TOP_CLASS,
    expected_stub_boxes,
    not_an_image,
    photo,
    require,
    require_gradio,
    save_screen,
    start_app,
    stub_detection_predictor,
    tiny_classifier_folder,
    tiny_detector_folder,
    tiny_segmentation_folder,
)

from modeling_pvt.demo.predict import Predictor, open_image

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
)
WAIT_SECONDS = 60

require_gradio()
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("demo-browser")


@pytest.fixture(scope="module")
def browser(root):
    chromium, chromedriver = shutil.which("chromium") or CHROMIUM, shutil.which("chromedriver") or CHROMEDRIVER
    require(Path(chromium).is_file() and Path(chromedriver).is_file(), "Chromium or its driver", CHROMIUM_INSTALL)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require(False, "selenium", 'pip install -e ".[dev]"')
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={root / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    yield driver
    driver.quit()


class Page:
    """The demo page in the browser, in a user's terms."""

    def __init__(self, driver, url: str):
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.wait = driver, WebDriverWait(driver, WAIT_SECONDS)
        driver.get(url)
        self.wait.until(lambda _: self.find_all("#input-image input[type=file]") and self.find_all("#submit"))

    def find_all(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def text(self, selector: str) -> str:
        found = self.find_all(selector)
        return found[0].text if found else ""

    def upload(self, path: Path) -> None:
        self.find_all("#input-image input[type=file]")[0].send_keys(str(path))
        self.wait.until(lambda _: self.find_all("#input-image img"))

    def pick_example(self, name: str) -> None:
        """Clicks the example picture called `name` under the input."""
        (example,) = [
            button for button in self.find_all("#examples button.gallery-item")
            if button.find_element("css selector", "img").get_attribute("src").endswith("/" + name)
        ]
        example.click()
        self.wait.until(lambda _: self.find_all("#input-image img"))

    def submit(self, expect: str = "per image") -> str:
        """Presses Submit and waits for the status line to report the new result; returns it."""
        before = self.text("#status")
        self.find_all("#submit")[0].click()
        self.wait.until(lambda _: self.text("#status") != before and expect in self.text("#status"))
        return self.text("#status")

    def set_slider(self, selector: str, value: float, expect: str) -> str:
        from selenium.webdriver.common.keys import Keys

        box = self.find_all(f"{selector} input[type=number]")[0]
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(str(value), Keys.TAB)
        self.wait.until(lambda _: expect in self.text("#status"))
        return self.text("#status")

    def table_rows(self, selector: str) -> list[list[str]]:
        """The cells of each body row of the table under `selector`: Gradio's Dataframe draws its rows as
        role=row/gridcell elements, an HTML table (the legend) as tr/td."""
        return self.driver.execute_script(
            """
            const root = document.querySelector(arguments[0]);
            const texts = cells => Array.from(cells).map(cell => cell.innerText.trim());
            let rows = Array.from(root.querySelectorAll('[role=row]'))
                .map(row => texts(row.querySelectorAll('[role=gridcell]')));
            if (!rows.some(cells => cells.length)) {
                rows = Array.from(root.querySelectorAll('tbody tr'))
                    .filter(row => !row.closest('[aria-hidden=true]')).map(row => texts(row.querySelectorAll('td')));
            }
            return rows.filter(cells => cells.length && cells.some(text => text));
            """,
            selector,
        )

    def screenshot(self, folder: Path, name: str) -> Path:
        path = folder / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


@pytest.fixture(scope="module")
def served(root):
    """Starts one app per task on first use; all are closed at the end of the module."""
    apps = {}

    def serve(task: str) -> tuple[Predictor, str]:
        if task not in apps:
            if task == "classification":
                predictor = Predictor.from_pretrained(str(tiny_classifier_folder(root / "classifier")))
            elif task == "segmentation":
                predictor = Predictor.from_pretrained(str(tiny_segmentation_folder(root / "segmenter")))
            elif task == "detection":
                predictor = Predictor.from_pretrained(str(tiny_detector_folder(root / "detector")))
            else:
                predictor = stub_detection_predictor()
            apps[task] = (predictor, *start_app(predictor, root / "examples"))
        predictor, _, url = apps[task]
        return predictor, url

    yield serve
    for _, app, _ in apps.values():
        app.close()


def test_classification_in_the_browser(browser, served, root):
    _, url = served("classification")
    page = Page(browser, url)
    assert "PVT demo: image classification" in page.text("#header") and "fast path: fp32" in page.text("#header")
    page.upload(photo(root))
    status = page.submit()
    shown = page.text("#top5").splitlines()
    screen = page.screenshot(root, "classification")
    save_screen(screen, "classification")
    assert shown[:2] == ["Top 5", TOP_CLASS], shown  # the heading, then the top label in large type
    assert re.search(r"china.png: top label pagoda \(\d+\.\d%\) · \d+ ms per image", status), status


def test_a_file_that_is_not_an_image_gets_a_message_and_the_page_goes_on(browser, served, root):
    _, url = served("classification")
    page = Page(browser, url)
    page.upload(photo(root))
    page.submit()
    page.find_all("#input-image input[type=file]")[0].send_keys(str(not_an_image(root)))
    status = page.submit(expect="Could not use this input")
    screen = page.screenshot(root, "bad-input")
    save_screen(screen, "bad-input")
    assert "Could not read holiday.png: it is not an image file." in status and "Traceback" not in status
    assert TOP_CLASS not in page.text("#top5")  # the last result is cleared, not left standing
    page.upload(photo(root))
    assert "top label pagoda" in page.submit()


def test_segmentation_in_the_browser(browser, served, root):
    predictor, url = served("segmentation")
    page = Page(browser, url)
    page.pick_example("digit-grid.png")  # the examples under the input work as uploads do
    status = page.submit()
    legend = page.table_rows("#legend")
    screen = page.screenshot(root, "segmentation")
    save_screen(screen, "segmentation")
    assert status.startswith("digit-grid.png: ")
    image, _ = open_image(str(root / "examples" / "digit-grid.png"))
    mask = predictor.predict(image).mask
    present = {predictor.id2label[int(class_id)] for class_id in np.unique(mask)}
    assert {name for name, _ in (row[-2:] for row in legend)} == present, legend
    assert all(re.fullmatch(r"\d+\.\d%", row[-1]) for row in legend), legend
    assert f"{len(present)} classes present" in status
    # The opacity slider redraws the overlay without running the model again.
    page.set_slider("#opacity", 0.9, "classes present")


@pytest.mark.parametrize("detector", ["stub", "tiny"])
def test_detection_in_the_browser(browser, served, root, detector):
    predictor, url = served("detection" if detector == "tiny" else "stub-detection")
    image, _ = open_image(str(photo(root)))
    expected = [found for found in predictor.predict(image).detections if found.score >= 0.5]
    page = Page(browser, url)
    page.upload(photo(root))
    status = page.submit()
    rows = page.table_rows("#box-table")
    screen = page.screenshot(root, f"detection-{detector}")
    save_screen(screen, "detection" if detector == "tiny" else "detection-stub")
    assert f"{len(expected)} boxes with score ≥ 0.50" in status
    assert [row[0] for row in rows] == [found.label for found in expected], rows
    if detector == "stub":
        assert len(rows) == expected_stub_boxes(0.5) == 2
        # A lower threshold shows more boxes, from the same prediction.
        page.set_slider("#threshold", 0.2, "3 boxes with score ≥ 0.20")
        assert len(page.table_rows("#box-table")) == expected_stub_boxes(0.2) == 3
