"""The pure parts of the flows: override grammar, validation, grid expansion, failure triage."""

from __future__ import annotations

import pytest

from bvae.config import ParamsError
from bvae.overrides import apply_overrides, hydra_value, override_args, validate_overrides
from bvae.sweep import expand_grid
from flows.experiments import _failure
from tests.helpers import REPO_ROOT


def test_overrides_use_dvcs_set_grammar():
    assert hydra_value(4) == "4" and hydra_value(0.0005) == "0.0005" and hydra_value(True) == "true"
    assert hydra_value("model.mean.mig.discrete_mig") == "'model.mean.mig.discrete_mig'"
    assert hydra_value("it's") == "'it\\'s'"
    # a plain word stays as typed, unless Hydra or YAML would read it as something else
    assert hydra_value(["mean", "sampled"]) == "[mean,sampled]"
    assert hydra_value("on") == "'on'" and hydra_value("null") == "'null'" and hydra_value("5e") == "'5e'"
    assert override_args({"objective.beta": 8, "evaluate.metrics": ["mig"]}) == [
        "-S",
        "objective.beta=8",
        "-S",
        "evaluate.metrics=[mig]",
    ]


def test_overrides_apply_to_dotted_keys_without_touching_the_original():
    original = {"objective": {"beta": 4.0}, "train": {"steps": 10}}
    merged = apply_overrides(original, {"objective.beta": 8, "train.seed": 3})
    assert merged == {"objective": {"beta": 8}, "train": {"steps": 10, "seed": 3}}
    assert original["objective"]["beta"] == 4.0
    with pytest.raises(ParamsError, match="train.steps is a value"):
        apply_overrides(original, {"train.steps.x": 1})


def test_bad_overrides_are_named_with_a_fix():
    params = validate_overrides(REPO_ROOT, {"objective.beta": 8, "registry.promote": False})
    assert params.objective.beta == 8 and params.registry.promote is False
    with pytest.raises(ParamsError, match="did you mean 'beta'"):
        validate_overrides(REPO_ROOT, {"objective.bta": 8})
    with pytest.raises(ParamsError, match="train.steps"):
        validate_overrides(REPO_ROOT, {"train.steps": -1})
    with pytest.raises(ParamsError, match="not found"):
        validate_overrides(REPO_ROOT / "nowhere", {})


def test_grid_expands_to_the_cartesian_product_in_key_order():
    points = expand_grid({"objective.beta": [1, 4], "train.seed": [0, 1, 2]})
    assert len(points) == 6 and points[0] == {"objective.beta": 1, "train.seed": 0}
    assert points[-1] == {"objective.beta": 4, "train.seed": 2}
    for bad in ({}, {"objective.beta": []}, {"objective.beta": "4"}):
        with pytest.raises(ParamsError):
            expand_grid(bad)


def test_a_stage_that_rejects_its_input_is_permanent_others_are_retried():
    tail = [
        "bvae register: error: no such metric",
        "ERROR: failed to reproduce 'register': failed to run: bvae register, exited with 2",
    ]
    failure = _failure("e", 255, tail)
    assert failure.permanent and failure.stage == "register" and failure.exit_code == 2
    assert "no such metric" in str(failure)
    transient = _failure(
        "e", 255, ["ERROR: failed to reproduce 'train': failed to run: bvae train, exited with 75"]
    )
    assert not transient.permanent and transient.stage == "train"
    bug = _failure("e", 255, ["ERROR: failed to reproduce 'evaluate': failed to run: x, exited with 1"])
    assert bug.permanent and "a bug in bvae" in str(bug)  # a traceback does not pass on a retry
    crashed = _failure("e", 1, ["Traceback ...", "RuntimeError: boom"])
    assert not crashed.permanent and crashed.stage is None


def test_the_sweeps_runner_is_checked_before_anything_runs(monkeypatch):
    import importlib.util

    from flows.runners import RunnerChoice, choose_runner

    assert choose_runner("threads") == RunnerChoice("threads", None)
    assert choose_runner("dask", "tcp://10.0.0.5:8786") == RunnerChoice("dask", "tcp://10.0.0.5:8786")
    assert choose_runner("dask").local and not choose_runner("dask", "tcp://10.0.0.5:8786").local
    with pytest.raises(ParamsError, match="task runner 'spark' is unknown: use one of threads, dask, ray"):
        choose_runner("spark")
    with pytest.raises(ParamsError, match="needs a cluster runner: pass runner='dask'"):
        choose_runner("threads", "tcp://10.0.0.5:8786")
    # A machine without the engine's package (as if prefect-ray were not installed):
    installed = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "prefect_ray" else installed(name)
    )
    with pytest.raises(ParamsError, match=r"needs the prefect-ray package: pip install .*\[ray\]"):
        choose_runner("ray")


