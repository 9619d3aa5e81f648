"""The training loop: i.i.d. batches gathered by index from an in-memory uint8 dataset.

No Dataset, no DataLoader, no per-sample Python: the whole dataset (2.8 GiB of uint8) sits on
the training device and each batch is one ``index_select``. Sampling is with replacement from
a seeded ``torch.Generator`` whose state is checkpointed, so a resumed run draws exactly the
batches and noise an uninterrupted one would (bit-identical weights on CPU).

Tracking and files stay outside: :meth:`Trainer.train` reports through callbacks.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from bvae import distributed
from bvae.config import TrainConfig
from bvae.cuda_graph import GraphedStep
from bvae.distributed import World
from bvae.errors import BadInput, InvalidSetting
from bvae.fileio import atomic_path
from bvae.models import BetaVAE, ModelConfig, images_to_input, select_device
from bvae.objectives import ObjectiveConfig, capacity_for, compute_loss
from bvae.progress import progress

CHECKPOINT_FORMAT = 1


class TrainingDiverged(BadInput, RuntimeError):
    """The loss or the weights became NaN or infinite; the last checkpoint saved stays good."""


def switch(setting: str, default: bool) -> bool:
    """An ``auto | on | off`` setting: ``default`` decides ``auto``."""
    return default if setting == "auto" else setting == "on"


# The figures a step returns, in the order of a log window's columns; KL per latent follows.
STEP_FIGURES = ("loss", "reconstruction", "kl", "largest_mean_sd")


def curve_row(step: int, means: list[float], capacity: float, steps_per_second: float) -> dict[str, float]:
    """One row of ``curves.csv`` from a log window's means (``STEP_FIGURES``, KL per latent)."""
    figures = len(STEP_FIGURES)
    row = {"step": step, **dict(zip(STEP_FIGURES, means[:figures], strict=True))}
    row.update(capacity=capacity, steps_per_second=steps_per_second)
    row.update({f"kl_z{k}": value for k, value in enumerate(means[figures:])})
    return row


