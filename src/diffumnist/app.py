"""The web demo: watch a digit being born, in any browser, on the shipped models, offline.

`diffumnist ui` calls `serve()`; the page lives in `ui_static/` (HTML, one script, one
stylesheet) and talks only to this server.

Why the standard library's `ThreadingHTTPServer` and not Gradio or FastAPI: the issue asks
for a page that works fully offline, and Gradio pulls about a hundred packages and, unless
configured otherwise, fetches fonts and sends analytics. What the page needs (three small JSON
endpoints, one stream of frames, two downloads) fits in this module with no new runtime
dependency; FastAPI would add three packages for routing we do not need. Frames stream as
server-sent events, which every browser's `EventSource` reads. Every model call runs, in
turn, on one worker thread fed by a bounded queue: the two CPU cores are never split between
requests, a full queue is refused at once with a message, and each request is capped (10
digits, T steps), so one user cannot starve the machine. The server binds 127.0.0.1 by default,
checks the Host header there (against DNS rebinding), accepts only JSON posts (no cross-site
form posts), and sends a Content-Security-Policy that lets the page load nothing from elsewhere.
"""

from __future__ import annotations

import base64
import inspect
import io
import json
import logging
import math
import queue
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import torch

from diffumnist.config import ConfigError, check_choice, recipe
from diffumnist.data import load_split, to_unit
from diffumnist.models import DiffusionModel
from diffumnist.pretrained import load_pretrained
from diffumnist.sampling import DEFAULT_STEPS, SAMPLER_NAMES, StepInfo, check_sampler_args
from diffumnist.viz import save_gif, save_grid

log = logging.getLogger(__name__)

