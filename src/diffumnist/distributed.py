"""Data-parallel training and evaluation on PyTorch's own engine, torch.distributed.

A distributed run is N copies of the same `diffumnist` command, started by `torchrun`
(or by `--nproc N`, which calls torchrun's launcher for one machine). Each copy learns its
place from the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK) and joins the group
over gloo on CPUs or NCCL on GPUs.

The design goal is that N processes compute *the same run* as one process with the same
global batch, not merely a similar one:

- every rank holds the same seeded generator and draws the randomness (shuffling, t, ε,
  class dropout) of the whole global batch, then keeps its own contiguous share, so the
  generator state, and therefore the checkpoint, is the same for any N and a run can be
  resumed with a different N;
- gradients are averaged by DistributedDataParallel, with each rank's loss weighted by
  its share, so uneven shares still give the mean over the global batch;
- BatchNorm statistics are taken over the global batch by default (`GlobalBatchNorm2d`),
  as on one process. `--batchnorm local` normalises each share with its own mean and
  variance instead, as plain DDP does: fewer messages, but a different run (noisier
  statistics from smaller batches). Its running statistics are averaged over the ranks
  after every step, so the replicas, and their EMA copies, stay identical.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from diffumnist.config import ConfigError
from diffumnist.runtime import resolve_device


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, checkpoints, previews and printed results."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of n items; shares differ in size by at most one."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def all_gather(self, value: object) -> list[object]:
        """Every rank's `value`, in rank order, on every rank (picklable objects)."""
        if self.size == 1:
            return [value]
        gathered: list[object] = [None] * self.size
        dist.all_gather_object(gathered, value)
        return gathered

    def sum(self, value: float) -> float:
        """The sum of one number over all ranks, on every rank."""
        if self.size == 1:
            return value
        # NCCL reduces GPU tensors only; gloo takes CPU tensors
        device = torch.cuda.current_device() if dist.get_backend() == "nccl" else "cpu"
        total = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return total.item()


SINGLE_PROCESS = World()


def current_world() -> World:
    """The World of the process group this process belongs to, if any."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return SINGLE_PROCESS


def launched_by_torchrun() -> bool:
    """True when torchrun (or `--nproc`) started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def check_gpus_for(nproc: int) -> None:
    """Each rank on a GPU needs a GPU of its own."""
    if nproc > torch.cuda.device_count():
        raise ConfigError(
            f"{nproc} processes on cuda need {nproc} GPUs; this machine has "
            f"{torch.cuda.device_count()} (use fewer processes or --device cpu)"
        )


@contextlib.contextmanager
def process_group(device_name: str) -> Iterator[World]:
    """Join the run's process group for the duration of a command (no-op for one process).

    On GPUs each rank takes the GPU of its LOCAL_RANK; the backend follows the device:
    NCCL for CUDA, gloo for CPUs.
    """
    if not launched_by_torchrun():
        yield SINGLE_PROCESS
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = resolve_device(device_name).type == "cuda"
    if use_cuda:
        check_gpus_for(local_rank + 1)
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    try:
        yield current_world()
    finally:
        dist.destroy_process_group()


class WorkerFailed(RuntimeError):
    """A rank of a `--nproc` launch exited with an error (its own message is above)."""

    def __init__(self, rank: int, exit_code: int) -> None:
        if exit_code < 0:
            what = f"rank {rank} was killed by signal {-exit_code}"
        else:
            what = f"rank {rank} exited with code {exit_code}; its message is above"
        super().__init__(what)
        self.rank, self.exit_code = rank, exit_code


