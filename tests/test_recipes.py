"""The recipes' one home (recipes/*.yaml, bvae.recipes): each makes valid params, and the
``dvc exp run -S`` values `bvae recipe run` passes leave params.yaml exactly as the recipe says
(applied by DVC's own override code, as `dvc exp run` does)."""

from __future__ import annotations

import shlex
import shutil

import pytest
from dvc.utils.hydra import apply_overrides

from bvae.cli import main
from bvae.config import load_params
from bvae.errors import EXIT_BAD_INPUT
from bvae.recipes import load_recipe, recipe_names, recipe_params
from tests.helpers import REPO_ROOT

RECIPES = recipe_names(REPO_ROOT / "recipes")


def test_the_papers_recipes_are_there():
    assert {"higgins-beta4-conv", "higgins-beta4-mlp", "burgess-capacity", "annealed-grid"} <= set(RECIPES)
    burgess = recipe_params(load_recipe("burgess-capacity", REPO_ROOT / "recipes"), REPO_ROOT)
    assert (burgess.objective.kind, burgess.objective.gamma, burgess.objective.capacity_max_nats) == (
        "capacity",
        1000.0,
        25.0,
    )
    assert burgess.model.init == "kaiming" and burgess.train.learning_rate == 5e-4
    grid = recipe_params(load_recipe("annealed-grid", REPO_ROOT / "recipes"), REPO_ROOT).sweep.grid
    assert grid == {
        "objective.capacity_max_nats": (5.0, 10.0, 25.0, 50.0, 75.0, 100.0),
        "train.seed": (0, 1, 2, 3, 4),
    }


@pytest.mark.parametrize("name", RECIPES)
def test_dvc_sets_what_the_recipe_says(name, tmp_path):
    recipe = load_recipe(name, REPO_ROOT / "recipes")
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    command = recipe.command(["-S", "train.steps=2000"])
    overrides = [value for flag, value in zip(command, command[1:], strict=False) if flag == "-S"]
    assert [value.partition("=")[0] for value in overrides].count("train.steps") == 1  # the last word wins
    apply_overrides(tmp_path / "params.yaml", overrides)
    expected = recipe_params(recipe, REPO_ROOT, {"train.steps": 2000})
    assert load_params(tmp_path / "params.yaml") == expected
    assert command[:3] == ["dvc", "exp", "run"] and ("sweeps/dvc.yaml" in command) == (
        recipe.pipeline == "sweeps/dvc.yaml"
    )


def test_the_cli_shows_a_recipe_and_names_the_known_ones(monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    assert main(["recipe", "show", "burgess-capacity", "-S", "model.init=pytorch"]) == 0
    shown = shlex.split(capsys.readouterr().out)
    assert shown[:5] == ["dvc", "exp", "run", "-n", "burgess-capacity"]
    assert "model.init=pytorch" in shown and "model.init=kaiming" not in shown
    assert main(["recipe", "show", "burgess"]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "no recipe 'burgess'" in error and "burgess-capacity" in error and error.count("\n") == 1
