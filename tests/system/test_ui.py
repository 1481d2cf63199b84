"""The web demo, driven in a real browser (Debian's chromium through Playwright).

Claims: at 1280x800 and 390x844 the primary path (model, digits, the presets, Generate) is
inside the first viewport and the result is in view when it lands; the last frame of the
timeline is the result, pixel for pixel (ten digits with `fast`, redraws included), and the
timeline follows the draw each digit kept; a digit 3 asked for is judged a 3 by the
project's classifier from the pixels the page shows; the Advanced settings are built from
/api/info, so a setting added there appears in the form and in the request; a value out of
range (γ = −1) is refused in the form and by the server, in the words on screen, with the
field marked; the timeline's slider and its label agree, and after an error the last good
result stays with its frames; ddpm's steps cannot be edited; "new seed each time" shows the
seed used, also after Stop; Stop cancels a running job and hides nothing for good; at phone
width nothing is wider than the screen; downloads come at the chosen scale, named by their
settings; the page logs no console error; the denoiser tab brings a noisy test digit closer
to the clean one, takes a drawing, shows an empty state, clears stale images and retries
while the queue is full; a full queue refuses at once; the page fetches nothing from
elsewhere.

Screenshots go to pytest's tmp_path; each test prints where.
"""

from __future__ import annotations

import base64
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
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from diffumnist.app import BusyError, DemoApp, DemoServer, Job, Worker, make_server
from diffumnist.classifier import classify, load_classifier
from diffumnist.config import ConfigError, default_data_dir
from diffumnist.sampling import PRESETS
from diffumnist.webjobs import Recorder, explain
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
DESKTOP, PHONE = (1280, 800), (390, 844)
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
# Whether the element's whole box lies inside the viewport as the page is scrolled now.
IN_VIEW = """(el) => {
    const box = el.getBoundingClientRect();
    return box.top >= 0 && box.left >= 0 && box.bottom <= window.innerHeight + 0.5
        && box.right <= document.documentElement.clientWidth + 0.5 && box.height > 0;
}"""
SET_SLIDER = "(s, v) => { s.value = v; s.dispatchEvent(new Event('input')); }"
REDRAWN_SEED = 3037406898  # ten digits with fast: the filter sends some back for a redraw
DATA_DIR = default_data_dir()  # where MNIST is as the tests start


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
def info(server) -> dict:
    """What the page builds its form from."""
    with urllib.request.urlopen(f"{server.url}/api/info", timeout=10) as reply:
        return json.load(reply)


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


def open_page(browser, url: str, size: tuple[int, int] = DESKTOP):
    """A fresh page on the demo, ready; `page.problems` collects console errors and
    script exceptions, `page.urls` every URL it fetched."""
    context = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = context.new_page()
    page.problems, page.urls = [], []
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda exc: page.problems.append(f"exception: {exc}"))
    page.on("request", lambda request: page.urls.append(request.url))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    return page


def check_page(page, server) -> None:
    """Close the page; check it fetched nothing from elsewhere and threw nothing."""
    page.context.close()
    foreign = [u for u in page.urls if not u.startswith((server.url, "data:"))]
    assert not foreign, f"the page fetched from outside its server: {foreign}"
    # refused requests log "Failed to load resource" on purpose in some tests
    exceptions = [p for p in page.problems if "Failed to load resource" not in p]
    assert not exceptions, exceptions


@pytest.fixture
def page(browser, server):
    page = open_page(browser, server.url)
    yield page
    check_page(page, server)


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


def open_advanced(page) -> None:
    if not page.eval_on_selector("#advanced", "d => d.open"):
        page.click("#advanced > summary")


def generate(page, timeout_s: float = 120.0) -> float:
    """Press Generate, wait for a new final image; return the seconds the page measured."""
    version = int(page.get_attribute("#final", "data-version") or 0)
    page.click("#generate")
    page.wait_for_selector(f"#final[data-version='{version + 1}']", timeout=timeout_s * 1000)
    return float(page.get_attribute("#final", "data-seconds"))


def timeline(page) -> tuple[int, int, str]:
    """(slider position, slider maximum, the frame's label)."""
    position = int(page.eval_on_selector("#scrubber", "s => s.value"))
    return position, int(page.get_attribute("#scrubber", "max")), page.inner_text("#scrub-label")


def last_job(page, server) -> Job:
    job_id = next(u for u in reversed(page.urls) if u.endswith("/events")).split("/")[-2]
    return server.app.job(job_id)


