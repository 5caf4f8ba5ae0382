"""The page of ``dymsta serve`` in a real browser: Debian's chromium and chromedriver, headless, driven by Selenium.

A refused file shows its one-line error; a real clip shows the server's top-1 as the page's headline, the top
classes as bars, the attention frames and the timeline; Chromium's fake camera, streamed over the WebSocket, gets a
live label; /docs renders from the package's assets. A screenshot of the page is saved as a test artifact in
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
    # Chromium's fake camera (a moving test pattern), allowed without the permission prompt
    options.add_argument("--use-fake-device-for-media-stream")
    options.add_argument("--use-fake-ui-for-media-stream")
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


def test_api_docs_page_renders_offline_from_packaged_assets(browser: webdriver.Chrome, page: tuple) -> None:
    url, _ = page
    browser.get(f"{url}/docs")
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    paths = {e.text.strip() for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert "/v1/predict" in paths
    assert "dymsta serve" in browser.find_element(By.CSS_SELECTOR, ".info .title").text
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(r.startswith(url) for r in resources), resources  # nothing from a CDN


def test_live_label_from_the_fake_camera(browser: webdriver.Chrome, page: tuple) -> None:
    url, predictor = page
    browser.get(url)
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-live") == "off")
    browser.execute_script('document.getElementById("opt-window").value = "1"; '
                           'document.getElementById("opt-stride").value = "0.5";')  # fmt: skip
    browser.find_element(By.ID, "camera-start").click()

    def windows(d: webdriver.Chrome) -> int:
        if d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "error":
            raise AssertionError(d.find_element(By.ID, "error").text)
        return int(d.find_element(By.ID, "live-label").get_attribute("data-windows") or 0)

    WebDriverWait(browser, 120).until(lambda d: windows(d) >= 3)
    label = browser.find_element(By.ID, "live-label").text
    assert label in set(predictor.class_names) | {"unknown"}, label
    assert len(browser.find_elements(By.CSS_SELECTOR, "#live-timeline li")) >= 3
    shot = artifacts_dir() / "serve_page_live.png"
    browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    browser.find_element(By.ID, "camera-stop").click()
    WebDriverWait(browser, 60).until(lambda d: "windows" in d.find_element(By.ID, "live-stats").text)
    assert "dropped" in browser.find_element(By.ID, "live-stats").text
