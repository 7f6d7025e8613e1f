"""DistributedBatchNorm2d: two gloo processes with half a batch each behave like plain BatchNorm on the whole batch."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from modeling_pvt.training.sync_batch_norm import (
    DistributedBatchNorm2d,
    synchronize_batch_norms,
)

CHANNELS = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _batch_and_upstream_gradient():
    generator = torch.Generator().manual_seed(0)
    # Different means per process: per-process statistics would differ visibly from the global ones.
    batch = torch.randn(4, CHANNELS, 5, 6, generator=generator) + torch.tensor([0.0, 0.0, 3.0, 3.0])[:, None, None, None]
    return batch, torch.randn(4, CHANNELS, 5, 6, generator=generator)


def _reference_norm() -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(CHANNELS)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        norm.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    return norm


def _worker(rank: int, port: int, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = nn.Sequential(_reference_norm())
        assert synchronize_batch_norms(model) == 1 and isinstance(model[0], DistributedBatchNorm2d)
        batch, upstream = _batch_and_upstream_gradient()
        share = batch[2 * rank : 2 * rank + 2].clone().requires_grad_(True)
        output = model(share)
        (output * upstream[2 * rank : 2 * rank + 2]).sum().backward()
        results[rank] = {
            "output": output.detach(),
            "input_grad": share.grad,
            "weight_grad": model[0].weight.grad,
            "running_mean": model[0].running_mean.clone(),
            "running_var": model[0].running_var.clone(),
        }
    finally:
        dist.destroy_process_group()


def test_two_processes_match_batch_norm_on_the_global_batch():
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), results), nprocs=2, join=True)

    reference = _reference_norm().train()
    batch, upstream = _batch_and_upstream_gradient()
    batch.requires_grad_(True)
    output = reference(batch)
    (output * upstream).sum().backward()
    for rank in range(2):
        result = results[rank]
        rows = slice(2 * rank, 2 * rank + 2)
        torch.testing.assert_close(result["output"], output[rows].detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(result["input_grad"], batch.grad[rows], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(result["running_mean"], reference.running_mean)
        torch.testing.assert_close(result["running_var"], reference.running_var)
    # Each process holds the gradient of its own share; DDP's all-reduce then sums them.
    torch.testing.assert_close(results[0]["weight_grad"] + results[1]["weight_grad"], reference.weight.grad)


def test_plain_batch_norm_outside_distributed_training():
    norm = _reference_norm()
    synchronized = _reference_norm()
    synchronize_batch_norms(synchronized)
    batch = torch.randn(2, CHANNELS, 4, 4)
    torch.testing.assert_close(synchronized(batch), norm(batch))
    torch.testing.assert_close(synchronized.running_var, norm.running_var)
    assert list(synchronized.state_dict()) == list(norm.state_dict())
