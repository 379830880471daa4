"""Process groups under `torchrun`: each rank trains on its own shard, gradients are averaged.

Outside torchrun (WORLD_SIZE unset) every function here is a no-op for one rank.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

STOP_CHECK_STEPS = 8  # ranks compare their stop flags this often: a collective every step costs time


def init(device: torch.device) -> tuple[int, int, torch.device]:
    """Rank, world size and this rank's device; (0, 1, device) outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def close(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(module: torch.nn.Module, world: int) -> None:
    """Average gradients over ranks: one all-reduce of one flat buffer per net and step."""
    if world == 1:
        return
    grads = [q.grad for q in module.parameters() if q.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(world)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def sum_over_ranks(x: torch.Tensor, world: int) -> torch.Tensor:
    """`x` summed over all ranks, in place."""
    if world > 1:
        dist.all_reduce(x)
    return x


def gather(obj: object, world: int) -> list:
    """Every rank's `obj`, in rank order."""
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def agree_to_stop(stop: bool, step: int, world: int, device: torch.device) -> bool:
    """Whether to stop after `step`: every rank must stop at the same step, so only
    every STOP_CHECK_STEPS steps, and then when any rank was asked to."""
    if world == 1:
        return stop
    if step % STOP_CHECK_STEPS:
        return False
    flag = torch.tensor([float(stop)], device=device)
    dist.all_reduce(flag)
    return bool(flag.item())
