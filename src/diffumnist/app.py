"""The web demo: watch a digit being born, in any browser, on the shipped models, offline.

`diffumnist ui` calls `serve()`; the page (`ui_static/`) talks only to this server, which
holds HTTP and the job queue. Sampling settings, their defaults, ranges and help come from
`SamplingConfig` (the page starts from its `fast` preset), pictures from `viz`. The standard
library's server, not Gradio or FastAPI: the page must work offline with no new dependency.
Frames stream as server-sent events. Model calls run in turn on one worker thread behind a
bounded queue (full: 503 at once). Each connection gets a thread (at most `max_connections`,
more get a quick 503) and a read timeout; a body shorter than its Content-Length is refused
(400); a client that went away is a debug line, never a traceback. On 127.0.0.1 (default)
the Host header is checked (DNS rebinding); posts must be JSON; a CSP keeps the page here.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import torch

from diffumnist.config import ConfigError, check_choice, recipe
from diffumnist.data import add_noise, load_split, to_unit
from diffumnist.pretrained import load_pretrained
from diffumnist.sampling import PRESETS, SAMPLER_NAMES, SEED_RANGE, SamplingConfig, StepInfo
from diffumnist.viz import gif_bytes, png_bytes

log = logging.getLogger(__name__)

PAGE_PRESET = "fast"  # the page's first settings; "recipe" is one click away
MAX_DIGITS = 10  # images per request
MAX_QUEUED = 4  # requests waiting behind the running one; more are refused
MAX_CONNECTIONS = 32  # connection threads; more connections are answered 503
MAX_REFUSING = 8  # threads answering those 503s; when all are busy, a connection is closed
READ_TIMEOUT_S = 10.0  # a client silent this long is dropped; a body must arrive within it
LINGER_S = 0.5  # after replying, how long to read what the client still sends
MAX_SIGMA = 2.0
MAX_BODY_BYTES = 16_384  # a drawn digit (784 numbers) fits several times over
KEEP_JOBS = 8  # recent generations whose frames and downloads stay available
DENOISE_WAIT_S = 300.0  # a denoise request gives up after waiting this long in line
DOWNLOAD_SCALES = ("1", "2", "4")  # an 8x GIF of ten digits takes seconds to encode
LOOPBACK = ("127.0.0.1", "localhost")
TRAINED_SIGMA = recipe("denoiser").sigma  # the noise level the shipped denoiser learned
# Sampling settings the page may send; precision stays SamplingConfig's default (auto).
PAGE_SETTINGS = ("sampler", "steps", "eta", "guidance_scale", "guidance_interval", "seed")
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),
}
JOB_PATH = re.compile(r"/api/jobs/([0-9a-f]{16})/(events|grid\.png|process\.gif|cancel)")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
BUSY_REPLY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n"
    b'{"error": "the server is busy with other connections; try again in a moment"}'
)


class BusyError(RuntimeError):
    """The queue is full; the request was not accepted."""


class Cancelled(Exception):
    """Raised between sampling steps once the page pressed Stop."""


# ---------------------------------------------------------------- requests, validated


@dataclass(frozen=True)
class GenerateRequest:
    """One press of Generate: what to draw, and how (`sampling.steps` resolved against T)."""

    model: str = "class"
    digits: tuple[int, ...] = (5,)
    count: int = 1  # images from the time model, which takes no digits
    sampling: SamplingConfig = field(default_factory=lambda: PRESETS[PAGE_PRESET])


def _object(payload: object, allowed: set[str]) -> dict[str, Any]:
    """The payload as a dict, refusing anything that is not one or has unknown keys."""
    if not isinstance(payload, dict):
        raise ConfigError("the request must be a JSON object")
    if unknown := sorted(set(payload) - allowed):
        raise ConfigError(f"unknown field(s): {', '.join(map(str, unknown))}")
    return payload


def _number(data: dict[str, Any], name: str, default: float, low: int, high: float) -> Any:
    """data[name], checked to lie in [low, high]; whole when `default` is an int."""
    value, kind = data.get(name, default), type(default)
    if isinstance(value, bool) or not isinstance(value, kind | int) or not low <= value <= high:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{name} must be {what} from {low} to {high:g}; got {json.dumps(value)}")
    return value


def _int_list(value: object, name: str, high: int) -> tuple[int, ...]:
    """A list of whole numbers in [0, high], as digits or pixels arrive."""
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= high for v in value
    ):
        raise ConfigError(f"{name} must be a list of whole numbers 0-{high}")
    return tuple(value)


def parse_generate(payload: object, num_timesteps: int) -> GenerateRequest:
    """Check a Generate request; raise ConfigError naming the first bad field.

    SamplingConfig checks the sampling settings, starting from the page's preset; a null is
    refused here only where SamplingConfig would read it as "the default".
    """
    data = _object(payload, {"model", "digits", "count", *PAGE_SETTINGS})
    model = data.get("model", "class")
    check_choice("model", model, ("class", "time"))
    digits, count = GenerateRequest.digits, GenerateRequest.count
    if model == "class":
        digits = _int_list(data.get("digits", list(digits)), "digits", 9)
        if not 1 <= len(digits) <= MAX_DIGITS:
            raise ConfigError(f"pick 1 to {MAX_DIGITS} digits; got {len(digits)}")
    else:
        count = _number(data, "count", count, 1, MAX_DIGITS)
    settings = {name: data[name] for name in PAGE_SETTINGS if name in data}
    for name in ("sampler", "eta", "guidance_scale", "seed"):
        if name in settings and settings[name] is None:
            raise ConfigError(f"{name} needs a value; got nothing")
    config = SamplingConfig.from_preset(PAGE_PRESET, **settings)
    config = config.replace(steps=config.num_steps(num_timesteps))
    return GenerateRequest(model=model, digits=digits, count=count, sampling=config)


def parse_denoise(
    payload: object, test_images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Check a denoiser request; return (noisy = x + σ·ε, the clean x (1, 1, 28, 28), the
    test index or −1 for a drawing). Test digits are refused where MNIST is not on disk."""
    data = _object(payload, {"source", "index", "pixels", "sigma", "seed"})
    source = data.get("source", "test")
    check_choice("source", source, ("test", "canvas"))
    if source == "test" and len(test_images) == 0:
        raise ConfigError("MNIST test digits are not on this machine; draw a digit instead")
    if source == "test":
        index = _number(data, "index", 0, 0, len(test_images) - 1)
        clean = to_unit(test_images[index : index + 1].to(torch.uint8))
    elif len(pixels := _int_list(data.get("pixels"), "pixels", 255)) != 28 * 28:
        raise ConfigError(f"pixels must hold 28x28 = 784 values; got {len(pixels)}")
    else:
        index, clean = -1, to_unit(torch.tensor(pixels, dtype=torch.uint8).reshape(1, 28, 28))
    sigma = _number(data, "sigma", float(TRAINED_SIGMA), 0, MAX_SIGMA)
    seed = _number(data, "seed", 0, 0, SEED_RANGE.stop - 1)
    return add_noise(clean, sigma, torch.Generator().manual_seed(seed)), clean, index