def test_the_chosen_runner_is_prefects_own_task_runner():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.runners import choose_runner, task_runner

    threads = task_runner(choose_runner("threads"), 3)
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    local = task_runner(choose_runner("dask"), 2)
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs["n_workers"] == 2 and local.cluster_kwargs["threads_per_worker"] == 1
    remote = task_runner(choose_runner("dask", "tcp://10.0.0.5:8786"), 2)
    assert remote.address == "tcp://10.0.0.5:8786" and not remote.cluster_kwargs


def test_served_sweeps_take_the_runner_flags():
    from flows.serve import deployments

    _, on_demand = deployments("/srv/bvae", sweep_runner="dask", sweep_cluster="tcp://10.0.0.5:8786")
    assert on_demand.parameters["runner"] == "dask"
    assert on_demand.parameters["cluster"] == "tcp://10.0.0.5:8786"
    with pytest.raises(ParamsError, match="unknown"):
        deployments("/srv/bvae", sweep_runner="spark")


def test_a_retrain_that_changed_nothing_says_so_and_links_its_report():
    """A rerun on the same weights once reported "version 3 registered"."""
    from flows.report import retrain_markdown

    registration = {
        "name": "bvae-dsprites",
        "version": "3",
        "champion_version": "3",
        "created": False,
        "promoted": False,
        "mlflow_experiment_id": "1",
        "mlflow_run_id": "abcdef123456",
    }
    text = retrain_markdown("retrain-x", {}, registration, "model.mean.mig.discrete_mig", "http://ui")
    assert "nothing registered: the weights equal `bvae-dsprites` version 3's" in text
    assert "registered, " not in text
    report = "(http://ui/#/experiments/1/runs/abcdef123456/artifacts/report/report.html?workflowType=machine_learning)"
    assert report in text  # the Model training view, not MLflow 3.17's GenAI default
    fresh = retrain_markdown(
        "retrain-y", {}, {**registration, "created": True, "promoted": True, "version": "4"}, "x", "http://ui"
    )
    assert "`bvae-dsprites` version 4 registered, the new champion (champion is version 3)" in fresh


def test_dvc_output_is_read_a_stage_at_a_time():
    from flows.tasks import STAGE_RUNS, StageFailed, StageOutput

    printed = [
        "Stage 'download' didn't change, skipping",
        "Running stage 'train':",
        "> python -m bvae train",
        "train:  50% (10/20 step, 9.1 step/s)",
        "Updating lock file 'dvc.lock'",
        "Running stage 'evaluate':",
        "> python -m bvae evaluate",
        "ERROR: failed to reproduce 'evaluate': failed to run: python -m bvae evaluate, exited with 2",
    ]
    echoed: list[str] = []
    output = StageOutput(iter(printed), echoed.append)
    assert output.next_line() == printed[0] and STAGE_RUNS.match(output.next_line())
    output.rest_of_stage("train")  # up to the next stage's first line, which stays unread
    assert output.next_line() == "Running stage 'evaluate':"
    with pytest.raises(StageFailed, match="failed to reproduce 'evaluate'"):
        output.rest_of_stage("evaluate")
    assert echoed == printed  # every line echoed once


def test_a_sweep_grid_is_split_into_ensembles_by_what_members_cannot_vary():
    from flows.sweep import plan_groups

    grid = {"objective.beta": [1, 4, 16], "train.seed": [0, 1], "model.architecture": ["conv", "mlp"]}
    groups = plan_groups(grid, max_members=4)
    # architecture changes shapes: two groups of it; each 3×2 grid is cut to at most 4 members
    assert [(g.fixed, g.member_grid) for g in groups] == [
        ({"model.architecture": "conv"}, {"objective.beta": [1], "train.seed": [0, 1]}),
        ({"model.architecture": "conv"}, {"objective.beta": [4, 16], "train.seed": [0, 1]}),
        ({"model.architecture": "mlp"}, {"objective.beta": [1], "train.seed": [0, 1]}),
        ({"model.architecture": "mlp"}, {"objective.beta": [4, 16], "train.seed": [0, 1]}),
    ]
    planned = sorted(tuple(sorted(point.items())) for group in groups for point in group.points)
    assert planned == sorted(tuple(sorted(point.items())) for point in expand_grid(grid))  # each point once
    # nothing to share: one point per experiment, the single pipeline
    alone = plan_groups({"model.architecture": ["conv", "mlp"]}, max_members=32)
    assert [(g.fixed, g.member_grid) for g in alone] == [
        ({"model.architecture": "conv"}, None),
        ({"model.architecture": "mlp"}, None),
    ]
    assert [g.member_grid for g in plan_groups({"train.seed": [0, 1]}, max_members=1)] == [None, None]


def test_a_mapping_override_replaces_the_mapping_in_params():
    from bvae.overrides import override_args

    assert override_args({"sweep.grid": {"train.seed": [0, 1]}, "train.steps": 5}) == [
        "-S",
        "~sweep.grid",
        "-S",
        "+sweep.grid={train.seed:[0,1]}",
        "-S",
        "train.steps=5",
    ]
