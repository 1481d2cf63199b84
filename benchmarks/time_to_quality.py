"""Time to quality: how good a model is after m minutes of `diffumnist train` on this machine.

`run` trains one configuration exactly as `diffumnist train KIND [--preset P] [--x y]` would
(previews and checkpoints included: they are part of the wall clock a user waits), keeps a
copy of the weights it would sample with (EMA if the run has one, else raw) at each of
--marks minutes, stops at the last mark or the run's end, and only then scores every copy
with the kind's `fast` sampling preset (MNIST-FID, precision/recall, guided accuracy; n
samples per mark, --final-n at the last). Scoring does not count towards the minutes.
A run that keeps its own weak twin (`twin_epoch`, the fast training preset) is scored at its
end a second time, guided by that twin as `sampling.OWN_TWIN_GUIDANCE` says (`weights`
"ema+twin").
Each scored copy is one JSONL line, with the CPU, the training rate and its share of the
bf16 matmul peak measured in the same process (benchmarks/roofline.py). With --run-dir the
run and its copies stay on disk, and the same command resumes an interrupted run.

    python benchmarks/time_to_quality.py run --kind class --preset fast --rate 169 \\
        --marks 10,15,100 --out benchmarks/results/time_to_quality_class_fast_cpu.jsonl
    python benchmarks/time_to_quality.py plot A.jsonl B.jsonl --out curve.png
    python benchmarks/time_to_quality.py guide RUN_DIR/mark_0003169.safetensors --out g.safetensors

`guide` turns one kept copy into a checkpoint that `--guide` reads: the same run stopped
earlier, to try as its weak twin at another length than the one the trainer keeps.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from roofline import cpu_name, measure_peaks, unet_flops
from safetensors import safe_open
from safetensors.torch import save

from diffumnist.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from diffumnist.config import TrainConfig, default_data_dir
from diffumnist.evaluate import generate, score_samples
from diffumnist.files import write_atomic
from diffumnist.kinds import build_net
from diffumnist.models import model_for
from diffumnist.rundir import read_run_config
from diffumnist.sampling import OWN_TWIN_GUIDANCE, PRESETS
from diffumnist.train import Trainer, TrainState, ema_decay_at

# The targets: the shipped models' `fast` preset at n = 2,000, MNIST-FID (mean, sd) over
# sampling seeds 0-2. Class: docs/quality.md; time: 6.08 (benchmarks/results/
# quality_map_time_cpu_n2000.jsonl), 6.30 and 7.77 (eval_time_fast_seed{1,2}_cpu_n2000.json).
SHIPPED_FAST_N2000 = {"class": (2.70, 0.20), "time": (6.72, 0.92)}


class BudgetSpent(Exception):
    """Raised from the step hook at the last mark: training stops there."""


@dataclass
class Snapshot:
    minutes: float
    step: int
    epoch: int
    weights: dict[str, dict[str, torch.Tensor]]  # "ema" / "raw" / "ema_no_warmup" -> state
    final: bool = False  # taken at the run's end, before the last mark


@dataclass
class Recorder:
    """The step hook: copies the weights at each mark and stops the run at the last one.

    With `rate` (images/s) the clock is the images trained so far at that rate, not the wall
    clock: on a machine shared with other jobs the wall clock measures the neighbours.
    With `folder`, every copy is also written there, and the copies a previous, interrupted
    process wrote are read back first: its marks are not taken again.
    """

    marks: list[float]
    batch_size: int
    rate: float | None = None
    # Other EMAs of the same run, to compare with the one it samples with: name -> its decay
    # after s completed steps (see `other_emas`).
    others: dict[str, Callable[[int], float]] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    snapshots: list[Snapshot] = field(default_factory=list)
    twin: dict[str, torch.Tensor] | None = None  # the weak twin the run kept, if any
    shadows: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    folder: Path | None = None
    first_step: int | None = None  # where this process started (a resumed run: past 0)

    def __post_init__(self) -> None:
        if self.folder is None:
            return
        for path in sorted(self.folder.glob("mark_*.safetensors")):
            snap = _read_snapshot(path)
            self.snapshots.append(snap)
            self.marks = [] if snap.final else [m for m in self.marks if m > snap.minutes + 1e-9]

    def __call__(self, state: TrainState) -> None:
        if self.first_step is None:
            self.first_step = state.step
        self._update_shadows(state)
        minutes = self.minutes(state.step)
        if self.marks and minutes >= self.marks[0] - 1e-9:
            self.marks.pop(0)
            self.take(state, minutes)
            if not self.marks:
                raise BudgetSpent

    def minutes(self, step: int) -> float:
        if self.rate is None:
            return (time.perf_counter() - self.started) / 60
        return step * self.batch_size / self.rate / 60

    def take(self, state: TrainState, minutes: float, final: bool = False) -> None:
        weights = {"raw": _copy(state.net.state_dict())}
        if state.ema is not None:
            weights["ema"] = _copy(state.ema.state_dict())
        weights |= {name: _copy(shadow) for name, shadow in self.shadows.items()}
        snap = Snapshot(minutes, state.step, state.epoch, weights, final)
        self.snapshots.append(snap)
        if self.folder is not None:
            _write_snapshot(self.folder / f"mark_{state.step:07d}.safetensors", snap)

    @torch.no_grad()
    def _update_shadows(self, state: TrainState) -> None:
        """Each other EMA ← d·ema + (1 − d)·net, one step late (the hook runs before each
        step), with d its decay after the steps completed so far."""
        if not self.others:
            return
        current = state.net.state_dict()
        for name, decay_after in self.others.items():
            if name not in self.shadows:
                self.shadows[name] = _copy(current)
                continue
            decay = decay_after(state.step)
            for key, value in current.items():
                if value.is_floating_point():
                    self.shadows[name][key].lerp_(value, 1 - decay)
                else:
                    self.shadows[name][key].copy_(value)


def other_emas(args: argparse.Namespace, beta: float) -> dict[str, Callable[[int], float]]:
    """The EMAs to score beside the run's own, by name: `ema_B`, the trainer's warm-up
    min(B, (1+s)/(10+s)) for decay B (it only differs from the run's own EMA once B is below
    the warm-up's value at the run's end, e.g. 0.9968 after 2,814 steps); `power_ema_G`,
    Karras et al. (2024)'s power EMA, decay (1 − 1/(s+1))^(G+1), whose averaging window is a
    fixed share of the run (relative width σ_rel = 0.16 at G = 3, 0.09 at 8, 0.05 at 17; the
    trainer's warm-up behaves like G ≈ 8 until it reaches B); and with --compare-ema,
    `ema_no_warmup`, the run's β from the initial weights on."""
    others: dict[str, Callable[[int], float]] = {
        f"ema_{b:g}": functools.partial(ema_decay_at, b) for b in args.other_ema
    }
    for g in args.power_ema:
        others[f"power_ema_{g:g}"] = functools.partial(_power_decay, g)
    if args.compare_ema:
        others["ema_no_warmup"] = lambda step: beta
    return others


def _write_snapshot(path: Path, snap: Snapshot) -> None:
    tensors = {
        f"{which}/{key}": value.contiguous()
        for which, state in snap.weights.items()
        for key, value in state.items()
    }
    meta = {"minutes": repr(snap.minutes), "step": str(snap.step), "epoch": str(snap.epoch),
            "final": str(snap.final)}  # fmt: skip
    write_atomic(path, save(tensors, metadata=meta))


def _read_snapshot(path: Path) -> Snapshot:
    weights: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(path, "pt") as file:
        header = file.metadata()
        for name in file.keys():  # noqa: SIM118 (a safe_open file is not a dict)
            which, key = name.split("/", 1)
            weights.setdefault(which, {})[key] = file.get_tensor(name)
    return Snapshot(float(header["minutes"]), int(header["step"]), int(header["epoch"]), weights,
                    header["final"] == "True")  # fmt: skip


def _power_decay(gamma: float, step: int) -> float:
    return (1 - 1 / (step + 1)) ** (gamma + 1)


def _copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in state.items()}