MAX_DIGITS = 10  # images per request: one row of the grid
MAX_QUEUED = 4  # requests waiting behind the running one; more are refused
MAX_GUIDANCE = 20.0
MAX_SEED = 2**31 - 1
MAX_SIGMA = 2.0
MAX_BODY_BYTES = 16_384  # a drawn digit (784 numbers) fits several times over
KEEP_JOBS = 8  # recent generations whose frames and downloads stay available
DENOISE_WAIT_S = 300.0  # a denoise request gives up after waiting this long in line
LOOPBACK = ("127.0.0.1", "localhost")
TRAINED_SIGMA = recipe("denoiser").sigma  # the noise level the shipped denoiser learned
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
JOB_PATH = re.compile(r"/api/jobs/([0-9a-f]{16})/(events|grid\.png|process\.gif)")
OUTPUT_TYPES = {"grid.png": "image/png", "process.gif": "image/gif"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_SAMPLE_DEFAULTS = inspect.signature(DiffusionModel.sample).parameters


class BusyError(RuntimeError):
    """The queue is full; the request was not accepted."""


# ---------------------------------------------------------------- requests, validated


@dataclass(frozen=True)
class GenerateRequest:
    """One press of Generate. The defaults are the page's defaults and `sample`'s own."""

    model: str = "class"
    digits: tuple[int, ...] = (5,)
    count: int = 1  # images from the time model, which takes no digits
    guidance_scale: float = _SAMPLE_DEFAULTS["guidance_scale"].default
    seed: int = 0
    sampler: str = _SAMPLE_DEFAULTS["sampler"].default
    steps: int | None = None  # None: ddpm takes all T steps, ddim and dpmpp DEFAULT_STEPS
    eta: float = 0.0

    def sample_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `DiffusionModel.sample`."""
        kwargs: dict[str, Any] = dict(
            seed=self.seed, sampler=self.sampler, steps=self.steps, eta=self.eta
        )
        if self.model == "class":
            return kwargs | {"c": torch.tensor(self.digits), "guidance_scale": self.guidance_scale}
        return kwargs | {"n": self.count}


@dataclass(frozen=True)
class DenoiseRequest:
    """One look at the single-step denoiser: a test digit or a drawing, noised with σ."""

    source: str = "test"
    index: int = 0
    pixels: tuple[int, ...] = ()  # a drawing: 28·28 grey values 0-255, row by row
    sigma: float = TRAINED_SIGMA
    seed: int = 0


def _object(payload: object, allowed: type) -> dict[str, Any]:
    """The payload as a dict, refusing anything that is not one or has unknown keys."""
    if not isinstance(payload, dict):
        raise ConfigError("the request must be a JSON object")
    unknown = sorted(set(payload) - {f.name for f in fields(allowed)})
    if unknown:
        raise ConfigError(f"unknown field(s): {', '.join(map(str, unknown))}")
    return payload


def _whole(data: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}; got {value!r}")
    return value


def _number(data: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = data.get(name, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value <= high:
        raise ConfigError(f"{name} must be a number from {low:g} to {high:g}; got {value!r}")
    return float(value)


def _int_list(value: object, name: str, low: int, high: int) -> tuple[int, ...]:
    """A list of whole numbers in [low, high], as digits or pixels arrive."""
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in value
    ):
        raise ConfigError(f"{name} must be a list of whole numbers {low}-{high}")
    return tuple(value)


def parse_generate(payload: object, num_timesteps: int) -> GenerateRequest:
    """Check a Generate request field by field; raise ConfigError naming the first bad one."""
    data = _object(payload, GenerateRequest)
    base = GenerateRequest()
    model = data.get("model", base.model)
    check_choice("model", model, ("class", "time"))
    digits, count, guidance = base.digits, base.count, base.guidance_scale
    if model == "class":
        digits = _int_list(data.get("digits", list(digits)), "digits", 0, 9)
        if not 1 <= len(digits) <= MAX_DIGITS:
            raise ConfigError(f"pick 1 to {MAX_DIGITS} digits; got {len(digits)}")
        guidance = _number(data, "guidance_scale", guidance, 0.0, MAX_GUIDANCE)
    else:
        count = _whole(data, "count", count, 1, MAX_DIGITS)
    request = GenerateRequest(
        model=model,
        digits=digits,
        count=count,
        guidance_scale=guidance,
        seed=_whole(data, "seed", base.seed, 0, MAX_SEED),
        sampler=data.get("sampler", base.sampler),
        steps=data.get("steps", base.steps),
        eta=data.get("eta", base.eta),
    )
    check_sampler_args(request.sampler, request.steps, request.eta, num_timesteps)
    return request


def parse_denoise(payload: object, num_test_digits: int) -> DenoiseRequest:
    """Check a denoiser request; a test digit is refused where MNIST is not on disk."""
    data = _object(payload, DenoiseRequest)
    source = data.get("source", "test")
    check_choice("source", source, ("test", "canvas"))
    index, pixels = 0, ()
    if source == "test":
        if num_test_digits == 0:
            raise ConfigError("MNIST test digits are not on this machine; draw a digit instead")
        index = _whole(data, "index", 0, 0, num_test_digits - 1)
    else:
        pixels = _int_list(data.get("pixels"), "pixels", 0, 255)
        if len(pixels) != 28 * 28:
            raise ConfigError(f"pixels must hold 28x28 = 784 values; got {len(pixels)}")
    return DenoiseRequest(
        source=source,
        index=index,
        pixels=pixels,
        sigma=_number(data, "sigma", DenoiseRequest.sigma, 0.0, MAX_SIGMA),
        seed=_whole(data, "seed", 0, 0, MAX_SEED),
    )


# ---------------------------------------------------------------- images


def png_bytes(images: torch.Tensor) -> bytes:
    """float (N, 1, 28, 28), shown clamped to [0, 1] -> one PNG row (N <= 10) via viz."""
    buffer = io.BytesIO()
    save_grid(images.float().cpu(), buffer, nrow=MAX_DIGITS)
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def gif_bytes(animation: torch.Tensor) -> bytes:
    """uint8 frames (F, N, 28, 28) from `sample` -> the process GIF, via viz."""
    buffer = io.BytesIO()
    save_gif(animation, buffer, nrow=MAX_DIGITS)
    return buffer.getvalue()


# ---------------------------------------------------------------- jobs and the worker


class Job:
    """One request on the worker's queue, with every event it produced kept for replay.

    Keeping the events lets the stream start after the work did (the page opens it once the
    POST returns) and still see every frame in order.
    """

    def __init__(self, work: Callable[[Job], None]) -> None:
        self.id = secrets.token_hex(8)
        self.outputs: dict[str, bytes] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.finished = False
        self._work = work
        self._changed = threading.Condition()

    def emit(self, name: str, data: dict[str, Any]) -> None:
        with self._changed:
            self.events.append((name, data))
            self._changed.notify_all()

    def run(self) -> None:
        """Do the work; a ConfigError becomes a `failed` event with its one-line message."""
        self.emit("started", {})
        try:
            self._work(self)
        except ConfigError as exc:
            self.emit("failed", {"message": str(exc)})
        except Exception as exc:
            log.exception("job %s failed", self.id)
            self.emit("failed", {"message": f"internal error: {exc}"})
        with self._changed:
            self.finished = True
            self._changed.notify_all()

    def follow(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield every event, past and future, until the job has finished."""
        seen = 0
        while True:
            with self._changed:
                self._changed.wait_for(lambda n=seen: len(self.events) > n or self.finished)
                new, finished = self.events[seen:], self.finished
            yield from new
            seen += len(new)
            if finished:
                return

    def last_event(self, timeout: float) -> tuple[str, dict[str, Any]]:
        """Wait for the job to finish; its last event is the result (done or failed)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.finished, timeout):
                return "failed", {"message": "timed out waiting in the queue; try again"}
            return self.events[-1]


class Worker:
    """Runs every model call in turn on one thread; a bounded queue keeps the line short."""

    def __init__(self, max_queued: int = MAX_QUEUED) -> None:
        self._queue: queue.Queue[Job | None] = queue.Queue(max_queued)
        self._thread = threading.Thread(target=self._loop, name="diffumnist-ui", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue `job`, or raise BusyError at once when the line is full."""
        job.emit("queued", {"waiting": self._queue.qsize() + 1})  # before the worker may start it
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise BusyError(
                f"the server is busy: {self._queue.maxsize} requests are already waiting; "
                "try again in a moment"
            ) from None

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the queued jobs, then end the thread (for embedding and tests)."""
        self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            job.run()


# ---------------------------------------------------------------- the demo, without HTTP


def _load_test_digits() -> tuple[torch.Tensor, torch.Tensor, str]:
    """MNIST's test split if it is already on disk, else empty tensors and the reason.

    Never downloads: the page must work offline, with the drawing canvas only.
    """
    try:
        images, labels = load_split("test", download=False)
    except ConfigError as exc:
        log.warning("denoiser tab offers drawing only: %s", exc)
        note = "MNIST test digits are not on this machine, so you can only draw a digit."
        return torch.empty(0, 28, 28, dtype=torch.uint8), torch.empty(0), note
    return images, labels, ""


class DemoApp:
    """The models, the worker and recent jobs behind the page."""

    def __init__(self, max_queued: int = MAX_QUEUED) -> None:
        self.models = {kind: load_pretrained(kind) for kind in ("class", "time")}
        self.denoiser = load_pretrained("denoiser")
        self.num_timesteps = min(m.config.num_timesteps for m in self.models.values())
        self.test_images, self.test_labels, self.test_note = _load_test_digits()
        self.worker = Worker(max_queued)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        """What the page needs to build its form: choices, limits and defaults."""
        return {
            "defaults": asdict(GenerateRequest()),
            "samplers": list(SAMPLER_NAMES),
            "default_steps": {"ddpm": self.num_timesteps} | DEFAULT_STEPS,
            "num_timesteps": self.num_timesteps,
            "max_digits": MAX_DIGITS,
            "max_guidance": MAX_GUIDANCE,
            "max_seed": MAX_SEED,
            "max_sigma": MAX_SIGMA,
            "trained_sigma": TRAINED_SIGMA,
            "test_digits": len(self.test_images),
            "test_note": self.test_note,
        }

    def start_generation(self, payload: object) -> Job:
        """Validate and queue a generation; its frames stream from `job.follow()`."""
        request = parse_generate(payload, self.num_timesteps)
        job = Job(lambda job: self._generate(request, job))
        self.worker.submit(job)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > KEEP_JOBS:
                self._jobs.popitem(last=False)
        return job

    def job(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def denoise(self, payload: object) -> dict[str, Any]:
        """Validate, queue and wait for one denoiser call; returns the three images."""
        request = parse_denoise(payload, len(self.test_images))
        job = Job(lambda job: self._denoise(request, job))
        self.worker.submit(job)
        name, data = job.last_event(DENOISE_WAIT_S)
        if name == "failed":
            raise ConfigError(data["message"])
        return data

    def _generate(self, request: GenerateRequest, job: Job) -> None:
        """Sample, streaming x_t and x̂0 after every step; keep the grid PNG and the GIF."""
        model = self.models[request.model]
        started = time.perf_counter()

        def on_step(info: StepInfo) -> None:
            job.emit(
                "frame",
                {
                    "step": info.step + 1,
                    "num_steps": info.num_steps,
                    "t": info.t,
                    "x_t": data_url(png_bytes(info.x_t)),
                    "x0": data_url(png_bytes(info.x0_pred)),
                },
            )

        samples, animation = model.sample(**request.sample_kwargs(), callback=on_step)
        job.outputs["grid.png"] = png_bytes(samples)
        job.outputs["process.gif"] = gif_bytes(animation)
        job.emit(
            "done",
            {
                "seconds": time.perf_counter() - started,
                "final": data_url(job.outputs["grid.png"]),
                "grid": f"/api/jobs/{job.id}/grid.png",
                "gif": f"/api/jobs/{job.id}/process.gif",
            },
        )

    def _denoise(self, request: DenoiseRequest, job: Job) -> None:
        """noisy = x + σ·ε (the denoiser's training corruption), then one network call."""
        if request.source == "test":
            clean = to_unit(self.test_images[request.index : request.index + 1])
            label = int(self.test_labels[request.index])
        else:
            clean = to_unit(torch.tensor(request.pixels, dtype=torch.uint8).reshape(1, 28, 28))
            label = None
        generator = torch.Generator().manual_seed(request.seed)
        noisy = clean + request.sigma * torch.randn(clean.shape, generator=generator)
        denoised = self.denoiser.denoise(noisy)
        images = {"clean": clean, "noisy": noisy, "denoised": denoised}
        urls = {name: data_url(png_bytes(x)) for name, x in images.items()}
        job.emit("done", urls | {"label": label})


# ---------------------------------------------------------------- HTTP


class DemoServer(ThreadingHTTPServer):
    """A threaded HTTP server that carries the DemoApp its handlers serve."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: DemoApp) -> None:
        self.app = app
        super().__init__(address, DemoHandler)
        port = self.server_address[1]
        loopback = address[0] in LOOPBACK
        self.allowed_hosts = {f"{name}:{port}" for name in LOOPBACK} if loopback else None


class DemoHandler(BaseHTTPRequestHandler):
    """Routes: the page's three files, /api/info, generate, the job stream, downloads, denoise."""

    server: DemoServer
    server_version = "diffumnist-ui"

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        path = urlsplit(self.path).path
        if path in STATIC:
            self._static(*STATIC[path])
        elif path == "/api/info":
            self._json(HTTPStatus.OK, self.server.app.info())
        elif (match := JOB_PATH.fullmatch(path)) and (job := self.server.app.job(match[1])):
            if match[2] == "events":
                self._events(job)
            else:
                self._output(job, match[2])
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"nothing at {path} (jobs expire)"})

    def do_POST(self) -> None:
        if not self._host_ok():
            return
        path = urlsplit(self.path).path
        app = self.server.app
        try:
            if path == "/api/generate":
                body = {"job": app.start_generation(self._read_json()).id}
            elif path == "/api/denoise":
                body = app.denoise(self._read_json())
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"nothing at {path}"})
                return
        except ConfigError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except BusyError as exc:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
        else:
            self._json(HTTPStatus.OK, body)

    def end_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _host_ok(self) -> bool:
        """On a loopback bind, refuse Host headers naming other sites (DNS rebinding)."""
        allowed = self.server.allowed_hosts
        if allowed is None or self.headers.get("Host", "") in allowed:
            return True
        self._json(HTTPStatus.FORBIDDEN, {"error": "unexpected Host header"})
        return False

    def _read_json(self) -> object:
        """The request body as JSON; only application/json, so no cross-site form can post."""
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            raise ConfigError("send the request as Content-Type: application/json")
        length = self.headers.get("Content-Length", "")
        length = int(length) if length.isdigit() else 0
        if not 0 < length <= MAX_BODY_BYTES:
            raise ConfigError(f"the request body must be 1 to {MAX_BODY_BYTES} bytes")
        try:
            return json.loads(self.rfile.read(length))
        except ValueError:
            raise ConfigError("the request body is not valid JSON") from None

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: HTTPStatus, data: dict[str, Any]) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _static(self, name: str, content_type: str) -> None:
        body = (resources.files("diffumnist") / "ui_static" / name).read_bytes()
        self._send(HTTPStatus.OK, body, content_type)

    def _output(self, job: Job, name: str) -> None:
        if name not in job.outputs:
            self._json(HTTPStatus.NOT_FOUND, {"error": "this job has not finished"})
            return
        self._send(HTTPStatus.OK, job.outputs[name], OUTPUT_TYPES[name])

    def _events(self, job: Job) -> None:
        """Server-sent events: queued, started, frame…, then done or failed."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        try:
            for name, data in job.follow():
                self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            log.debug("client left the stream of job %s", job.id)


def make_server(
    host: str = "127.0.0.1", port: int = 7860, app: DemoApp | None = None
) -> DemoServer:
    """A ready server (port 0 picks a free one); raises ConfigError if it cannot listen."""
    try:
        return DemoServer((host, port), app or DemoApp())
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def serve(host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the demo until Ctrl+C; blocks. `diffumnist ui [--host] [--port]` calls this."""
    server = make_server(host, port)
    print(f"DiffuMNIST demo at http://{host}:{server.server_address[1]}/ (Ctrl+C stops it)")
    if host not in LOOPBACK:
        print(f"warning: listening on {host}, so other machines can reach this demo")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass  # Ctrl+C ends the demo; the worker thread is a daemon and ends with it
    finally:
        server.server_close()