def setting(info: dict, name: str) -> dict:
    return next(s for s in info["settings"] if s["name"] == name)


def fast_timesteps(server, digits: list[int]) -> list[int]:
    """The timesteps of the fast preset's steps, as the server reports them."""
    job = server.app.start_generation({"digits": digits, "seed": 0})
    return [data["t"] for name, data in job.follow() if name == "frame" and not data["draw"]]


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_primary_path_is_in_the_first_viewport_and_the_result_in_view(
    browser, server, info, size, tmp_path
):
    page = open_page(browser, server.url, size)
    screenshot(page, tmp_path / "first-viewport.png")
    presets = info["presets"][info["models"]["class"]]
    for selector in ["#model", "#digit-0", "#digit-9", "#generate"] + [
        f"#preset-{name}" for name in presets
    ]:
        assert page.eval_on_selector(selector, IN_VIEW), f"{selector} is below the fold"
    for name, preset in presets.items():  # each preset explained in one plain sentence
        summary = page.inner_text(f".preset:has(#preset-{name}) .summary")
        assert summary == preset["summary"] and summary.strip()
    assert not page.eval_on_selector("#advanced", "d => d.open")  # the knobs wait there
    assert page.is_hidden("#set-guidance_scale")
    page.click("#digits-all")
    generate(page)
    page.wait_for_function(f"() => ({IN_VIEW})(document.getElementById('final'))", timeout=10_000)
    screenshot(page, tmp_path / "result-in-view.png")
    check_page(page, server)


def test_the_last_timeline_frame_is_the_result(page, server, info, tmp_path):
    """Ten digits with fast, on a seed where the filter sends digits back for a redraw."""
    page.click("#preset-fast")
    page.click("#digits-all")
    use_seed(page, REDRAWN_SEED)
    generate(page)
    screenshot(page, tmp_path / "ten-digits.png")
    steps = setting_value(info, "class", "fast", "steps")
    assert timeline(page) == (steps, steps, "final image")  # a frame per step, then the end
    final = displayed_pixels(page, "#final")
    assert np.array_equal(displayed_pixels(page, "#view-xt"), final)
    assert np.array_equal(displayed_pixels(page, "#view-x0"), final)
    page.eval_on_selector("#scrubber", SET_SLIDER, steps - 1)
    assert re.fullmatch(rf"step {steps} of {steps} \(t = \d+\)", timeline(page)[2])

    events = last_job(page, server).events
    redraws = [data for name, data in events if name == "frame" and data["draw"]]
    done = events[-1][1]
    for frame in redraws:  # a redraw says which digits it covers
        assert frame["slots"] and set(frame["slots"]) <= set(range(10))
    if done["redrawn"]:
        assert "drawn again" in page.inner_text("#result-caption")
    print(f"{len(redraws)} redraw frames; digits kept from a redraw: {done['redrawn']}")


def setting_value(info: dict, kind: str, preset: str, name: str):
    values = info["presets"][kind][preset]["settings"]
    return values.get(name, setting(info, name)["default"])


def test_the_timeline_follows_the_draw_each_digit_kept():
    """Two digits, two steps; digit 1 is drawn again and keeps the redraw: the timeline's
    x_t comes from the animation and its x̂0 from the kept draw; it ends on the final."""
    job = Job()
    recorder = Recorder(job, 2)

    def shade(value: int, n: int) -> torch.Tensor:
        return torch.full((n, 1, 28, 28), value / 255)

    slots = torch.tensor([1])
    for draw, n, base in ((0, 2, 10), (1, 1, 100)):
        for step in range(2):
            recorder.on_step(SimpleNamespace(
                step=step, num_steps=2, t=300 - 150 * step, draw=draw,
                slots=slots if draw else None, x_t=shade(base + step, n),
                x0_pred=shade(base + 50 + step, n), x_prev=shade(base + step + 1, n),
            ))  # fmt: skip
    kept = [torch.tensor([10, 100]), torch.tensor([11, 101]), torch.tensor([12, 102])]
    animation = torch.stack([v[:, None, None].expand(2, 28, 28) for v in kept]).to(torch.uint8)
    frames = recorder.timeline(animation)
    assert [f["label"] for f in frames] == ["step 1 of 2 (t = 300)", "step 2 of 2 (t = 150)",
                                            "final image"]  # fmt: skip
    assert recorder.redrawn(animation) == [1]
    emitted = [data for name, data in job.events if name == "frame"]
    assert [f["slots"] for f in emitted] == [None, None, [1], [1]]

    def pixels(url: str) -> list[int]:  # the middle pixel of each of the two tiles
        png = io.BytesIO(base64.b64decode(url.split(",")[1]))
        grid = np.array(Image.open(png).convert("L"))
        return [int(grid[16, 16]), int(grid[16, 46])]

    assert pixels(frames[0]["x_t"]) == [10, 100] and pixels(frames[1]["x_t"]) == [11, 101]
    assert pixels(frames[0]["x0"]) == [60, 150] and pixels(frames[1]["x0"]) == [61, 151]
    assert pixels(frames[2]["x_t"]) == pixels(frames[2]["x0"]) == [12, 102]
    assert pixels(emitted[-1]["x_t"]) == [11, 101]  # the live view pastes the redraw


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
    position, _, label = timeline(page)
    assert position == 0 and label.startswith("step 1 of ") and label.endswith("(t = 300)")
    screenshot(page, tmp_path / "scrubbed-to-T.png")


