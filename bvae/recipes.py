"""The papers' recipes as data: ``recipes/NAME.yaml``, their one home.

A recipe is a named partial ``params.yaml`` (``params``) with the pipeline it runs
(``dvc.yaml``, or ``sweeps/dvc.yaml`` for a grid) and a one-line ``description``; its
comments cite the paper. It becomes ``dvc exp run -S`` overrides (bvae.overrides), applied
on top of ``params.yaml`` in two ways that agree:

- ``bvae recipe run NAME [-S key=value …]``: one DVC experiment (``dvc exp show`` lists it
  beside the others), the recipe's keys first, the command line's after them;
- :func:`recipe_params`: the validated :class:`bvae.config.Params`, for scripts that train
  without DVC (``benchmarks/gpu_recipes.py``, ``benchmarks/probe_capacity.py``).

A sweep grid replaces the committed one whole, never merges into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bvae.config import Params, ParamsError
from bvae.overrides import override_args, validate_overrides

RECIPES_DIR = Path("recipes")
PIPELINES = ("dvc.yaml", "sweeps/dvc.yaml")
_RECIPE_KEYS = ("description", "pipeline", "params")
# A value set whole: the grid's own keys are dotted params keys, not sections.
_SET_WHOLE = ("sweep.grid",)


class RecipeError(ParamsError):
    """A recipe that is missing or malformed."""


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    pipeline: str  # dvc.yaml or sweeps/dvc.yaml
    overrides: dict[str, Any]  # dotted params keys, as `dvc exp run -S` sets them
    path: Path

    def command(self, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
        """``dvc exp run [sweeps/dvc.yaml] -n NAME -S …``; ``extra`` (more ``-S`` overrides,
        ``-n``, ``--queue`` …) goes last, so its keys win over the recipe's."""
        command = ["dvc", "exp", "run"]
        if self.pipeline != "dvc.yaml":
            command.append(self.pipeline)
        if not {"-n", "--name"} & set(extra):
            command += ["-n", self.name]
        # DVC refuses a key set twice: the command line's value replaces the recipe's.
        given = {
            value.partition("=")[0].lstrip("~+")
            for flag, value in zip(extra, extra[1:], strict=False)
            if flag in ("-S", "--set-param")
        }
        own = {key: value for key, value in self.overrides.items() if key not in given}
        return [*command, *override_args(own), *extra]


def recipe_names(folder: Path = RECIPES_DIR) -> list[str]:
    return sorted(path.stem for path in folder.glob("*.yaml"))


def _flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in _SET_WHOLE:
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def load_recipe(name: str, folder: Path = RECIPES_DIR) -> Recipe:
    """Read and check ``recipes/NAME.yaml`` (its params are checked when applied)."""
    path = folder / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(recipe_names(folder)) or f"none: {folder}/ is empty or missing"
        raise RecipeError(f"no recipe {name!r} in {folder}/ (known: {known}); run from the repository root")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RecipeError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(data, dict) or sorted(data) != sorted(_RECIPE_KEYS):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise RecipeError(f"{path} must hold exactly {', '.join(_RECIPE_KEYS)} (found {found})")
    if data["pipeline"] not in PIPELINES:
        raise RecipeError(f"{path}: pipeline {data['pipeline']!r} is not one of {', '.join(PIPELINES)}")
    if not isinstance(data["params"], dict) or not data["params"]:
        raise RecipeError(f"{path}: params must be a mapping of params.yaml sections")
    return Recipe(name, str(data["description"]), data["pipeline"], _flatten(data["params"]), path)


def recipe_params(recipe: Recipe, project: Path = Path("."), extra: dict[str, Any] | None = None) -> Params:
    """The project's ``params.yaml`` with the recipe's keys (then ``extra``'s) set, validated."""
    return validate_overrides(project, {**recipe.overrides, **(extra or {})})
