"""`jaxtalk app` in a real browser: the server on a free localhost port with tiny random LIA
weights, headless Chromium (Debian's chromium + chromium-driver, which .ci/run installs)
driven with selenium through upload, Animate and download. Skips, saying why, without
Chromium, chromedriver, gradio or selenium.

$JAXTALK_APP_SCREENSHOTS=DIR saves the page before and after Animate there."""

import os
import re

import numpy as np
import pytest
from PIL import Image

from jaxtalk.media.probe import probe
from jaxtalk.media.video import read_video, write_video
from tests import app_helpers

pytestmark = pytest.mark.skipif(
    app_helpers.missing() is not None, reason=app_helpers.missing() or ""
)

FRAMES = 13  # driving frames; chunk=4 renders them in four device calls

# Records every progress text the page shows (Gradio redraws it too fast to poll).
WATCH_PROGRESS = """
window.progressTexts = [];
new MutationObserver(changes => {
  for (const change of changes) {
    const text = (change.target.textContent || '').trim();
    if (/frames|reading the inputs/.test(text) && text.length < 300) window.progressTexts.push(text);
  }
}).observe(document.body, {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("app_browser")
    app_helpers.save_tiny("lia", str(d / "lia.safetensors"))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 40, 3), np.uint8)).save(d / "portrait.png")
    audio = rng.uniform(-0.3, 0.3, FRAMES * 640).astype(np.float32)
    write_video(
        d / "talk.mp4", rng.integers(0, 255, (FRAMES, 40, 48, 3), np.uint8), 25.0, audio=audio
    )
    return d


def _shot(driver, name):
    where = os.environ.get("JAXTALK_APP_SCREENSHOTS")
    if where:
        os.makedirs(where, exist_ok=True)
        driver.save_screenshot(os.path.join(where, name))


def test_upload_animate_and_download_in_chromium(media, tmp_path):
    flags = (f"--weights={media / 'lia.safetensors'}", "--chunk=4", f"--out_dir={tmp_path / 'out'}")
    with (
        app_helpers.server(*flags, log=str(tmp_path / "server.log")) as url,
        app_helpers.browser() as page,
    ):
        app_helpers.open_page(page, url)
        page.execute_script(WATCH_PROGRESS)
        app_helpers.upload(page, "source", str(media / "portrait.png"))
        app_helpers.upload(page, "driving_video", str(media / "talk.mp4"))
        assert page.find_element("css selector", "#driving_video").is_displayed()
        assert not [e for e in page.find_elements("css selector", "#speech") if e.is_displayed()]
        assert "Motion mode" in page.find_element("tag name", "body").text

        # Face crop on (the default): the noise portrait has no face, said on the page.
        assert app_helpers.animate(page) == "error"
        (message,) = app_helpers.errors(page)
        assert "portrait.png: no face found" in message and "untick 'Crop the face'" in message
        assert "Traceback" not in page.find_element("tag name", "body").text
        for close in page.find_elements("css selector", "[data-testid=toast-close]"):
            close.click()
        app_helpers.wait_for(page, lambda p: not app_helpers.errors(p), 30, "the error to close")

        app_helpers.set_checkbox(page, "crop_face", False)
        link = app_helpers.animate(page)
        assert link != "error", app_helpers.errors(page)
        status = page.find_element("id", "status").text
        _shot(page, "app_result.png")
        assert not app_helpers.errors(page), app_helpers.errors(page)
        texts = page.execute_script("return window.progressTexts")
        video = app_helpers.download(link, str(tmp_path / "downloaded.mp4"))

    assert status == f"{FRAMES} frames at 25 fps ({FRAMES / 25:.1f} s)"
    # The animator's progress callback, shown as "4/13 frames" or "rendering: 4 / 13 frames".
    assert any(re.search(rf"\b\d+ ?/ ?{FRAMES} frames", t) for t in texts), texts
    info = probe(video)
    frames, fps = read_video(video)
    assert len(frames) == FRAMES and frames.shape[1:] == (32, 32, 3) and fps == 25.0
    assert info.has_audio and abs(info.duration - FRAMES / 25) < 0.1