def train(config: TrainConfig, marks: list[float], data_dir: Path, args: argparse.Namespace):
    """Train until the last mark (or the run's end); the recorder and the seconds spent.

    The run trains in --run-dir when given (resuming what an interrupted process left
    there, as `diffumnist train` does), else in a temporary folder.
    """
    with _run_folder(args.run_dir) as run_dir:
        trainer = Trainer(config, Path(run_dir) / "run", data_dir)
        others = other_emas(args, trainer.config.ema_decay or 0.999)
        folder = Path(run_dir) if args.run_dir else None
        recorder = Recorder(list(marks), trainer.config.batch_size, args.rate, others,
                            folder=folder)  # fmt: skip
        seconds = 0.0
        if recorder.marks:  # else an earlier process took every mark
            seconds = _train_to_last_mark(trainer, recorder, run_dir, args)
        if trainer.folder.twin_path.exists():
            recorder.twin = load_checkpoint(trainer.folder.twin_path).weights
    return trainer.config, recorder, seconds


def _train_to_last_mark(trainer: Trainer, recorder: Recorder, run_dir: str,
                        args: argparse.Namespace) -> float:  # fmt: skip
    """Train with the recorder as the step hook; the seconds spent."""
    trainer.before_step = recorder
    recorder.started = time.perf_counter()
    with contextlib.suppress(BudgetSpent):
        trainer.run()
    seconds = time.perf_counter() - recorder.started
    if not recorder.marks:
        if args.keep:
            print(f"--keep: the run stopped at its last mark, before its end; "
                  f"{args.keep} not written")  # fmt: skip
        return seconds
    state = _final_state(trainer, run_dir)  # the run ended before the last mark
    recorder.take(state, recorder.minutes(state.step), final=True)
    if args.keep:  # the finished run's checkpoint, for `diffumnist eval` on more seeds
        shutil.copyfile(Path(run_dir) / "run" / "last.safetensors", args.keep)
    return seconds


