"""FactorVAE (Kim & Mnih 2018): the discriminator's figures by hand, the density-ratio TC it
learns, the two networks' gradients kept apart, its own Adam, and a FactorVAE member in an
ensemble equal to its single run, resumed exactly, refused where it cannot train."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from bvae.config import ObjectiveConfig
from bvae.errors import InvalidSetting
from bvae.models import Discriminator
from bvae.objectives import MemberObjectives, factor_terms, objective_terms, shuffle_codes
from bvae.runtime import decide
from bvae.training import DISCRIMINATOR_BETAS, Member, Trainer
from tests.test_ensemble import MODEL, _roundtrip, train_config

# A discriminator small enough for CPU tests (dlib's is 6 × 1000).
SMALL = {"discriminator_units": 32, "discriminator_layers": 2}


def factor(gamma: float = 30.0, **settings) -> ObjectiveConfig:
    return ObjectiveConfig(kind="factor", gamma=gamma, **{**SMALL, **settings})


@pytest.fixture(scope="module")
def images():
    from bvae.data import factors, render

    return render.render_images(factors.all_classes()[::360])  # 2,048 images over the grid


def test_the_discriminators_figures_by_hand():
    """TC = E[logit₀ − logit₁]; the loss is ½ of each half's cross-entropy (ln 2 for a
    discriminator that knows nothing); the accuracy counts each half's right answers."""
    tc_logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])  # differences 2 and −1
    real = torch.tensor([[[3.0, 0.0], [0.0, 3.0]]])  # one right, one wrong
    shuffled = torch.tensor([[[0.0, 3.0], [0.0, 3.0]]])  # both right
    tc, loss, accuracy = factor_terms(tc_logits, real, shuffled)
    p = 1 / (1 + math.exp(-3.0))  # the softmax's mass on the confident column
    expected_loss = 0.5 * (-(math.log(p) + math.log(1 - p)) / 2 + -math.log(p))
    assert tc.item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-6)
    assert accuracy.item() == pytest.approx(0.75)
    blind = torch.zeros(1, 4, 2)
    assert factor_terms(blind, blind, blind)[1].item() == pytest.approx(math.log(2))


def test_shuffled_codes_keep_each_marginal_and_lose_the_pairing():
    generator = torch.Generator().manual_seed(0)
    codes = torch.randn(64, 3, generator=generator)
    permutations = torch.rand(64, 3, generator=generator).argsort(dim=0)
    shuffled = shuffle_codes(codes, permutations)
    for d in range(3):
        assert torch.equal(shuffled[:, d], codes[permutations[:, d], d])
        assert torch.equal(shuffled[:, d].sort().values, codes[:, d].sort().values)
    assert not torch.equal(shuffled, codes)


def _train_discriminator(codes: torch.Tensor, steps: int = 300) -> float:
    """Train a small D on ``codes`` against their shuffle; its TC estimate on fresh codes."""
    torch.manual_seed(0)
    discriminator = Discriminator(codes.shape[1], units=64, layers=2)
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-3, betas=DISCRIMINATOR_BETAS)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        batch = codes[torch.randint(0, len(codes), (128,), generator=generator)]
        permutations = torch.rand(batch.shape, generator=generator).argsort(dim=0)
        shuffled = shuffle_codes(batch, permutations)
        _, loss, _ = factor_terms(discriminator(batch), discriminator(batch), discriminator(shuffled))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return factor_terms(*(discriminator(codes),) * 3)[0].item()


def test_the_learned_tc_tells_dependent_codes_from_independent_ones():
    """The density-ratio trick: on codes whose two latents are one Gaussian copied (TC = ∞
    in theory, large here) the estimate is far above that on independent Gaussians (TC = 0)."""
    generator = torch.Generator().manual_seed(2)
    independent = torch.randn(4096, 2, generator=generator)
    dependent = torch.cat([independent[:, :1], independent[:, :1] + 0.05 * independent[:, 1:]], dim=1)
    assert _train_discriminator(dependent) > 1.5
    assert abs(_train_discriminator(independent)) < 0.3


def test_the_vae_loss_does_not_train_the_discriminator_nor_its_loss_the_encoder(images):
    trainer = Trainer(MODEL, [Member(factor(), train_config(0, 1e-4, steps=1))], images)
    batches, noises, permutations = trainer.draw()
    capacities = trainer._capacity_tensor()
    columns = trainer.objectives.columns
    vae = list(trainer.models[0].parameters())
    discriminator = list(trainer.discriminators[0].parameters())

    def untouched(parameters):  # no gradient, or autograd's zeros through the stacked columns
        return all(p.grad is None or not p.grad.any() for p in parameters)

    terms = trainer._forward_loss(None, batches, noises, capacities, permutations)
    terms[:, 0].sum().backward()
    assert untouched(discriminator)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vae[:2])
    trainer.optimizer.zero_grad(set_to_none=True)

    terms = trainer._forward_loss(None, batches, noises, capacities, permutations)
    terms[:, columns.index("discriminator_loss")].sum().backward()
    assert untouched(vae)
    assert all(p.grad is not None and p.grad.any() for p in discriminator)


