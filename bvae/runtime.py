"""Where and how training runs: decided once, before the data is loaded, and passed down.

Every ``train.*`` setting about the machine (device, threads, compile, bf16, channels_last,
CUDA graphs, fused Adam, the DDP world) and the ensemble mechanism become one frozen
:class:`Runtime`. What cannot work fails here, in a second, with the setting to change:
not after a 2.8 GiB load.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from bvae import distributed
from bvae.config import ModelConfig, TrainConfig
from bvae.distributed import World
from bvae.errors import InvalidSetting

# How a step runs K members: single (K = 1; the only mechanism DDP runs), loop (each member's
# own module in turn: a single run's kernels, the faster on a CPU, where a grouped
# convolution is slower than K convolutions; BENCHMARKS.md), or one of the stacked
# mechanisms, one kernel per layer for all members on their stacked weights: vmap (torch.func;
# grouped convolutions: the GPU win measured so far) or bmm (bvae.batched: im2col and batched
# matrix products). auto: single for one member, else vmap on CUDA, loop elsewhere.
MECHANISMS = ("auto", "single", "loop", "vmap", "bmm")
STACKED = ("vmap", "bmm")
STACKED_WEIGHTS = ("bmm",)  # also kept stacked between steps, one Adam over the stacks (bvae.stacked)


def switch(setting: str, default: bool) -> bool:
    """An ``auto | on | off`` setting: ``default`` decides ``auto``."""
    return default if setting == "auto" else setting == "on"


@dataclass(frozen=True)
class Runtime:
    """The machine-side choices of one training process."""

    device: torch.device
    mechanism: str = "single"
    world: World = field(default_factory=World)
    threads: int = 0  # torch CPU threads; 0: torch's default (all cores)
    channels_last: bool = False
    compile: bool = False
    bf16: bool = False
    graphs: bool = False
    fused_adam: bool = False

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def decide(
    train: TrainConfig,
    model: ModelConfig,
    members: int = 1,
    mechanism: str = "auto",
    world: World | None = None,
    kinds: Sequence[str] = (),
) -> Runtime:
    """The runtime for ``members`` models trained with ``train`` (every member shares these
    keys: :data:`bvae.training.SHARED_TRAIN_KEYS`) of the objective ``kinds``."""
    world = world or World()
    device = select_device(train.device, "train.device")
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)  # one GPU per local rank
    discriminated = DISCRIMINATED in kinds
    check_discriminated(kinds, mechanism, train.cuda_graphs == "on", max(world.size, train.nproc))
    chosen = _mechanism(
        "loop" if discriminated and mechanism == "auto" and members > 1 else mechanism,
        members,
        device,
        world,
        train.nproc,
    )
    graphs = not discriminated and graphs_wanted(train, device, world.distributed)
    cuda = device.type == "cuda"
    return Runtime(
        device=device,
        mechanism=chosen,
        world=world,
        threads=train.threads,
        # A stacked mechanism never calls the modules: their memory format is not its layout.
        channels_last=chosen not in STACKED and switch(train.channels_last, model.architecture == "conv"),
        compile=switch(train.compile, cuda),
        bf16=switch(train.bf16, cuda and torch.cuda.is_bf16_supported()),
        graphs=graphs,
        fused_adam=switch(train.fused_adam, graphs),
    )


def _mechanism(mechanism: str, members: int, device: torch.device, world: World, nproc: int) -> str:
    if mechanism not in MECHANISMS:
        raise InvalidSetting(f"sweep.mechanism {mechanism!r} is not one of {', '.join(MECHANISMS)}")
    processes = max(world.size, nproc)
    if processes > 1 and members > 1:
        raise InvalidSetting(
            f"train.nproc is {processes} for {members} models: data-parallel processes (DDP) train "
            "one model, and an ensemble trains its members in one process. Set train.nproc to 1."
        )
    if mechanism == "auto":
        if members == 1:
            return "single"
        return "vmap" if device.type == "cuda" else "loop"
    if mechanism == "single" and members > 1:
        raise InvalidSetting(
            f"mechanism single trains one model, not {members}: use loop, vmap or bmm (or auto)"
        )
    if world.distributed and mechanism != "single":
        raise InvalidSetting(f"mechanism {mechanism} does not run under DDP (train.nproc > 1): use auto")
    return mechanism


# The kind that trains a second network beside the VAE (FactorVAE's discriminator): its
# members run as modules (single or loop), eagerly, in one process.
DISCRIMINATED = "factor"


def check_discriminated(kinds: Sequence[str], mechanism: str, graphs: bool, processes: int) -> None:
    """FactorVAE trains a discriminator per member, module by module: the stacked mechanisms,
    CUDA graphs and DDP are not built for it (``auto`` picks what works); one line each. Checked
    on the settings (:func:`decide`) and on a runtime a caller decided (the trainer)."""
    if DISCRIMINATED not in kinds:
        return
    if mechanism in STACKED:
        raise InvalidSetting(
            f"sweep.mechanism {mechanism} stacks the VAEs' weights but not FactorVAE's "
            "discriminators: use loop (or auto) for a grid with objective.kind factor"
        )
    if graphs:
        raise InvalidSetting(
            "train.cuda_graphs is on but objective.kind factor trains eagerly (its discriminator "
            "is not captured in bvae's graph): set train.cuda_graphs to auto or off"
        )
    if processes > 1:
        raise InvalidSetting(
            "objective.kind factor trains in one process (DDP would not average its "
            "discriminator's gradients): set train.nproc to 1"
        )


def graphs_wanted(train: TrainConfig, device: torch.device, distributed: bool) -> bool:
    """``train.cuda_graphs``: auto is on for one CUDA process; ``on`` elsewhere is an error."""
    wanted = switch(train.cuda_graphs, device.type == "cuda" and not distributed)
    if wanted and device.type != "cuda":
        raise InvalidSetting(
            f"train.cuda_graphs is on but training runs on {device.type}: CUDA graphs need a CUDA "
            "GPU. Set train.cuda_graphs to auto or off."
        )
    if wanted and distributed:
        raise InvalidSetting(
            "train.cuda_graphs is on with train.nproc > 1: bvae does not graph DDP steps. "
            "Set train.cuda_graphs to auto or off, or train.nproc to 1."
        )
    return wanted


def machine_tags(runtime: Runtime) -> dict[str, str]:
    """What a run's weights depend on beyond its params and data: the same seed gives the same
    weights only on the same kernels. CPU kernels are chosen by instruction set (ATen's
    dispatch: ``default``, ``AVX2``, ``AVX512``…) and training amplifies their rounding
    differences, so a run records the device, torch and that capability (docs/operations.md)."""
    tags = {
        "train_device": str(runtime.device),
        "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_vector_isa": cpu_vector_isa(),
    }
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):  # oneDNN's convolutions: what decides CPU weights
        tags["onednn_max_cpu_isa"] = os.environ["ONEDNN_MAX_CPU_ISA"]
    if runtime.device.type == "cuda":
        tags["cuda_device"] = torch.cuda.get_device_name(runtime.device)
    return tags


def cpu_vector_isa() -> str:
    """The widest x86 vector instructions the CPU has (``avx512f``, ``avx2``, ``sse4_2``), which
    oneDNN picks its convolution kernels by; ``unknown`` off Linux/x86."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    return next((isa for isa in ("avx512f", "avx2", "sse4_2") if isa in flags), "unknown")


def start(runtime: Runtime) -> None:
    """Apply the process-wide choices: CPU threads, this rank's GPU, the DDP process group."""
    if runtime.device.type == "cpu" and runtime.threads:
        torch.set_num_threads(runtime.threads)
    if runtime.device.type == "cuda" and runtime.world.distributed:
        torch.cuda.set_device(runtime.device)
    distributed.join(runtime.world, runtime.device)


def select_device(requested: str = "auto", key: str = "train.device") -> torch.device:
    """``auto``: CUDA, then Apple MPS, then CPU. ``key`` names the setting in errors."""
    if requested != "auto":
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise InvalidSetting(
                f"{key} = {requested!r} is not a device: use auto, cpu, cuda, cuda:N or mps"
            ) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InvalidSetting(f"{key} is {requested} but no CUDA GPU is visible; use auto or cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidSetting(
                f"{key} is {requested} but no CUDA GPU is visible at index {device.index} "
                f"({torch.cuda.device_count()} visible); use auto, cuda or cpu"
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