@contextlib.contextmanager
def _run_folder(run_dir: str | None) -> Iterator[str]:
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        yield run_dir
        return
    with tempfile.TemporaryDirectory() as temporary:
        yield temporary


def _final_state(trainer: Trainer, run_dir: str) -> TrainState:
    """The finished run's last checkpoint as a state (the run ended before the last mark)."""
    ckpt = load_checkpoint(Path(run_dir) / "run" / "last.safetensors")
    state = TrainState.new(trainer.config, trainer.device, trainer.world, 1, 1)
    state.restore(ckpt)
    return state


def score(config: TrainConfig, weights: dict[str, torch.Tensor], n: int, seed: int,
          data_dir: Path, twin: dict[str, torch.Tensor] | None = None,
          ) -> dict[str, object]:  # fmt: skip
    """The `fast` sampling preset's scores of these weights on n samples; with `twin`,
    guided by those weights as OWN_TWIN_GUIDANCE says."""
    net = build_net(config.model_config())
    net.load_state_dict(weights)
    model = model_for(config.model_config(), net.eval())
    sampling = PRESETS[config.kind]["fast"].replace(seed=seed)
    with tempfile.TemporaryDirectory() as folder:
        if twin is not None:  # a guide is read from a file, as `--guide` reads it
            guide = Path(folder) / "twin.safetensors"
            save_checkpoint(guide, Checkpoint(config.model_config(), twin))
            sampling = sampling.replace(guide=str(guide), **OWN_TWIN_GUIDANCE[config.kind])
        images, labels = generate(model, n, sampling, progress=False)
    scores = score_samples(images, labels, data_dir, seed=seed)
    row = {key: scores[key] for key in ("n", "mnist_fid", "mnist_fid_floor", "precision",
                                        "recall", "precision_floor", "recall_floor")}  # fmt: skip
    if "guided_accuracy" in scores:
        row["guided_accuracy"] = scores["guided_accuracy"]["overall"]
    return row


def score_snapshots(config: TrainConfig, snapshots: list[Snapshot], args: argparse.Namespace,
                    data_dir: Path, twin_weights: dict[str, torch.Tensor] | None = None,
                    ) -> Iterator[dict[str, object]]:  # fmt: skip
    """One row per scored copy: the sampled weights at every mark, all kept at the last (and
    the sampled ones guided by the run's own twin, where it kept one)."""
    for index, snap in enumerate(snapshots):
        final = index == len(snapshots) - 1
        main = "ema" if "ema" in snap.weights else "raw"
        guided = {f"{main}+twin": twin_weights} if final and twin_weights is not None else {}
        for which in list(snap.weights) + list(guided) if final else [main]:
            n = args.final_n if final and which in (main, *guided) else args.n
            started = time.perf_counter()
            weights = snap.weights[main] if which in guided else snap.weights[which]
            row = score(config, weights, n, args.eval_seed, data_dir, guided.get(which))
            seconds = round(time.perf_counter() - started, 1)
            row |= {"minutes": round(snap.minutes, 2), "step": snap.step, "epoch": snap.epoch,
                    "weights": which, "eval_seconds": seconds}  # fmt: skip
            print(f"{snap.minutes:6.2f} min step {snap.step:5d} {which:13s} n={n}: "
                  f"MNIST-FID {row['mnist_fid']:.2f} precision {row['precision']:.3f} "
                  f"recall {row['recall']:.3f} accuracy {row.get('guided_accuracy', 0):.4f}",
                  flush=True)  # fmt: skip
            yield row


