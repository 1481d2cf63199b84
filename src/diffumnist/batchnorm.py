"""BatchNorm across data-parallel ranks, and running statistics measured afresh.

With several ranks, each sees only its share of a batch. `GlobalBatchNorm2d` (the default,
`--batchnorm global`) takes the statistics over every rank's share, so N processes train
the run one process trains. `--batchnorm local` normalises each share by itself, as plain
DDP does: fewer messages, but a different run (noisier statistics from smaller batches);
`average_buffers` then keeps the replicas' running statistics, and their EMA copies,
identical after every step.

`remeasure_running_statistics` measures the running statistics again for the weights a
network holds now: what an EMA copy needs, since the statistics it carries were measured
on other weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


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


@torch.no_grad()
def remeasure_running_statistics(
    net: nn.Module, forward: Callable[[], object], batches: int
) -> None:
    """Set every BatchNorm's running mean and variance of `net` to their plain average over
    `batches` calls of `forward()` (which runs `net` on one training batch) in train mode.

    An EMA copy averages weights, and its BatchNorm statistics are an average of statistics
    measured on the raw weights of every step, which are not the activations the averaged
    weights produce. SWA measures them afresh on the final weights (Izmailov et al. 2018,
    torch.optim.swa_utils.update_bn); this does the same for networks that also take a
    timestep and a class, which update_bn cannot pass. Gradients, weights and the network's
    mode are left as they were.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    was_training = net.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches, not an EMA
    net.train()
    try:
        for _ in range(batches):
            forward()
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        net.train(was_training)
