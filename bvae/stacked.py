"""The members' weights kept stacked: one ``(K, *shape)`` leaf per parameter, one Adam over them.

With per-member weights a stacked forward (``vmap``) stacks every weight each step (a copy of
all K models, and its backward), and Adam updates K × 16 small tensors. Kept stacked, a step
reads the leaves as they are and Adam's multi-tensor (or fused) update runs over 16 large
tensors. Adam is elementwise, so a stacked update is each member's own update.

Adam has one learning rate per parameter group, so the leaves are stacked per learning rate:
a grid of one rate (the paper's β × seed grid) is one stack, its leaves used as they are; a
grid that varies the rate concatenates its groups in member order each step.

The member modules (``Trainer.models``) stay the record every writer reads: :meth:`write_back`
copies the leaves into them, :meth:`read_in` the other way. The optimizer's state converts to
and from the per-member layout of ``torch.optim.Adam`` over the modules' parameters, so a
checkpoint is the same whichever mechanism wrote it, and any mechanism resumes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def rate_groups(rates: Sequence[float]) -> list[tuple[float, list[int]]]:
    """The members (indices, in order) of each learning rate, rates in first-seen order: Adam's
    parameter groups, for the stacked leaves and for Adam over the member modules alike."""
    return [(rate, [k for k, own in enumerate(rates) if own == rate]) for rate in dict.fromkeys(rates)]


class StackedWeights:
    """The leaves of K member modules, stacked per learning-rate group (members in order)."""

    def __init__(self, models: Sequence[nn.Module], rates: Sequence[float]):
        self.names = [name for name, _ in models[0].named_parameters()]
        # Member indices per group, in member order: the per-member Adam's parameter order.
        grouped = rate_groups(rates)
        self.rates = [rate for rate, _ in grouped]
        self.groups = [members for _, members in grouped]
        self.leaves = [
            {
                name: torch.stack(
                    [dict(models[k].named_parameters())[name].detach() for k in group]
                ).requires_grad_()
                for name in self.names
            }
            for group in self.groups
        ]
        rows = [k for group in self.groups for k in group]
        device = next(iter(self.leaves[0].values())).device
        self.member_rows = torch.tensor([rows.index(k) for k in range(len(rows))], device=device)

    def parameter_groups(self) -> list[dict]:
        """Adam's groups: one per learning rate, its leaves in name order."""
        return [
            {"params": list(leaves.values()), "lr": rate}
            for leaves, rate in zip(self.leaves, self.rates, strict=True)
        ]

    def parameters(self) -> list[torch.Tensor]:
        return [leaf for leaves in self.leaves for leaf in leaves.values()]

    def forward_params(self) -> dict[str, torch.Tensor]:
        """``{name: (K, *shape)}`` in member order, differentiable to the leaves."""
        if len(self.leaves) == 1:
            return self.leaves[0]
        return {
            name: torch.cat([leaves[name] for leaves in self.leaves]).index_select(0, self.member_rows)
            for name in self.names
        }

    @torch.no_grad()
    def write_back(self, models: Sequence[nn.Module]) -> None:
        """Copy the leaves into the member modules."""
        for stacked_row, parameter in self._rows_and_parameters(models):
            parameter.copy_(stacked_row)

    @torch.no_grad()
    def read_in(self, models: Sequence[nn.Module]) -> None:
        """Copy the member modules' weights into the leaves (after a checkpoint is loaded)."""
        for stacked_row, parameter in self._rows_and_parameters(models):
            stacked_row.copy_(parameter)

    def _rows_and_parameters(self, models: Sequence[nn.Module]):
        """Each member parameter beside its row of the stacked leaf."""
        for leaves, group in zip(self.leaves, self.groups, strict=True):
            for row, k in enumerate(group):
                for name, parameter in models[k].named_parameters():
                    yield leaves[name][row], parameter

    def _member_ids(self) -> list[list[list[int]]]:
        """``ids[g][row][n]``: the per-member Adam's index of member ``groups[g][row]``'s
        parameter ``n`` (groups in rate order, members in order, parameters in name order)."""
        ids, next_id = [], 0
        for group in self.groups:
            size = len(self.names)
            ids.append([[next_id + row * size + n for n in range(size)] for row in range(len(group))])
            next_id += len(group) * size
        return ids

    def to_members(self, stacked: dict) -> dict:
        """A stacked Adam's ``state_dict`` in the layout of Adam over the member modules."""
        ids, names = self._member_ids(), len(self.names)
        state, groups = {}, []
        for g, group_ids in enumerate(ids):
            for row, member_ids in enumerate(group_ids):
                for n, member_id in enumerate(member_ids):
                    leaf_state = stacked["state"].get(g * names + n)
                    if leaf_state is not None:
                        state[member_id] = {key: _row(value, row) for key, value in leaf_state.items()}
            groups.append({**stacked["param_groups"][g], "params": [i for ids_ in group_ids for i in ids_]})
        return {"state": state, "param_groups": groups}

    def from_members(self, members: dict) -> dict:
        """The per-member layout (:meth:`to_members`, or Adam over the modules) stacked back."""
        ids, names = self._member_ids(), len(self.names)
        state, groups = {}, []
        for g, group_ids in enumerate(ids):
            for n in range(names):
                per_row = [members["state"].get(member_ids[n]) for member_ids in group_ids]
                if all(value is None for value in per_row):
                    continue
                if any(value is None for value in per_row):
                    raise ValueError("an optimizer state holds some members' moments but not others'")
                state[g * names + n] = {key: _stack([value[key] for value in per_row]) for key in per_row[0]}
            groups.append({**members["param_groups"][g], "params": list(range(g * names, (g + 1) * names))})
        return {"state": state, "param_groups": groups}


def _row(value, row: int):
    """A leaf's state entry for one member: its row of a moment; the shared step count."""
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        return value[row].clone()
    return value.clone() if isinstance(value, torch.Tensor) else value


def _stack(values: list):
    if isinstance(values[0], torch.Tensor) and values[0].dim() > 0:
        return torch.stack(values)
    return values[0]  # the step count: the same for every member of one optimizer
