"""The page of ``dymsta serve`` in a real browser: Debian's chromium and chromedriver, headless, driven by Selenium.

A refused file shows its one-line error; a real clip shows the server's top-1 as the page's headline, the top
classes as bars, the attention frames and the timeline. A screenshot of the page is saved as a test artifact in
``$DYMSTA_TEST_ARTIFACTS`` (default: ``<system temp>/dymsta-test-artifacts``) and its path printed.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="dymsta serve needs the serve extra: pip install 'dymsta[serve]'")
pytest.importorskip("selenium", reason="the browser test needs selenium (pip install 'dymsta[test]')")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from conftest import colour_frames, shared_data_dir, write_video  # noqa: E402
from dymsta.engine.predict import Predictor  # noqa: E402
from dymsta.serve import ServeConfig, create_app  # noqa: E402
from test_serve import ServerThread  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromedriver not found (Debian: apt-get install chromium chromium-driver; .ci/run does)",
)


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("DYMSTA_TEST_ARTIFACTS") or Path(tempfile.gettempdir()) / "dymsta-test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(arg)
    options.add_argument("--window-size=1200,900")
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    except WebDriverException as e:
        pytest.skip(f"chromium would not start headless: {e.msg.splitlines()[0] if e.msg else e}")
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(colour_run: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Predictor]:
    predictor = Predictor.from_checkpoint(colour_run["run"], device="cpu")
    uploads = tmp_path_factory.mktemp("browser-uploads")
    with ServerThread(create_app(predictor, ServeConfig(tmp_dir=str(uploads)))) as server:
        yield server.url, predictor
    assert list(uploads.iterdir()) == []


def clip_to_upload(tmp_path: Path) -> Path:
    """A real clip (UCF101, 5.2 s) when ../shared/data is there, else a 6 s synthetic one of three colours."""
    shared = shared_data_dir()
    if shared is not None:
        return shared / "clips" / "ucf101" / "v_Shotput_g05_c02.avi"
    frames = np.concatenate([colour_frames(c, 16, seed=60 + i) for i, c in enumerate(("red", "green", "blue"))])
    return write_video(tmp_path / "colours.mkv", frames, fps=8)


def wait_for_state(driver: webdriver.Chrome, state: str, timeout: float = 90) -> None:
    WebDriverWait(driver, timeout).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in (state, "error", "done")
    )
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-state") == state


def test_page_shows_errors_and_predictions(browser: webdriver.Chrome, page: tuple, tmp_path: Path) -> None:
    url, predictor = page
    browser.get(url)
    WebDriverWait(browser, 30).until(lambda d: "classes" in d.find_element(By.ID, "model-line").text)
    assert browser.title.startswith("dymsta")
    upload = browser.find_element(By.ID, "file")

    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 20)
    upload.send_keys(str(text))
    wait_for_state(browser, "error")
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed() and "notes.mp4" in error.text and "not a video" in error.text
    assert not browser.find_element(By.ID, "result").is_displayed()

    clip = clip_to_upload(tmp_path)
    (expected,) = predictor.predict_files([clip], top_k=5, workers=0)
    browser.find_element(By.ID, "file").send_keys(str(clip))
    wait_for_state(browser, "done")
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert browser.find_element(By.ID, "top1").text == expected["label"]
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars li")
    assert [b.find_element(By.CLASS_NAME, "label").text for b in bars] == [p["label"] for p in expected["predictions"]]
    first = expected["predictions"][0]["score"]
    assert bars[0].find_element(By.CLASS_NAME, "score").text.rstrip("%") in (f"{first * 100:.0f}", f"{first * 100:.1f}")
    for image in ("attention-img", "timeline-img"):
        element = browser.find_element(By.ID, image)
        assert element.is_displayed()
        assert browser.execute_script("return arguments[0].naturalWidth", element) > 200, image
    assert browser.find_elements(By.CSS_SELECTOR, "#segments tbody tr")

    shot = artifacts_dir() / "serve_page.png"
    shot.write_bytes(full_page_png(browser))
    assert shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")


def full_page_png(driver: webdriver.Chrome) -> bytes:
    """The whole page, not only the window (Chromium's DevTools capture beyond the viewport)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    return base64.b64decode(shot["data"])
