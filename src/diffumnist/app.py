"""The web demo: watch a digit being born, in any browser, on the shipped models, offline.

`diffumnist ui` calls `serve()`; the page (`ui_static/`) talks only to this server, which
holds HTTP routes and the job queue. Requests are checked in `webrequests`; connection
limits, read timeouts and whole bodies come from `webserver`. Sampling settings, their
defaults, ranges and help come from `SamplingConfig` (the page starts from its `fast`
preset), pictures from `viz`. The standard library's server, not Gradio or FastAPI: the page
must work offline with no new dependency. Frames stream as server-sent events. Model calls
run in turn on one worker thread behind a bounded queue (full: 503 at once). On 127.0.0.1
(default) the Host header is checked (DNS rebinding); posts must be JSON; a CSP keeps the
page here.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import torch

from diffumnist.config import ConfigError
from diffumnist.data import load_split
from diffumnist.pretrained import load_pretrained
from diffumnist.sampling import StepInfo
from diffumnist.viz import gif_bytes, png_bytes
from diffumnist.webrequests import (
    DOWNLOAD_SCALES,
    PAGE_MODELS,
    GenerateRequest,
    form_info,
    parse_denoise,
    parse_generate,
)
from diffumnist.webserver import BadRequest, BoundedHTTPServer, TimedRequestHandler

log = logging.getLogger(__name__)

MAX_QUEUED = 4  # requests waiting behind the running one; more are refused
MAX_BODY_BYTES = 16_384  # a drawn digit (784 numbers) fits several times over
KEEP_JOBS = 8  # recent generations whose frames and downloads stay available
DENOISE_WAIT_S = 300.0  # a denoise request gives up after waiting this long in line
LOOPBACK = ("127.0.0.1", "localhost")
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


class BusyError(RuntimeError):
    """The queue is full; the request was not accepted."""


class Cancelled(Exception):
    """Raised between sampling steps once the page pressed Stop."""


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
        self.models = {name: load_pretrained(name) for name in PAGE_MODELS}
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
        """What the page builds its form from, and which test digits it can offer."""
        form = form_info(self.num_timesteps)
        return form | {"test_digits": len(self.test_images), "test_note": self.test_note}

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
        """Sample, streaming x_t and x̂0 after every step of the first draw; keep the images
        for downloads."""
        started = time.perf_counter()
        model = self.models[request.model]
        conditional = model.kind.conditional
        n = len(request.digits) if conditional else request.count
        nrow = n if n <= 5 else (n + 1) // 2  # two rows past five, so ten digits stay large

        def on_step(info: StepInfo) -> None:
            if job.cancelled.is_set():
                raise Cancelled
            if info.draw:  # redraws of rejected digits: the live view shows the first draw
                return
            x_t, x0 = (data_url(png_bytes(x, nrow)) for x in (info.x_t, info.x0_pred))
            job.emit("frame", {"step": info.step + 1, "t": info.t, "x_t": x_t, "x0": x0})

        digits = torch.tensor(request.digits) if conditional else None
        count = None if conditional else request.count
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


class DemoServer(BoundedHTTPServer):
    """The bounded server, holding the demo and, on a loopback bind, the Hosts it answers."""

    def __init__(self, address: tuple[str, int], app: DemoApp, **limits: Any) -> None:
        """`limits`: `read_timeout` (seconds) and `max_connections`, as BoundedHTTPServer."""
        self.app = app
        super().__init__(address, DemoHandler, **limits)
        port = self.server_address[1]
        loopback = address[0] in LOOPBACK
        self.allowed_hosts = {f"{name}:{port}" for name in LOOPBACK} if loopback else None


class DemoHandler(TimedRequestHandler):
    """Routes: the page's files, /api/info, generate, a job's stream/downloads/cancel, denoise."""

    server: DemoServer
    server_version = "diffumnist-ui"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if not self._host_ok():
            return
        if url.path in STATIC:
            name, content_type = STATIC[url.path]
            body = (resources.files("diffumnist") / "ui_static" / name).read_bytes()
            self.send_body(HTTPStatus.OK, body, content_type)
        elif url.path == "/api/info":
            self.send_json(HTTPStatus.OK, self.server.app.info())
        elif (match := JOB_PATH.fullmatch(url.path)) and (job := self.server.app.job(match[1])):
            if match[2] == "events":
                self._events(job)
            elif match[2] == "cancel":
                self.send_json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "POST to cancel a job"})
            else:
                self._download(job, match[2], parse_qs(url.query).get("scale", ["1"])[-1])
        else:
            self.send_json(HTTPStatus.NOT_FOUND, {"error": f"nothing at {url.path} (jobs expire)"})

    def do_POST(self) -> None:
        path, app = urlsplit(self.path).path, self.server.app
        if not self._host_ok():
            return
        try:
            if path == "/api/generate":
                body = {"job": app.start_generation(self.read_json(MAX_BODY_BYTES)).id}
            elif path == "/api/denoise":
                body = app.denoise(self.read_json(MAX_BODY_BYTES))
            elif (match := JOB_PATH.fullmatch(path)) and match[2] == "cancel" and app.job(match[1]):
                app.job(match[1]).cancelled.set()
                body = {"cancelled": True}
            else:
                error = f"nothing to post to at {path}"
                return self.send_json(HTTPStatus.NOT_FOUND, {"error": error})
        except (ConfigError, BadRequest) as exc:
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except BusyError as exc:
            self.send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
        else:
            self.send_json(HTTPStatus.OK, body)

    def end_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def _host_ok(self) -> bool:
        """On a loopback bind, refuse Host headers naming other sites (DNS rebinding)."""
        allowed = self.server.allowed_hosts
        if allowed is None or self.headers.get("Host", "") in allowed:
            return True
        self.send_json(HTTPStatus.FORBIDDEN, {"error": "unexpected Host header"})
        return False

    def _download(self, job: Job, name: str, scale: str) -> None:
        """The grid PNG or the process GIF, enlarged `scale` times."""
        if scale not in DOWNLOAD_SCALES:
            error = f"scale must be one of {', '.join(DOWNLOAD_SCALES)}; got {scale!r}"
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": error})
        elif name not in job.downloads:
            self.send_json(HTTPStatus.NOT_FOUND, {"error": "this job has not finished"})
        else:
            kind = "image/png" if name.endswith(".png") else "image/gif"
            self.send_body(HTTPStatus.OK, job.downloads[name](int(scale)), kind)

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

    `limits`: `read_timeout` (seconds) and `max_connections`, as BoundedHTTPServer takes them.
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
