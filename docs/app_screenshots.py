"""Takes the README's screenshots of `jaxtalk app` on `make demo`'s run, in headless Chromium.

  python docs/app_screenshots.py --demo=demo_out [--out=docs]

writes app_video.png (a held-out face driven by another held-out video, the result shown)
and app_speech.png (the speech-driven model's options while it renders). The speech-driven
model is the demo's stage-2 run when `make demo-stage2` made one, else a random tiny stage 2
rendered by the demo's stage 1 (the page is the same; its motion is noise). Needs gradio,
selenium, chromium and chromedriver (tests/app_helpers.py).
"""

import argparse
import os
import sys
import tempfile

from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxtalk.demo import held_out_videos  # noqa: E402
from jaxtalk.media.audio import read_audio, write_wav  # noqa: E402
from tests import app_helpers  # noqa: E402

WIDTH, HEIGHT = 1400, 800


def _save(page, path: str) -> None:
    """The whole page (the window grown to its height) as a palette PNG (tens of KB)."""
    height = page.execute_script("return document.documentElement.scrollHeight")
    chrome = page.get_window_size()["height"] - page.execute_script("return window.innerHeight")
    page.set_window_size(WIDTH, height + chrome)
    page.execute_script("window.scrollTo(0, 0)")
    page.save_screenshot(path)
    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
    print(f"wrote {path} ({os.path.getsize(path) // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", default="demo_out", help="make demo's --out")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if app_helpers.missing():
        sys.exit(app_helpers.missing())
    tmp = tempfile.mkdtemp(prefix="app_screenshots_")
    stage1 = os.path.join(args.demo, "stage1")
    stage2 = os.path.join(args.demo, "stage2")
    flags = [f"--workdir={stage1}", f"--out_dir={tmp}/out"]
    if os.path.isdir(stage2):
        flags.append(f"--stage2={stage2}")
    else:
        stage2 = app_helpers.save_tiny(  # sized for the demo's stage 1
            "anitalker_stage2",
            f"{tmp}/random_stage2.safetensors",
            motion_dim=20,
            motion_start_dim=512,
        )
        flags += [f"--stage2={stage2}", f"--stage1={stage1}"]
    videos = held_out_videos(os.path.join(args.demo, "data"))
    portrait, driving = os.path.join(args.demo, "source.png"), videos[-1]
    speech = f"{tmp}/speech.wav"
    write_wav(speech, read_audio(driving, 16000), 16000)

    with (
        app_helpers.server(*flags, log=f"{tmp}/server.log") as url,
        app_helpers.browser(WIDTH, HEIGHT) as page,
    ):
        app_helpers.open_page(page, url)
        app_helpers.upload(page, "source", portrait)
        app_helpers.upload(page, "driving_video", driving)
        app_helpers.set_checkbox(page, "crop_face", False)  # the demo's faces are crops
        assert app_helpers.animate(page) != "error", app_helpers.errors(page)
        _save(page, os.path.join(args.out, "app_video.png"))

        app_helpers.choose(page, "model", f"{os.path.basename(stage2)} (audio-driven)")
        app_helpers.upload(page, "speech", speech)
        page.find_element("id", "animate").click()
        app_helpers.wait_for(
            page,
            lambda p: app_helpers.errors(p) or "frames" in p.find_element("id", "result").text,
            600,
            "the rendering progress",
        )
        assert not app_helpers.errors(page), app_helpers.errors(page)
        _save(page, os.path.join(args.out, "app_speech.png"))
        app_helpers.wait_for(
            page, lambda p: "frames at" in p.find_element("id", "status").text, 600, "the result"
        )


if __name__ == "__main__":
    main()