@pytest.mark.parametrize("model", ["time", "time_e34"])
def test_time_models_give_the_requested_count(page, info, tmp_path, model):
    page.select_option("#model", model)
    assert page.is_hidden("#digits-field")
    offered = {b.get_attribute("id") for b in page.locator("#presets button").all()}
    assert offered == {f"preset-{name}" for name in info["presets"][info["models"][model]]}
    page.fill("#count", "4")
    open_advanced(page)
    assert page.is_enabled("#set-guide")  # its weak twin
    page.select_option("#set-sampler", "ddim")
    page.fill("#set-steps", "10")
    generate(page)
    screenshot(page, tmp_path / f"{model}-model.png")
    assert displayed_pixels(page, "#final").shape == (32, 2 + 4 * 30)  # 4 images, 2 px apart
    caption = page.inner_text("#result-caption")
    assert caption.startswith(f"4 images drawn by the {model} model") and "custom" in caption


def test_every_model_says_how_it_was_trained(page, info):
    for model, kind in info["models"].items():
        page.select_option("#model", model)
        assert page.inner_text("#model-help").endswith(info["trained_how"][model])
        assert page.is_visible("#digits-field") == (kind == "class")


def test_out_of_range_and_blank_fields_are_refused_in_the_form(page, info):
    label = setting(info, "guidance_scale")["label"]
    page.click("#digits-none")
    page.click("#generate")
    page.locator("#gen-error", has_text="Pick 1 to 10 digits").wait_for()
    assert page.get_attribute("#digits-field", "data-invalid") == "1"
    page.click("#digit-1")
    assert page.get_attribute("#digits-field", "data-invalid") is None  # fixed: unmarked

    use_seed(page, -1)
    page.click("#generate")
    page.locator(
        "#gen-error", has_text="Seed must be a whole number from 0 to 4294967295; got -1"
    ).wait_for()
    assert page.get_attribute("#seed", "aria-invalid") == "true"

    page.fill("#seed", "0")
    open_advanced(page)
    page.fill("#set-guidance_scale", "-1")
    page.click("#advanced > summary")  # closed again: the error opens it
    page.click("#generate")
    error = page.locator("#gen-error", has_text=f"{label} must be a number of 0 or more; got -1")
    error.wait_for()
    assert page.eval_on_selector("#advanced", "d => d.open")
    assert page.get_attribute("#field-guidance_scale", "data-invalid") == "1"
    assert page.get_attribute("#set-guidance_scale", "aria-invalid") == "true"
    assert page.get_attribute("#set-guidance_scale", "min") == "0"  # the browser knows it too

    page.fill("#set-guidance_scale", "")
    page.click("#generate")
    page.locator("#gen-error", has_text=f"{label} is empty").wait_for()
    page.fill("#set-guidance_scale", "5")
    page.fill("#seed", "")
    page.focus("#seed")
    page.keyboard.type("1e")  # a number input takes it, but it is not a number
    page.click("#generate")
    page.locator("#gen-error", has_text="Seed is not a number").wait_for()
    shown = page.inner_text("#gen-error")
    assert "None" not in shown and "null" not in shown
    assert not page.is_visible("#result")  # nothing was sent


