"""The web demo, driven in a real browser (Debian's chromium through Playwright).

Claims: a digit 3 asked for in the page is judged a 3 by the project's classifier from the
pixels the page shows; the timeline's slider and its label always agree, and after an error
the last good result stays on screen with its frames; ddpm's steps cannot be edited; blank
fields get a clear message; "new seed each time" gives a new image; Stop cancels a running
job; at phone width nothing is wider than the screen; downloads come at the chosen scale,
named by their settings; the page logs no console error; the denoiser tab brings a noisy
test digit closer to the clean one, takes a drawing, clears stale images and retries while
the queue is full; a full queue refuses at once; the page fetches nothing from elsewhere.

Screenshots go to pytest's tmp_path; each test prints where.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffumnist.app import BusyError, DemoServer, Job, Worker, make_server
from diffumnist.classifier import classify, load_classifier
from diffumnist.config import ConfigError
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.sampling import PRESETS, sampler_timesteps
from diffumnist.webrequests import parse_denoise, parse_generate

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
# Every visible element whose box leaves the viewport sideways, and the page's scroll width.
OVERFLOW = """() => {
    const width = document.documentElement.clientWidth;
    const wide = [];
    for (const el of document.querySelectorAll("body *")) {
        const box = el.getBoundingClientRect();
        if (box.width === 0 || box.height === 0) continue;
        if (box.left < -0.5 || box.right > width + 0.5) {
            wide.push(`${el.tagName.toLowerCase()}#${el.id} ${box.left}..${box.right}`);
        }
    }
    return {width, scrollWidth: document.documentElement.scrollWidth, wide};
}"""
SET_SLIDER = "(s, v) => { s.value = v; s.dispatchEvent(new Event('input')); }"
FAST_STEPS = 20  # the fast preset's steps, which these tests' timelines assume
FAST_TIMESTEPS = sampler_timesteps(
    GaussianDiffusion(300), FAST_STEPS, PRESETS["class"]["fast"].spacing
)


@contextlib.contextmanager
def running_server() -> Iterator[DemoServer]:
    """The demo on a free port of 127.0.0.1, served from a thread; `server.url` is its URL."""
    server = make_server("127.0.0.1", 0)
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        server.app.close()


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    with running_server() as server:
        yield server


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


def open_page(browser, url: str, width: int = 1100):
    """A fresh page on the demo, ready; `page.problems` collects console errors and
    script exceptions, `page.urls` every URL it fetched."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.problems, page.urls = [], []
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda exc: page.problems.append(f"exception: {exc}"))
    page.on("request", lambda request: page.urls.append(request.url))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    return page


@pytest.fixture
def page(browser, server):
    """A fresh page; afterwards, checks it fetched nothing from elsewhere and threw nothing."""
    page = open_page(browser, server.url)
    yield page
    page.context.close()
    foreign = [u for u in page.urls if not u.startswith((server.url, "data:"))]
    assert not foreign, f"the page fetched from outside its server: {foreign}"
    # refused requests log "Failed to load resource" on purpose in some tests
    exceptions = [p for p in page.problems if "Failed to load resource" not in p]
    assert not exceptions, exceptions


def displayed_pixels(page, selector: str) -> np.ndarray:
    """uint8 (H, W): the grey pixels of the image the page shows at `selector`."""
    image = page.eval_on_selector(selector, READ_PIXELS)
    return np.array(image["grey"], dtype=np.uint8).reshape(image["height"], image["width"])


def screenshot(page, path: Path) -> None:
    page.screenshot(path=path, full_page=True)
    print(f"screenshot: {path}")


def use_seed(page, seed: int) -> None:
    page.uncheck("#seed-random")
    page.fill("#seed", str(seed))


def pick_digits(page, *digits: int) -> None:
    page.click("#digits-none")
    for digit in digits:
        page.click(f"#digit-{digit}")


def generate(page, timeout_s: float = 60.0) -> float:
    """Press Generate, wait for a new final image; return the seconds the page measured."""
    version = int(page.get_attribute("#final", "data-version") or 0)
    page.click("#generate")
    page.wait_for_selector(f"#final[data-version='{version + 1}']", timeout=timeout_s * 1000)
    return float(page.get_attribute("#final", "data-seconds"))


