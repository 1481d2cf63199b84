"""The demo's work behind the page: the job queue, each job's events, and its frames.

Why apart from the server: a job, the one worker thread that runs model calls in turn, and
the sampling callback that turns steps into pictures are about what the page watches, not
about HTTP, and read and test without sockets. A job keeps its events so the page's stream,
opened after the POST returns, still sees every one; the recorder streams each step and
keeps every draw's x̂0, so the timeline afterwards follows the draw each digit kept (a
rejected digit is drawn again; the animation the model returns follows the kept draw).
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from diffumnist.config import ConfigError
from diffumnist.data import to_uint8
from diffumnist.sampling import StepInfo
from diffumnist.viz import png_bytes

log = logging.getLogger(__name__)

MAX_QUEUED = 4  # requests waiting behind the running one; more are refused
PAGE_FIELDS = ("digits", "count")  # what the page alone sends, besides the model


class BusyError(RuntimeError):
    """The queue is full; the request was not accepted."""


class Cancelled(Exception):
    """Raised between sampling steps once the page pressed Stop."""


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def grid_url(images: torch.Tensor, nrow: int) -> str:
    """uint8 images (N, H, W) as one PNG grid in a data URL: the pixels the page shows."""
    return data_url(png_bytes(images[:, None].float() / 255, nrow))


def grid_columns(count: int) -> int:
    """Images per row: two rows past five, so ten digits stay large."""
    return count if count <= 5 else (count + 1) // 2


def explain(exc: ConfigError, labels: dict[str, str]) -> dict[str, Any]:
    """A refusal for the page: the message in the words on screen, and the field at fault.

    `labels` maps request fields to their labels; a message that starts with a field's name
    (the setting at fault) starts with its label instead, e.g. "Guidance scale must be…".
    """
    message, setting = str(exc), exc.setting
    if setting is None:  # a message that names its field first, or one of the page's own
        named = [name for name in labels if message.startswith(f"{name} ")]
        named += [name for name in PAGE_FIELDS if re.search(rf"\b{name}\b", message)]
        setting = named[0] if named else None
    if setting in labels and message.startswith(setting):
        message = labels[setting] + message[len(setting) :]
    return {"error": message, "setting": setting}


# ---------------------------------------------------------------- jobs and the worker


class Job:
    """A generation's events (queued, started, frame…, then done, failed or cancelled), kept
    so the page's stream, opened once the POST returns, still sees every one in order."""

    def __init__(self, labels: dict[str, str] | None = None) -> None:
        """`labels`: the page's label of each request field, for the words of a failure."""
        self.id = secrets.token_hex(8)
        self.labels = labels or {}
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
            reply = explain(exc, self.labels)
            self.emit("failed", {"message": reply["error"], "setting": reply["setting"]}, True)
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


# ---------------------------------------------------------------- frames of a generation


class Recorder:
    """The sampling callback of one generation: streams each step to the page and keeps
    every draw's x̂0, so that the timeline afterwards follows the draw each digit kept.

    The live view pastes a redraw (`StepInfo.slots`, the batch positions it covers) into
    the grid of the first draw, so the page shows which digits are being drawn again.
    """

    def __init__(self, job: Job, count: int) -> None:
        self.job, self.nrow = job, grid_columns(count)
        self.live: dict[str, torch.Tensor] = {}  # uint8 (N, H, W) grids of x_t and x̂0
        self.ts: list[int] = []  # the timestep of each step
        self.first: list[tuple[torch.Tensor, str, str]] = []  # per step of the first draw:
        # x_t uint8 (N, H, W) and the URLs of the x_t and x̂0 grids the page was sent
        self.draws: list[tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]] = []
        # per draw: (slots, x̂0 uint8 (k, H, W) per step, x_t of its last step)

    def on_step(self, info: StepInfo) -> None:
        """The sampling callback: stop if asked, else record the step and send it."""
        if self.job.cancelled.is_set():
            raise Cancelled
        x_t, x0 = to_uint8(info.x_t), to_uint8(info.x0_pred)
        slots = getattr(info, "slots", None)
        if info.draw and slots is None:
            return  # a redraw that does not say where it belongs cannot be shown
        slots = torch.arange(len(x_t)) if slots is None else slots.cpu()
        if info.step == 0:
            self.draws.append((slots, [], x_t))
        self.draws[-1][1].append(x0)
        if info.step + 1 == info.num_steps:
            self.draws[-1] = (slots, self.draws[-1][1], x_t)
        if not info.draw:
            self.live = {"x_t": x_t.clone(), "x0": x0.clone()}  # redraws paste into these
        else:
            self.live["x_t"][slots], self.live["x0"][slots] = x_t, x0
        urls = {name: grid_url(grid, self.nrow) for name, grid in self.live.items()}
        if not info.draw:
            self.ts.append(int(info.t))
            self.first.append((x_t, urls["x_t"], urls["x0"]))
        frame = {"step": info.step + 1, "num_steps": info.num_steps, "t": int(info.t)}
        redrawn = slots.tolist() if info.draw else None
        self.job.emit("frame", frame | urls | {"draw": info.draw, "slots": redrawn})

    def kept_draws(self, animation: torch.Tensor) -> torch.Tensor:
        """The draw each digit kept: the one whose last step began where the animation's
        did (the animation follows the kept draw). (N,) indices into the draws."""
        last = animation[len(self.ts) - 1]  # (N, H, W): x_t of the last step
        kept = torch.zeros(len(last), dtype=torch.long)
        for index, (slots, _, x_t) in enumerate(self.draws[1:], start=1):
            same = (x_t == last[slots]).flatten(1).all(1)
            kept[slots[same]] = index
        return kept

    def timeline(self, animation: torch.Tensor) -> list[dict[str, Any]]:
        """One frame per step (x_t going in, x̂0 coming out), then the final image, each
        digit from the draw it kept. `animation` uint8 (F, N, H, W): x_T, x_t after each
        step, final image. The first draw's URLs are reused where nothing changed."""
        kept, frames = self.kept_draws(animation), []
        for step, t in enumerate(self.ts):
            x_t, x_t_url, x0_url = self.first[step]
            if not torch.equal(animation[step], x_t):
                x_t_url = grid_url(animation[step], self.nrow)
            if bool(kept.any()):
                x0_url = grid_url(self._kept_x0(step, kept), self.nrow)
            label = f"step {step + 1} of {len(self.ts)} (t = {t})"
            frames.append({"step": step + 1, "t": t, "label": label, "x_t": x_t_url, "x0": x0_url})
        final = grid_url(animation[-1], self.nrow)
        frames.append({"step": None, "t": 0, "label": "final image", "x_t": final, "x0": final})
        return frames

    def _kept_x0(self, step: int, kept: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W): x̂0 at `step`, each digit from the draw it kept."""
        x0 = self.draws[0][1][step].clone()
        for index, (slots, x0s, _) in enumerate(self.draws[1:], start=1):
            mine = kept[slots] == index
            x0[slots[mine]] = x0s[step][mine]
        return x0

    def redrawn(self, animation: torch.Tensor) -> list[int]:
        """Positions of the digits whose kept draw is a redraw."""
        return self.kept_draws(animation).nonzero().flatten().tolist() if self.ts else []
