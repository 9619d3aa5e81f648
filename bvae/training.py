"""The trainer: K ≥ 1 β-VAEs of one architecture, one loop, one step for all of them.

A single ``bvae train`` is an ensemble of one; a sweep trains its grid as one ensemble. The
whole dataset (2.8 GiB of uint8) sits on the training device and each batch is one
``index_select``: no Dataset, no DataLoader, no per-sample Python. Each member is the model a
single run with its params trains:

- its own module, built after ``torch.manual_seed(seed)`` (``model.init`` applied);
- its own seeded ``torch.Generator``, drawn in one order (indices, then noise) and
  checkpointed, so a resumed run sees exactly the batches and noise an uninterrupted one would;
- its own row of one objective (:func:`bvae.objectives.objective_terms`); the members' losses
  are summed, and as no weight is shared each gradient is the member's own;
- its own Adam update with its learning rate (one ``torch.optim.Adam``, a parameter group per
  rate: Adam is elementwise).

A FactorVAE member also has its discriminator (:class:`bvae.models.Discriminator`), built
after its VAE from the same seed and trained by its own Adam (disentanglement_lib's: its
rate, β1 0.5, β2 0.9), which is a parameter group of the same optimizer: Adam is elementwise,
so a group with its own rate and betas is a second Adam, in one checkpoint layout. Its batch
shuffle is drawn from the member's stream after the noise. Such members run as modules
(``single``, ``loop``), eagerly, in one process (:func:`bvae.runtime.check_discriminated`).

How a step runs the members is the runtime's mechanism (:mod:`bvae.runtime`): ``single`` and
``loop`` call each member's module (a single run's kernels: members are bit-identical to
their single runs); the stacked mechanisms stack the weights and run every member's layer as
one kernel, which sums the same products in another order, so a member equals its single run
to rounding after a step (``tests/test_ensemble.py``): ``vmap`` is one ``torch.func.vmap`` of
``functional_call`` (a grouped convolution), ``bmm`` is :mod:`bvae.batched` (im2col and one
batched matrix product per layer).
Under DDP (``single`` only) each rank draws ``batch_size / world.size`` images from its own
stream and DDP averages the gradients. CUDA graphs, compile, bf16 and fused Adam apply to
every mechanism through the same step.

Tracking and files stay outside: :meth:`Trainer.train` reports through callbacks.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.func import functional_call, vmap

from bvae import batched, distributed
from bvae import runtime as runtimes
from bvae.config import ModelConfig, ObjectiveConfig, TrainConfig, objective_settings
from bvae.cuda_graph import GraphedStep
from bvae.errors import BadInput, InvalidSetting
from bvae.models import BetaVAE, Discriminator, images_to_input
from bvae.objectives import (
    KIND_TERMS,
    TERM_COLUMNS,
    MemberObjectives,
    capacity_for,
    objective_terms,
    shuffle_codes,
    trained_loss,
)
from bvae.progress import progress
from bvae.runtime import Runtime
from bvae.stacked import StackedWeights, rate_groups

log = logging.getLogger(__name__)

# disentanglement_lib's study trained FactorVAE with γ from 10 to 100; params.yaml's γ of 1000
# is the capacity objective's.
FACTOR_GAMMA_RANGE = (10.0, 100.0)

# What every member of one trainer must share: tensor shapes, the loop, the runtime.
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
    "nproc",
)


class TrainingDiverged(BadInput, RuntimeError):
    """The loss or the weights became NaN or infinite; the last checkpoint saved stays good."""


@dataclass(frozen=True)
class Member:
    """One model to train: what may differ between the members of one trainer."""

    objective: ObjectiveConfig
    train: TrainConfig


def curve_row(
    step: int,
    means: list[float],
    capacity: float,
    steps_per_second: float,
    columns: tuple[str, ...] = TERM_COLUMNS,
    kind: str = "beta",
) -> dict[str, float]:
    """One row of ``curves.csv`` from a log window's means (``columns``: the ensemble's, then
    KL per latent): the common figures, then this member's own kind's terms only."""
    figures = len(columns)
    named = dict(zip(columns, means[:figures], strict=True))
    row = {"step": step, **{name: named[name] for name in TERM_COLUMNS}}
    row.update(capacity=capacity, steps_per_second=steps_per_second)
    row.update({name: named[name] for name in KIND_TERMS[kind]})
    row.update({f"kl_z{k}": value for k, value in enumerate(means[figures:])})
    return row


def stream_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s batch and noise stream (rank 0: the single-process one)."""
    return seed + 1 + 1_000_003 * rank


