"""Sample quality over sampler × steps × spacing × η × γ × interval: the quality map.

Each setting generates n samples of a shipped model (class: digits i mod 10; time:
unconditional) from the same seed, scores them with the shipped judge (MNIST-FID with its
floor, precision, recall, guided accuracy), and appends one JSON line to --out, so an
interrupted map resumes where it stopped (settings already in the file are skipped).
It prints the table in Markdown at the end, from the file.

    python benchmarks/quality_map.py --model class --n 2000  # results/quality_map_class_cpu_n2000.*
    python benchmarks/quality_map.py --model time --n 2000
    python benchmarks/quality_map.py --model time_e34 --n 2000  # any shipped model by name
    python benchmarks/quality_map.py --model class --n 2000 --table
    python benchmarks/quality_map.py --model class --n 2000 --settings headline --seed 1
    python benchmarks/quality_map.py --model class --n 2000 --spread  # seeds 0, 1, 2
    python benchmarks/quality_map.py --model time --n 10000 --settings presets --seed 1
    python benchmarks/quality_map.py --weights runs/class_v2/last.safetensors --raw \
        --label class_v2_raw --settings headline --n 2000  # results/quality_map_class_v2_raw_*

Sampling runs in bf16 autocast (the default where the hardware has it; the recipe's
bf16-vs-fp32 difference is measured in benchmarks/sampling.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import diffumnist
from diffumnist.evaluate import generate, score_samples
from diffumnist.pretrained import SAMPLING_MODELS
from diffumnist.sampling import PRESETS, SamplingConfig, StepInfo, network_evaluations

ODE_SDE = (0.0, 0.5, 1.0)  # η: deterministic, half, fully stochastic
DPMPP_20 = {"sampler": "dpmpp", "steps": 20}
INTERVAL = {"guidance_interval": (30, 180)}
MEAN = {"start": "mean"}
WEAK = {"guide": "weak"}  # autoguidance by the shipped weak twin (time_weak.safetensors)
CLIP = {"clip_x0": True}  # each step's x̂0 clamped to [0, 1]
SDE_MEAN = {**DPMPP_20, "eta": 1.0, "guidance_scale": 1.0, **MEAN}  # unguided, the closest
# Rejection sampling: digits the shipped filter reads below this probability are redrawn.
REDRAW = {"reject_below": 0.97}
# Steps evenly in log-SNR: crowded at low noise, the last x̂0 from t = 1 instead of T/steps.
LOGSNR = {"spacing": "logsnr"}
# The class model's legible guided setting: γ = 2.5 for 30 < t <= 240 from the mean digit
# (with x̂0 clipped, the class `fast` preset before rejection sampling).
LEGIBLE = {**DPMPP_20, "eta": 0.0, "guidance_scale": 2.5, "guidance_interval": (30, 240), **MEAN}
# The class model: ODE against SDE at each γ, and guidance limited to 30 < t <= 180.
CLASS_SETTINGS = [
    *({**DPMPP_20, "eta": 0.0, "guidance_scale": g} for g in (1.0, 3.0, 5.0)),
    {**DPMPP_20, "eta": 0.5, "guidance_scale": 3.0, **INTERVAL},
    {**DPMPP_20, "eta": 1.0, "guidance_scale": 3.0, **INTERVAL},
    *({**DPMPP_20, "eta": 1.0, "guidance_scale": g} for g in (1.0, 3.0)),
    *({**DPMPP_20, "eta": 0.5, "guidance_scale": g, **INTERVAL} for g in (4.0, 5.0)),
    {**DPMPP_20, "eta": 0.0, "guidance_scale": 5.0, **INTERVAL},
    # x_T from the digit's mean image (start="mean") against pure noise
    *({**DPMPP_20, "eta": eta, "guidance_scale": 1.0, **MEAN} for eta in (0.0, 1.0)),
    *({**DPMPP_20, "eta": 0.0, "guidance_scale": g, **INTERVAL, **MEAN} for g in (2.0, 2.5, 3.0)),
    *({**DPMPP_20, "eta": eta, "guidance_scale": 2.5, **INTERVAL, **MEAN} for eta in (0.5, 1.0)),
    *({**DPMPP_20, "eta": 1.0, "guidance_scale": g, **INTERVAL, **MEAN} for g in (2.0, 3.0, 4.0)),
    LEGIBLE,
    {**DPMPP_20, "eta": 0.0, "guidance_scale": 2.0, **MEAN},
    *(
        {**DPMPP_20, "eta": 0.0, "guidance_scale": 2.0, "guidance_interval": i, **MEAN}
        for i in ((30, 240), (30, 300))
    ),
    *({**DPMPP_20, "eta": 0.0, "guidance_scale": g, **INTERVAL, **MEAN} for g in (3.5, 4.0, 5.0)),
    {**LEGIBLE, "steps": 50},
    # x̂0 clipped to [0, 1]: against the same settings unclipped above
    {**LEGIBLE, **CLIP},
    {**DPMPP_20, "eta": 0.0, "guidance_scale": 5.0, **CLIP},
    {**DPMPP_20, "eta": 1.0, "guidance_scale": 1.0, **MEAN, **CLIP},
    *({**LEGIBLE, "guidance_scale": g, **CLIP} for g in (2.0, 2.25)),
    *(
        {**DPMPP_20, "eta": 0.0, "guidance_scale": g, **INTERVAL, **MEAN, **CLIP}
        for g in (2.5, 3.0)
    ),
    {**LEGIBLE, "steps": 50, **CLIP},
    # rejection sampling instead of guidance: legible digits without their variety lost
    *({**SDE_MEAN, "reject_below": p} for p in (0.9, 0.97, 0.99)),
    {**SDE_MEAN, "steps": 40, **REDRAW},
    {**SDE_MEAN, "guidance_scale": 1.5, "guidance_interval": (30, 240), **REDRAW},
    {**LEGIBLE, **CLIP, **REDRAW},
    {**SDE_MEAN, **LOGSNR, **REDRAW},
]
# The time model's SDE guided by its weak twin (the former `fast` preset).
TWIN_SDE = {**DPMPP_20, "eta": 1.0, "guidance_scale": 1.5, **MEAN, **WEAK}
TIME_SETTINGS = [
    *({**DPMPP_20, "eta": eta} for eta in ODE_SDE),
    {"sampler": "ddim", "steps": 20, "eta": 1.0},
    *({**DPMPP_20, "eta": eta, **MEAN} for eta in (0.0, 1.0, 0.5)),
    # autoguidance: γ extrapolates away from the weak twin, the time model's only guidance
    *({**DPMPP_20, "eta": 0.0, "guidance_scale": g, **MEAN, **WEAK} for g in (2.0, 1.5, 3.0)),
    {**DPMPP_20, "eta": 0.5, "guidance_scale": 2.0, **MEAN, **WEAK},
    # noise injection and more steps, each with the twin at its best γ
    *({**DPMPP_20, "eta": eta, "guidance_scale": 1.5, **MEAN, **WEAK} for eta in (0.5, 1.0)),
    {"sampler": "dpmpp", "steps": 40, "eta": 0.0, "guidance_scale": 1.5, **MEAN, **WEAK},
    *({**DPMPP_20, "eta": 1.0, "guidance_scale": g, **MEAN, **WEAK} for g in (1.25, 1.75)),
    # x̂0 clipped to [0, 1], unguided and with the twin
    {**DPMPP_20, "eta": 1.0, **MEAN, **CLIP},
    {**DPMPP_20, "eta": 1.0, "guidance_scale": 1.5, **MEAN, **WEAK, **CLIP},
    # rejection sampling: digits the filter reads as no digit in particular are redrawn
    *(
        {**DPMPP_20, "eta": 1.0, "guidance_scale": 1.5, **MEAN, **WEAK, "reject_below": p}
        for p in (0.9, 0.97, 0.99)
    ),
    {**DPMPP_20, "eta": 1.0, **MEAN, **REDRAW},
    # log-SNR spacing, then the twin only at high noise (t > 60 or t > 100)
    {**TWIN_SDE, **LOGSNR},
    {**TWIN_SDE, **LOGSNR, **REDRAW},
    {**TWIN_SDE, **LOGSNR, "guidance_interval": (100, 300)},
    *(
        {**TWIN_SDE, **LOGSNR, "guidance_scale": g, "guidance_interval": i, **REDRAW}
        for g, i in ((1.5, (100, 300)), (1.75, (100, 300)), (2.0, (100, 300)), (1.75, (60, 300)))
    ),
    {**TWIN_SDE, "guidance_scale": 1.75, "guidance_interval": (100, 300), **REDRAW},
]
# A few settings that tell weights apart (raw against EMA, one run against another).
HEADLINE = {
    "class": [
        LEGIBLE,
        {**DPMPP_20, "eta": 1.0, "guidance_scale": 1.0, **MEAN},
        {**DPMPP_20, "eta": 0.0, "guidance_scale": 5.0, **INTERVAL},
        {**LEGIBLE, **CLIP},
        {**SDE_MEAN, **REDRAW},
    ],
    "time": [
        {**DPMPP_20, "eta": 1.0, **MEAN},
        {**DPMPP_20, "eta": 0.0, **MEAN},
        {**DPMPP_20, "eta": 0.0, "guidance_scale": 1.5, **MEAN, **WEAK},
        {**DPMPP_20, "eta": 1.0, "guidance_scale": 1.5, **MEAN, **WEAK},
        {**DPMPP_20, "eta": 1.0, "guidance_scale": 1.5, **MEAN, **WEAK, **REDRAW},
    ],
}


def preset_settings(kind: str) -> list[dict]:
    """The presets `kind` offers beyond the recipe (`fast`, and `best` where it has one) as
    settings (what differs from the defaults)."""
    default = SamplingConfig().to_dict()
    settings = []
    for name, config in PRESETS[kind].items():
        if name == "recipe":
            continue
        values = config.to_dict()
        setting = {k: v for k, v in values.items() if v != default[k] and k != "precision"}
        if setting not in settings:
            settings.append(setting)
    return settings


RESULTS = Path(__file__).parent / "results"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def key(setting: dict) -> str:
    return json.dumps(setting, sort_keys=True)


def measure(model, setting: dict, n: int, seed: int) -> dict:
    """One row; with reject_below, NFE per image counts every draw, redraws included."""
    config = SamplingConfig(seed=seed, precision="bf16", **setting)
    drawn = 0

    def count_draws(info: StepInfo) -> None:
        nonlocal drawn
        drawn += info.x_t.shape[0] if info.step == 0 else 0

    started = time.perf_counter()
    images, labels = generate(model, n, config, progress=False, callback=count_draws)
    seconds = time.perf_counter() - started
    scores = score_samples(images, labels)
    nfe = network_evaluations(config, model.diffusion, model.kind.conditional)
    row = {
        "setting": setting, "n": n, "seed": seed, "seconds": round(seconds, 1),
        "nfe_per_image": round(nfe * drawn / n, 1) if drawn != n else nfe,
        "draws_per_image": drawn / n,
        "mnist_fid": scores["mnist_fid"], "mnist_fid_floor": scores["mnist_fid_floor"],
        "precision": scores["precision"], "recall": scores["recall"],
        "device": str(model.device) if model.device.type == "cuda" else cpu_name(),
        "precision_mode": config.precision,
    }  # fmt: skip
    if "guided_accuracy" in scores:
        row["guided_accuracy"] = scores["guided_accuracy"]["overall"]
    return row


def table(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    lines = [
        "| sampler | steps | spacing | η | γ | interval | guide | start | x̂0 | redraw below "
        "| NFE | MNIST-FID (floor) | precision | recall | guided acc. |",
        "| --- | ---: | --- | ---: | ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: "
        "| ---: | ---: |",
    ]
    for row in rows:
        s = row["setting"]
        interval = (
            "{} < t ≤ {}".format(*s["guidance_interval"]) if "guidance_interval" in s else "all"
        )
        accuracy = f"{row['guided_accuracy']:.3f}" if "guided_accuracy" in row else "—"
        lines.append(
            f"| {s['sampler']} | {s.get('steps', 300)} | {s.get('spacing', 'trailing')} "
            f"| {s.get('eta', 0):g} "
            f"| {s.get('guidance_scale', '—')} | {interval} "
            f"| {s.get('guide', 'CFG' if 'guided_accuracy' in row else '—')} "
            f"| {s.get('start', 'noise')} | {'clipped' if s.get('clip_x0') else '—'} "
            f"| {s.get('reject_below', '—')} "
            f"| {row['nfe_per_image']} "
            f"| {row['mnist_fid']:.2f} ({row['mnist_fid_floor']:.2f}) | {row['precision']:.3f} "
            f"| {row['recall']:.3f} | {accuracy} |"
        )
    return "\n".join(lines)


def spread(paths: list[Path], settings: list[dict]) -> str:
    """MNIST-FID and guided accuracy of each setting over the sample seeds measured."""
    rows = [json.loads(line) for path in paths if path.exists() for line in path.open()]
    lines = [
        "| setting | seeds | MNIST-FID per seed | mean ± sd | guided acc. per seed |",
        "| --- | --- | --- | ---: | --- |",
    ]
    for setting in settings:
        found = sorted(
            (r for r in rows if key(r["setting"]) == key(setting)), key=lambda r: r["seed"]
        )
        if not found:
            continue
        fids = [r["mnist_fid"] for r in found]
        accuracy = " / ".join(
            f"{r['guided_accuracy']:.4f}" for r in found if "guided_accuracy" in r
        )
        lines.append(
            f"| {', '.join(f'{name} {value}' for name, value in setting.items())} "
            f"| {', '.join(str(r['seed']) for r in found)} "
            f"| {' / '.join(f'{f:.2f}' for f in fids)} "
            f"| {statistics.mean(fids):.2f} ± {statistics.stdev(fids) if len(fids) > 1 else 0:.2f} "
            f"| {accuracy or '—'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", choices=tuple(SAMPLING_MODELS), default="class", help="a shipped model"
    )
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", action="store_true", help="only print the table so far")
    parser.add_argument(
        "--spread", action="store_true",
        help="only print the headline settings over seeds 0, 1, 2 (from their files)",
    )  # fmt: skip
    parser.add_argument("--weights", help="a checkpoint to map instead of the shipped --model")
    parser.add_argument("--raw", action="store_true", help="its raw weights, not its EMA copy")
    parser.add_argument(
        "--label", help="names the results file (default: the --model, or the kind with --weights)"
    )
    parser.add_argument(
        "--settings", choices=("map", "headline", "presets"), default="map",
        help="map: every setting of the model's map; headline: a few that tell weights apart; "
        "presets: the kind's fast and best presets",
    )  # fmt: skip
    args = parser.parse_args()
    if args.weights:
        model = diffumnist.load(args.weights, use_ema=not args.raw)
    else:
        model = diffumnist.load_pretrained(args.model)
    kind = model.config.kind
    label = args.label or (kind if args.weights else args.model)
    if torch.cuda.is_available():
        model = model.cuda()
    where = "gpu" if model.device.type == "cuda" else "cpu"
    seed = f"_seed{args.seed}" if args.seed else ""  # other sample seeds: the spread
    args.out = RESULTS / f"quality_map_{label}_{where}_n{args.n}{seed}.jsonl"
    if args.table:
        print(table(args.out))
        return
    if args.spread:
        base = RESULTS / f"quality_map_{label}_{where}_n{args.n}"
        paths = [base.with_suffix(".jsonl")] + [
            base.parent / f"{base.name}_seed{seed}.jsonl" for seed in (1, 2)
        ]
        settings = preset_settings(kind) + HEADLINE[kind]
        unique = list({key(setting): setting for setting in settings}.values())
        print(spread(paths, unique))
        return
    done = set()
    if args.out.exists():
        done = {key(json.loads(line)["setting"]) for line in args.out.read_text().splitlines()}
    settings = {"class": CLASS_SETTINGS, "time": TIME_SETTINGS}[kind]
    if args.settings == "headline":
        settings = HEADLINE[kind]
    if args.settings == "presets":
        settings = preset_settings(kind)
    for setting in settings:
        if key(setting) in done:
            continue
        row = measure(model, setting, args.n, args.seed)
        with args.out.open("a") as log:
            log.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    print(table(args.out))


if __name__ == "__main__":
    main()
