"""DiffuMNIST: train, sample, watch and measure DDPM models on MNIST digits.

The models load on first use (`diffumnist.load`, `diffumnist.load_pretrained`), so that
`import diffumnist.cli` reads its arguments before torch is imported.
"""

import importlib

from diffumnist.allocator import tune_malloc
from diffumnist.config import ModelConfig, TrainConfig, recipe

# Before the first large tensor: keep freed activation buffers in the heap (glibc only).
tune_malloc()

_LAZY = {
    "Denoiser": "models", "DiffusionModel": "models", "load": "models",
    "load_pretrained": "pretrained",
}  # fmt: skip

__all__ = [
    "Denoiser",
    "DiffusionModel",
    "ModelConfig",
    "TrainConfig",
    "load",
    "load_pretrained",
    "recipe",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'diffumnist' has no attribute {name!r}")
    return getattr(importlib.import_module(f"diffumnist.{_LAZY[name]}"), name)
