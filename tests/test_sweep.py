"""The sweep pipeline through the real CLI: a study grid (two β-VAEs and a FactorVAE, three
members) as one ensemble, through DVC.

One project (``swept``): ``bvae sweep-train`` is killed with SIGKILL after a checkpoint, then
``dvc exp run sweeps/dvc.yaml`` resumes it and runs every stage. The tests check what a user
sees: the resumed weights, a parent and a child MLflow run per member, a report per member, the
baselines scored once for all, the comparison in ``dvc metrics show``, the best member
promoted, a no-op rerun, and the outputs through a DVC remote into a fresh clone.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from bvae.checkpoint import read_checkpoint as load_trusted
from bvae.config import load_params
from bvae.sweep import sweep_members
from tests.helpers import commit_all, derived_project, kill_at_a_checkpoint, run

pytestmark = pytest.mark.slow

# A list of grids (a study): two β-VAE members and one of another family, FactorVAE, whose
# discriminator and its Adam must survive the kill too (a small one: dlib's is 6 × 1000). What
# the tests prove holds for every member, and each member costs ~25 s of evaluate, traverse
# and report on a 2-core CI machine. tests/test_family.py trains the other kinds.
GRID = [
    {"objective.beta": [1.0, 4.0], "train.seed": [1]},
    {"objective.kind": ["factor"], "objective.gamma": [10.0], "train.seed": [1]},
]
FACTOR = "factor-gamma10-seed1"
MEMBERS = ["beta1-seed1", "beta4-seed1", FACTOR]


@pytest.fixture(scope="module")
def swept(template, tmp_path_factory):
    """The project after a killed ``sweep-train`` and ``dvc exp run sweeps/dvc.yaml``:
    (repo, env, the step it was killed at, the run's output)."""
    params = {
        "sweep.grid": GRID,
        "sweep.workers": 2,
        "train.steps": 60,
        "train.batch_size": 16,
        "train.checkpoint_every": 20,
        "objective.discriminator_units": 64,
        "objective.discriminator_layers": 2,
        "evaluate.baselines": ["ground_truth", "untrained"],
    }
    repo = derived_project(template, tmp_path_factory.mktemp("sweep") / "repo", params)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlflow.db"}
    killed_at = kill_at_a_checkpoint(
        ["python", "-m", "bvae", "sweep-train", "-q"], repo, env, repo / "sweeps/checkpoint.pt", 60
    )
    result = run(["dvc", "exp", "run", "sweeps/dvc.yaml"], repo, env=env)
    return repo, env, killed_at, result.stdout + result.stderr


def test_a_killed_sweep_resumes_every_member_to_the_uninterrupted_weights(swept, full_dataset):
    repo, _, killed_at, output = swept
    assert killed_at in (20, 40)
    assert f"resuming {len(MEMBERS)} members from sweeps/checkpoint.pt at step {killed_at}" in output

    # Every member has the weights of an uninterrupted ensemble (to the bit: same operations).
    from bvae.training import Member, Trainer

    params = load_params(repo / "params.yaml")
    members = sweep_members(params)
    assert [m.name for m in members] == MEMBERS
    reference = Trainer(
        params.model,
        [Member(m.params.objective, m.params.train) for m in members],
        full_dataset.images,
        mechanism=params.sweep.mechanism,
    )
    reference.train(show_progress=False)
    for k, name in enumerate(MEMBERS):
        saved = load_trusted(repo / f"sweeps/train/{name}/model.pt")
        assert saved["config"]["objective"]["beta"] == members[k].params.objective.beta
        for key, tensor in reference.models[k].state_dict().items():
            assert torch.equal(saved["state_dict"][key], tensor), (name, key)


def test_the_sweep_logs_a_parent_run_and_a_single_runs_contents_per_member(swept):
    repo, env, _, _ = swept
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("bvae-dsprites")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("bvae.kind") == "sweep"]
    parent_id = parent.info.run_id
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id}
    assert sorted(children) == MEMBERS
    for name, child in children.items():
        assert child.info.status == "FINISHED"
        if name.startswith("beta"):
            assert child.data.params["objective.beta"] == str(float(name[4]))
        else:  # FactorVAE logs its own terms
            assert child.data.params["objective.kind"] == "factor"
            terms = {"curves/discriminator_tc", "curves/discriminator_loss", "curves/discriminator_accuracy"}
            assert terms <= set(child.data.metrics)
        assert {"curves/loss", "curves/kl", "summary/loss", "eval/heldout.kl_nats"} <= set(child.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"evaluation", "model_file", "report", "training", "traversals"} <= artifacts
        # every 10 steps, once each: the killed run's rows are not logged twice
        assert [m.step for m in client.get_metric_history(child.info.run_id, "curves/loss")] == [
            10,
            20,
            30,
            40,
            50,
            60,
        ]
    assert parent.data.tags["bvae.best_member"] in MEMBERS
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")} >= {
        "sweep/comparison.json",
        "sweep/comparison.md",
        "sweep/comparison.png",
        "sweep/study.png",
    }

    # The best member went through the gate: it is the champion (the registry was empty).
    comparison = json.loads((repo / "sweeps/comparison.json").read_text())
    registered = json.loads((repo / "sweeps/registered.json").read_text())
    assert registered["best"] == comparison["best"] and registered["promoted"] is True
    champion = client.get_model_version_by_alias("bvae-dsprites", "champion")
    assert str(champion.version) == registered["versions"][comparison["best"]]
    assert champion.run_id == children[comparison["best"]].info.run_id
    assert len(registered["versions"]) == len(MEMBERS)


