"""The ensemble trainer: each member is the model a single run trains, and resumes exactly.

``loop`` (the CPU default) runs each member's own module: bit-identical to its single run.
``vmap`` and ``bmm`` tolerance, measured on this CPU (conv, batch 8, Adam 1e-4, 200 steps): the
stacked forward sums in another order (a grouped convolution or an im2col product, a batched
matmul), so a member's weights differ from its single run by rounding after one step
(relative 1e-7) and, as training amplifies any perturbation, by relative ~4e-5 after 200
steps (PyTorch's init, 2026-12-02: vmap 7e-8 / 8e-6 / 5e-8 for the three members below, bmm
8e-8 / 8e-6 / 4e-5; after one step vmap ~2e-8, bmm 4e-8 to 2e-7). bmm's Adam over the stacked
weights adds nothing: its figures are the same with a per-member Adam. Scaling a single run's
initial weights by 1 + 1e-7 instead moves them as far. A member with another member's seed is ~1 away.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bvae.config import ModelConfig, ObjectiveConfig, TrainConfig
from bvae.data import factors, render
from bvae.errors import InvalidSetting
from bvae.training import Member, Trainer

STEPS = 200


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return render.render_images(factors.all_classes()[::360])  # 2,048 images over the grid


def train_config(seed: int, learning_rate: float, steps: int = STEPS, every: int = 50) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        batch_size=8,
        learning_rate=learning_rate,
        seed=seed,
        device="cpu",
        log_every=every,
        checkpoint_every=every,
        compile="off",
        bf16="off",
        channels_last="off",
    )


# Members differing in everything a member may: objective kind, β, γ and C, seed, learning rate.
MEMBERS = [
    Member(ObjectiveConfig(kind="beta", beta=4.0), train_config(0, 1e-4)),
    Member(ObjectiveConfig(kind="beta", beta=1.0), train_config(1, 5e-5)),
    Member(
        ObjectiveConfig(kind="capacity", gamma=100.0, capacity_max_nats=5.0, capacity_steps=100),
        train_config(2, 1e-4),
    ),
]
MODEL = ModelConfig(architecture="conv")


def relative_distance(state: dict, reference: dict) -> float:
    """The weights' mean relative distance, tensor by tensor."""
    return float(
        np.mean([((state[n] - reference[n]).norm() / reference[n].norm()).item() for n in reference])
    )


def test_loop_members_equal_single_runs_to_the_bit(images):
    """On a CPU (``auto``) each member runs a single run's kernels in one optimizer and one
    summed loss: nothing may differ (50 steps; any difference shows in the first)."""
    members = [
        Member(m.objective, train_config(m.train.seed, m.train.learning_rate, steps=50)) for m in MEMBERS
    ]
    single_runs = []
    for member in members:
        single_runs.append(Trainer(MODEL, [member], images))
        single_runs[-1].train(show_progress=False)
    ensemble = Trainer(MODEL, members, images, mechanism="loop")
    ensemble.train(show_progress=False)
    for k, single in enumerate(single_runs):
        for name, tensor in single.models[0].state_dict().items():
            assert torch.equal(ensemble.models[k].state_dict()[name], tensor), (k, name)
        untimed = [{**row, "steps_per_second": 0} for row in ensemble.histories[k]]
        assert untimed == [{**row, "steps_per_second": 0} for row in single.histories[0]]


@pytest.fixture(scope="module")
def pytorch_init_single_runs(images) -> list[Trainer]:
    """Each member trained alone for 200 steps, on PyTorch's init (see below)."""
    single_runs = []
    for member in MEMBERS:
        single_runs.append(Trainer(PYTORCH_INIT, [member], images))
        single_runs[-1].train(show_progress=False)
    return single_runs


PYTORCH_INIT = ModelConfig(architecture="conv", init="pytorch")


@pytest.mark.slow
@pytest.mark.parametrize("mechanism", ["vmap", "bmm"])
def test_stacked_members_match_single_runs_after_200_steps(images, pytorch_init_single_runs, mechanism):
    """The stacked mechanisms sum in another order: equal to the tolerance in the docstring.

    Measured on PyTorch's init. With Kaiming's zero biases many ReLUs start at their kink, so
    the first steps' rounding flips some of them and the 200-step distance grows to ~8e-2 (CI,
    2026-12-02): training's chaos, not the mechanism's error, which the one-step test bounds."""
    single_runs = pytorch_init_single_runs
    ensemble = Trainer(PYTORCH_INIT, MEMBERS, images, mechanism=mechanism)
    ensemble.train(show_progress=False)
    for k, single in enumerate(single_runs):
        distance = relative_distance(ensemble.models[k].state_dict(), single.models[0].state_dict())
        assert distance < 1e-3, f"member {k} is {distance:.2e} from its single run"
        for got, want in zip(ensemble.histories[k], single.histories[0], strict=True):
            assert got["step"] == want["step"] and got["capacity"] == want["capacity"]
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-3)
            assert got["kl"] == pytest.approx(want["kl"], rel=1e-2, abs=1e-3)
    # The tolerance tells members apart: member 0 is far from the single run of member 1.
    assert relative_distance(ensemble.models[0].state_dict(), single_runs[1].models[0].state_dict()) > 0.5