def cmd_run(args: argparse.Namespace) -> None:
    if args.run_dir and not args.rate:
        raise SystemExit("--run-dir needs --rate: a resumed run's wall clock is not one run's")
    if args.run_dir and (args.other_ema or args.power_ema or args.compare_ema):
        raise SystemExit("--run-dir keeps only the run's own weights, not --other-ema, "
                         "--power-ema or --compare-ema")  # fmt: skip
    data_dir = Path(args.data_dir or default_data_dir())
    overrides = dict(json.loads(args.set)) if args.set else {}
    config = TrainConfig(kind=args.kind, preset=args.preset, seed=args.seed, **overrides)
    marks = sorted(float(m) for m in args.marks.split(","))
    peaks = measure_peaks()  # with torch's threads, as --rate is measured (train_throughput.py)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    config, recorder, seconds = train(config, marks, data_dir, args)
    last = recorder.snapshots[-1]
    trained = last.step - (last.step if recorder.first_step is None else recorder.first_step)
    wall_rate = trained * config.batch_size / seconds if trained else 0.0
    rate = args.rate or wall_rate
    gflops = rate * unet_flops(config.kind, config.hidden_dim).train
    common = {
        "kind": config.kind, "preset": config.preset, "overrides": overrides,
        "config": config.to_dict(), "cpu": cpu_name(), "torch": torch.__version__,
        "resumed_at_step": recorder.first_step or None, "train_seconds": round(seconds, 1),
        "wall_images_per_s": round(wall_rate, 1),
        "clock": "images at clock_images_per_s" if args.rate else "wall",
        "clock_images_per_s": round(rate, 1), "threads": torch.get_num_threads(),
        "train_gflops": round(gflops, 1), "bf16_peak_gflops": round(peaks.bf16, 1),
        "pct_bf16_peak": round(100 * gflops / peaks.bf16, 1),
        "load_average": os.getloadavg()[0],
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as file:
        for row in score_snapshots(config, recorder.snapshots, args, data_dir, recorder.twin):
            file.write(json.dumps(row | common) + "\n")
            file.flush()
    print(f"{cpu_name()}: {rate:.1f} images/s = {common['pct_bf16_peak']} % of the bf16 "
          f"matmul peak ({peaks.bf16:.0f} GFLOP/s); wall clock: {wall_rate:.1f}/s")  # fmt: skip


def cmd_plot(args: argparse.Namespace) -> None:
    """MNIST-FID against minutes, and beside it guided accuracy (class) or recall (time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_fid, ax_right) = plt.subplots(1, 2, figsize=(11, 5.4))
    for path in args.files:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
        main = "ema" if any(row["weights"] == "ema" for row in rows) else "raw"
        twin = [row for row in rows if row["weights"] == f"{main}+twin"]
        rows = [row for row in rows if row["weights"] == main]
        config = rows[0]["config"]  # the values the run used, whatever the preset holds now
        stop = f", stopped at step {config['max_steps']}" if config["max_steps"] else ""
        batch = config["batch_size"]
        label = (f"{config['kind']} --preset {config['preset']}: lr {config['lr']:g}, batch "
                 f"{batch}, {config['epochs']} epochs{stop} ({main} weights)")  # fmt: skip
        rate = args.batch_rates.get(batch)
        minutes = [row["minutes"] if rate is None else row["step"] * batch / rate / 60
                   for row in rows]  # fmt: skip
        (line,) = ax_fid.plot(minutes, [row["mnist_fid"] for row in rows], "o-", label=label)
        right = "guided_accuracy" if "guided_accuracy" in rows[0] else "recall"
        ax_right.plot(minutes, [row[right] for row in rows], "o-", label=label)
        for row in twin:  # the last point again, guided by the run's own twin
            for ax, key in ((ax_fid, "mnist_fid"), (ax_right, right)):
                ax.plot(minutes[-1], row[key], "*", markersize=14, color=line.get_color(),
                        label="the same, guided by its own twin")  # fmt: skip
    kind, cpu = rows[0]["kind"], rows[0]["cpu"].split(" (")[0]
    mean, spread = SHIPPED_FAST_N2000[kind]
    shipped = f"shipped {kind} model, n = 2,000, seeds 0-2"
    ax_fid.axhspan(mean - spread, mean + spread, color="grey", alpha=0.3, label=shipped)
    ax_fid.axvline({"class": 20, "time": 30}[kind], color="grey", linestyle=":")
    ax_fid.set(yscale="log", xlabel="minutes of training", ylabel="MNIST-FID (fast sampling)")
    if right == "guided_accuracy":
        ax_right.axhline(0.999, color="grey", linestyle="--", label="target 0.999")
    ax_right.set(xlabel="minutes of training", ylabel=f"{right.replace('_', ' ')} (fast sampling)")
    handles, labels = ax_fid.get_legend_handles_labels()
    for handle, text in zip(*ax_right.get_legend_handles_labels(), strict=True):
        if text not in labels:
            handles.append(handle)
            labels.append(text)
    for ax in (ax_fid, ax_right):
        ax.grid(alpha=0.3)
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8)
    fig.suptitle(f"Time to quality on {cpu} (n = 2,000 at the last point, fewer before)")
    fig.tight_layout(rect=(0, 0.05 + 0.035 * len(labels) / 2, 1, 1))
    fig.savefig(args.out, dpi=110)


def cmd_guide(args: argparse.Namespace) -> None:
    """Write a copy's EMA weights (raw where the run keeps no EMA) as a weights-only
    checkpoint, configured from the run folder beside it, as the trainer writes its twin."""
    copy = Path(args.copy)
    snap = _read_snapshot(copy)
    config = read_run_config(copy.parent / "run")
    weights = snap.weights.get("ema", snap.weights["raw"])
    meta = {"epoch": snap.epoch, "step": snap.step}
    save_checkpoint(args.out, Checkpoint(model_config=config.model_config(), weights=weights,
                                         meta=meta))  # fmt: skip
    print(f"wrote {args.out}: the {config.kind} run's weights at step {snap.step}")


def _batch_rates(text: str) -> dict[int, float]:
    pairs = (item.split("=") for item in text.split(","))
    return {int(batch): float(rate) for batch, rate in pairs}


def _decays(text: str) -> list[float]:
    return [float(value) for value in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train with a wall-clock budget, then score")
    run.add_argument("--kind", default="class", choices=("class", "time"))
    run.add_argument("--preset", default="recipe", choices=("recipe", "fast"))
    run.add_argument("--set", help="TrainConfig fields as JSON, e.g. '{\"lr\": 0.002}'")
    run.add_argument("--marks", default="2.5,5,10,15,20", help="minutes at which to copy")
    run.add_argument("--n", type=int, default=500, help="samples per mark")
    run.add_argument("--final-n", type=int, default=2000, help="samples at the last mark")
    run.add_argument("--seed", type=int, default=0, help="training seed")
    run.add_argument("--eval-seed", type=int, default=0, help="sampling seed")
    run.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    run.add_argument("--compare-ema", action="store_true",
                     help="also score an EMA without warm-up at the last mark")  # fmt: skip
    run.add_argument("--other-ema", type=_decays, default=[], metavar="B1,B2",
                     help="also score EMAs with warm-up of these decays at the end")  # fmt: skip
    run.add_argument("--power-ema", type=_decays, default=[], metavar="G1,G2",
                     help="also score power EMAs of these exponents at the end")  # fmt: skip
    run.add_argument("--rate", type=float,
                     help="images/s: count minutes as images trained at this rate")  # fmt: skip
    run.add_argument("--keep", help="copy the finished run's checkpoint to this file (a run "
                     "that ends before the last mark)")  # fmt: skip
    run.add_argument("--run-dir", help="train in this folder and keep each mark's copy there: "
                     "the same command resumes an interrupted run (default: a temporary "
                     "folder)")  # fmt: skip
    run.add_argument("--data-dir", help="MNIST folder (default $DIFFUMNIST_DATA)")
    run.add_argument("--out", required=True, help="JSONL to write")
    plot = commands.add_parser("plot", help="quality against minutes, one line per file")
    plot.add_argument("files", nargs="+")
    plot.add_argument("--batch-rates", type=_batch_rates, default={},
                      help="recount the minutes of runs at these batch sizes at these images/s, "
                      "e.g. 32=169,64=186 (the rate a batch size trains at, from "
                      "train_throughput.py --also-batch)")  # fmt: skip
    plot.add_argument("--out", required=True)
    guide = commands.add_parser("guide", help="a kept copy as a checkpoint to guide with")
    guide.add_argument("copy", help="a mark_*.safetensors file in a --run-dir folder")
    guide.add_argument("--out", required=True)
    args = parser.parse_args()
    {"run": cmd_run, "plot": cmd_plot, "guide": cmd_guide}[args.command](args)


if __name__ == "__main__":
    main()
