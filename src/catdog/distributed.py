"""Data-parallel training on torch.distributed (DistributedDataParallel), launched by torchrun.

    torchrun --standalone --nproc_per_node N main.py [flags]           # one machine, N processes

Without torchrun (no WORLD_SIZE in the environment) everything runs in one process, unchanged.
The backend is NCCL with CUDA and gloo otherwise. `*_batch_size` is the GLOBAL batch: every rank
draws the same global batch indices and random numbers from the same seeded generators and keeps
its slice `rank::world_size`, so N processes take the same optimisation steps as one process with
that batch (up to the order of float additions), at the same learning rate. Rank 0 alone logs,
writes checkpoints, exports and figures; the others wait at barriers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from catdog.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: int) -> slice:
        """This rank's part of a global batch."""
        if batch % self.size:
            raise UserError(f"the global batch ({batch}) must be divisible by the number of processes "
                            f"({self.size})")
        return slice(self.rank, None, self.size)

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def mean(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Average scalar tensors over all ranks (for logging the global batch); a collective call."""
        if self.size == 1:
            return values
        stacked = torch.stack([v.detach().float() for v in values.values()])
        dist.all_reduce(stacked)
        return dict(zip(values, stacked / self.size))

    def average_gradients(self, module: nn.Module) -> None:
        """Average the parameters' gradients over all ranks (what DDP does), for modules whose loss
        cannot run inside DDP; a collective call."""
        if self.size == 1:
            return
        for p in module.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.size


def init_world() -> World:
    """Join the process group if launched by torchrun (WORLD_SIZE > 1); otherwise a 1-process world."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return World(dist.get_rank(), dist.get_world_size(), local_rank)


def current_world() -> World:
    """The world of an initialised process group, else a 1-process world."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def close_world() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class LossForward(nn.Module):
    """Expose a model's loss method as `forward`, so that DistributedDataParallel can wrap it."""

    def __init__(self, model: nn.Module, method: str = "loss"):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, *args):
        return getattr(self.model, self.method)(*args)


def loss_module(model: nn.Module, world: World, compile: bool = False, method: str = "loss") -> nn.Module:
    """model.<method> as a module: plain with one process, inside DDP with several; compiled with CUDA
    graphs if asked (the config refuses compile off CUDA, where it only costs start-up time)."""
    wrapped: nn.Module = LossForward(model, method)
    on_cuda = next(model.parameters()).is_cuda
    if world.size > 1:
        wrapped = DistributedDataParallel(wrapped, device_ids=[world.local_rank] if on_cuda else None)
    if compile and on_cuda:
        wrapped = torch.compile(wrapped, mode="reduce-overhead")
    return wrapped