@pytest.mark.parametrize("mechanism", ["vmap", "bmm"])
def test_one_step_equals_a_single_runs_step_to_rounding(images, mechanism):
    members = [
        Member(m.objective, train_config(m.train.seed, m.train.learning_rate, steps=1)) for m in MEMBERS
    ]
    ensemble = Trainer(MODEL, members, images, mechanism=mechanism)
    ensemble.train(show_progress=False)
    for k, member in enumerate(members):
        single = Trainer(MODEL, [member], images)
        single.train(show_progress=False)
        assert relative_distance(ensemble.models[k].state_dict(), single.models[0].state_dict()) < 1e-6


@pytest.mark.parametrize("mechanism", ["loop", "vmap", "bmm"])
def test_a_resumed_ensemble_equals_an_uninterrupted_one_exactly(images, mechanism):
    members = [
        Member(m.objective, train_config(m.train.seed, m.train.learning_rate, steps=20, every=5))
        for m in MEMBERS
    ]
    uninterrupted = Trainer(MODEL, members, images, mechanism=mechanism)
    uninterrupted.train(show_progress=False)

    saved = {}
    first = Trainer(MODEL, members, images, mechanism=mechanism)
    # saved as the checkpoint file holds it: written at step 10, the tensors copied out
    first.train(
        on_checkpoint=lambda t: (
            saved.setdefault("state", _roundtrip(t.state_dict())) if t.step == 10 else None
        )
    )
    state = torch.load(saved["state"], weights_only=True)
    resumed = Trainer(MODEL, members, images, mechanism=mechanism)
    resumed.load_state_dict(state)
    assert resumed.step == 10
    resumed.train(show_progress=False)
    for k in range(len(members)):
        for name, tensor in uninterrupted.models[k].state_dict().items():
            assert torch.equal(resumed.models[k].state_dict()[name], tensor), (k, name)
        untimed = [{**row, "steps_per_second": 0} for row in resumed.histories[k]]
        assert untimed == [{**row, "steps_per_second": 0} for row in uninterrupted.histories[k]]


def _roundtrip(state: dict):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_members_that_change_shapes_or_the_loop_are_refused(images):
    other_batch = Member(
        ObjectiveConfig(), train_config(1, 1e-4).__class__(**{**MEMBERS[0].train.__dict__, "batch_size": 16})
    )
    with pytest.raises(InvalidSetting, match="train.batch_size = 16 but member 0 has 8.*Prefect sweep flow"):
        Trainer(MODEL, [MEMBERS[0], other_batch], images)


def test_a_diverging_member_is_named(images):
    calm = Member(ObjectiveConfig(kind="beta", beta=4.0), train_config(0, 1e-4, steps=10, every=5))
    wild = Member(ObjectiveConfig(kind="beta", beta=4.0), train_config(5, 0.9, steps=10, every=5))
    ensemble = Trainer(MODEL, [calm, wild], images)
    with torch.no_grad():
        next(ensemble.models[1].parameters()).fill_(float("nan"))
    with pytest.raises(Exception, match=r"diverged for member 1 \(beta=4, seed=5, lr=0.9\)"):
        ensemble.train(show_progress=False)


def test_a_checkpoint_is_the_same_whichever_mechanism_wrote_it(images):
    """bmm keeps the weights and Adam's moments stacked; its state converts to the per-member
    layout of ``loop`` and back exactly, so any mechanism resumes any checkpoint. The members
    (rates 1e-4, 5e-5, 1e-4) stack in two interleaved groups."""
    members = [
        Member(m.objective, train_config(m.train.seed, m.train.learning_rate, steps=3, every=3))
        for m in MEMBERS
    ]
    loop = Trainer(MODEL, members, images, mechanism="loop")
    loop.train(show_progress=False)
    written = torch.load(_roundtrip(loop.state_dict()), weights_only=True)
    stacked = Trainer(MODEL, members, images, mechanism="bmm")
    stacked.load_state_dict(written)
    again = stacked.state_dict()
    assert again["optimizer"]["param_groups"] == written["optimizer"]["param_groups"]
    assert written["optimizer"]["state"].keys() == again["optimizer"]["state"].keys()
    for index, moments in written["optimizer"]["state"].items():
        for key, value in moments.items():
            assert torch.equal(again["optimizer"]["state"][index][key], value), (index, key)
    for member, member_again in zip(written["members"], again["members"], strict=True):
        for name, tensor in member["model"].items():
            assert torch.equal(member_again["model"][name], tensor), name
