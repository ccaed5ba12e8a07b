"""For the web app's tests (tests/test_app.py, tests/test_app_browser.py) and screenshots
(docs/app_screenshots.py): tiny random weights made without compiling an init, and
`jaxtalk app` driven in headless Chromium (selenium + chromedriver): start the server, open
the page, upload, press Animate, read the result."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.convert import weights
from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
from jaxtalk.models.anitalker.stage2 import DiffusionPredictor, init_inputs
from jaxtalk.models.lia.generator import LIAGenerator
from jaxtalk.models.param_hook import eval_shape_init
from tests.tasks import helpers
from tests.train.helpers import REPO, cli_env

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
TINY = dict(size=32, style_dim=32, motion_dim=5, width=1 / 16)  # 32x32 stage-1 models
STAGE2 = dict(helpers.STAGE2, motion_dim=5, motion_start_dim=32)  # speech -> TINY's codes


# ----------------------------------------------------------------------------- weights
def random_variables(module: nn.Module, *inputs, seed: int = 0) -> dict:
    """`module`'s variables filled with small random numbers (normalization statistics:
    mean 0, variance 1), shaped by `jax.eval_shape`: no init is compiled, which takes tens
    of seconds for these models on a small CPU."""
    shapes = nn.meta.unbox(eval_shape_init(module.init, jax.random.PRNGKey(0), *inputs))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        keys = [getattr(k, "key", "") for k in path]
        if keys[0] == "batch_stats":
            return (np.ones if "var" in keys[-1] else np.zeros)(leaf.shape, leaf.dtype)
        return (rng.standard_normal(leaf.shape) * 0.05).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def save_tiny(kind: str, path: str, **config) -> str:
    """A random weights file of `kind`: lia or anitalker_stage1 (TINY), anitalker_stage2
    (STAGE2); `config` overrides the model's options."""
    if kind == "anitalker_stage2":
        config = dict(STAGE2, **config)
        model = DiffusionPredictor(**config)
        variables = random_variables(model, *init_inputs(model, 1, 8))
        weights.save({**variables, "model_config": config}, path, release=kind)
        return path
    config = dict(TINY, **config)
    cls = {"lia": LIAGenerator, "anitalker_stage1": AniTalkerMotion}[kind]
    x = jnp.zeros((1, config["size"], config["size"], 3))
    params = random_variables(cls(**config), x, x)["params"]
    weights.save({"params": params, "model_config": dict(config, kind=kind)}, path, release=kind)
    return path


# ----------------------------------------------------------------------------- browser
def missing() -> str | None:
    """Why the browser flow cannot run here (None: it can)."""
    for module in ("gradio", "selenium"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[dev]')"
    if not any(shutil.which(c) for c in CHROMIUM):
        return "no Chromium (apt-get install chromium chromium-driver)"
    if not shutil.which("chromedriver"):
        return "no chromedriver (apt-get install chromium-driver)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(*flags: str, log: str, timeout: float = 300):
    """`jaxtalk app FLAGS` on a free localhost port; yields its URL once it answers."""
    port = free_port()
    env = dict(cli_env(1), GRADIO_ANALYTICS_ENABLED="False")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jaxtalk.cli", "app", f"--port={port}", *flags],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jaxtalk app exited ({proc.returncode}):\n{_tail(log)}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jaxtalk app did not answer in {timeout:.0f} s:\n{_tail(log)}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: str, lines: int = 40) -> str:
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


@contextlib.contextmanager
def browser(width: int = 1400, height: int = 1000):
    """A headless Chromium under chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)
    options.binary_location = next(shutil.which(c) for c in CHROMIUM if shutil.which(c))
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition, timeout: float, what: str):
    """Polls `condition(driver)` until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition(driver)
        if value:
            return value
        if time.monotonic() > deadline:
            body = driver.find_element("tag name", "body").text
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}:\n{body}")
        time.sleep(0.25)


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait_for(driver, lambda d: d.find_elements("id", "animate"), 60, "the page")


def upload(driver, elem_id: str, path: str) -> None:
    """Puts a file into an upload component and waits for its preview."""
    field = wait_for(
        driver,
        lambda d: d.find_elements("css selector", f"#{elem_id} input[type=file]"),
        30,
        f"the {elem_id} upload field",
    )
    field[0].send_keys(os.path.abspath(path))
    wait_for(
        driver,
        lambda d: d.find_elements(
            "css selector", f"#{elem_id} img, #{elem_id} video, #{elem_id} audio"
        ),
        60,
        f"the {elem_id} upload",
    )


def set_checkbox(driver, elem_id: str, on: bool) -> None:
    box = driver.find_element("css selector", f"#{elem_id} input[type=checkbox]")
    if box.is_selected() != on:
        box.click()


def choose(driver, elem_id: str, option: str) -> None:
    """Picks `option` in a Gradio dropdown."""
    driver.find_element("css selector", f"#{elem_id} input").click()
    item = wait_for(
        driver,
        lambda d: [
            e
            for e in d.find_elements("css selector", "[data-testid=dropdown-option]")
            if e.get_attribute("aria-label") == option
        ],
        10,
        f"the option {option!r}",
    )
    item[0].click()


def errors(driver) -> list[str]:
    """The texts of the error messages on the page (Gradio's toasts)."""
    return [
        e.text
        for e in driver.find_elements("css selector", ".toast-body.error")
        if e.is_displayed()
    ]


def animate(driver, timeout: float = 300) -> str:
    """Presses Animate and waits for the result (or an error); the download link's URL."""
    driver.find_element("id", "animate").click()

    def done(d):
        if errors(d):
            return "error"
        links = d.find_elements("css selector", "#download a[href]")
        return links[0].get_attribute("href") if links else None

    return wait_for(driver, done, timeout, "the animation")


def download(url: str, path: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as r, open(path, "wb") as f:
        shutil.copyfileobj(r, f)
    return path
