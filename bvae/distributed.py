"""Data-parallel training under ``torchrun`` (PyTorch DDP): who am I, and the few collectives.

``torchrun --nproc_per_node=N -m bvae train`` sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``; without them everything here is the single-process identity, so the same
stage code runs either way. Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from bvae.errors import InvalidSetting


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs to MLflow and writes checkpoints and DVC outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env(env: dict[str, str] | None = None) -> World:
    env = dict(os.environ if env is None else env)
    size = int(env.get("WORLD_SIZE", "1"))
    if size < 1:
        raise InvalidSetting(f"WORLD_SIZE must be >= 1, got {size}")
    return World(int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0")), size)


def join(world: World, device: torch.device) -> None:
    """Join the process group ``torchrun`` started (NCCL on CUDA, gloo on CPU); nothing to do
    for one process or a group already joined."""
    if world.distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast(obj: Any, world: World) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not world.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather(obj: Any, world: World) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not world.distributed:
        return [obj]
    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, obj)
    return gathered


def mean_(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """In place: the mean of ``tensor`` over the ranks."""
    if world.distributed:
        dist.all_reduce(tensor)
        tensor /= world.size
    return tensor


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def relaunch_under_torchrun(nproc: int, module_argv: list[str]) -> int:
    """Run ``python <module_argv>`` on ``nproc`` processes under torchrun (DDP), from this
    environment's Python; returns its exit code. ``bvae train`` does this for ``train.nproc``."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command = [*launcher, *module_argv]
    logging.getLogger(__name__).info("train.nproc=%d: %s", nproc, " ".join(command))
    return subprocess.run(command, check=False).returncode
