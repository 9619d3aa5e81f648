"""Whole-step CUDA graphs: forward, backward and Adam's update replayed as one launch.

A β-VAE step at batch 64 is a few hundred small kernels; launched one by one from Python the
GPU spends most of the step waiting for the CPU (BENCHMARKS.md, the profile of #17). Captured
once into a CUDA graph and replayed, the step costs one launch. What stays outside the graph
is the data draw (each run's own seeded generator, so a graphed run draws exactly the batches
and noise an eager one does) and the copy of the drawn values into the graph's static inputs.

Capturing needs a few warm-up steps on a side stream (the allocator and cuBLAS settle there).
Those steps would train the model, so :func:`restore_after` puts the weights and the optimizer
state back afterwards, in place: the graphed run starts from exactly the state it was given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

WARMUP_STEPS = 3


@contextmanager
def restore_after(parameters: Sequence[torch.Tensor], optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Undo whatever the body does to ``parameters`` and ``optimizer``'s state, in place.

    In place keeps every tensor's address, which a captured graph holds on to. State the
    optimizer creates inside the body (its first step) is zeroed: a fresh Adam state is all
    zeros (the moments and the step count), so zeros are the state it would start from.
    """
    saved_parameters = [parameter.detach().clone() for parameter in parameters]
    saved_state = {
        id(tensor): tensor.detach().clone()
        for state in optimizer.state.values()
        for tensor in state.values()
        if isinstance(tensor, torch.Tensor)
    }
    try:
        yield
    finally:
        with torch.no_grad():
            for parameter, saved in zip(parameters, saved_parameters, strict=True):
                parameter.copy_(saved)
            for state in optimizer.state.values():
                for tensor in state.values():
                    if not isinstance(tensor, torch.Tensor):
                        continue
                    saved = saved_state.get(id(tensor))
                    if saved is None:
                        tensor.zero_()
                    else:
                        tensor.copy_(saved)


class GraphedStep:
    """``step(*inputs)`` (forward, backward, optimizer step) captured once, then replayed.

    ``inputs`` are the tensors a step reads (batch, noise, capacity...); each call copies its
    arguments into static buffers of the same shapes and replays. The returned outputs are the
    graph's static tensors: read them before the next call overwrites them. Capture happens on
    the first call, so load a checkpoint before it (or build a new ``GraphedStep`` after).
    """

    def __init__(
        self,
        step: Callable[..., object],
        parameters: Sequence[torch.Tensor],
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = WARMUP_STEPS,
    ):
        if not all(group.get("capturable", False) for group in optimizer.param_groups):
            raise ValueError("a graphed step needs an optimizer built with capturable=True")
        self.step, self.parameters, self.optimizer = step, list(parameters), optimizer
        self.warmup_steps = warmup_steps
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: tuple[torch.Tensor, ...] = ()
        self.static_outputs: object = None

    def _capture(self, inputs: Sequence[torch.Tensor]) -> None:
        self.static_inputs = tuple(value.detach().clone() for value in inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with restore_after(self.parameters, self.optimizer):
            with torch.cuda.stream(side):
                for _ in range(self.warmup_steps):
                    self.step(*self.static_inputs)
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_outputs = self.step(*self.static_inputs)

    def __call__(self, *inputs: torch.Tensor) -> object:
        if self.graph is None:
            self._capture(inputs)
        for static, value in zip(self.static_inputs, inputs, strict=True):
            static.copy_(value)
        self.graph.replay()
        return self.static_outputs
