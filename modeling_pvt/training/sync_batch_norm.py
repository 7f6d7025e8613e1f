"""BatchNorm synchronised across processes on any device, CPU included.

The original Semantic FPN trains its head with SyncBN. `torch.nn.SyncBatchNorm` refuses CPU tensors, so CPU
data-parallel runs (gloo) would normalise each process's share of the batch on its own. This module computes the
batch statistics over all processes with one autograd-aware all-reduce, which gives the statistics (and gradients)
of the whole global batch.
"""

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class DistributedBatchNorm2d(nn.BatchNorm2d):
    """`nn.BatchNorm2d` whose training statistics are those of the batch of all processes; same parameters and
    buffers, so state dicts are interchangeable. Outside distributed training it is plain BatchNorm."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats and _is_distributed()):
            return super().forward(input)
        channels = input.shape[1]
        # Sums in float32 even for half-precision activations: a sum over a whole batch of feature maps.
        values = input.float()
        local = torch.cat(
            (
                values.sum(dim=(0, 2, 3)),
                (values * values).sum(dim=(0, 2, 3)),
                values.new_tensor([values.numel() / channels]),
            )
        )
        total = all_reduce(local)
        count = total[-1]
        mean = total[:channels] / count
        variance = (total[channels : 2 * channels] / count - mean * mean).clamp(min=0)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            unbiased = variance * (count / (count - 1).clamp(min=1))
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        scale = torch.rsqrt(variance + self.eps)
        if self.affine:
            shift = self.bias - mean * scale * self.weight
            scale = scale * self.weight
        else:
            shift = -mean * scale
        return (values * scale[None, :, None, None] + shift[None, :, None, None]).to(input.dtype)


def synchronize_batch_norms(model: nn.Module) -> int:
    """Turns every `nn.BatchNorm2d` of `model` into `DistributedBatchNorm2d` in place (parameters and statistics
    kept); returns how many were converted."""
    converted = 0
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = DistributedBatchNorm2d
            converted += 1
    return converted


__all__ = ["DistributedBatchNorm2d", "synchronize_batch_norms"]
