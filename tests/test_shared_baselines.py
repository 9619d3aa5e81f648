"""The shared baselines file (``sweeps/baselines.json``): a member takes its figures only if
they were computed for its own evaluation and model params and its own data."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bvae.config import ParamsError, load_params
from bvae.errors import MissingInput
from bvae.stages.shared_baselines import read_shared_baselines, write_shared_baselines
from tests.helpers import REPO_ROOT

FIGURES = {"ground_truth": {"mig": {"discrete_mig": 1.0}}}


def test_figures_computed_for_the_same_params_and_data_are_taken(tmp_path):
    params = load_params(REPO_ROOT / "params.yaml")
    path = tmp_path / "baselines.json"
    write_shared_baselines(path, FIGURES, {"baselines.ground_truth.mig": 0.5}, params, "d1")
    shared = read_shared_baselines(path)
    shared.check(params, "d1")
    assert shared.baselines == FIGURES and shared.seconds == {"baselines.ground_truth.mig": 0.5}


def test_figures_computed_for_other_params_or_data_are_refused_by_name(tmp_path):
    params = load_params(REPO_ROOT / "params.yaml")
    path = tmp_path / "baselines.json"
    write_shared_baselines(path, FIGURES, {}, params, "d1")
    other = params.model_copy(
        update={
            "evaluate": params.evaluate.model_copy(update={"seed": params.evaluate.seed + 1}),
            "model": dataclasses.replace(params.model, latent_dim=params.model.latent_dim + 1),
        }
    )
    with pytest.raises(
        ParamsError, match=r"dataset_digest, evaluate\.seed, model\.latent_dim\).*sweep-baselines"
    ):
        read_shared_baselines(path).check(other, "d2")


def test_a_missing_or_foreign_file_names_the_stage_that_makes_it(tmp_path):
    path = tmp_path / "baselines.json"
    with pytest.raises(MissingInput, match="sweep-baselines"):
        read_shared_baselines(path)
    path.write_text(json.dumps({"format": "something-else/9", "baselines": {}}))
    with pytest.raises(ParamsError, match="something-else/9.*bvae sweep-baselines"):
        read_shared_baselines(path)
