"""Write tests/data/reference_samples.npz: shipped models' samples at fixed seeds and settings.

First made on main before the sampling package's redesign (commit ba5a711); the redesign matched it
bit for bit (commit 864fca4). Made again when sampling began to run a BatchNorm-folded copy
of the network: fp32 samples moved by at most 1.9e-5 and animation frames by at
most 1/255. Run again only when a change is meant to alter samples:
`python tests/system/make_reference_samples.py`.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import torch

import diffumnist

# (name, model kind, sample() keyword arguments); all fp32 so hardware bf16 paths do not enter
CASES = [
    ("class_ddpm_g5", "class", {"c": [0, 3, 5, 8], "guidance_scale": 5.0, "seed": 42}),
    (
        "class_dpmpp20_g3",
        "class",
        {"c": [1, 2, 7], "guidance_scale": 3.0, "seed": 7, "sampler": "dpmpp", "steps": 20},
    ),
    (
        "class_ddim20_eta1_g1",
        "class",
        {
            "c": [4, 6, 9],
            "guidance_scale": 1.0,
            "seed": 3,
            "sampler": "ddim",
            "steps": 20,
            "eta": 1.0,
        },
    ),
    ("time_dpmpp10", "time", {"n": 3, "seed": 11, "sampler": "dpmpp", "steps": 10}),
    ("time_ddim50", "time", {"n": 2, "seed": 5, "sampler": "ddim"}),
]


def machine_key() -> str:
    """Which CPU produced the reference: exact equality is promised on the same kind only."""
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    vendor = "amd" if "AuthenticAMD" in flags else "intel" if "GenuineIntel" in flags else "other"
    return f"{platform.machine()}-{vendor}-{'amx' if 'amx_bf16' in flags else 'noamx'}"


def make() -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name, kind, kwargs in CASES:
        model = diffumnist.load_pretrained(kind)
        kwargs = dict(kwargs)
        c = kwargs.pop("c", None)
        samples, animation = model.sample(
            None if c is None else torch.tensor(c), precision="fp32", **kwargs
        )
        arrays[name] = samples.numpy()
        arrays[name + "_frames"] = animation[:: max(1, len(animation) // 4)].numpy()
    denoiser = diffumnist.load_pretrained("denoiser")
    noisy = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    arrays["denoiser"] = denoiser.denoise(noisy, precision="fp32").numpy()
    return arrays


if __name__ == "__main__":
    out = Path(__file__).parent / "data" / "reference_samples.npz"
    np.savez_compressed(out, machine=np.array(machine_key()), **make())
    print(f"wrote {out} on {machine_key()}")