def stream_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s batch and noise stream (rank 0: the single-process one)."""
    return seed + 1 + 1_000_003 * rank


class Trainer:
    """Owns the model, the optimizer, the data tensor and the RNG; steps and checkpoints.

    Under DDP (``world.size`` > 1) each rank draws ``batch_size / world.size`` images from its
    own seeded stream and DDP averages the gradients: one step on the global batch.
    ``state_dict`` is then a collective (it gathers every rank's RNG state).
    """

    def __init__(
        self,
        model_config: ModelConfig,
        objective: ObjectiveConfig,
        train: TrainConfig,
        images: np.ndarray | torch.Tensor,
        world: World | None = None,
    ):
        self.model_config, self.objective, self.train_config = model_config, objective, train
        self.world = world = world or World()
        if train.batch_size % world.size:
            raise InvalidSetting(
                f"train.batch_size {train.batch_size} must be divisible by the {world.size} DDP "
                "processes: change train.batch_size or the number of processes"
            )
        self.local_batch = train.batch_size // world.size
        self.device = distributed.device_for(world, select_device(train.device))
        distributed.init(world, self.device)
        if self.device.type == "cpu" and train.threads:
            torch.set_num_threads(train.threads)
        torch.manual_seed(train.seed)  # the initial weights
        self.model = BetaVAE(model_config).to(self.device)
        self.memory_format = torch.contiguous_format
        if switch(train.channels_last, model_config.architecture == "conv"):
            self.memory_format = torch.channels_last
            self.model = self.model.to(memory_format=torch.channels_last)
        cuda = self.device.type == "cuda"
        self.use_graphs = graphs_wanted(train, self.device, world.distributed)
        self.optimizer = adam(self.model.parameters(), train, self.use_graphs)
        data = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
        self.data = data.to(self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(stream_seed(train.seed, world.rank))
        self.network = self.model  # what a step calls: DDP synchronises gradients in backward
        if world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=ids)
        self.step = 0
        self.last_checkpoint_step = 0
        self.history: list[dict[str, float]] = []
        self.use_bf16 = switch(train.bf16, cuda and torch.cuda.is_bf16_supported())
        self.forward_loss = self._forward_loss
        if switch(train.compile, cuda):
            self.forward_loss = torch.compile(self._forward_loss)
        # C as a tensor filled in place: a compiled step does not recompile as C grows, and
        # no host-to-device copy (a stream sync) per step.
        self.capacity = torch.zeros((), device=self.device)
        self.train_step = self._new_train_step()

    # -- one step ---------------------------------------------------------------------------
    def _forward_loss(self, batch: torch.Tensor, noise: torch.Tensor, capacity: torch.Tensor):
        autocast = (
            # No cast cache under a graph: the casts are replayed with the step.
            torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=not self.use_graphs)
            if self.use_bf16
            else contextlib.nullcontext()
        )
        with autocast:
            mean, logvar, logits = self.network(batch, noise)
        return compute_loss(
            self.objective,
            self.model_config.likelihood,
            logits.float(),
            batch,
            mean.float(),
            logvar.float(),
            capacity,
        )

    def capacity_nats(self) -> float:
        """Burgess et al.'s capacity C at the current step (0 for the beta objective)."""
        return capacity_for(self.objective, self.step)

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's next image indices and reparameterisation noise, from its own stream."""
        size = self.local_batch
        index = torch.randint(0, len(self.data), (size,), device=self.device, generator=self.generator)
        noise = torch.randn(
            (size, self.model_config.latent_dim), device=self.device, generator=self.generator
        )
        return index, noise

    def _step(self, batch: torch.Tensor, noise: torch.Tensor, capacity: torch.Tensor):
        """Forward, backward, update: what a CUDA graph captures (``set_to_none`` lets the
        capture allocate the gradients the replays write)."""
        terms = self.forward_loss(batch, noise, capacity)
        self.optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        self.optimizer.step()
        return terms

    def _new_train_step(self) -> Callable:
        if not self.use_graphs:
            return self._step
        return GraphedStep(self._step, list(self.model.parameters()), self.optimizer)

    def _run_batch(self):
        """One step; under CUDA graphs the returned terms are overwritten by the next step."""
        index, noise = self.draw()
        batch = images_to_input(self.data.index_select(0, index))
        batch = batch.contiguous(memory_format=self.memory_format)
        self.capacity.fill_(self.capacity_nats())
        terms = self.train_step(batch, noise, self.capacity)
        self.step += 1
        return terms

    # -- the loop ---------------------------------------------------------------------------
    def train(
        self,
        on_log: Callable[[dict[str, float]], None] | None = None,
        on_checkpoint: Callable[[Trainer], None] | None = None,
        show_progress: bool = True,
    ) -> list[dict[str, float]]:
        """Train from ``self.step`` to ``steps``; returns the curve rows (one per log)."""
        config = self.train_config
        self.model.train()
        latent_dim = self.model_config.latent_dim
        window = torch.zeros(len(STEP_FIGURES) + latent_dim, device=self.device)
        window_steps, window_start = 0, time.perf_counter()
        bar = progress(
            total=config.steps, initial=self.step, desc="train", unit="step", disable=not show_progress
        )
        with bar:
            while self.step < config.steps:
                terms = self._run_batch()
                # Accumulate on the device; one host sync per log keeps the GPU busy.
                window += torch.cat(
                    [
                        torch.stack(
                            [terms.loss, terms.reconstruction, terms.kl, terms.largest_mean_sd]
                        ).detach(),
                        terms.kl_per_latent.detach(),
                    ]
                )
                window_steps += 1
                bar.update(1)
                if self.step % config.log_every == 0 or self.step == config.steps:
                    means = distributed.mean_(window / window_steps, self.world).tolist()
                    if not all(math.isfinite(value) for value in means):
                        raise self._diverged(window_steps)
                    elapsed = time.perf_counter() - window_start
                    row = curve_row(self.step, means, self.capacity_nats(), window_steps / elapsed)
                    self.history.append(row)
                    bar.set_postfix(
                        loss=f"{row['loss']:.1f}",
                        recon=f"{row['reconstruction']:.1f}",
                        kl=f"{row['kl']:.2f}",
                        it_s=f"{row['steps_per_second']:.0f}",
                    )
                    if on_log is not None:
                        on_log(row)
                    window.zero_()
                    window_steps, window_start = 0, time.perf_counter()
                if on_checkpoint is not None and (
                    self.step % config.checkpoint_every == 0 or self.step == config.steps
                ):
                    # A checkpoint is only ever of finite weights: one host sync, this rarely.
                    if not self._finite(window):
                        raise self._diverged(max(window_steps, 1))
                    on_checkpoint(self)
                    self.last_checkpoint_step = self.step
        return self.history

    def _finite(self, window: torch.Tensor) -> bool:
        finite = torch.isfinite(window).all()
        for parameter in self.model.parameters():
            finite &= torch.isfinite(parameter).all()
        return bool(distributed.mean_(finite.float().reshape(1), self.world).item() == 1.0)

    def _diverged(self, window_steps: int) -> TrainingDiverged:
        checkpoint = (
            f"the last checkpoint (step {self.last_checkpoint_step}) holds finite weights and is kept"
            if self.last_checkpoint_step
            else "no checkpoint was written"
        )
        return TrainingDiverged(
            f"training diverged: the loss or the weights became NaN or infinite between steps "
            f"{self.step - window_steps + 1} and {self.step}; {checkpoint}. Lower "
            "train.learning_rate (or objective.beta / objective.gamma) and run again."
        )

    # -- checkpoints ------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {
            "model": self.model_config.to_dict(),
            "objective": asdict(self.objective),
            "train": asdict(self.train_config),
            "world_size": self.world.size,  # a resume must split batches the same way
        }

    def state_dict(self) -> dict:
        """The resumable state; under DDP a collective that gathers every rank's RNG."""
        rng = self.generator.get_state()
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "rng": rng,
            "rng_per_rank": distributed.gather(rng.cpu(), self.world),
            "history": self.history,
            "config": self.config_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = self.last_checkpoint_step = int(state["step"])
        per_rank = state.get("rng_per_rank") or [state["rng"]]
        self.generator.set_state(per_rank[self.world.rank].cpu())  # CPU byte tensors
        self.history = list(state["history"])
        self.train_step = self._new_train_step()  # a graph holds the replaced optimizer state


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


def adam(parameters, train: TrainConfig, capturable: bool) -> torch.optim.Adam:
    """Adam at ``train.learning_rate``, capturable for a CUDA graph; ``train.fused_adam`` auto:
    fused when graphed (the fastest step measured on an H100; eagerly, fused Adam was no
    faster: BENCHMARKS.md). ``parameters`` may be parameter groups with rates of their own."""
    fused = switch(train.fused_adam, capturable)
    return torch.optim.Adam(
        parameters, lr=train.learning_rate, fused=True if fused else None, capturable=capturable
    )


def save_atomic(payload: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary sibling, then rename: a kill never leaves half a file."""
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def load_trusted(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint or model file with ``weights_only=True``: tensors and plain data only."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)