def timeline(page) -> tuple[int, int, str]:
    """(slider position, slider maximum, the t label)."""
    position = int(page.eval_on_selector("#scrubber", "s => s.value"))
    return position, int(page.get_attribute("#scrubber", "max")), page.inner_text("#scrub-t")


def test_generated_three_is_judged_a_three(page, tmp_path):
    pick_digits(page, 3)
    use_seed(page, 0)
    seconds = generate(page)
    print(f"Generate -> final image: {seconds:.2f} s (one 3, the fast preset)")
    screenshot(page, tmp_path / "generate-three.png")

    image = displayed_pixels(page, "#final")
    assert image.shape == (28, 28)
    judge, _ = load_classifier()
    predicted, _ = classify(judge, torch.from_numpy(image)[None])
    assert predicted.tolist() == [3]

    page.eval_on_selector("#scrubber", SET_SLIDER, 0)
    assert timeline(page) == (0, FAST_STEPS - 1, "t = 300")  # one position per step
    screenshot(page, tmp_path / "scrubbed-to-T.png")


@pytest.mark.parametrize("model", ["time", "time_e34"])
def test_time_models_give_the_requested_count(page, tmp_path, model):
    page.check(f"input[name='model'][value='{model}']")
    assert page.is_hidden("#digits-field") and not page.is_disabled("#guide")  # its weak twin
    page.fill("#count", "4")
    page.select_option("#sampler", "ddim")
    page.fill("#steps", "10")
    generate(page)
    screenshot(page, tmp_path / f"{model}-model.png")
    assert displayed_pixels(page, "#final").shape == (32, 2 + 4 * 30)  # 4 images, 2 px apart
    assert page.inner_text("#result-caption").startswith(f"4 images from the {model} model")