def _accepts(num_timesteps: int, **settings: Any) -> bool:
    """Whether SamplingConfig takes `settings` for a model of T = `num_timesteps`."""
    try:
        SamplingConfig(**settings).num_steps(num_timesteps)
    except ConfigError:
        return False
    return True


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# ---------------------------------------------------------------- jobs and the worker


class Job:
    """A generation's events (queued, started, frame…, then done, failed or cancelled), kept
    so the page's stream, opened once the POST returns, still sees every one in order."""

    def __init__(self) -> None:
        self.id = secrets.token_hex(8)
        self.downloads: dict[str, Callable[[int], bytes]] = {}  # file -> encoder at a scale
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.finished = False
        self.cancelled = threading.Event()  # set by Stop: the job ends at the next step
        self._changed = threading.Condition()

    def emit(self, name: str, data: dict[str, Any], last: bool = False) -> None:
        with self._changed:
            self.events.append((name, data))
            self.finished = last
            self._changed.notify_all()

    def run(self, work: Callable[[Job], dict[str, Any]]) -> None:
        """started, then `work`'s result as done, or failed (one line) or cancelled."""
        try:
            if self.cancelled.is_set():
                raise Cancelled
            self.emit("started", {})
            self.emit("done", work(self), last=True)
        except Cancelled:
            self.emit("cancelled", {}, last=True)
        except ConfigError as exc:
            self.emit("failed", {"message": str(exc)}, last=True)
        except Exception as exc:
            log.exception("job %s failed", self.id)
            self.emit("failed", {"message": f"internal error: {exc}"}, last=True)

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


