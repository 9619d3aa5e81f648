"""CUDA graphs: what runs without a GPU. The warm-up before a capture leaves no trace on the
weights or Adam's state, and the settings fail early and clearly where no graph can run.
(Graph capture and replay themselves were checked on an H100: BENCHMARKS.md, issue #17.)"""

from __future__ import annotations

import pytest
import torch

from bvae.config import ModelConfig, TrainConfig
from bvae.cuda_graph import GraphedStep, restore_after
from bvae.errors import InvalidSetting
from bvae.runtime import decide, graphs_wanted
from bvae.training import adam


def model_and_adam(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Adam]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    inputs = torch.randn(8, 6, generator=torch.Generator().manual_seed(seed))
    optimizer.zero_grad(set_to_none=True)
    model(inputs).square().mean().backward()
    optimizer.step()


def snapshot(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_warm_up_steps_leave_a_fresh_run_exactly_as_it_was():
    """Adam's state is created by the warm-up and zeroed after it: the next steps equal those
    of an optimizer that never stepped, to the bit."""
    model, optimizer = model_and_adam()
    twin, twin_optimizer = model_and_adam()
    with restore_after(list(model.parameters()), optimizer):
        for seed in range(3):
            train_step(model, optimizer, seed=100 + seed)
    for restored, original in zip(snapshot(model), snapshot(twin), strict=True):
        assert torch.equal(restored, original)
    for seed in range(4):
        train_step(model, optimizer, seed)
        train_step(twin, twin_optimizer, seed)
    for trained, twin_trained in zip(snapshot(model), snapshot(twin), strict=True):
        assert torch.equal(trained, twin_trained)


def test_warm_up_steps_leave_a_resumed_run_exactly_as_it_was():
    """After a checkpoint's optimizer state is loaded, the warm-up's changes to the moments
    and the step count are undone in place (the tensors a graph captured stay the same)."""
    model, optimizer = model_and_adam()
    for seed in range(2):
        train_step(model, optimizer, seed)
    weights = snapshot(model)
    state = {id(t): t for s in optimizer.state.values() for t in s.values()}
    saved = {key: tensor.clone() for key, tensor in state.items()}
    with restore_after(list(model.parameters()), optimizer):
        for seed in range(3):
            train_step(model, optimizer, seed=50 + seed)
    assert all(torch.equal(a, b) for a, b in zip(snapshot(model), weights, strict=True))
    after = {id(t): t for s in optimizer.state.values() for t in s.values()}
    assert after.keys() == state.keys()  # the same tensors, not replacements
    assert all(torch.equal(after[key], saved[key]) for key in saved)


def test_graph_settings_fail_early_where_no_graph_can_run():
    cpu = torch.device("cpu")
    assert not graphs_wanted(TrainConfig(), cpu, distributed=False)  # auto: off without CUDA
    with pytest.raises(InvalidSetting, match="train.cuda_graphs is on but training runs on cpu"):
        graphs_wanted(TrainConfig(cuda_graphs="on"), cpu, distributed=False)
    _, plain = model_and_adam()
    with pytest.raises(ValueError, match="capturable=True"):
        GraphedStep(lambda: None, [], plain)


def test_fused_adam_follows_its_setting():
    model, _ = model_and_adam()
    assert not adam(model.parameters(), TrainConfig(), capturable=False).defaults["fused"]
    assert decide(TrainConfig(device="cpu", fused_adam="on"), ModelConfig()).fused_adam
    assert not decide(TrainConfig(device="cpu"), ModelConfig()).fused_adam  # auto: with graphs
    fused = adam(model.parameters(), TrainConfig(), capturable=False, fused=True)
    assert fused.defaults["fused"]
    train_step(model, fused, seed=0)  # torch's fused Adam also runs on a CPU