def test_invalid_input_shows_an_error_and_the_server_keeps_answering(page, server, tmp_path):
    use_seed(page, -1)
    page.click("#generate")
    page.locator("#gen-error", has_text="seed must be an integer in 0..").wait_for()
    screenshot(page, tmp_path / "invalid-seed.png")

    page.fill("#seed", "0")
    page.click("#digits-none")
    page.click("#generate")
    page.locator("#gen-error", has_text="pick 1 to 10 digits").wait_for()  # CSP forbids eval

    with urllib.request.urlopen(f"{server.url}/api/info", timeout=10) as reply:
        assert json.load(reply)["num_timesteps"] == 300
    broken = urllib.request.Request(
        f"{server.url}/api/generate", data=b"{", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(broken, timeout=10)
    assert refused.value.code == 400
    assert "not valid JSON" in json.load(refused.value)["error"]


def test_the_result_stays_after_an_error_and_the_timeline_agrees_with_its_label(page, tmp_path):
    ts = FAST_TIMESTEPS
    use_seed(page, 7)
    generate(page)
    kept = page.get_attribute("#final", "src"), page.inner_text("#result-caption")
    assert "seed 7" in kept[1] and "dpmpp, 20 steps" in kept[1]
    assert timeline(page) == (FAST_STEPS - 1, FAST_STEPS - 1, f"t = {ts[-1]}")

    page.fill("#seed", "-1")
    page.click("#generate")
    page.wait_for_selector("#gen-error:not([hidden])")
    page.wait_for_selector("#generate:not([disabled])")
    screenshot(page, tmp_path / "result-kept.png")
    assert (page.get_attribute("#final", "src"), page.inner_text("#result-caption")) == kept
    assert page.is_visible("#final") and page.is_visible("#view-xt")
    assert timeline(page) == (FAST_STEPS - 1, FAST_STEPS - 1, f"t = {ts[-1]}")
    for position in (0, 7, FAST_STEPS - 1):
        page.eval_on_selector("#scrubber", SET_SLIDER, position)
        assert timeline(page) == (position, FAST_STEPS - 1, f"t = {ts[position]}")
    assert page.inner_text("#scrub-step") == f"step {FAST_STEPS}"


def test_blank_and_non_numeric_fields_get_a_clear_message(page):
    use_seed(page, 0)
    page.fill("#guidance", "")
    page.click("#generate")
    error = page.locator("#gen-error")
    error.wait_for()
    assert error.inner_text() == "Guidance γ is empty: enter a number of at least 0."
    page.fill("#guidance", "5")
    page.fill("#seed", "")
    page.focus("#seed")
    page.keyboard.type("1e")  # a number input takes it, but it is not a number
    page.click("#generate")
    page.locator("#gen-error", has_text="Seed is not a number").wait_for()
    assert "whole number from 0 to 4294967295" in error.inner_text()
    assert "None" not in error.inner_text() and "null" not in error.inner_text()
    assert not page.is_visible("#result")  # nothing was sent


def test_ddpm_steps_are_not_editable(page):
    page.click("#preset-recipe")
    assert page.input_value("#sampler") == "ddpm"
    assert page.is_disabled("#steps") and page.input_value("#steps") == "300"
    assert "always 300 for ddpm" in page.inner_text("#help-steps")
    assert page.is_disabled("#eta")  # ddpm takes no η
    assert page.is_disabled("#spacing") and page.input_value("#spacing") == "trailing"
    assert "trailing only for ddpm" in page.inner_text("#help-spacing")
    page.select_option("#sampler", "ddim")
    assert page.is_enabled("#steps") and page.input_value("#steps") == "50"
    assert page.is_enabled("#eta") and page.is_enabled("#spacing")
    assert page.input_value("#start") == "noise"  # the recipe starts from pure noise
    assert not page.is_checked("#clip-x0")  # nor does it clip x̂0
    assert page.input_value("#reject-below") == ""  # nor redraw a digit
    page.click("#preset-fast")
    assert page.is_checked("#clip-x0") == PRESETS["class"]["fast"].clip_x0
    assert page.input_value("#reject-below") == f"{PRESETS['class']['fast'].reject_below:g}"
    assert page.input_value("#sampler") == "dpmpp" and page.input_value("#steps") == "20"
    assert page.input_value("#start") == PRESETS["class"]["fast"].start
    assert page.input_value("#spacing") == PRESETS["class"]["fast"].spacing
    assert page.is_disabled("#guide")  # no weak twin ships for the class model
    # the time model's own fast preset: guided away from its weak twin
    page.check("input[name='model'][value='time']")
    time_fast = PRESETS["time"]["fast"]
    assert page.input_value("#eta") == f"{time_fast.eta:g}"
    assert page.input_value("#spacing") == time_fast.spacing == "logsnr"
    low, high = time_fast.guidance_interval
    assert (page.input_value("#gi-low"), page.input_value("#gi-high")) == (str(low), str(high))
    assert page.input_value("#reject-below") == f"{time_fast.reject_below:g}"
    assert page.input_value("#guide") == time_fast.guide == "weak"
    assert page.input_value("#guidance") == f"{time_fast.guidance_scale:g}"
    assert page.is_enabled("#guidance") and "weak twin" in page.inner_text("#preset-help")
    page.select_option("#guide", "")  # unguided: γ has nothing to act on
    assert page.is_disabled("#guidance") and "custom" in page.inner_text("#preset-help")
    page.click("#preset-fast")
    page.check("input[name='model'][value='class']")
    class_fast = PRESETS["class"]["fast"]
    assert page.input_value("#guide") == ""
    assert page.input_value("#guidance") == f"{class_fast.guidance_scale:g}"
    for name in ("sampler", "steps", "eta", "spacing", "start", "clip_x0", "guide",
                 "guidance_scale", "guidance_interval", "reject_below", "seed"):  # fmt: skip
        assert "Range:" in page.inner_text(f"#help-{name}")


def test_a_new_seed_each_time_gives_a_new_image(page):
    assert page.is_checked("#seed-random")  # the default
    pick_digits(page, 4)
    results = []
    for _ in range(2):
        generate(page)
        seed = int(page.input_value("#seed"))
        caption = page.inner_text("#result-caption")
        assert caption.endswith(f"seed {seed}")
        results.append((seed, page.get_attribute("#final", "src")))
    (seed_a, image_a), (seed_b, image_b) = results
    assert seed_a != seed_b and image_a != image_b
    page.fill("#seed", str(seed_a))  # a seed typed in is the one to use
    assert not page.is_checked("#seed-random")
    generate(page)
    assert page.get_attribute("#final", "src") == image_a


def test_stop_cancels_a_running_job(page, server, tmp_path):
    use_seed(page, 1)
    generate(page)  # a result to keep
    kept = page.get_attribute("#final", "src")
    page.click("#preset-recipe")  # 300 ddpm steps for ten digits: many seconds
    page.click("#digits-all")
    page.click("#generate")
    page.locator("#gen-status", has_text=re.compile(r"^step \d+ of 300")).wait_for()
    page.click("#stop")
    page.locator("#gen-status", has_text="stopped").wait_for(timeout=10_000)
    screenshot(page, tmp_path / "stopped.png")
    assert page.is_enabled("#generate") and not page.is_visible("#stop")
    assert page.get_attribute("#final", "src") == kept
    ts = FAST_TIMESTEPS
    assert timeline(page) == (FAST_STEPS - 1, FAST_STEPS - 1, f"t = {ts[-1]}")

    job_id = next(u for u in reversed(page.urls) if u.endswith("/events")).split("/")[-2]
    events = [name for name, _ in server.app.job(job_id).events]
    assert events[-1] == "cancelled" and 0 < events.count("frame") < 300
    page.click("#preset-fast")
    generate(page)  # the worker is free again


@pytest.mark.parametrize("width", [360, 390])
def test_narrow_layout_has_no_overflow(browser, server, width, tmp_path):
    page = open_page(browser, server.url, width)
    page.click("#digits-all")
    generate(page)
    screenshot(page, tmp_path / f"generate-{width}.png")
    for view in ("#view-xt", "#view-x0", "#final"):  # ten digits in two rows of five
        shown = page.eval_on_selector(view, "img => img.getBoundingClientRect().width")
        assert shown / 5 >= 56, (view, shown)  # two MNIST pixels per screen pixel at least
    layout = page.evaluate(OVERFLOW)
    assert layout["wide"] == [] and layout["scrollWidth"] <= width, layout
    page.click("#tab-denoise")
    page.check("input[name='source'][value='canvas']")
    screenshot(page, tmp_path / f"denoise-{width}.png")
    layout = page.evaluate(OVERFLOW)
    assert layout["wide"] == [] and layout["scrollWidth"] <= width, layout
    page.context.close()


def test_downloads_come_at_the_chosen_scale_named_by_their_settings(page):
    pick_digits(page, 5)
    use_seed(page, 42)
    generate(page)
    stem = "class_d5_g1_dpmpp20_eta1_mean_redraw0.97_seed42"
    for scale, side in (("4", 4 * 28), ("1", 28), ("2", 2 * 28)):  # one digit: no frame
        page.select_option("#download-scale", scale)
        for link, kind in (("#download-png", "png"), ("#download-gif", "gif")):
            with page.expect_download() as download:
                page.click(link)
            assert download.value.suggested_filename == f"{stem}_{scale}x.{kind}"
            with Image.open(download.value.path()) as image:
                assert image.size == (side, side) and image.format == kind.upper()


def test_the_page_logs_no_console_error(browser, server):
    page = open_page(browser, server.url)
    failed = []
    page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
    generate(page)
    page.click("#tab-denoise")
    page.wait_for_selector("#dn-denoised[data-version='1']")
    icon = page.request.get(f"{server.url}/favicon.ico")
    assert icon.ok and icon.headers["content-type"] == "image/svg+xml"
    page.context.close()
    assert page.problems == [] and failed == []


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

    page.fill("#test-index", "99999")
    page.dispatch_event("#test-index", "change")
    page.locator("#dn-error", has_text="index must be a whole number from 0 to 9999").wait_for()
    assert page.get_attribute("#dn-clean", "src") is None  # no stale digit beside the error
    assert page.inner_text("#test-label") == ""

    page.check("input[name='source'][value='canvas']")  # an empty pad: nothing to show
    page.locator("#dn-status", has_text="Draw a digit").wait_for()
    assert page.get_attribute("#dn-clean", "src") is None
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.15 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.85 * box["height"], steps=8)
    page.mouse.up()
    page.wait_for_selector("#dn-denoised[data-version='2']")
    assert displayed_pixels(page, "#dn-clean").max() > 200  # the stroke reached the model
    screenshot(page, tmp_path / "denoise-drawing.png")
    page.click("#pad-clear")
    page.locator("#dn-status", has_text="Draw a digit").wait_for()
    assert page.get_attribute("#dn-denoised", "src") is None