def test_the_discriminator_has_its_own_adam_and_the_tc_term_has_its_weight(images):
    objective = factor(gamma=40.0, discriminator_learning_rate=2e-4)
    trainer = Trainer(MODEL, [Member(objective, train_config(0, 1e-4, steps=1))], images)
    vae_group, discriminator_group = trainer.optimizer.param_groups
    assert vae_group["lr"] == 1e-4 and vae_group["betas"] == (0.9, 0.999)
    assert discriminator_group["lr"] == 2e-4 and discriminator_group["betas"] == (0.5, 0.9)
    assert {id(p) for p in discriminator_group["params"]} == {
        id(p) for p in trainer.discriminators[0].parameters()
    }
    # the loss column is recon + KL + γ·TC
    batches, noises, permutations = trainer.draw()
    terms = trainer._forward_loss(None, batches, noises, trainer._capacity_tensor(), permutations)
    row = dict(zip(trainer.objectives.columns, terms[0].tolist(), strict=False))
    expected = row["reconstruction"] + row["kl"] + 40.0 * row["discriminator_tc"]
    assert row["loss"] == pytest.approx(expected, rel=1e-6)


def test_a_factor_member_beside_others_is_its_single_run_to_the_bit(images):
    """loop: each member's own kernels, each its own stream (the shuffle is drawn only by the
    FactorVAE member, after its noise), so both members equal their single runs, curves too,
    and the β member's curves carry no discriminator terms."""
    members = [
        Member(ObjectiveConfig(beta=4.0), train_config(0, 1e-4, steps=12, every=4)),
        Member(factor(), train_config(1, 1e-4, steps=12, every=4)),
    ]
    ensemble = Trainer(MODEL, members, images)
    assert ensemble.mechanism == "loop"
    ensemble.train(show_progress=False)
    for k, member in enumerate(members):
        single = Trainer(MODEL, [member], images)
        single.train(show_progress=False)
        got, want = ensemble.models[k].state_dict(), single.models[0].state_dict()
        assert all(torch.equal(got[name], want[name]) for name in want), member.objective.kind
        untimed = [{**row, "steps_per_second": 0} for row in ensemble.histories[k]]
        assert untimed == [{**row, "steps_per_second": 0} for row in single.histories[0]]
    assert "discriminator_tc" not in ensemble.histories[0][-1]
    last = ensemble.histories[1][-1]
    assert 0 <= last["discriminator_accuracy"] <= 1 and math.isfinite(last["discriminator_tc"])


def test_a_resumed_factor_run_equals_an_uninterrupted_one_exactly(images):
    """The checkpoint holds the discriminator and its Adam moments beside the VAE's."""
    member = Member(factor(), train_config(0, 1e-4, steps=10, every=5))
    uninterrupted = Trainer(MODEL, [member], images)
    uninterrupted.train(show_progress=False)
    saved = {}
    first = Trainer(MODEL, [member], images)
    first.train(
        on_checkpoint=lambda t: (
            saved.setdefault("state", _roundtrip(t.state_dict())) if t.step == 5 else None
        ),
        show_progress=False,
    )
    state = torch.load(saved["state"], weights_only=True)
    assert "discriminator" in state["members"][0]
    resumed = Trainer(MODEL, [member], images)
    resumed.load_state_dict(state)
    resumed.train(show_progress=False)
    for name, tensor in uninterrupted.discriminators[0].state_dict().items():
        assert torch.equal(resumed.discriminators[0].state_dict()[name], tensor), name
    for name, tensor in uninterrupted.models[0].state_dict().items():
        assert torch.equal(resumed.models[0].state_dict()[name], tensor), name


@pytest.mark.parametrize(
    ("mechanism", "train_change", "message"),
    [
        ("vmap", {}, "sweep.mechanism vmap stacks the VAEs' weights but not FactorVAE's"),
        ("bmm", {}, "sweep.mechanism bmm stacks"),
        ("auto", {"cuda_graphs": "on"}, "train.cuda_graphs is on but objective.kind factor trains eagerly"),
        ("auto", {"nproc": 2}, "objective.kind factor trains in one process.*set train.nproc to 1"),
    ],
)
def test_what_factor_cannot_train_with_is_refused_in_one_line(images, mechanism, train_change, message):
    train = dataclasses.replace(train_config(0, 1e-4, steps=1), **train_change)
    members = [Member(factor(), train), Member(ObjectiveConfig(), dataclasses.replace(train, seed=1))]
    if train_change.get("nproc"):
        members = members[:1]
    with pytest.raises(InvalidSetting, match=message):
        Trainer(MODEL, members, images, mechanism=mechanism)


def test_objective_terms_refuse_a_factor_member_without_logits():
    objectives = MemberObjectives.of([factor()])
    mean, logvar = torch.zeros(1, 4, 10), torch.zeros(1, 4, 10)
    logits, images = torch.zeros(1, 4, 1, 64, 64), torch.zeros(1, 4, 1, 64, 64)
    with pytest.raises(ValueError, match="needs its discriminator's logits"):
        objective_terms("bernoulli", logits, images, mean, logvar, objectives, torch.zeros(1))


def test_a_runtime_decided_without_the_kinds_is_refused_by_the_trainer(images):
    """A caller may decide the runtime itself (the stage does): the trainer checks it against
    its members' kinds with the same one-line refusals."""
    train = train_config(0, 1e-4, steps=1)
    members = [Member(factor(), train), Member(ObjectiveConfig(), dataclasses.replace(train, seed=1))]
    stacked = decide(train, MODEL, len(members), "vmap")  # no kinds: nothing refused here
    with pytest.raises(InvalidSetting, match="sweep.mechanism vmap stacks the VAEs' weights"):
        Trainer(MODEL, members, images, stacked)