def check_shared(members: Sequence[Member]) -> None:
    """Members must agree on what fixes tensor shapes and the loop; else a clear error."""
    if not members:
        raise InvalidSetting("a trainer needs at least one member")
    first = members[0].train
    for number, member in enumerate(members[1:], start=1):
        for key in SHARED_TRAIN_KEYS:
            if getattr(member.train, key) != getattr(first, key):
                raise InvalidSetting(
                    f"ensemble member {number} has train.{key} = {getattr(member.train, key)!r} but "
                    f"member 0 has {getattr(first, key)!r}: the members of one ensemble share it. "
                    "Train the others in an ensemble of their own (the Prefect sweep flow groups them)."
                )


def describe_member(member: Member) -> str:
    """``beta=4, seed=0, lr=0.0005`` (or the capacity settings): for errors and logs."""
    objective = member.objective
    if objective.kind == "beta":
        settings = f"beta={objective.beta:g}"
    elif objective.kind == "capacity":
        settings = f"capacity gamma={objective.gamma:g} C_max={objective.capacity_max_nats:g}"
    else:
        shown = objective_settings(asdict(objective)).items()
        settings = objective.kind + "".join(
            f" {key}={value:g}" if isinstance(value, float) else f" {key}={value}" for key, value in shown
        )
    return f"{settings}, seed={member.train.seed}, lr={member.train.learning_rate:g}"


# Adam's (β1, β2) for FactorVAE's discriminator: disentanglement_lib's (the study's shared.gin).
DISCRIMINATOR_BETAS = (0.5, 0.9)


def adam(parameters, train: TrainConfig, capturable: bool, fused: bool = False) -> torch.optim.Adam:
    """Adam at ``train.learning_rate``, capturable for a CUDA graph; fused (one kernel) when the
    runtime says so (``train.fused_adam`` auto: with graphs, the fastest step measured on an
    H100; eagerly fused Adam was no faster: BENCHMARKS.md). ``parameters`` may be parameter
    groups with rates of their own."""
    return torch.optim.Adam(
        parameters, lr=train.learning_rate, fused=True if fused else None, capturable=capturable
    )