def test_the_denoiser_tab_retries_while_the_queue_is_full(page, server):
    release = threading.Event()
    try:
        for _ in range(server.app.worker.max_queued + 1):  # one running, the rest in line
            server.app.worker.submit(lambda: release.wait(30))
        page.click("#tab-denoise")
        page.locator("#dn-status", has_text="busy; trying again").wait_for()
        assert page.get_attribute("#dn-denoised", "src") is None
    finally:
        release.set()
    page.wait_for_selector("#dn-denoised[data-version='1']", timeout=20_000)
    assert page.inner_text("#dn-status") == "" and not page.is_visible("#dn-error")


def test_without_mnist_the_page_offers_drawing_only(browser, monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFUMNIST_DATA", str(tmp_path / "no-mnist-here"))
    with running_server() as server:
        page = open_page(browser, server.url)
        page.click("#tab-denoise")
        assert page.is_visible("#test-note") and page.is_visible("#pad")
        assert page.is_disabled("input[name='source'][value='test']")
        screenshot(page, tmp_path / "denoise-without-mnist.png")
        page.context.close()
    assert not (tmp_path / "no-mnist-here").exists()  # nothing was downloaded


def test_a_foreign_host_header_is_refused(server):
    port = server.url.rsplit(":", 1)[1]
    request = urllib.request.Request(f"{server.url}/", headers={"Host": f"evil.example:{port}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"digits": []}, "pick 1 to 10 digits"),
        ({"digits": [3, 10]}, "digits must be a list of whole numbers 0-9"),
        ({"guidance_scale": "lots"}, "guidance_scale must be a finite number"),
        ({"guidance_scale": None}, "guidance_scale needs a value; got nothing"),
        ({"clip_x0": "yes"}, "clip_x0 must be true or false; got 'yes'"),
        ({"clip_x0": None}, "clip_x0 needs a value; got nothing"),
        ({"seed": 2**40}, "seed must be an integer in 0..4294967295"),
        ({"sampler": "euler"}, "sampler must be one of ddpm, ddim, dpmpp"),
        ({"spacing": "karras"}, "spacing must be one of trailing, logsnr"),
        ({"spacing": None}, "spacing needs a value; got nothing"),
        ({"sampler": "ddpm", "spacing": "logsnr"}, "spacing applies to the ddim and dpmpp"),
        ({"sampler": "ddpm", "steps": 20}, "ddpm always takes all T=300 steps"),
        ({"sampler": "ddim", "steps": 301}, "steps must be an integer in 1..300"),
        ({"guidance_interval": [0, 301]}, "guidance_interval must lie within 0..300"),
        ({"model": "time", "count": 11}, "count must be a whole number from 1 to 10; got 11"),
        ({"colour": "red"}, "unknown field(s): colour"),
        ({"model": "time_e35"}, "model must be one of time, class, time_e34; got 'time_e35'"),
        ({"model": "time", "guide": "/etc/passwd"}, "guide must be null or weak for the time"),
        ({"guide": "weak"}, "guide must be null for the class model here"),
        ([3], "the request must be a JSON object"),
    ],
)
def test_bad_generate_requests_name_the_field(payload, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_generate(payload, num_timesteps=300)


def test_a_generate_request_starts_from_the_fast_preset():
    request = parse_generate({"digits": [1, 2]}, num_timesteps=300)
    assert request.sampling.sampler == "dpmpp" and request.sampling.steps == 20
    recipe = parse_generate({"sampler": "ddpm", "guidance_interval": None}, num_timesteps=300)
    assert recipe.sampling.steps == 300 and recipe.sampling.guidance_interval is None
    time = parse_generate({"model": "time", "count": 2}, num_timesteps=300)
    assert time.sampling == PRESETS["time"]["fast"].replace(steps=20)
    unguided = parse_generate({"model": "time", "guide": None}, num_timesteps=300)
    assert unguided.sampling.guide is None
    assert parse_generate({"clip_x0": not request.sampling.clip_x0}, 300).sampling == (
        request.sampling.replace(clip_x0=not request.sampling.clip_x0)
    )
    logsnr = parse_generate({"digits": [1], "spacing": "logsnr"}, num_timesteps=300)
    assert logsnr.sampling == request.sampling.replace(spacing="logsnr")
    longer = parse_generate({"model": "time_e34", "count": 2}, num_timesteps=300)
    assert longer.model == "time_e34" and longer.sampling == time.sampling  # the kind's preset


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"source": "canvas", "pixels": [0] * 783}, "pixels must hold 28x28 = 784 values"),
        ({"source": "canvas", "pixels": [256] * 784}, "pixels must be a list of whole numbers"),
        ({"index": 10_000}, "index must be a whole number from 0 to 9999"),
        ({"index": None}, "index must be a whole number from 0 to 9999; got null"),
        ({"sigma": -0.1}, "sigma must be a number from 0 to 2"),
        ({"source": "camera"}, "source must be one of test, canvas"),
    ],
)
def test_bad_denoise_requests_name_the_field(payload, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_denoise(payload, torch.zeros(10_000, 28, 28, dtype=torch.uint8))


def test_without_mnist_the_denoiser_asks_for_a_drawing():
    no_digits = torch.empty(0, 28, 28, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="draw a digit instead"):
        parse_denoise({"source": "test"}, no_digits)
    noisy, clean, index = parse_denoise({"source": "canvas", "pixels": [0] * 784}, no_digits)
    assert noisy.shape == clean.shape == (1, 1, 28, 28) and index == -1


def test_a_full_queue_refuses_at_once():
    worker = Worker(max_queued=1)
    running, release = threading.Event(), threading.Event()
    worker.submit(lambda: (running.set(), release.wait(10)))
    assert running.wait(10)
    worker.submit(lambda: None)  # waits in line
    started = time.perf_counter()
    with pytest.raises(BusyError, match="busy"):
        worker.submit(lambda: None)
    assert time.perf_counter() - started < 1
    release.set()
    worker.stop()


def test_the_line_counts_only_the_calls_ahead():
    worker = Worker(max_queued=2)
    release, ahead = threading.Event(), []
    first = worker.submit(lambda: release.wait(10), ahead.append)
    second = worker.submit(lambda: 2, ahead.append)
    release.set()
    assert first.result(10) and second.result(10) == 2
    third = worker.submit(lambda: 3, ahead.append)
    assert third.result(10) == 3
    assert ahead == [0, 1, 0]  # a call never counts itself
    worker.stop()


def test_downloads_refuse_a_scale_not_offered(server):
    job = server.app.start_generation({"digits": [1], "steps": 2})
    assert [name for name, _ in job.follow()][-1] == "done"
    base = f"{server.url}/api/jobs/{job.id}/grid.png"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}?scale=8", timeout=10)
    assert refused.value.code == 400
    assert "scale must be one of 1, 2, 4; got '8'" in json.load(refused.value)["error"]
    with urllib.request.urlopen(f"{base}?scale=2", timeout=10) as reply:
        assert Image.open(io.BytesIO(reply.read())).size == (56, 56)


def test_a_job_stopped_in_line_never_starts():
    worker, release = Worker(max_queued=1), threading.Event()
    worker.submit(lambda: release.wait(10))
    job = Job()
    worker.submit(lambda: job.run(lambda job: {"ran": True}))
    job.cancelled.set()
    release.set()
    assert [name for name, _ in job.follow()] == ["cancelled"]
    worker.stop()


def test_a_reader_that_leaves_the_stream_cancels_its_job(server):
    recipe = {"digits": [1], "sampler": "ddpm", "guidance_interval": None}  # 300 steps
    job = server.app.start_generation(recipe)
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"GET /api/jobs/{job.id}/events HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        )
        assert sock.recv(4096).startswith(b"HTTP/1.0 200")
    events = [name for name, _ in job.follow()]  # ends once the server noticed
    assert events[-1] == "cancelled" and events.count("frame") < 300
