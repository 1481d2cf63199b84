"""DiffuMNIST: train, sample, watch and measure DDPM models on MNIST digits."""

from diffumnist import runtime
from diffumnist.config import ModelConfig, TrainConfig, recipe
from diffumnist.models import Denoiser, DiffusionModel, load
from diffumnist.pretrained import load_pretrained

# Before the first large tensor: keep freed activation buffers in the heap (glibc only).
runtime.tune_malloc()

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