class Trainer:
    """The members' modules, one optimizer, their generators; one step for all of them.

    Under DDP ``state_dict`` is a collective (it gathers every rank's RNG state).
    """

    def __init__(
        self,
        model_config: ModelConfig,
        members: Sequence[Member],
        images: np.ndarray | torch.Tensor,
        runtime: Runtime | None = None,
        *,
        mechanism: str = "auto",
    ):
        """``runtime``: decided by the caller (the stage decides it before loading data);
        without one it is decided here from the members' ``train`` and ``mechanism``."""
        check_shared(members)
        self.model_config, self.members = model_config, list(members)
        shared = self.members[0].train
        kinds = [m.objective.kind for m in self.members]
        self.runtime = runtime or runtimes.decide(
            shared, model_config, len(self.members), mechanism, kinds=kinds
        )
        # A caller's runtime was decided without the kinds: it must still fit them.
        runtimes.check_discriminated(kinds, self.mechanism, self.runtime.graphs, self.runtime.world.size)
        self.world, self.device = self.runtime.world, self.runtime.device
        if shared.batch_size % self.world.size:
            raise InvalidSetting(
                f"train.batch_size {shared.batch_size} must be divisible by the {self.world.size} "
                "DDP processes: change train.batch_size or the number of processes"
            )
        self.local_batch = shared.batch_size // self.world.size
        runtimes.start(self.runtime)
        memory_format = self.runtime.memory_format
        self.models: list[BetaVAE] = []
        self.discriminators: list[Discriminator | None] = []
        for member in self.members:
            torch.manual_seed(member.train.seed)  # the initial weights
            self.models.append(BetaVAE(model_config).to(self.device, memory_format=memory_format))
            self.discriminators.append(self._discriminator(member.objective))
        self.networks: list[torch.nn.Module] = list(self.models)  # what a step calls
        if self.world.distributed:  # DDP synchronises gradients in backward
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.networks = [DistributedDataParallel(self.models[0], device_ids=ids)]
        # bmm keeps the weights stacked (bvae.stacked): Adam updates the stacks, not the modules.
        self.weights = (
            StackedWeights(self.models, [m.train.learning_rate for m in self.members])
            if self.mechanism in runtimes.STACKED_WEIGHTS
            else None
        )
        groups = self.weights.parameter_groups() if self.weights else self._parameter_groups()
        self.optimizer = adam(groups, shared, self.runtime.graphs, self.runtime.fused_adam)
        self.names = [name for name, _ in self.models[0].named_parameters()]
        # The architecture a stacked mechanism calls with each member's weights (none of its own).
        self.base = copy.deepcopy(self.models[0]).to("meta") if self.stacked else None
        data = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
        self.data = data.to(self.device)
        self.generators = [
            torch.Generator(device=self.device).manual_seed(stream_seed(m.train.seed, self.world.rank))
            for m in self.members
        ]
        try:
            self.objectives = MemberObjectives.of(
                [m.objective for m in self.members], self.device, self.local_batch, len(self.data)
            )
        except ValueError as error:  # a setting the objective cannot train with, e.g. MSS at batch 1
            raise InvalidSetting(
                f"{error}; raise train.batch_size or choose objective.tc_estimator: mws"
            ) from None
        self.step = 0
        self.last_checkpoint_step = 0
        self.histories: list[list[dict[str, float]]] = [[] for _ in self.members]
        self.forward_loss = self._forward_loss
        if self.runtime.compile:
            self.forward_loss = torch.compile(self._forward_loss)
        self.train_step = self._new_train_step()

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def mechanism(self) -> str:
        return self.runtime.mechanism

    @property
    def stacked(self) -> bool:
        """Whether a step runs on the members' stacked weights (not on their modules)."""
        return self.mechanism in runtimes.STACKED

    @property
    def discriminated(self) -> list[tuple[int, Discriminator]]:
        """The FactorVAE members, ``(index, discriminator)`` in member order."""
        return [(k, d) for k, d in enumerate(self.discriminators) if d is not None]

    def _discriminator(self, objective: ObjectiveConfig) -> Discriminator | None:
        """A FactorVAE member's discriminator (built after its VAE, from the seed's RNG)."""
        if objective.kind != "factor":
            return None
        low, high = FACTOR_GAMMA_RANGE
        if not low <= objective.gamma <= high:
            log.warning(
                "objective.gamma is %g for FactorVAE; disentanglement_lib's study used %g to %g "
                "(params.yaml's 1000 is the capacity objective's): set objective.gamma unless meant",
                objective.gamma,
                low,
                high,
            )
        built = Discriminator(
            self.model_config.latent_dim, objective.discriminator_units, objective.discriminator_layers
        )
        return built.to(self.device)

    def _parameter_groups(self) -> list[dict]:
        """One group per learning rate: each member's update is its single run's, and a grid of
        one rate is one multi-tensor update (a GPU does not launch K optimizers' kernels).
        FactorVAE's discriminators follow, a group per rate with their own betas."""
        rates = [member.train.learning_rate for member in self.members]
        groups = [
            {"params": [p for k in members for p in self.models[k].parameters()], "lr": rate}
            for rate, members in rate_groups(rates)
        ]
        rated = [(self.members[k].objective.discriminator_learning_rate, d) for k, d in self.discriminated]
        for rate, positions in rate_groups([rate for rate, _ in rated]):
            params = [p for i in positions for p in rated[i][1].parameters()]
            groups.append({"params": params, "lr": rate, "betas": DISCRIMINATOR_BETAS})
        return groups

    # -- one step ---------------------------------------------------------------------------
    def stacked_parameters(self) -> dict[str, torch.Tensor]:
        """``{name: (K, *shape)}``: a differentiable stack of every member's own weights."""
        if self.weights is not None:
            return self.weights.forward_params()
        per_member = [dict(model.named_parameters()) for model in self.models]
        return {name: torch.stack([params[name] for params in per_member]) for name in self.names}

    def _member_forward(self, params, batch, noise):
        return functional_call(self.base, params, (batch, noise))

    def _discriminator_logits(self, mean, logvar, noises, permutations):
        """The FactorVAE members' three logits ``(F, B, 2)`` (:func:`bvae.objectives.factor_terms`):
        the sampled codes through a frozen copy of D's weights (the VAE's TC gradient), the
        detached codes and their shuffle (``permutations`` ``(F, B, latent_dim)``) through D (its own)."""
        codes = mean + torch.exp(0.5 * logvar) * noises
        parts = []
        for (k, discriminator), permutation in zip(self.discriminated, permutations, strict=True):
            frozen = {name: p.detach() for name, p in discriminator.named_parameters()}
            tc_logits = functional_call(discriminator, frozen, (codes[k],))
            detached = codes[k].detach()
            both = discriminator(torch.cat([detached, shuffle_codes(detached, permutation)]))
            parts.append(torch.stack([tc_logits, *both.chunk(2)]))
        return tuple(torch.stack(parts).unbind(1))

    def _forward_loss(self, params, batches, noises, capacities, permutations=None):
        autocast = (
            # No cast cache under a graph: the casts are replayed with the step.
            torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=not self.runtime.graphs)
            if self.runtime.bf16
            else contextlib.nullcontext()
        )
        with autocast:
            if params is None:  # single, loop: each member's own module, a single run's kernels
                memory_format = self.runtime.memory_format
                outputs = [
                    network(batch.contiguous(memory_format=memory_format), noise)
                    for network, batch, noise in zip(self.networks, batches, noises, strict=True)
                ]
                mean, logvar, logits = (torch.stack(parts) for parts in zip(*outputs, strict=True))
            elif self.mechanism == "bmm":
                mean, logvar, logits = batched.forward(self.base, params, batches, noises)
            else:
                mean, logvar, logits = vmap(self._member_forward)(params, batches, noises)
        mean, logvar = mean.float(), logvar.float()
        discriminator_logits = (
            self._discriminator_logits(mean, logvar, noises, permutations)
            if permutations is not None
            else None
        )
        return objective_terms(
            self.model_config.likelihood,
            logits.float(),
            batches,
            mean,
            logvar,
            self.objectives,
            capacities,
            noises,
            discriminator_logits,
        )

    def capacities(self) -> list[float]:
        """Each member's capacity C at the current step (0 for the β objective)."""
        return [capacity_for(m.objective, self.step) for m in self.members]

    def _capacity_tensor(self) -> torch.Tensor:
        """The members' C, the one way a step gets it: a tensor input, so a compiled or graphed
        step neither recompiles nor is recaptured as C grows. On CUDA pinned and non-blocking:
        a plain host-to-device copy would sync the stream each step."""
        values = torch.tensor(self.capacities(), dtype=torch.float32)
        if self.device.type != "cuda":
            return values.to(self.device)
        return values.pin_memory().to(self.device, non_blocking=True)

    def draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Every member's next batch ``(K, B, 1, 64, 64)``, noise ``(K, B, latent_dim)`` and,
        with FactorVAE members, the shuffles of their codes ``(F, B, latent_dim)`` (a permutation
        of the batch per latent, for the F FactorVAE members); each from its member's stream
        (indices, noise, shuffle); ``B`` is this rank's share."""
        size, latent_dim = self.local_batch, self.model_config.latent_dim
        indices, noises, shuffles = [], [], []
        for generator, discriminator in zip(self.generators, self.discriminators, strict=True):
            indices.append(torch.randint(0, len(self.data), (size,), device=self.device, generator=generator))
            noises.append(torch.randn((size, latent_dim), device=self.device, generator=generator))
            if discriminator is not None:
                scores = torch.rand((size, latent_dim), device=self.device, generator=generator)
                shuffles.append(scores.argsort(dim=0))
        batches = images_to_input(self.data.index_select(0, torch.cat(indices)))
        permutations = torch.stack(shuffles) if shuffles else None
        return batches.reshape(self.size, size, *batches.shape[1:]), torch.stack(noises), permutations

    def _step(
        self,
        batches: torch.Tensor,
        noises: torch.Tensor,
        capacities: torch.Tensor,
        permutations: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Forward, backward, update of every member: what a CUDA graph captures
        (``set_to_none`` lets the capture allocate the gradients the replays write)."""
        params = self.stacked_parameters() if self.stacked else None
        terms = self.forward_loss(params, batches, noises, capacities, permutations)
        self.optimizer.zero_grad(set_to_none=True)
        # No weight is shared: each member (and each discriminator) gets its own gradient.
        trained_loss(terms, self.objectives.columns).backward()
        self.optimizer.step()
        return terms.detach()

    def _new_train_step(self) -> Callable:
        if not self.runtime.graphs:
            return self._step
        parameters = self._trained_parameters()
        return GraphedStep(self._step, parameters, self.optimizer)

    def _trained_parameters(self) -> list[torch.Tensor]:
        """The tensors the optimizer updates: the modules' weights, or their stacks."""
        if self.weights is not None:
            return self.weights.parameters()
        networks = [*self.models, *(d for d in self.discriminators if d is not None)]
        return [p for network in networks for p in network.parameters()]

    def _write_back(self) -> None:
        """Make the member modules hold the trained weights (a no-op unless they are stacked)."""
        if self.weights is not None:
            self.weights.write_back(self.models)

    def run_step(self) -> torch.Tensor:
        """One step of every member; returns ``(K, 4 + latent_dim)``: ``TERM_COLUMNS``, KL per
        latent (under CUDA graphs a static tensor, overwritten by the next step)."""
        batches, noises, permutations = self.draw()
        shuffles = () if permutations is None else (permutations,)
        terms = self.train_step(batches, noises, self._capacity_tensor(), *shuffles)
        self.step += 1
        return terms

    # -- the loop ---------------------------------------------------------------------------
    def train(
        self,
        on_log: Callable[[Trainer], None] | None = None,
        on_checkpoint: Callable[[Trainer], None] | None = None,
        show_progress: bool = True,
    ) -> list[list[dict[str, float]]]:
        """Train every member from ``self.step`` to ``train.steps``; returns their curve rows."""
        config = self.members[0].train
        for model in [*self.models, *(d for d in self.discriminators if d is not None)]:
            model.train()
        columns = len(self.objectives.columns) + self.model_config.latent_dim
        window = torch.zeros(self.size, columns, device=self.device)
        window_steps, window_start = 0, time.perf_counter()
        description = "train" if self.size == 1 else f"train ×{self.size}"
        bar = progress(
            total=config.steps, initial=self.step, desc=description, unit="step", disable=not show_progress
        )
        with bar:
            while self.step < config.steps:
                window += self.run_step()  # on the device; one host sync per log
                window_steps += 1
                bar.update(1)
                if self.step % config.log_every == 0 or self.step == config.steps:
                    means = distributed.mean_(window / window_steps, self.world).tolist()
                    bad = [k for k, values in enumerate(means) if not all(map(math.isfinite, values))]
                    self._raise_if_diverged(bad, window_steps)
                    elapsed = time.perf_counter() - window_start
                    capacities = self.capacities()
                    for k, values in enumerate(means):
                        self.histories[k].append(
                            curve_row(
                                self.step,
                                values,
                                capacities[k],
                                window_steps / elapsed,
                                self.objectives.columns,
                                self.members[k].objective.kind,
                            )
                        )
                    bar.set_postfix(**self._postfix(window_steps / elapsed))
                    if on_log is not None:
                        on_log(self)
                    window.zero_()
                    window_steps, window_start = 0, time.perf_counter()
                if on_checkpoint is not None and (
                    self.step % config.checkpoint_every == 0 or self.step == config.steps
                ):
                    self._write_back()
                    # A checkpoint is only ever of finite weights: one host sync, this rarely.
                    self._raise_if_diverged(self._nonfinite_members(window), max(window_steps, 1))
                    on_checkpoint(self)
                    self.last_checkpoint_step = self.step
        self._write_back()
        return self.histories

    def _postfix(self, steps_per_second: float) -> dict[str, str]:
        if self.size > 1:
            return {"it_s": f"{steps_per_second:.1f}", "members": str(self.size)}
        row = self.histories[0][-1]
        return {
            "loss": f"{row['loss']:.1f}",
            "recon": f"{row['reconstruction']:.1f}",
            "kl": f"{row['kl']:.2f}",
            "it_s": f"{steps_per_second:.0f}",
        }

    def _nonfinite_members(self, window: torch.Tensor) -> list[int]:
        """Members with a NaN or infinite figure since the last log, or weight, on any rank."""
        weights = torch.stack(
            [
                torch.stack([torch.isfinite(p).all() for p in self._member_parameters(k)]).all()
                for k in range(self.size)
            ]
        )
        finite = (weights & torch.isfinite(window).all(dim=1)).float()
        finite = distributed.mean_(finite, self.world)
        return [k for k, share in enumerate(finite.tolist()) if share != 1.0]

    def _member_parameters(self, k: int) -> list[torch.Tensor]:
        """Member ``k``'s weights: its VAE's and its discriminator's."""
        discriminator = self.discriminators[k]
        extra = list(discriminator.parameters()) if discriminator is not None else []
        return [*self.models[k].parameters(), *extra]

    def _raise_if_diverged(self, bad: list[int], window_steps: int) -> None:
        """Name the members whose loss or weights are not finite; the last checkpoint is kept."""
        if not bad:
            return
        described = "; ".join(
            f"member {k} ({describe_member(self.members[k])})"
            if self.size > 1
            else f"({describe_member(self.members[k])})"
            for k in bad
        )
        checkpoint = (
            f"the last checkpoint (step {self.last_checkpoint_step}) holds finite weights and is kept"
            if self.last_checkpoint_step
            else "no checkpoint was written"
        )
        raise TrainingDiverged(
            f"training diverged for {described}: the loss or the weights became NaN or infinite "
            f"between steps {self.step - window_steps + 1} and {self.step}; {checkpoint}. Lower "
            "train.learning_rate (or objective.beta / objective.gamma)"
            + (" for that member, or take it out of the grid," if self.size > 1 else "")
            + " and run again."
        )

    # -- members and state ------------------------------------------------------------------
    def member_config(self, k: int) -> dict:
        """Member ``k``'s config as its model file holds it."""
        member = self.members[k]
        return {
            "model": self.model_config.to_dict(),
            "objective": asdict(member.objective),
            "train": asdict(member.train),
            "world_size": self.world.size,  # a resume must split batches the same way
        }

    def config_dicts(self) -> list[dict]:
        return [self.member_config(k) for k in range(self.size)]

    def state_dict(self) -> dict:
        """The resumable state: the optimizer, and every member's weights, RNG (every rank's)
        and curves. Under DDP a collective. :mod:`bvae.checkpoint` saves and checks it. The
        optimizer's state is in the layout of Adam over the modules, whatever the mechanism."""
        self._write_back()
        optimizer = self.optimizer.state_dict()
        members = []
        for k in range(self.size):
            member = {
                "model": self.models[k].state_dict(),
                "rng_per_rank": distributed.gather(self.generators[k].get_state().cpu(), self.world),
                "history": self.histories[k],
                "config": self.member_config(k),
            }
            if self.discriminators[k] is not None:  # training state: in no model file
                member["discriminator"] = self.discriminators[k].state_dict()
            members.append(member)
        return {
            "step": self.step,
            "optimizer": self.weights.to_members(optimizer) if self.weights else optimizer,
            "members": members,
        }

    def load_state_dict(self, state: dict) -> None:
        optimizer = state["optimizer"]
        self.optimizer.load_state_dict(self.weights.from_members(optimizer) if self.weights else optimizer)
        for k, member_state in enumerate(state["members"]):
            self.models[k].load_state_dict(member_state["model"])
            if self.discriminators[k] is not None:
                self.discriminators[k].load_state_dict(member_state["discriminator"])
            self.generators[k].set_state(member_state["rng_per_rank"][self.world.rank].cpu())
            self.histories[k] = list(member_state["history"])
        if self.weights is not None:
            self.weights.read_in(self.models)
        self.step = self.last_checkpoint_step = int(state["step"])
        self.train_step = self._new_train_step()  # a graph holds the replaced optimizer state
