"""The web demo: watch a digit being born, in any browser, on the shipped models, offline.

`diffumnist ui` calls `serve()`; the page (`ui_static/`) talks only to this server, which
holds HTTP routes and the job queue. Requests are checked in `webrequests`; connection
limits, read timeouts and whole bodies come from `webserver`. Sampling settings, their
labels, defaults, ranges and help come from `SamplingConfig` through `/api/info`, and the
page builds its Advanced settings from that description; jobs, the worker and the frames
they stream live in `webjobs`, pictures come from `viz`. The standard library's server, not
Gradio or FastAPI: the page must work offline with no new dependency. Frames stream as
server-sent events. Model calls run in turn on one worker thread behind a bounded queue
(full: 503 at once). On 127.0.0.1
(default) the Host header is checked (DNS rebinding); posts must be JSON; a CSP keeps the
page here.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections import OrderedDict
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import torch

from diffumnist.config import ConfigError, default_data_dir
from diffumnist.data import load_split, to_uint8
from diffumnist.pretrained import load_pretrained
from diffumnist.viz import gif_bytes, png_bytes
from diffumnist.webjobs import (
    MAX_QUEUED,
    BusyError,
    Job,
    Recorder,
    Worker,
    data_url,
    explain,
    grid_columns,
    grid_url,
)
from diffumnist.webrequests import (
    PAGE_MODELS,
    GenerateRequest,
    form_info,
    parse_denoise,
    parse_generate,
)
from diffumnist.webserver import BadRequest, BoundedHTTPServer, TimedRequestHandler

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16_384  # a drawn digit (784 numbers) fits several times over
KEEP_JOBS = 8  # recent generations whose frames and downloads stay available
DENOISE_WAIT_S = 300.0  # a denoise request gives up after waiting this long in line
PAGE_ZOOM = 10  # the page shows a result this many times enlarged (less when it is wide)
DOWNLOAD_SCALES = ("1", "2", "4", "8", str(PAGE_ZOOM))  # up to what the page shows
# Labels of the fields the page adds to the sampling settings, for error messages.
PAGE_LABELS = {"model": "Model", "digits": "Digits", "count": "How many images"}
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


# ---------------------------------------------------------------- the demo, without HTTP


class DemoApp:
    """The models, the worker and recent jobs behind the page.

    `data_dir`: where MNIST's test digits are read for the denoiser tab (default
    $DIFFUMNIST_DATA, else the cache folder); never downloaded, so offline the tab offers
    drawing only.
    """

    def __init__(self, max_queued: int = MAX_QUEUED, data_dir: Path | str | None = None) -> None:
        self.models = {name: load_pretrained(name) for name in PAGE_MODELS}
        self.denoiser = load_pretrained("denoiser")
        self.num_timesteps = min(m.config.num_timesteps for m in self.models.values())
        self.worker = Worker(max_queued)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        try:
            self.test_images, self.test_labels = load_split("test", data_dir, download=False)
            self.test_note = ""
        except ConfigError as exc:
            log.warning("denoiser tab offers drawing only: %s", exc)
            self.test_images, self.test_labels = torch.empty(0, 28, 28), torch.empty(0)
            folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
            self.test_note = (
                f"MNIST test digits were not found in {folder}, so this tab offers drawing only. "
                "To pick test digits, start the page with --data-dir pointing at a folder "
                "that holds MNIST; or draw a digit below."
            )
        form = form_info(self.num_timesteps)
        self.labels = PAGE_LABELS | {s["name"]: s["label"] for s in form.get("settings", [])}

    def info(self) -> dict[str, Any]:
        """What the page builds its form from, and which test digits it can offer."""
        form = form_info(self.num_timesteps)
        extra = {"test_digits": len(self.test_images), "test_note": self.test_note}
        return form | extra | {"download_scales": DOWNLOAD_SCALES, "page_zoom": PAGE_ZOOM}

    def start_generation(self, payload: object) -> Job:
        """Validate and queue a generation; its frames stream from `job.follow()`."""
        request, job = parse_generate(payload, self.num_timesteps), Job(self.labels)
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
        """Sample, streaming x_t and x̂0 after every step (redraws pasted where they go);
        return the result and its timeline, and keep the images for downloads."""
        started = time.perf_counter()
        model = self.models[request.model]
        conditional = model.kind.conditional
        n = len(request.digits) if conditional else request.count
        recorder, nrow = Recorder(job, n), grid_columns(n)
        digits = torch.tensor(request.digits) if conditional else None
        count = None if conditional else request.count
        samples, animation = model.generate(
            digits, request.sampling, n=count, callback=recorder.on_step
        )
        job.downloads = {
            "grid.png": lambda scale: png_bytes(samples, nrow, scale),
            "process.gif": lambda scale: gif_bytes(animation, nrow, scale),
        }
        settings = {"model": request.model, "digits": request.digits, "count": request.count}
        return {
            "seconds": time.perf_counter() - started,
            "final": grid_url(to_uint8(samples), nrow),
            "timeline": recorder.timeline(animation),
            "redrawn": recorder.redrawn(animation),
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
        except ConfigError as exc:
            self.send_json(HTTPStatus.BAD_REQUEST, explain(exc, app.labels))
        except BadRequest as exc:
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
    host: str = "127.0.0.1",
    port: int = 7860,
    app: DemoApp | None = None,
    data_dir: Path | str | None = None,
    **limits: Any,
) -> DemoServer:
    """A ready server (port 0 picks a free one); raises ConfigError if it cannot listen.

    `data_dir`: MNIST for the denoiser tab's test digits (DemoApp's). `limits`:
    `read_timeout` (seconds) and `max_connections`, as BoundedHTTPServer takes them.
    """
    try:
        return DemoServer((host, port), app or DemoApp(data_dir=data_dir), **limits)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def serve(
    host: str = "127.0.0.1", port: int = 7860, data_dir: Path | str | None = None, **limits: Any
) -> None:
    """Serve the demo until Ctrl+C; blocks. `diffumnist ui [--host] [--port] [--data-dir]`
    calls this."""
    server = make_server(host, port, data_dir=data_dir, **limits)
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