def test_every_member_has_a_report_and_the_comparison_lists_them(swept):
    repo, _, _, _ = swept
    for name in MEMBERS:
        folder = repo / "sweeps/members" / name
        assert (folder / "traversals" / "traversal_square.png").exists()
        assert "<script" not in (folder / "report.html").read_text()
    comparison = json.loads((repo / "sweeps/comparison.json").read_text())
    assert sorted(comparison["members"]) == MEMBERS
    # The study: each method at each strength, and the label-free ranking beside the supervised.
    assert comparison["members"][FACTOR]["method"] == "factor"
    assert comparison["members"][FACTOR]["strength"] == 10.0
    assert all(0 <= figures["udr.lasso"] <= 1 for figures in comparison["members"].values())
    assert set(comparison["udr_rank_correlation"]) == {"lasso", "spearman"}
    markdown = (repo / "sweeps/comparison.md").read_text()
    assert "## By method and strength" in markdown and "| factor | gamma | 10 | 1 |" in markdown
    assert "## Label-free ranking (UDR, Duan et al. 2020)" in markdown
    assert (repo / "sweeps/study.png").stat().st_size > 10_000
    shown = run(["dvc", "metrics", "show", "--json"], repo).stdout
    assert "beta4-seed1" in shown and "model.mean.mig.discrete_mig" in shown


def test_the_baselines_are_scored_once_and_are_a_single_evaluations(swept, tmp_path):
    """Each member's report carries the shared baselines, and they are the figures the single
    pipeline's ``evaluate`` computes for the same params."""
    from bvae.stages.evaluate import run_evaluate
    from bvae.stages.run_files import RunFiles

    repo, _, _, output = swept
    assert output.count("Running stage 'sweeps/dvc.yaml:sweep-baselines'") == 1
    shared = json.loads((repo / "sweeps/baselines.json").read_text())["baselines"]
    assert sorted(shared) == ["ground_truth", "untrained"]
    for name in MEMBERS:
        metrics = json.loads((repo / "sweeps/members" / name / "metrics.json").read_text())
        assert metrics["baselines"] == shared
        assert metrics["baselines_computed_by"] == "sweeps/baselines.json"
    params = load_params(repo / "params.yaml")
    files = RunFiles(metrics=tmp_path / "metrics.json")
    single = run_evaluate(params, files, shards=repo / "data/shards", score_model=False)
    assert single["baselines"] == shared


def test_an_unchanged_sweep_reruns_nothing(swept):
    repo, env, _, _ = swept
    again = run(["dvc", "exp", "run", "sweeps/dvc.yaml"], repo, env=env)
    assert "Running stage" not in again.stdout


def test_the_sweep_goes_through_a_remote_into_a_fresh_clone(swept, tmp_path):
    """``dvc push sweeps/dvc.yaml`` and, in a clone with a cache of its own, ``dvc pull
    sweeps/dvc.yaml``: every output of the sweep comes back as it was (the README's commands)."""
    repo, env, _, _ = swept
    run(["dvc", "remote", "add", "-d", "shelf", str(tmp_path / "remote")], repo)
    commit_all(repo, "the sweep's results and a remote")
    run(["dvc", "push", "sweeps/dvc.yaml"], repo, env=env)
    copy = tmp_path / "copy"
    run(["git", "clone", "-q", str(repo), str(copy)], tmp_path)  # no config.local: its own cache
    assert not (copy / "sweeps/train").exists()
    run(["dvc", "pull", "sweeps/dvc.yaml"], copy, env=env)
    outputs = [
        "sweeps/baselines.json",
        "sweeps/comparison.json",
        "sweeps/comparison.png",
        *(f"sweeps/train/{name}/model.pt" for name in MEMBERS),
        *(f"sweeps/members/{name}/report.html" for name in MEMBERS),
    ]
    for output in outputs:
        assert (copy / output).read_bytes() == (repo / output).read_bytes(), output
    shown = run(["dvc", "metrics", "show", "--json"], copy).stdout
    assert "beta4-seed1" in shown
