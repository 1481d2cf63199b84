"""Which inference rewrites pay on this CPU: channels_last, BatchNorm folding, inductor.

Each variant is the shipped class model with its network replaced (model.net), timed as
users call it, `model.sample` of --n guided digits (γ = 5, dpmpp 20), in --rounds that
alternate the variants (best round counts), beside the matmul peaks measured in the same
run (benchmarks/roofline.py). Then it checks that the variants sample what the original
does: in fp32 the largest pixel difference, in the auto precision MNIST-FID on the same
seeds. A second table gives the forward rate of the network alone per batch size (a
guided digit costs two forward images: conditional and unconditional).

model.sample itself runs inference.inference_net(model.net) (BatchNorm folded,
channels_last); to compare the rewrites one by one, this script turns that step into
net.eval() (see `rewrites_as_given`) and applies each variant's rewrite itself.

    python benchmarks/inference.py [--n 100] [--rounds 2] [--batches 50,200,1000] [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time
from collections.abc import Callable, Iterator

import torch
from roofline import Peaks, best_seconds, header, measure_peaks, unet_flops
from torch import nn

import diffumnist
import diffumnist.models
from diffumnist.data import to_uint8
from diffumnist.evaluate import score_samples
from diffumnist.inference import fold_batchnorm
from diffumnist.runtime import autocast, resolve_precision

CPU = torch.device("cpu")


def channels_last(net: nn.Module) -> nn.Module:
    return copy.deepcopy(net).to(memory_format=torch.channels_last)


def fold_channels_last(net: nn.Module) -> nn.Module:
    return fold_batchnorm(net).to(memory_format=torch.channels_last)


def compiled(net: nn.Module) -> nn.Module:
    """inductor with freezing (weights become constants), on the folded channels_last net.

    Static shapes: with dynamic ones (a second batch size) torch 2.14's inductor failed a
    stride assertion in its bf16 conv + unary fusion on channels_last inputs. Each batch
    size compiles anew, so the first call of a size (round 1) includes its compile time.
    """
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    return torch.compile(fold_channels_last(net), dynamic=False)


VARIANTS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "as loaded": lambda net: net,
    "channels_last": channels_last,
    "BN folded": fold_batchnorm,
    "BN folded + channels_last": fold_channels_last,
}


@contextlib.contextmanager
def rewrites_as_given() -> Iterator[None]:
    """Make model.sample run model.net as it is instead of its inference_net rewrite."""
    original = getattr(diffumnist.models, "inference_net", None)
    if original is None:  # a version of models.py that samples with model.net itself
        yield
        return
    diffumnist.models.inference_net = lambda net: net.eval()
    try:
        yield
    finally:
        diffumnist.models.inference_net = original


def sample(model, precision: str, args: argparse.Namespace) -> tuple[torch.Tensor, float]:
    """(uint8 digits (n, 28, 28), seconds) of one model.sample call."""
    started = time.perf_counter()
    samples, _ = model.sample(
        torch.arange(args.n) % 10, guidance_scale=5.0, seed=0, precision=precision,
        sampler="dpmpp", steps=20, frame_every=10**9,
    )  # fmt: skip
    return to_uint8(samples), time.perf_counter() - started


def forward_images_per_call(model, precision: str, args: argparse.Namespace) -> int:
    """How many images one sample call pushes through the network (counted, not assumed)."""
    count = [0]

    def hook(_: nn.Module, inputs: tuple) -> None:
        count[0] += len(inputs[0])

    handle = model.net.register_forward_pre_hook(hook)
    sample(model, precision, argparse.Namespace(**{**vars(args), "n": 10}))
    handle.remove()
    return count[0] * args.n // 10


def build_models(args: argparse.Namespace) -> dict[str, object]:
    base = diffumnist.load_pretrained("class")
    variants = dict(VARIANTS)
    if args.compile:
        variants["inductor (freezing) on BN folded + channels_last"] = compiled
    models = {}
    for name, rewrite in variants.items():
        model = copy.deepcopy(base)
        model.net = rewrite(model.net)
        started = time.perf_counter()
        model.sample([0, 1], seed=0, sampler="dpmpp", steps=2, precision=args.precision)
        print(f"  {name}: first call {time.perf_counter() - started:.1f} s", flush=True)
        models[name] = model
    return models


def sampling_table(models: dict, args: argparse.Namespace, peaks: Peaks) -> Peaks:
    """Time the variants in alternating rounds at --precision and fp32; print the table."""
    gflop = unet_flops("class").forward * forward_images_per_call(
        models["as loaded"], args.precision, args
    )
    settings = [(name, args.precision) for name in models]
    settings += [("as loaded", "fp32"), ("BN folded + channels_last", "fp32")]
    best: dict[tuple[str, str], float] = {}
    images: dict[tuple[str, str], torch.Tensor] = {}
    for round_index in range(args.rounds):
        for name, precision in settings:
            images[name, precision], seconds = sample(models[name], precision, args)
            best[name, precision] = min(seconds, best.get((name, precision), float("inf")))
            print(f"  round {round_index + 1}: {name}, {precision}: {seconds:.2f} s", flush=True)
        peaks = peaks.best_with(measure_peaks())
    labels = torch.arange(args.n) % 10
    print(f"\nmodel.sample, {args.n} guided digits, dpmpp 20 (best of {args.rounds} rounds):")
    print(
        "| network | precision | s | speed-up | GFLOP/s | % fp32 peak | % bf16 peak | MNIST-FID |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    reference = best["as loaded", "fp32"]
    for (name, precision), seconds in best.items():
        fid = score_samples(images[name, precision], labels, args.data_dir)["mnist_fid"]
        rate = gflop / seconds
        print(
            f"| {name} | {precision} | {seconds:.2f} | {reference / seconds:.2f}x | {rate:.0f} "
            f"| {100 * rate / peaks.fp32:.0f} % | {100 * rate / peaks.bf16:.0f} % | {fid:.3f} |"
        )
    diff = images["BN folded + channels_last", "fp32"].int() - images["as loaded", "fp32"].int()
    largest = int(diff.abs().max())
    print(f"fp32, BN folded + channels_last vs as loaded: largest pixel difference {largest}/255")
    return peaks


def forward_table(models: dict, args: argparse.Namespace, peaks: Peaks) -> None:
    """GFLOP/s of one forward pass per batch size, as loaded vs folded + channels_last."""
    gflop = unet_flops("class").forward
    print(f"\nnetwork forward alone, {args.precision}, best of 3 (images per forward pass):")
    print("| network | " + " | ".join(f"batch {b}" for b in args.batches) + " |")
    print("| --- |" + " ---: |" * len(args.batches))
    for name in ("as loaded", "BN folded + channels_last"):
        net = models[name].net
        cells = []
        for batch in args.batches:
            x = torch.randn(batch, 1, 28, 28)
            t, c = torch.rand(batch), torch.eye(10)[torch.arange(batch) % 10]
            with torch.inference_mode(), autocast(CPU, args.precision):
                seconds = best_seconds(lambda net=net, x=x, t=t, c=c: net(x, t, c), 3, warmup=1)
            rate = gflop * batch / seconds
            cells.append(f"{rate:.0f} GFLOP/s ({100 * rate / peaks.bf16:.0f} % bf16)")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="guided digits per sample call")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--batches", type=lambda s: [int(b) for b in s.split(",")], default=[50, 200, 1000]
    )
    parser.add_argument("--compile", action="store_true", help="also try torch.compile")
    parser.add_argument("--data-dir", default=None, help="MNIST folder")
    args = parser.parse_args()
    args.precision = resolve_precision("auto", CPU)
    peaks = measure_peaks()
    with rewrites_as_given():
        models = build_models(args)
        peaks = sampling_table(models, args, peaks)
        forward_table(models, args, peaks)
    print(header(peaks))


if __name__ == "__main__":
    main()