class Worker:
    """Runs model calls in turn on one thread; at most `max_queued` wait in line."""

    def __init__(self, max_queued: int = MAX_QUEUED) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="diffumnist-ui")
        self.max_queued, self._pending, self._lock = max_queued, 0, threading.Lock()

    def submit(self, work: Callable[[], Any], queued: Callable[[int], Any] = id) -> Future:
        """Queue `work` after telling `queued` how many calls are ahead of it (not counting
        itself); the Future holds what it returns. A full line raises BusyError at once."""
        with self._lock:
            if self._pending > self.max_queued:
                raise BusyError(
                    f"the server is busy: {self.max_queued} requests are already waiting; "
                    "try again in a moment"
                )
            queued(self._pending)  # before the worker may start it
            self._pending += 1
        future = self._executor.submit(work)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future) -> None:
        with self._lock:
            self._pending -= 1

    def stop(self) -> None:
        """Drop the calls still in line, finish the running one, end the thread."""
        self._executor.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- the demo, without HTTP


class DemoApp:
    """The models, the worker and recent jobs behind the page."""

    def __init__(self, max_queued: int = MAX_QUEUED) -> None:
        self.models = {kind: load_pretrained(kind) for kind in ("class", "time")}
        self.denoiser = load_pretrained("denoiser")
        self.num_timesteps = min(m.config.num_timesteps for m in self.models.values())
        self.worker = Worker(max_queued)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        try:  # never downloads: offline, the denoiser tab offers drawing only
            self.test_images, self.test_labels = load_split("test", download=False)
            self.test_note = ""
        except ConfigError as exc:
            log.warning("denoiser tab offers drawing only: %s", exc)
            self.test_images, self.test_labels = torch.empty(0, 28, 28), torch.empty(0)
            self.test_note = "MNIST test digits are not on this machine, so draw a digit."

    def info(self) -> dict[str, Any]:
        """What the page builds its form from: presets, help, choices and limits, each as
        SamplingConfig has it (which samplers take η or other steps: as it accepts them)."""
        T = self.num_timesteps
        return {
            "preset": PAGE_PRESET,
            "presets": {name: config.to_dict() for name, config in PRESETS.items()},
            "help": {f.name: f.metadata["help"] for f in fields(SamplingConfig)},
            "samplers": list(SAMPLER_NAMES),
            "default_steps": {s: SamplingConfig(sampler=s).num_steps(T) for s in SAMPLER_NAMES},
            "fixed_steps": [s for s in SAMPLER_NAMES if not _accepts(T, sampler=s, steps=1)],
            "eta_samplers": [s for s in SAMPLER_NAMES if _accepts(T, sampler=s, eta=1.0)],
            "num_timesteps": T,
            "max_digits": MAX_DIGITS,
            "seed_max": SEED_RANGE.stop - 1,
            "download_scales": DOWNLOAD_SCALES,
            "max_sigma": MAX_SIGMA,
            "trained_sigma": TRAINED_SIGMA,
            "test_digits": len(self.test_images),
            "test_note": self.test_note,
        }

    def start_generation(self, payload: object) -> Job:
        """Validate and queue a generation; its frames stream from `job.follow()`."""
        request, job = parse_generate(payload, self.num_timesteps), Job()
        self.worker.submit(
            lambda: job.run(lambda job: self._generate(request, job)),
            lambda ahead: job.emit("queued", {"ahead": ahead}),
        )
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > KEEP_JOBS:
                self._jobs.popitem(last=False)
        return job

    def job(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def close(self) -> None:
        """Stop every job (each ends at its next step), then the worker."""
        with self._lock:
            for job in self._jobs.values():
                job.cancelled.set()
        self.worker.stop()

    def denoise(self, payload: object) -> dict[str, Any]:
        """Validate, queue and wait for one denoiser call: noisy = x + σ·ε (its training
        corruption), then one network call. Returns the three images and the test label."""
        noisy, clean, index = parse_denoise(payload, self.test_images)
        result = self.worker.submit(lambda: self.denoiser.denoise(noisy))
        try:
            images = {"clean": clean, "noisy": noisy, "denoised": result.result(DENOISE_WAIT_S)}
        except TimeoutError:
            result.cancel()
            raise BusyError("the denoiser waited too long in line; try again") from None
        label = int(self.test_labels[index]) if index >= 0 else None
        return {k: data_url(png_bytes(x, 1)) for k, x in images.items()} | {"label": label}

    def _generate(self, request: GenerateRequest, job: Job) -> dict[str, Any]:
        """Sample, streaming x_t and x̂0 after every step; keep the images for downloads."""
        started = time.perf_counter()
        n = len(request.digits) if request.model == "class" else request.count
        nrow = n if n <= 5 else (n + 1) // 2  # two rows past five, so ten digits stay large

        def on_step(info: StepInfo) -> None:
            if job.cancelled.is_set():
                raise Cancelled
            x_t, x0 = (data_url(png_bytes(x, nrow)) for x in (info.x_t, info.x0_pred))
            job.emit("frame", {"step": info.step + 1, "t": info.t, "x_t": x_t, "x0": x0})

        digits = torch.tensor(request.digits) if request.model == "class" else None
        count = request.count if request.model == "time" else None
        model = self.models[request.model]
        samples, animation = model.generate(digits, request.sampling, n=count, callback=on_step)
        job.downloads = {
            "grid.png": lambda scale: png_bytes(samples, nrow, scale),
            "process.gif": lambda scale: gif_bytes(animation, nrow, scale),
        }
        settings = {"model": request.model, "digits": request.digits, "count": request.count}
        return {
            "seconds": time.perf_counter() - started,
            "final": data_url(png_bytes(samples, nrow)),
            "grid": f"/api/jobs/{job.id}/grid.png",
            "gif": f"/api/jobs/{job.id}/process.gif",
            "settings": settings | request.sampling.to_dict(),
        }


# ---------------------------------------------------------------- HTTP


class DemoServer(ThreadingHTTPServer):
    """A threaded HTTP server with bounded connection threads and a read timeout."""

    daemon_threads = True
    request_queue_size = 64  # connections the kernel holds until accepted

    def __init__(
        self, address: tuple[str, int], app: DemoApp, *, read_timeout: float = READ_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:  # fmt: skip
        self.app, self.read_timeout = app, read_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._refusers = threading.BoundedSemaphore(MAX_REFUSING)
        super().__init__(address, DemoHandler)
        port = self.server_address[1]
        loopback = address[0] in LOOPBACK
        self.allowed_hosts = {f"{name}:{port}" for name in LOOPBACK} if loopback else None

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        """A thread for the connection if one is free, else a quick 503 (or just a close)."""
        if self._slots.acquire(blocking=False):
            super().process_request(request, client_address)
        elif self._refusers.acquire(timeout=2 * LINGER_S):  # each refusal ends within that
            threading.Thread(target=self._refuse, args=(request,), daemon=True).start()
        else:
            self.close_request(request)

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        try:
            request.settimeout(LINGER_S)
            request.sendall(BUSY_REPLY)
        except OSError:
            pass
        finally:
            self.shutdown_request(request)
            self._refusers.release()

    def shutdown_request(self, request: socket.socket) -> None:
        """Close after the reply, first reading (for LINGER_S at most) what the client still
        sends: closing with unread input resets the connection, which can lose the reply."""
        deadline = time.monotonic() + LINGER_S
        try:
            request.shutdown(socket.SHUT_WR)
            while (left := deadline - time.monotonic()) > 0:
                request.settimeout(left)
                if not request.recv(65536):
                    break
        except OSError:
            pass
        self.close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away or stalled is routine; anything else is logged in full."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            log.debug("client %s went away", client_address)
        else:
            log.exception("error while serving %s", client_address)


class DemoHandler(BaseHTTPRequestHandler):
    """Routes: the page's files, /api/info, generate, a job's stream/downloads/cancel, denoise."""

    server: DemoServer
    server_version = "diffumnist-ui"

    def setup(self) -> None:
        self.timeout = self.server.read_timeout  # StreamRequestHandler applies it to the socket
        super().setup()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if not self._host_ok():
            return
        if url.path in STATIC:
            name, content_type = STATIC[url.path]
            body = (resources.files("diffumnist") / "ui_static" / name).read_bytes()
            self._send(HTTPStatus.OK, body, content_type)
        elif url.path == "/api/info":
            self._json(HTTPStatus.OK, self.server.app.info())
        elif (match := JOB_PATH.fullmatch(url.path)) and (job := self.server.app.job(match[1])):
            if match[2] == "events":
                self._events(job)
            elif match[2] == "cancel":
                self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "POST to cancel a job"})
            else:
                self._download(job, match[2], parse_qs(url.query).get("scale", ["1"])[-1])
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"nothing at {url.path} (jobs expire)"})

    def do_POST(self) -> None:
        path, app = urlsplit(self.path).path, self.server.app
        if not self._host_ok():
            return
        try:
            if path == "/api/generate":
                body = {"job": app.start_generation(self._read_json()).id}
            elif path == "/api/denoise":
                body = app.denoise(self._read_json())
            elif (match := JOB_PATH.fullmatch(path)) and match[2] == "cancel" and app.job(match[1]):
                app.job(match[1]).cancelled.set()
                body = {"cancelled": True}
            else:
                return self._json(HTTPStatus.NOT_FOUND, {"error": f"nothing to post to at {path}"})
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
        """The request body as JSON; only application/json, so no cross-site form can post.

        The whole body must arrive within the read timeout; a shorter one is refused.
        """
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            raise ConfigError("send the request as Content-Type: application/json")
        length = self.headers.get("Content-Length", "")
        length = int(length) if length.isascii() and length.isdigit() else 0
        if not 0 < length <= MAX_BODY_BYTES:
            raise ConfigError(f"the request body must be 1 to {MAX_BODY_BYTES} bytes")
        body, deadline = b"", time.monotonic() + self.server.read_timeout
        try:
            while len(body) < length and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not (chunk := self.rfile.read1(length - len(body))):
                    break
                body += chunk
        except TimeoutError:
            pass
        self.connection.settimeout(self.server.read_timeout)
        if len(body) < length:
            raise ConfigError(f"the request body ended after {len(body)} of {length} bytes")
        try:
            return json.loads(body)
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

    def _download(self, job: Job, name: str, scale: str) -> None:
        """The grid PNG or the process GIF, enlarged `scale` times."""
        if scale not in DOWNLOAD_SCALES:
            error = f"scale must be one of {', '.join(DOWNLOAD_SCALES)}; got {scale!r}"
            self._json(HTTPStatus.BAD_REQUEST, {"error": error})
        elif name not in job.downloads:
            self._json(HTTPStatus.NOT_FOUND, {"error": "this job has not finished"})
        else:
            kind = "image/png" if name.endswith(".png") else "image/gif"
            self._send(HTTPStatus.OK, job.downloads[name](int(scale)), kind)

    def _events(self, job: Job) -> None:
        """Server-sent events of `job`; a reader that leaves cancels it (nobody watches)."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        try:
            for name, data in job.follow():
                self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()
        except (ConnectionError, TimeoutError):
            log.debug("client left the stream of job %s", job.id)
            job.cancelled.set()


def make_server(
    host: str = "127.0.0.1", port: int = 7860, app: DemoApp | None = None, **limits: Any
) -> DemoServer:
    """A ready server (port 0 picks a free one); raises ConfigError if it cannot listen.

    `limits`: `read_timeout` (seconds) and `max_connections`, as DemoServer takes them.
    """
    try:
        return DemoServer((host, port), app or DemoApp(), **limits)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def serve(host: str = "127.0.0.1", port: int = 7860, **limits: Any) -> None:
    """Serve the demo until Ctrl+C; blocks. `diffumnist ui [--host] [--port]` calls this."""
    server = make_server(host, port, **limits)
    print(f"DiffuMNIST demo at http://{host}:{server.server_address[1]}/ (Ctrl+C stops it)")
    if host not in LOOPBACK:
        print(f"warning: listening on {host}, so other machines can reach this demo")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass  # Ctrl+C ends the demo
    finally:
        server.server_close()
        server.app.close()
