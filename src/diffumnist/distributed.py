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
- BatchNorm statistics are taken over the global batch by default, as on one process
  (batchnorm.py); `--batchnorm local` normalises each share by itself, as plain DDP does.

This module holds the ranks' bookkeeping; `launcher` starts ranks, `batchnorm` keeps their
BatchNorm layers in step.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from diffumnist.config import ConfigError
from diffumnist.launcher import launched_by_torchrun
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

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """`values` summed elementwise over all ranks, on every rank (in place).

        The tensor must live where the backend reduces: a GPU for NCCL, the CPU for gloo.
        """
        if self.size > 1:
            dist.all_reduce(values)
        return values


SINGLE_PROCESS = World()


def current_world() -> World:
    """The World of the process group this process belongs to, if any."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return SINGLE_PROCESS


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