def launch(nproc: int, argv: Sequence[str]) -> None:
    """Run `python -m diffumnist ARGV` as `nproc` ranks on this machine through torchrun.

    Each rank gets an equal share of the CPU cores as its thread count unless
    OMP_NUM_THREADS is set (too many threads per rank makes CPU training crawl).
    torchrun's own log lines are silenced: a failing rank prints its one-line error itself,
    and the failure is raised here as WorkerFailed with the first failing rank's exit code.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if nproc < 1:
        raise ConfigError(f"--nproc must be a positive integer; got {nproc}")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)
    launch_args = parse_args(["--standalone", f"--nproc_per_node={nproc}", "-m", "diffumnist"])
    # given after parsing: torchrun's parser would take e.g. --nproc for its own options
    launch_args.training_script_args = list(argv)
    try:
        run(launch_args)
    except ChildFailedError as exc:
        # the cause, not the ranks torchrun stopped (SIGTERM) because of it
        rank, failure = min(
            exc.failures.items(),
            key=lambda item: (item[1].exitcode == -signal.SIGTERM, item[1].timestamp, item[0]),
        )
        raise WorkerFailed(rank, failure.exitcode) from None
    except SignalException:  # Ctrl-C: torchrun has stopped the ranks
        raise KeyboardInterrupt from None


def _per_channel(values: torch.Tensor) -> torch.Tensor:
    """A (C,) tensor shaped to broadcast over (N, C, H, W)."""
    return values[:, None, None]


class _GlobalBatchNormFunction(torch.autograd.Function):
    """Batch normalisation with statistics over every rank's batch, backward in closed form.

    Forward: each rank's (count, mean, variance) per channel, from the kernel BatchNorm2d
    itself uses, are gathered and combined with the parallel-variance formula (exact, unlike
    E[x²] − mean²). Backward: with x̂ the normalised input and g the output gradient,
    dx = w/σ · (g − mean(g) − x̂·mean(g·x̂)), the two means taken over the global batch (one
    all-reduce); dw = Σ g·x̂ and db = Σ g stay per rank, since DistributedDataParallel adds
    them up like any parameter gradient. One function rather than differentiable
    primitives: it keeps only x for the backward pass and makes a few passes over it.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        values = x.float()
        channels = values.shape[1]
        mean, variance = torch.batch_norm_update_stats(values, None, None, 0.0)
        count = torch.full((1,), values.numel() / channels, device=x.device)
        local = torch.cat([count, mean, variance])
        gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, local)
        counts, means, variances = torch.stack(gathered).split([1, channels, channels], dim=1)
        total = counts.sum()
        mean = (counts * means).sum(0) / total
        variance = (counts * (variances + (means - mean).square())).sum(0) / total
        ctx.save_for_backward(x, weight, mean, torch.rsqrt(variance + eps), total)
        ctx.mark_non_differentiable(mean, variance, total)
        y = F.batch_norm(values, mean, variance, weight, bias, training=False, eps=eps)
        return y.to(x.dtype), mean, variance, total

    @staticmethod
    def backward(ctx, grad_y, *_unused):
        x, weight, mean, invstd, total = ctx.saved_tensors
        g, values = grad_y.float(), x.float()
        grad_bias = g.sum((0, 2, 3))
        grad_weight = ((g * values).sum((0, 2, 3)) - mean * grad_bias) * invstd  # Σ g·x̂
        both = torch.cat([grad_bias, grad_weight])
        dist.all_reduce(both)
        mean_g, mean_g_normalised = (both / total).chunk(2)
        # dx = k·g + a·x + b per channel, the closed form above expanded
        k = weight * invstd
        a = -k * invstd * mean_g_normalised
        b = -k * mean_g - a * mean
        grad_x = (values * _per_channel(a)).add_(_per_channel(b)).addcmul_(g, _per_channel(k))
        return grad_x.to(x.dtype), grad_weight, grad_bias, None


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are taken over the batch of every rank.

    torch.nn.SyncBatchNorm does this on GPUs only and refuses CPU tensors (its kernels have
    no CPU version), so data-parallel CPU runs, and the CI test that checks them, need their
    own. One implementation on every device keeps the path CI tests the one GPUs run. With
    one process, or in eval mode, it is plain BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        y, mean, variance, total = _GlobalBatchNormFunction.apply(
            x, self.weight, self.bias, self.eps
        )
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            factor = self.momentum
            if factor is None:  # cumulative average, as BatchNorm2d
                factor = 1.0 / self.num_batches_tracked.item()
            self.running_mean.lerp_(mean, factor)
            self.running_var.lerp_(variance * total / (total - 1).clamp_min(1), factor)
        return y


def average_buffers(net: nn.Module) -> None:
    """Replace every floating-point buffer (BatchNorm running statistics) by its mean over
    the ranks: with local BatchNorm each rank's statistics saw only its own share."""
    buffers = [b for b in net.buffers() if b.is_floating_point()]
    if dist.is_initialized() and dist.get_world_size() > 1 and buffers:
        flat = torch.cat([b.reshape(-1) for b in buffers])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        for buffer, mean in zip(buffers, flat.split([b.numel() for b in buffers]), strict=True):
            buffer.copy_(mean.view_as(buffer))


def use_global_batchnorm(net: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d of `net` by a GlobalBatchNorm2d holding the same state.

    The state-dict keys are unchanged, so checkpoints load into plain networks.
    """
    for name, child in net.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = GlobalBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine
            ).to(child.weight.device)
            replacement.load_state_dict(child.state_dict())
            setattr(net, name, replacement)
        else:
            use_global_batchnorm(child)
    return net
