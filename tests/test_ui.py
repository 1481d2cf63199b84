"""The web demo, driven in a real browser (Debian's chromium through Playwright).

Claims: a digit 3 asked for in the page is judged a 3 by the project's classifier from the
pixels the page shows; the timeline scrubs back to t = T; the time model gives as many images
as asked; the denoiser tab brings a noisy test digit closer to the clean one and takes a
drawing; a bad input shows its message in the page and the server keeps answering; a full
queue refuses at once; the page fetches nothing from anywhere but its own server.

Screenshots go to pytest's tmp_path; each test prints where.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from diffumnist.app import BusyError, Job, Worker, make_server, parse_denoise, parse_generate
from diffumnist.classifier import classify, load_classifier
from diffumnist.config import ConfigError

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Draws an <img> onto a canvas at its natural size: the grey pixels the page displays.
READ_PIXELS = """(img) => {
    const canvas = document.createElement("canvas");
    [canvas.width, canvas.height] = [img.naturalWidth, img.naturalHeight];
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const rgba = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    return {width: canvas.width, height: canvas.height,
            grey: Array.from({length: rgba.length / 4}, (_, i) => rgba[4 * i])};
}"""


@contextlib.contextmanager
def running_server() -> Iterator[str]:
    """The demo on a free port of 127.0.0.1, served from a thread; yields its URL."""
    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        server.app.worker.stop()


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with running_server() as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/install_browser.sh` as root")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server_url):
    """A fresh page on the demo; afterwards, checks it fetched nothing from elsewhere."""
    context = browser.new_context(viewport={"width": 1100, "height": 1000})
    page = context.new_page()
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.goto(server_url)
    page.wait_for_selector("body[data-ready='1']")
    yield page
    context.close()
    foreign = [u for u in urls if not u.startswith((server_url, "data:"))]
    assert not foreign, f"the page fetched from outside its server: {foreign}"


def displayed_pixels(page, selector: str) -> np.ndarray:
    """uint8 (H, W): the grey pixels of the image the page shows at `selector`."""
    image = page.eval_on_selector(selector, READ_PIXELS)
    return np.array(image["grey"], dtype=np.uint8).reshape(image["height"], image["width"])


def screenshot(page, path: Path) -> None:
    page.screenshot(path=path, full_page=True)
    print(f"screenshot: {path}")


def generate(page, timeout_s: float = 60.0) -> float:
    """Press Generate, wait for the final image; return the seconds the page measured."""
    page.click("#generate")
    page.wait_for_selector("#final[data-ready='1']", timeout=timeout_s * 1000)
    return float(page.get_attribute("#final", "data-seconds"))


def test_generated_three_is_judged_a_three(page, tmp_path):
    page.click("#digits-none")
    page.click("#digit-3")
    page.select_option("#sampler", "dpmpp")
    page.fill("#steps", "20")
    seconds = generate(page)
    print(f"Generate -> final image: {seconds:.2f} s (one 3, dpmpp, 20 steps)")
    screenshot(page, tmp_path / "generate-three.png")

    image = displayed_pixels(page, "#final")
    assert image.shape == (28, 28)
    judge, _ = load_classifier()
    predicted, _ = classify(judge, torch.from_numpy(image)[None])
    assert predicted.tolist() == [3]

    page.eval_on_selector("#scrubber", "s => { s.value = 0; s.dispatchEvent(new Event('input')); }")
    assert page.inner_text("#scrub-t") == "t = 300"
    assert int(page.get_attribute("#scrubber", "max")) == 20  # 20 steps, then t = 0
    screenshot(page, tmp_path / "scrubbed-to-T.png")
    for link, kind in (("#download-png", "image/png"), ("#download-gif", "image/gif")):
        response = page.request.get(page.eval_on_selector(link, "a => a.href"))
        assert response.ok and response.headers["content-type"] == kind


def test_time_model_gives_the_requested_count(page, tmp_path):
    page.check("input[name='model'][value='time']")
    page.fill("#count", "4")
    page.select_option("#sampler", "ddim")
    page.fill("#steps", "10")
    generate(page)
    screenshot(page, tmp_path / "time-model.png")
    assert displayed_pixels(page, "#final").shape == (32, 2 + 4 * 30)  # 4 images, 2 px apart


def test_invalid_input_shows_an_error_and_the_server_keeps_answering(page, server_url, tmp_path):
    page.fill("#seed", "-1")
    page.click("#generate")
    page.wait_for_selector("#gen-error:not([hidden])")
    assert "seed must be a whole number" in page.inner_text("#gen-error")
    screenshot(page, tmp_path / "invalid-seed.png")

    page.fill("#seed", "0")
    page.click("#digits-none")
    page.click("#generate")
    page.locator("#gen-error", has_text="pick 1 to 10 digits").wait_for()  # CSP forbids eval

    with urllib.request.urlopen(f"{server_url}/api/info", timeout=10) as reply:
        assert json.load(reply)["num_timesteps"] == 300
    broken = urllib.request.Request(
        f"{server_url}/api/generate", data=b"{", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(broken, timeout=10)
    assert refused.value.code == 400
    assert "not valid JSON" in json.load(refused.value)["error"]


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b) ** 2))


def test_denoiser_cleans_a_test_digit_and_a_drawing(page, tmp_path):
    page.click("#tab-denoise")
    page.wait_for_selector("#dn-denoised[data-version='1']")
    clean, noisy, denoised = (
        displayed_pixels(page, f"#dn-{name}") for name in ("clean", "noisy", "denoised")
    )
    assert _mse(denoised, clean) < _mse(noisy, clean) / 4
    screenshot(page, tmp_path / "denoise-test-digit.png")

    page.check("input[name='source'][value='canvas']")
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.15 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.85 * box["height"], steps=8)
    page.mouse.up()
    page.wait_for_selector("#dn-denoised[data-version='2']")
    assert displayed_pixels(page, "#dn-clean").max() > 200  # the stroke reached the model
    screenshot(page, tmp_path / "denoise-drawing.png")


def test_without_mnist_the_page_offers_drawing_only(browser, monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFUMNIST_DATA", str(tmp_path / "no-mnist-here"))
    with running_server() as url:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        page.click("#tab-denoise")
        assert page.is_visible("#test-note") and page.is_visible("#pad")
        assert page.is_disabled("input[name='source'][value='test']")
        screenshot(page, tmp_path / "denoise-without-mnist.png")
        page.close()
    assert not (tmp_path / "no-mnist-here").exists()  # nothing was downloaded


def test_a_foreign_host_header_is_refused(server_url):
    port = server_url.rsplit(":", 1)[1]
    request = urllib.request.Request(f"{server_url}/", headers={"Host": f"evil.example:{port}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"digits": []}, "pick 1 to 10 digits"),
        ({"digits": [3, 10]}, "digits must be a list of whole numbers 0-9"),
        ({"guidance_scale": "lots"}, "guidance_scale must be a number"),
        ({"seed": 2**40}, "seed must be a whole number"),
        ({"sampler": "euler"}, "sampler must be one of ddpm, ddim, dpmpp"),
        ({"sampler": "ddim", "steps": 301}, "steps must be an integer in 1..300"),
        ({"model": "time", "count": 11}, "count must be a whole number from 1 to 10"),
        ({"colour": "red"}, "unknown field(s): colour"),
        ([3], "the request must be a JSON object"),
    ],
)
def test_bad_generate_requests_name_the_field(payload, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_generate(payload, num_timesteps=300)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"source": "canvas", "pixels": [0] * 783}, "pixels must hold 28x28 = 784 values"),
        ({"source": "canvas", "pixels": [256] * 784}, "pixels must be a list of whole numbers"),
        ({"index": 10_000}, "index must be a whole number from 0 to 9999"),
        ({"sigma": -0.1}, "sigma must be a number from 0 to 2"),
        ({"source": "camera"}, "source must be one of test, canvas"),
    ],
)
def test_bad_denoise_requests_name_the_field(payload, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_denoise(payload, num_test_digits=10_000)


def test_without_mnist_the_denoiser_asks_for_a_drawing():
    with pytest.raises(ConfigError, match="draw a digit instead"):
        parse_denoise({"source": "test"}, num_test_digits=0)
    assert len(parse_denoise({"source": "canvas", "pixels": [0] * 784}, 0).pixels) == 784


def test_a_full_queue_refuses_at_once():
    worker = Worker(max_queued=1)
    running, release = threading.Event(), threading.Event()
    worker.submit(Job(lambda job: (running.set(), release.wait(10))))
    assert running.wait(10)
    worker.submit(Job(lambda job: None))  # waits in line
    started = time.perf_counter()
    with pytest.raises(BusyError, match="busy"):
        worker.submit(Job(lambda job: None))
    assert time.perf_counter() - started < 1
    release.set()
    worker.stop()
