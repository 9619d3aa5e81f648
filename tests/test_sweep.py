"""The sweep pipeline through the real CLI: a 2×2 grid as one ensemble, through DVC.

One project: ``bvae sweep-train`` is killed with SIGKILL after a checkpoint, then
``dvc exp run sweeps/dvc.yaml`` resumes it and runs every stage. Then it checks what a user
sees: a parent and four child MLflow runs, a report per member, the comparison in
``dvc metrics show``, the best member promoted, and a no-op rerun.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from bvae.config import load_params
from bvae.sweep import sweep_members
from bvae.training import load_trusted
from tests.helpers import derived_project, kill_at_a_checkpoint, run

GRID = {"objective.beta": [1.0, 4.0], "train.seed": [0, 1]}
MEMBERS = ["beta1-seed0", "beta1-seed1", "beta4-seed0", "beta4-seed1"]


@pytest.fixture(scope="module")
def sweep_repo(template, tmp_path_factory):
    params = {
        "sweep.grid": GRID,
        "sweep.workers": 2,
        "train.steps": 60,
        "train.batch_size": 16,
        "train.checkpoint_every": 20,
    }
    return derived_project(template, tmp_path_factory.mktemp("sweep") / "repo", params)


def env_for(repo):
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlflow.db"}


@pytest.mark.slow
def test_killed_sweep_resumes_and_dvc_runs_the_grid_as_one_ensemble(sweep_repo, full_dataset):
    env = env_for(sweep_repo)
    checkpoint = sweep_repo / "sweeps/checkpoint.pt"
    killed_at = kill_at_a_checkpoint(
        ["python", "-m", "bvae", "sweep-train", "-q"], sweep_repo, env, checkpoint, 60
    )
    assert killed_at in (20, 40)

    result = run(["dvc", "exp", "run", "sweeps/dvc.yaml"], sweep_repo, env=env)
    resumed = f"resuming 4 members from sweeps/checkpoint.pt at step {killed_at}"
    assert resumed in result.stdout + result.stderr

    # Every member has the weights of an uninterrupted ensemble (to the bit: same operations).
    from bvae.ensemble import EnsembleTrainer, Member

    params = load_params(sweep_repo / "params.yaml")
    members = sweep_members(params)
    assert [m.name for m in members] == MEMBERS
    reference = EnsembleTrainer(
        params.model,
        [Member(m.params.objective, m.params.train) for m in members],
        full_dataset.images,
        params.sweep.mechanism,
    )
    reference.train(show_progress=False)
    for k, name in enumerate(MEMBERS):
        saved = load_trusted(sweep_repo / f"sweeps/train/{name}/model.pt")
        assert saved["config"]["objective"]["beta"] == members[k].params.objective.beta
        for key, tensor in reference.models[k].state_dict().items():
            assert torch.equal(saved["state_dict"][key], tensor), (name, key)

    # MLflow: one parent, four children, each with a single run's contents.
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
        assert child.data.params["objective.beta"] == str(float(name[4]))
        assert {"loss", "kl", "final_loss", "eval.heldout.kl_nats"} <= set(child.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"evaluation", "model_file", "report", "training", "traversals"} <= artifacts
        # every 10 steps, once each: the killed run's rows are not logged twice
        assert [m.step for m in client.get_metric_history(child.info.run_id, "loss")] == [
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
    }

    # Per member: metrics, traversals and a self-contained report; then the comparison.
    for name in MEMBERS:
        folder = sweep_repo / "sweeps/members" / name
        assert (folder / "traversals" / "traversal_square.png").exists()
        assert "<script" not in (folder / "report.html").read_text()
    comparison = json.loads((sweep_repo / "sweeps/comparison.json").read_text())
    assert sorted(comparison["members"]) == MEMBERS
    shown = run(["dvc", "metrics", "show", "--json"], sweep_repo).stdout
    assert "beta4-seed1" in shown and "model.mean.mig.discrete_mig" in shown

    # The best member went through the gate: it is the champion (the registry was empty).
    registered = json.loads((sweep_repo / "sweeps/registered.json").read_text())
    assert registered["best"] == comparison["best"] and registered["promoted"] is True
    champion = client.get_model_version_by_alias("bvae-dsprites", "champion")
    assert str(champion.version) == registered["versions"][comparison["best"]]
    assert champion.run_id == children[comparison["best"]].info.run_id
    assert len(registered["versions"]) == 4

    # Nothing changed: nothing reruns.
    again = run(["dvc", "exp", "run", "sweeps/dvc.yaml"], sweep_repo, env=env)
    assert "Running stage" not in again.stdout
