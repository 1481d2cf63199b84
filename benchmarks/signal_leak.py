"""Why the ODE solver loses: where sampling starts, measured on the shipped time model.

The recipe's schedule ends at ᾱ_T = 0.048, so real x_T = √ᾱ_T·x0 + √(1 − ᾱ_T)·z still holds
22 % of the image, while sampling starts from pure N(0, I). This script runs the same
deterministic sampler (DPM-Solver++ 20 steps, η = 0, the same z for every row) from three
starts and scores each with the judge:

- noise: z alone, as the recipe;
- data: the forward process from real test digits (what the model was trained on; a
  diagnostic only, since it needs the digits it should invent);
- mean: the forward process from the mean training image (`start="mean"`).

    python benchmarks/signal_leak.py --n 1000   # results/signal_leak_time_cpu_n1000.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import diffumnist
from diffumnist.data import load_split, shipped_mean_images, to_uint8, to_unit
from diffumnist.evaluate import score_samples
from diffumnist.inference import inference_net
from diffumnist.runtime import autocast, resolve_precision
from diffumnist.sampling import dpmpp_sample, make_eps_fn

RESULTS = Path(__file__).parent / "results"
BATCH = 500


def starts(n: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The image under the noise for each start (None: no image), and the shared z."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((n, 1, 28, 28), generator=generator)
    test_images = to_unit(load_split("test")[0])
    digits = test_images[torch.randint(len(test_images), (n,), generator=generator)]
    mean = shipped_mean_images()[-1:].expand(n, -1, -1, -1)
    return {"noise": None, "data": digits, "mean": mean}, noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = diffumnist.load_pretrained("time")
    diffusion, T = model.diffusion, model.diffusion.num_timesteps
    eps_fn = make_eps_fn(inference_net(model.net), diffusion)
    precision = resolve_precision("auto", model.device)
    images, noise = starts(args.n, args.seed)
    rows = []
    for name, x0 in images.items():
        x_T = noise if x0 is None else diffusion.q_sample(x0, T, noise)
        samples = []
        for index, batch in enumerate(x_T.split(BATCH)):
            generator = torch.Generator().manual_seed(args.seed + index)
            with autocast(model.device, precision):
                samples.append(
                    to_uint8(dpmpp_sample(eps_fn, batch, diffusion, generator, steps=20))
                )
        scores = score_samples(torch.cat(samples), torch.full((args.n,), -1))
        keys = ("mnist_fid", "mnist_fid_floor", "precision", "recall")
        row = {"start": name, "n": args.n, "seed": args.seed, "precision_mode": precision}
        row |= {key: scores[key] for key in keys}
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = RESULTS / f"signal_leak_time_{model.device.type}_n{args.n}.json"
    out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
