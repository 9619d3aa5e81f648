"""K β-VAEs of one architecture trained together in one process: one vectorised step for all.

A sweep point trained alone is a few small kernels per step, which leaves a GPU idle. With
``mechanism="vmap"`` every step stacks the members' weights and runs one ``torch.func.vmap``
of ``functional_call`` over them: each layer becomes one batched matmul (``bmm``) or one
grouped convolution for all members. With ``"loop"`` (the faster on a CPU, where a grouped
convolution is slower than K convolutions) each member's own module runs in turn. Members
may differ in whatever keeps tensor shapes: the objective (kind, β, γ, C and its schedule),
the learning rate and the seed.

Each member is the model a single ``bvae train`` with its params trains:

- its own module, built after ``torch.manual_seed(seed)``: a single run's initial weights;
- its own generator, seeded and drawn as a single run's (indices, then noise:
  :meth:`bvae.training.Trainer.draw`), so it sees the same batches and noise;
- its own loss (:func:`bvae.objectives.member_losses`, the same formula as ``compute_loss``);
  the members' losses are summed, and as no weight is shared each gradient is the member's own;
- its own Adam update with its learning rate (one ``torch.optim.Adam``, a parameter group per
  rate: Adam is elementwise): the single run's update, to the bit.

``loop`` members are bit-identical to their single runs. The ``vmap`` forward sums the same
products in another order (a grouped convolution, not a convolution), so a member equals its
single run to rounding after a step, and training amplifies rounding as any perturbation
(``tests/test_ensemble.py`` measures both). A resumed ensemble equals an uninterrupted one
exactly.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.func import functional_call, vmap

from bvae.config import ModelConfig, ObjectiveConfig, TrainConfig
from bvae.cuda_graph import GraphedStep
from bvae.errors import InvalidSetting
from bvae.models import BetaVAE, images_to_input, select_device
from bvae.objectives import capacity_for, member_losses
from bvae.progress import progress
from bvae.training import (
    STEP_FIGURES,
    TrainingDiverged,
    adam,
    curve_row,
    graphs_wanted,
    stream_seed,
    switch,
)

ENSEMBLE_CHECKPOINT_FORMAT = 1
# How a step runs the members: vmap (one batched kernel per layer for all members: the GPU
# win) or loop (each member's module in turn: a single run's kernels, the faster on a CPU,
# where a grouped convolution is slower than K convolutions; BENCHMARKS.md). auto: vmap on CUDA.
MECHANISMS = ("auto", "vmap", "loop")
# What every member of one ensemble must share: tensor shapes, the loop, the device.
SHARED_TRAIN_KEYS = (
    "channels_last",
    "steps",
    "batch_size",
    "log_every",
    "checkpoint_every",
    "device",
    "compile",
    "bf16",
    "threads",
    "cuda_graphs",
    "fused_adam",
)


@dataclass(frozen=True)
class Member:
    """One point of a grid: what may differ between the members of one ensemble."""

    objective: ObjectiveConfig
    train: TrainConfig


def check_shared(members: Sequence[Member]) -> None:
    """Members must agree on what fixes tensor shapes and the loop; else a clear error."""
    if not members:
        raise InvalidSetting("an ensemble needs at least one member")
    first = members[0].train
    for number, member in enumerate(members[1:], start=1):
        for key in SHARED_TRAIN_KEYS:
            if getattr(member.train, key) != getattr(first, key):
                raise InvalidSetting(
                    f"ensemble member {number} has train.{key} = {getattr(member.train, key)!r} but "
                    f"member 0 has {getattr(first, key)!r}: the members of one ensemble share it. "
                    "Train the others in an ensemble of their own (the Prefect sweep flow groups them)."
                )
    if first.nproc != 1:
        raise InvalidSetting("train.nproc must be 1 for an ensemble: it trains its members in one process")


class EnsembleTrainer:
    """The members' modules, optimizers and generators; one vectorised step for all of them."""

    def __init__(
        self,
        model_config: ModelConfig,
        members: Sequence[Member],
        images: np.ndarray | torch.Tensor,
        mechanism: str = "auto",
    ):
        check_shared(members)
        self.model_config, self.members = model_config, list(members)
        shared = self.members[0].train
        self.device = select_device(shared.device)
        if self.device.type == "cpu" and shared.threads:
            torch.set_num_threads(shared.threads)
        cuda = self.device.type == "cuda"
        if mechanism not in MECHANISMS:
            raise InvalidSetting(f"sweep.mechanism {mechanism!r} is not one of {', '.join(MECHANISMS)}")
        self.mechanism = ("vmap" if cuda else "loop") if mechanism == "auto" else mechanism
        self.memory_format = torch.contiguous_format
        if self.mechanism == "loop" and switch(shared.channels_last, model_config.architecture == "conv"):
            self.memory_format = torch.channels_last  # as a single run has it: bit-identical steps
        self.models: list[BetaVAE] = []
        for member in self.members:
            torch.manual_seed(member.train.seed)  # a single run's initial weights
            self.models.append(BetaVAE(model_config).to(self.device, memory_format=self.memory_format))
        # One Adam, one parameter group per learning rate: Adam is elementwise, so each member's
        # update is its single run's, and a grid of one rate is one multi-tensor update (a GPU
        # does not launch K optimizers' kernels).
        rates = list(dict.fromkeys(member.train.learning_rate for member in self.members))
        groups = [
            {
                "params": [
                    p
                    for model, m in zip(self.models, self.members, strict=True)
                    if m.train.learning_rate == rate
                    for p in model.parameters()
                ],
                "lr": rate,
            }
            for rate in rates
        ]
        self.use_graphs = graphs_wanted(shared, self.device, distributed=False)
        self.optimizer = adam(groups, shared, self.use_graphs)  # every group has its own rate
        self.names = [name for name, _ in self.models[0].named_parameters()]
        self.base = copy.deepcopy(self.models[0]).to("meta")  # the architecture vmap calls
        data = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
        self.data = data.to(self.device)
        self.generators = [
            torch.Generator(device=self.device).manual_seed(stream_seed(member.train.seed, 0))
            for member in self.members
        ]
        self.objective_columns = self._objective_weights()
        self.step = 0
        self.last_checkpoint_step = 0
        self.histories: list[list[dict[str, float]]] = [[] for _ in self.members]
        self.use_bf16 = switch(shared.bf16, cuda and torch.cuda.is_bf16_supported())
        self.forward_loss = self._forward_loss
        if switch(shared.compile, cuda):
            self.forward_loss = torch.compile(self._forward_loss)
        self.train_step = self._new_train_step()

    @property
    def size(self) -> int:
        return len(self.members)

    def _objective_weights(self) -> torch.Tensor:
        """``(K, 4)``: each member's (is capacity, β, γ, Gaussian std), as ``member_losses`` takes them."""
        rows = [
            [
                float(m.objective.kind == "capacity"),
                m.objective.beta,
                m.objective.gamma,
                m.objective.gaussian_std,
            ]
            for m in self.members
        ]
        return torch.tensor(rows, dtype=torch.float32, device=self.device)

    # -- one step ---------------------------------------------------------------------------
    def stacked_parameters(self) -> dict[str, torch.Tensor]:
        """``{name: (K, *shape)}``: a differentiable stack of every member's own weights."""
        per_member = [dict(model.named_parameters()) for model in self.models]
        return {name: torch.stack([params[name] for params in per_member]) for name in self.names}

    def _member_forward(self, params, batch, noise):
        return functional_call(self.base, params, (batch, noise))

    def _forward_loss(self, params, batches, noises, capacities):
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=not self.use_graphs)
            if self.use_bf16
            else contextlib.nullcontext()
        )
        with autocast:
            if params is None:  # loop: each member's own module, a single run's kernels
                outputs = [
                    model(batch.contiguous(memory_format=self.memory_format), noise)
                    for model, batch, noise in zip(self.models, batches, noises, strict=True)
                ]
                mean, logvar, logits = (torch.stack(parts) for parts in zip(*outputs, strict=True))
            else:
                mean, logvar, logits = vmap(self._member_forward)(params, batches, noises)
        return member_losses(
            self.model_config.likelihood,
            logits.float(),
            batches,
            mean.float(),
            logvar.float(),
            self.objective_columns,
            capacities,
        )

    def capacities(self) -> list[float]:
        """Each member's capacity C at the current step (0 for the β objective)."""
        return [capacity_for(m.objective, self.step) for m in self.members]

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's next batch ``(K, B, 1, 64, 64)`` and noise ``(K, B, latent_dim)``,
        each from its own stream in a single run's order (indices, then noise)."""
        size, latent_dim = self.members[0].train.batch_size, self.model_config.latent_dim
        indices, noises = [], []
        for generator in self.generators:
            indices.append(torch.randint(0, len(self.data), (size,), device=self.device, generator=generator))
            noises.append(torch.randn((size, latent_dim), device=self.device, generator=generator))
        batches = images_to_input(self.data.index_select(0, torch.cat(indices)))
        return batches.reshape(self.size, size, *batches.shape[1:]), torch.stack(noises)

    def _step(self, batches: torch.Tensor, noises: torch.Tensor, capacities: torch.Tensor) -> torch.Tensor:
        """Forward, backward, update of every member: what a CUDA graph captures."""
        params = self.stacked_parameters() if self.mechanism == "vmap" else None
        terms = self.forward_loss(params, batches, noises, capacities)
        self.optimizer.zero_grad(set_to_none=True)
        terms[:, 0].sum().backward()  # no weight is shared: each member gets its own gradient
        self.optimizer.step()
        return terms.detach()

    def _new_train_step(self) -> Callable:
        if not self.use_graphs:
            return self._step
        parameters = [p for model in self.models for p in model.parameters()]
        return GraphedStep(self._step, parameters, self.optimizer)

    def _capacity_tensor(self) -> torch.Tensor:
        values = torch.tensor(self.capacities(), dtype=torch.float32)
        if self.device.type != "cuda":
            return values.to(self.device)
        # Pinned and non-blocking: a plain host-to-device copy would sync the stream each step.
        return values.pin_memory().to(self.device, non_blocking=True)

    def run_step(self) -> torch.Tensor:
        """One step of every member; returns ``(K, 4 + latent_dim)``: ``STEP_FIGURES``, KL per
        latent (under CUDA graphs a static tensor, overwritten by the next step)."""
        batches, noises = self.draw()
        terms = self.train_step(batches, noises, self._capacity_tensor())
        self.step += 1
        return terms

    # -- the loop ---------------------------------------------------------------------------
    def train(
        self,
        on_log: Callable[[EnsembleTrainer], None] | None = None,
        on_checkpoint: Callable[[EnsembleTrainer], None] | None = None,
        show_progress: bool = True,
    ) -> list[list[dict[str, float]]]:
        """Train every member from ``self.step`` to ``train.steps``; returns their curve rows."""
        config = self.members[0].train
        for model in self.models:
            model.train()
        latent_dim = self.model_config.latent_dim
        window = torch.zeros(self.size, len(STEP_FIGURES) + latent_dim, device=self.device)
        window_steps, window_start = 0, time.perf_counter()
        bar = progress(
            total=config.steps,
            initial=self.step,
            desc=f"train ×{self.size}",
            unit="step",
            disable=not show_progress,
        )
        with bar:
            while self.step < config.steps:
                window += self.run_step()  # on the device; one host sync per log
                window_steps += 1
                bar.update(1)
                if self.step % config.log_every == 0 or self.step == config.steps:
                    means = (window / window_steps).tolist()
                    bad = [k for k, values in enumerate(means) if not all(map(math.isfinite, values))]
                    self._raise_if_diverged(bad, window_steps)
                    elapsed = time.perf_counter() - window_start
                    capacities = self.capacities()
                    for k, values in enumerate(means):
                        self.histories[k].append(
                            curve_row(self.step, values, capacities[k], window_steps / elapsed)
                        )
                    bar.set_postfix(it_s=f"{window_steps / elapsed:.1f}", members=self.size)
                    if on_log is not None:
                        on_log(self)
                    window.zero_()
                    window_steps, window_start = 0, time.perf_counter()
                if on_checkpoint is not None and (
                    self.step % config.checkpoint_every == 0 or self.step == config.steps
                ):
                    # A checkpoint is only ever of finite weights: one host sync, this rarely.
                    finite = torch.stack(
                        [
                            torch.stack([torch.isfinite(p).all() for p in m.parameters()]).all()
                            for m in self.models
                        ]
                    )
                    bad = [k for k, ok in enumerate(finite.tolist()) if not ok]
                    self._raise_if_diverged(bad, max(window_steps, 1))
                    on_checkpoint(self)
                    self.last_checkpoint_step = self.step
        return self.histories

    def _raise_if_diverged(self, bad: list[int], window_steps: int) -> None:
        """Name the members whose loss or weights are not finite; the last checkpoint is kept."""
        if not bad:
            return
        described = "; ".join(f"member {k} ({describe_member(self.members[k])})" for k in bad)
        checkpoint = (
            f"the last checkpoint (step {self.last_checkpoint_step}) holds finite weights and is kept"
            if self.last_checkpoint_step
            else "no checkpoint was written"
        )
        raise TrainingDiverged(
            f"training diverged for {described}: the loss or the weights became NaN or infinite "
            f"between steps {self.step - window_steps + 1} and {self.step}; {checkpoint}. Lower that "
            "member's learning rate or β/γ, or take it out of the grid, and run again."
        )

    # -- members and checkpoints ------------------------------------------------------------
    def member_config(self, k: int) -> dict:
        """Member ``k``'s config as a single run's checkpoint and model file hold it."""
        member = self.members[k]
        return {
            "model": self.model_config.to_dict(),
            "objective": asdict(member.objective),
            "train": asdict(member.train),
            "world_size": 1,
        }

    def state_dict(self) -> dict:
        """The resumable state: the optimizer, and every member's weights, RNG and curves."""
        return {
            "format": ENSEMBLE_CHECKPOINT_FORMAT,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "members": [
                {
                    "model": self.models[k].state_dict(),
                    "step": self.step,
                    "rng": self.generators[k].get_state(),
                    "history": self.histories[k],
                    "config": self.member_config(k),
                }
                for k in range(self.size)
            ],
        }

    def config_dicts(self) -> list[dict]:
        return [self.member_config(k) for k in range(self.size)]

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        for k, member_state in enumerate(state["members"]):
            self.models[k].load_state_dict(member_state["model"])
            self.generators[k].set_state(member_state["rng"].cpu())
            self.histories[k] = list(member_state["history"])
        self.step = self.last_checkpoint_step = int(state["step"])
        self.train_step = self._new_train_step()  # a graph holds the replaced optimizer state


def describe_member(member: Member) -> str:
    """``beta=4.0, seed=0, lr=0.0005`` (or the capacity settings): for errors and logs."""
    objective = member.objective
    if objective.kind == "beta":
        settings = f"beta={objective.beta:g}"
    else:
        settings = f"capacity gamma={objective.gamma:g} C_max={objective.capacity_max_nats:g}"
    return f"{settings}, seed={member.train.seed}, lr={member.train.learning_rate:g}"