def test_the_server_refuses_a_negative_guidance_scale_and_the_page_marks_it(page, server, info):
    label = setting(info, "guidance_scale")["label"]
    body = json.dumps({"digits": [1], "guidance_scale": -1}).encode()
    post = urllib.request.Request(
        f"{server.url}/api/generate", data=body, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(post, timeout=10)
    assert refused.value.code == 400
    reply = json.load(refused.value)
    assert reply["setting"] == "guidance_scale" and reply["error"].startswith(label)

    # the form's own check set aside: the server's refusal marks the field
    page.evaluate("() => { info.settings.find((s) => s.name === 'guidance_scale').min = null; }")
    open_advanced(page)
    page.fill("#set-guidance_scale", "-1")
    page.click("#advanced > summary")
    page.click("#generate")
    page.locator("#gen-error", has_text=label).wait_for()
    assert page.eval_on_selector("#advanced", "d => d.open")
    assert page.get_attribute("#field-guidance_scale", "data-invalid") == "1"
    page.wait_for_selector("#generate:not([disabled])")


def test_a_setting_added_to_the_description_appears_in_advanced(page, server, info, monkeypatch):
    probe = {
        "name": "probe_knob", "label": "Probe knob", "type": "float", "default": 0.25,
        "help": "A knob for this test.", "refs": [{"title": "A paper", "url": "https://example.org/p"}],
        "nullable": False, "none_label": None, "choices": None, "min": 0, "max": 1,
        "exclusive": False, "samplers": None,
    }  # fmt: skip
    served = server.app.info
    monkeypatch.setattr(server.app, "info", lambda: served() | {
        "settings": [*served()["settings"], probe]})  # fmt: skip
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    open_advanced(page)
    assert page.inner_text("#field-probe_knob label") == "Probe knob"
    assert "A knob for this test." in page.inner_text("#field-probe_knob .help")
    assert page.get_attribute("#field-probe_knob a", "href") == "https://example.org/p"
    assert page.input_value("#set-probe_knob") == "0.25"  # no preset sets it: its default
    assert (
        page.get_attribute("#set-probe_knob", "min"),
        page.get_attribute("#set-probe_knob", "max"),
    ) == ("0", "1")
    page.fill("#set-probe_knob", "0.5")
    assert page.is_visible("#preset-custom")
    with page.expect_request("**/api/generate") as sent:
        page.click("#generate")
    assert sent.value.post_data_json["probe_knob"] == 0.5
    page.wait_for_selector("#generate:not([disabled])")  # today's server refuses it: fine


def test_bad_requests_get_the_label_on_screen_and_the_field(server):
    body = json.dumps({"digits": []}).encode()
    post = urllib.request.Request(
        f"{server.url}/api/generate", data=body, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(post, timeout=10)
    assert json.load(refused.value)["setting"] == "digits"
    broken = urllib.request.Request(
        f"{server.url}/api/generate", data=b"{", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(broken, timeout=10)
    assert refused.value.code == 400
    assert "not valid JSON" in json.load(refused.value)["error"]


def test_a_refusal_speaks_in_the_labels_on_screen():
    labels = {"guidance_scale": "Guidance scale γ", "digits": "Digits", "count": "How many"}
    refusal = ConfigError("guidance_scale must be 0 or more; got -1", "guidance_scale")
    said = {"error": "Guidance scale γ must be 0 or more; got -1", "setting": "guidance_scale"}
    assert explain(refusal, labels) == said
    assert explain(ConfigError("pick 1 to 10 digits; got 0"), labels)["setting"] == "digits"
    assert explain(ConfigError("the server is out of paper"), labels)["setting"] is None


def test_the_result_stays_after_an_error_and_the_timeline_agrees_with_its_label(page, server):
    ts = fast_timesteps(server, [5])
    steps = len(ts)
    use_seed(page, 7)
    generate(page)
    kept = page.get_attribute("#final", "src"), page.inner_text("#result-caption")
    assert "seed 7." in kept[1] and "fast preset" in kept[1]
    assert timeline(page) == (steps, steps, "final image")

    page.evaluate("() => { info.settings.find((s) => s.name === 'guidance_scale').min = null; }")
    open_advanced(page)
    page.fill("#set-guidance_scale", "-1")  # refused by the server
    page.click("#generate")
    page.wait_for_selector("#gen-error:not([hidden])")
    page.wait_for_selector("#generate:not([disabled])")
    assert (page.get_attribute("#final", "src"), page.inner_text("#result-caption")) == kept
    assert page.is_visible("#final") and page.is_visible("#view-xt")
    assert timeline(page) == (steps, steps, "final image")
    for position in (0, 7, steps - 1):
        page.eval_on_selector("#scrubber", SET_SLIDER, position)
        label = f"step {position + 1} of {steps} (t = {ts[position]})"
        assert timeline(page) == (position, steps, label)


def test_presets_fill_the_advanced_settings(page, info):
    open_advanced(page)
    page.click("#preset-recipe")
    assert page.input_value("#set-sampler") == "ddpm"
    assert page.input_value("#set-steps") == ""  # the sampler's own: all T
    assert page.get_attribute("#set-steps", "placeholder").startswith("300")
    for spec in info["settings"]:  # what applies to other samplers only cannot be edited
        if spec["samplers"] and "ddpm" not in spec["samplers"]:
            assert page.is_disabled(f"#set-{spec['name']}"), spec["name"]
    page.select_option("#set-sampler", "ddim")
    assert page.is_enabled("#set-steps") and page.is_enabled("#set-eta")
    assert page.get_attribute("#set-steps", "placeholder").startswith("50")
    assert page.is_visible("#preset-custom")
    for kind, model in (("class", "class"), ("time", "time")):
        page.select_option("#model", model)
        page.click("#preset-fast")
        for spec in info["settings"]:
            if spec["name"] == "seed" or spec["type"] in ("interval", "bool"):
                continue
            want = setting_value(info, kind, "fast", spec["name"])
            shown = page.input_value(f"#set-{spec['name']}")
            assert shown == (
                "" if want is None else f"{want:g}" if isinstance(want, float) else str(want)
            ), spec["name"]
    assert page.input_value("#set-guide") == "weak"  # the time model's twin
    page.select_option("#set-guide", "")  # unguided: γ has nothing to act on
    assert page.is_disabled("#set-guidance_scale") and page.is_visible("#preset-custom")
    page.select_option("#model", "class")
    page.click("#preset-fast")
    assert page.is_disabled("#set-guide >> option[value='weak']")  # no twin ships for it


def test_a_new_seed_each_time_shows_the_seed_used(page):
    assert page.is_checked("#seed-random") and page.input_value("#seed") == ""
    pick_digits(page, 4)
    results = []
    for _ in range(2):
        generate(page)
        seed = int(page.input_value("#seed"))
        assert f"seed {seed}." in page.inner_text("#result-caption")
        results.append((seed, page.get_attribute("#final", "src")))
    (seed_a, image_a), (seed_b, image_b) = results
    assert seed_a != seed_b and image_a != image_b
    page.fill("#seed", str(seed_a))  # a seed typed in is the one to use
    assert not page.is_checked("#seed-random")
    generate(page)
    assert page.get_attribute("#final", "src") == image_a


def test_stop_cancels_a_running_job(page, server, tmp_path):
    generate(page)  # a result to keep, on a new seed
    kept = page.get_attribute("#final", "src"), page.inner_text("#result-caption")
    seed = page.input_value("#seed")
    page.click("#preset-recipe")  # 300 ddpm steps for ten digits: many seconds
    page.click("#digits-all")
    page.click("#generate")
    page.locator("#gen-status", has_text=re.compile(r"^step \d+ of 300")).wait_for()
    assert page.is_hidden("#result")  # the previous result is not shown as this one
    page.click("#stop")
    page.locator("#gen-status", has_text="stopped").wait_for(timeout=20_000)
    screenshot(page, tmp_path / "stopped.png")
    assert page.is_enabled("#generate") and not page.is_visible("#stop")
    assert (page.get_attribute("#final", "src"), page.inner_text("#result-caption")) == kept
    assert page.input_value("#seed") == seed and f"seed {seed}." in kept[1]
    assert timeline(page)[2] == "final image"

    events = [name for name, _ in last_job(page, server).events]
    assert events[-1] == "cancelled" and 0 < events.count("frame") < 300
    page.click("#preset-fast")
    generate(page)  # the worker is free again


@pytest.mark.parametrize("width", [360, 390])
def test_narrow_layout_has_no_overflow(browser, server, width, tmp_path):
    page = open_page(browser, server.url, (width, 844))
    page.click("#digits-all")
    open_advanced(page)
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
    check_page(page, server)


def test_no_placeholder_is_cut(page, info):
    open_advanced(page)
    cut = page.evaluate("""() => Array.from(document.querySelectorAll("input[placeholder]"))
        .filter((i) => i.placeholder && i.offsetWidth > 0)
        .filter((i) => {
            const ctx = document.createElement("canvas").getContext("2d");
            ctx.font = getComputedStyle(i).font;
            return ctx.measureText(i.placeholder).width > i.clientWidth - 4;
        }).map((i) => i.id)""")
    assert cut == []


def test_downloads_come_at_the_chosen_scale_named_by_their_settings(page, info):
    pick_digits(page, 5)
    use_seed(page, 42)
    generate(page)
    assert [
        o for o in page.eval_on_selector_all("#download-scale option", "os => os.map(o => o.value)")
    ] == info["download_scales"]
    assert info["download_scales"][-1] == str(info["page_zoom"])  # up to what the page shows
    stem = "class_d5_fast_seed42"
    for scale in ("4", "1", str(info["page_zoom"])):  # one digit: no frame
        page.select_option("#download-scale", scale)
        for link, kind in (("#download-png", "png"), ("#download-gif", "gif")):
            with page.expect_download() as download:
                page.click(link)
            assert download.value.suggested_filename == f"{stem}_{scale}x.{kind}"
            with Image.open(download.value.path()) as image:
                side = int(scale) * 28
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
    page.locator("#dn-error", has_text="Index must be a whole number from 0 to 9999").wait_for()
    assert page.get_attribute("#dn-clean", "src") is None  # no stale digit beside the error
    assert page.inner_text("#test-label") == ""

    page.check("input[name='source'][value='canvas']")  # an empty pad: the empty state
    page.wait_for_selector("#dn-empty:not([hidden])")
    assert page.is_visible("#dn-empty") and page.is_hidden("#dn-views")
    assert page.locator("#pad").bounding_box()["width"] >= 250
    screenshot(page, tmp_path / "denoise-empty.png")
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.15 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.85 * box["height"], steps=8)
    page.mouse.up()
    page.wait_for_selector("#dn-denoised[data-version='2']")
    assert displayed_pixels(page, "#dn-clean").max() > 200  # the stroke reached the model
    assert page.is_hidden("#dn-empty")
    screenshot(page, tmp_path / "denoise-drawing.png")
    page.click("#pad-clear")
    page.wait_for_selector("#dn-empty:not([hidden])")
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
    missing = tmp_path / "no-mnist-here"
    monkeypatch.setenv("DIFFUMNIST_DATA", str(missing))
    with running_server() as server:
        page = open_page(browser, server.url)
        page.click("#tab-denoise")
        assert page.is_visible("#test-note") and page.is_visible("#pad")
        note = page.inner_text("#test-note")
        assert str(missing) in note and "--data-dir" in note and "draw a digit" in note
        assert page.is_disabled("input[name='source'][value='test']")
        screenshot(page, tmp_path / "denoise-without-mnist.png")
        page.context.close()
    assert not missing.exists()  # nothing was downloaded


def test_the_page_reads_mnist_from_the_folder_it_is_given(monkeypatch, tmp_path):
    """`diffumnist ui --data-dir DIR` passes DIR here; it wins over $DIFFUMNIST_DATA."""
    if not DATA_DIR.exists():
        pytest.skip(f"no MNIST in {DATA_DIR}")
    monkeypatch.setenv("DIFFUMNIST_DATA", str(tmp_path / "elsewhere"))
    app = DemoApp(data_dir=DATA_DIR)
    try:
        assert app.info()["test_digits"] == 10_000 and app.test_note == ""
    finally:
        app.close()


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
        ({"guidance_scale": None}, "guidance_scale needs a value; got none"),
        ({"clip_x0": "yes"}, "clip_x0 must be true or false; got 'yes'"),
        ({"clip_x0": None}, "clip_x0 needs a value; got none"),
        ({"seed": 2**40}, "seed must be from 0 to 4294967295"),
        ({"sampler": "euler"}, "sampler must be one of ddpm, ddim, dpmpp"),
        ({"spacing": "karras"}, "spacing must be one of trailing, logsnr"),
        ({"spacing": None}, "spacing needs a value; got none"),
        ({"sampler": "ddpm", "spacing": "logsnr"}, "spacing applies to the ddim and dpmpp"),
        ({"sampler": "ddpm", "steps": 20}, "ddpm always takes all T=300 steps"),
        ({"sampler": "ddim", "steps": 301}, "steps must be an integer in 1..300"),
        ({"guidance_interval": [0, 301]}, "guidance_interval must lie within 0..300"),
        ({"model": "time", "count": 11}, "count must be a whole number from 1 to 10; got 11"),
        ({"colour": "red"}, "unknown field(s): colour"),
        ({"model": "time_e35"}, "model must be one of time, class, time_e34, class_cpu; got"),
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
        urllib.request.urlopen(f"{base}?scale=16", timeout=10)
    assert refused.value.code == 400
    assert "scale must be one of 1, 2, 4, 8, 10; got '16'" in json.load(refused.value)["error"]
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
