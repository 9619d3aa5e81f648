"""A sweep's members: the grid expanded, each point applied to the params, named and checked.

Pure: no files, no MLflow. The DVC sweep's stages (``bvae.stages.sweep_*``) and the Prefect flow
(``flows.sweep``) both expand grids here, so a member is the same point in both.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bvae.config import Params, ParamsError, params_from_mapping
from bvae.report_keys import headline_keys

# Short names in member names (``beta4-seed0``); other keys go by their last part.
SHORT_NAMES = {
    "objective.kind": "",
    "objective.capacity_max_nats": "C",
    "objective.capacity_steps": "Csteps",
    "objective.gaussian_std": "std",
    "objective.tc_estimator": "",
    "objective.lambda_od": "od",
    "objective.lambda_d": "d",
    "train.learning_rate": "lr",
}


@dataclass(frozen=True)
class SweepMember:
    name: str  # a folder, MLflow run and metrics key: letters, digits, - and p for the point
    point: dict[str, Any]  # the grid values that make this member
    params: Params  # the full params a single `bvae train` of this member would read


def expand_grid(
    grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]],
) -> list[dict[str, Any]]:
    """The Cartesian product of the grid's value lists, in the grid's key order; for a list of
    grids, each one's product in turn (a study: each method with its own strengths)."""
    if isinstance(grid, Sequence) and not isinstance(grid, str | bytes):
        if not grid or not all(isinstance(part, Mapping) for part in grid):
            raise ParamsError("a list of sweep grids needs one or more grids, each a mapping of lists")
        return [point for part in grid for point in expand_grid(part)]
    if not grid:
        raise ParamsError("the sweep grid is empty: give at least one key with a list of values")
    for key, values in grid.items():
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or len(values) == 0:
            raise ParamsError(f"sweep grid key {key!r} needs a non-empty list of values, got {values!r}")
    keys = list(grid)
    return [dict(zip(keys, combination, strict=True)) for combination in itertools.product(*grid.values())]


def apply_point(mapping: Mapping[str, Any], point: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a params mapping with dotted keys (``objective.beta``) set."""
    result = {
        section: dict(values) if isinstance(values, Mapping) else values
        for section, values in mapping.items()
    }
    for key, value in point.items():
        section, _, name = key.partition(".")
        result.setdefault(section, {})[name] = value
    return result


def _value_text(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text.replace(".", "p").replace("+", "")


def member_name(point: Mapping[str, Any]) -> str:
    """``{"objective.beta": 4.0, "train.seed": 0}`` → ``beta4-seed0``."""
    return "-".join(
        f"{SHORT_NAMES.get(key, key.rsplit('.', 1)[-1])}{_value_text(value)}" for key, value in point.items()
    )


def grid_keys(grid: Mapping | Sequence[Mapping]) -> list[str]:
    """The keys a grid (or a list of grids) varies, in order of first appearance."""
    parts = grid if isinstance(grid, Sequence) and not isinstance(grid, str | bytes) else [grid]
    return list(dict.fromkeys(key for part in parts for key in part))


def sweep_members(params: Params) -> list[SweepMember]:
    """Every member of ``params.sweep.grid``, each validated as a whole params file would be."""
    base = params.model_dump(mode="json")
    members, names = [], set()
    for point in expand_grid(params.sweep.grid):
        name = member_name(point)
        if name in names:
            raise ParamsError(f"sweep member {name} appears twice: two of sweep.grid's grids make it")
        names.add(name)
        member_params = params_from_mapping(apply_point(base, point), f"params.yaml with sweep member {name}")
        members.append(SweepMember(name, point, member_params))
    return members


def comparison_rows(
    points: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any]]],
    selection_metric: str,
    name_column: str = "member",
) -> list[dict[str, Any]]:
    """The one comparison of a sweep, for the sweep pipeline and the Prefect sweep alike: a row
    per ``(name, grid values, flat figures)`` point with the headline figures any point has,
    the selection metric first (``None`` where a point lacks one: it failed, or its evaluate
    config skips that metric). Each caller appends its own columns (runs, versions, status)."""
    keys = [
        key
        for key in headline_keys(selection_metric)
        if key == selection_metric or any(key in figures for _, _, figures in points)
    ]
    return [
        {name_column: name, **grid_values, **{key: figures.get(key) for key in keys}}
        for name, grid_values, figures in points
    ]


def finite_number(value: object) -> bool:
    """A figure that can be ranked: a finite int or float (not a bool, None or NaN)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def best_member(rows: Sequence[Mapping[str, Any]], selection_metric: str) -> Mapping[str, Any] | None:
    """The one best-member rule, for the sweep pipeline and the Prefect sweep alike: the row
    with the highest finite ``selection_metric`` (the registry's gate is "higher"); ``None``
    when no row has one (every point failed, or scored NaN). Ties go to the first row."""
    scored = [row for row in rows if finite_number(row.get(selection_metric))]
    return max(scored, key=lambda row: row[selection_metric], default=None)


def study_rows(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """A study's table: one row per (method, strength) of the members' rows (each with
    ``method``, ``strength`` and the figures ``keys``), the seeds summarised as median, min and
    max (``None`` where no seed has the figure). Methods in order of first appearance."""
    groups: dict[tuple[str, Any], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["strength"]), []).append(row)
    methods = list(dict.fromkeys(row["method"] for row in rows))
    table = []
    for (method, strength), members in sorted(
        groups.items(), key=lambda item: (methods.index(item[0][0]), item[0][1])
    ):
        entry: dict[str, Any] = {"method": method, "strength": strength, "seeds": len(members)}
        for key in keys:
            values = [float(r[key]) for r in members if finite_number(r.get(key))]
            entry[key] = (statistics.median(values), min(values), max(values)) if values else None
        table.append(entry)
    return table
