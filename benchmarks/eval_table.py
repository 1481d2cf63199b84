"""The MODEL_CARD evaluation table: n = 10k samples per setting, results to $OUT/eval.json.

Ran once on an H100 (`benchmarks/results/eval_h100.json`):

    OUT=out PYTHONPATH=src DIFFUMNIST_DATA=... python benchmarks/eval_table.py 270

The first argument is a time budget in seconds after which further settings are skipped.
`gpu/carry/class_{raw,ema}.safetensors` and `time_raw.safetensors` are weights-only
exports (`diffumnist export RUN/last.safetensors --out FILE --fp16 [--raw]`) of the
training run's checkpoint, which is not kept in the repository; each row equals
`diffumnist eval CKPT --n 10000 --guidance-scale G --batch-size 2500 --device cuda`.
"""

import json
import os
import sys
import time

import torch

from diffumnist.evaluate import generate, score_samples
from diffumnist.models import load

OUT = os.environ["OUT"]
BUDGET_S = float(sys.argv[1]) if len(sys.argv) > 1 else 360
N = int(os.environ.get("EVAL_N", 10_000))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHIPPED = "src/diffumnist/weights"
RUNS = [  # (name, checkpoint, guidance, precision, sampler, steps), most important first
    ("class-ema-g5", "gpu/carry/class_ema.safetensors", 5.0, "bf16", "ddpm", None),
    ("class-ema-g0", "gpu/carry/class_ema.safetensors", 0.0, "bf16", "ddpm", None),
    ("class-ema-g1", "gpu/carry/class_ema.safetensors", 1.0, "bf16", "ddpm", None),
    ("class-ema-g3", "gpu/carry/class_ema.safetensors", 3.0, "bf16", "ddpm", None),
    ("class-ema-g10", "gpu/carry/class_ema.safetensors", 10.0, "bf16", "ddpm", None),
    ("time-ema", f"{SHIPPED}/time.safetensors", 1.0, "bf16", "ddpm", None),
    ("class-raw-g5", "gpu/carry/class_raw.safetensors", 5.0, "bf16", "ddpm", None),
    ("class-ema-g5-fp32", "gpu/carry/class_ema.safetensors", 5.0, "fp32", "ddpm", None),
    ("class-shipped-fp16-g5", f"{SHIPPED}/class.safetensors", 5.0, "bf16", "ddpm", None),
    ("time-raw", "gpu/carry/time_raw.safetensors", 1.0, "bf16", "ddpm", None),
    ("class-ema-g5-dpmpp20", "gpu/carry/class_ema.safetensors", 5.0, "bf16", "dpmpp", 20),
    ("class-ema-g5-ddim50", "gpu/carry/class_ema.safetensors", 5.0, "bf16", "ddim", 50),
]
start = time.time()
results = {
    "device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu",
    "torch": torch.__version__,
    "runs": {},
}
for name, path, guidance, precision, sampler, steps in RUNS:
    if time.time() - start > BUDGET_S:
        print(f"skipped {name}: time budget spent", flush=True)
        continue
    began = time.time()
    try:
        model = load(path).to(DEVICE)
        kwargs = {"sampler": sampler, "steps": steps} if sampler != "ddpm" else {}
        images, labels = generate(
            model,
            10_000,
            guidance_scale=guidance,
            seed=0,
            batch_size=2500,
            precision=precision,
            progress=False,
            **kwargs,
        )
        scores = score_samples(images, labels, seed=0)
    except Exception as exc:  # record and go on: one failure must not cost the table
        print(f"{name} FAILED: {exc!r}", flush=True)
        continue
    scores["seconds"] = time.time() - began
    scores["settings"] = {
        "checkpoint": path,
        "guidance": guidance,
        "precision": precision,
        "sampler": sampler,
        "steps": steps,
        "n": N,
        "seed": 0,
    }
    results["runs"][name] = scores
    acc = scores.get("guided_accuracy", {}).get("overall", float("nan"))
    print(
        f"{name}: fid {scores['mnist_fid']:.3f} (floor {scores['mnist_fid_floor']:.3f}) "
        f"P {scores['precision']:.3f} R {scores['recall']:.3f} acc {acc:.4f} "
        f"H {scores['class_balance']['entropy_bits']:.3f} {scores['seconds']:.0f}s",
        flush=True,
    )
    with open(f"{OUT}/eval.json", "w") as handle:
        json.dump(results, handle, indent=1)
