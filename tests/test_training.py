"""Training: the loss falls, resumes are exact, and the CLI survives `kill -9`."""

from __future__ import annotations

import copy
import json
import os
import warnings

import numpy as np
import pytest
import torch

from bvae.checkpoint import read_checkpoint as load_trusted
from bvae.data import factors, render
from bvae.models import ModelConfig
from bvae.objectives import ObjectiveConfig
from bvae.training import Member, TrainConfig, Trainer, TrainingDiverged
from tests.helpers import REPO_ROOT, copy_repository, kill_at_a_checkpoint, run, set_params


@pytest.fixture(scope="module")
def small_images():
    rng = np.random.default_rng(0)
    return render.render_images(factors.classes_from_index(rng.integers(0, factors.NUM_IMAGES, 4096)))


def test_a_tiny_run_learns(small_images):
    trainer = Trainer(
        ModelConfig(), [Member(ObjectiveConfig(beta=1.0), TrainConfig(steps=100, log_every=25))], small_images
    )
    (history,) = trainer.train(show_progress=False)
    assert [row["step"] for row in history] == [25, 50, 75, 100]
    assert history[-1]["loss"] < 0.3 * history[0]["loss"]
    assert {f"kl_z{k}" for k in range(10)} <= set(history[-1])


@pytest.mark.parametrize("architecture", ["conv", "mlp"])
def test_resume_equals_uninterrupted(small_images, architecture):
    model = ModelConfig(architecture=architecture)
    objective = ObjectiveConfig(kind="capacity", capacity_max_nats=5.0, capacity_steps=20, gamma=10.0)
    straight = Trainer(model, [Member(objective, TrainConfig(steps=30, log_every=5))], small_images)
    straight.train(show_progress=False)

    first_half = Trainer(model, [Member(objective, TrainConfig(steps=15, log_every=5))], small_images)
    first_half.train(show_progress=False)
    saved = copy.deepcopy(first_half.state_dict())
    resumed = Trainer(model, [Member(objective, TrainConfig(steps=30, log_every=5))], small_images)
    resumed.load_state_dict(saved)
    resumed.train(show_progress=False)
    for name, tensor in straight.models[0].state_dict().items():
        assert torch.equal(tensor, resumed.models[0].state_dict()[name]), name
    assert [r["loss"] for r in straight.histories[0]] == [r["loss"] for r in resumed.histories[0]]
    assert straight.histories[0][-1]["capacity"] == 5.0


def test_divergence_stops_training_and_only_finite_weights_are_checkpointed(small_images):
    """Weights that turn NaN at step 12 (as after an exploding step): training stops at the
    next log with one clear message, and every checkpoint written holds finite weights."""
    trainer = Trainer(
        ModelConfig(),
        [Member(ObjectiveConfig(), TrainConfig(steps=40, log_every=5, checkpoint_every=5))],
        small_images,
    )
    step_once = trainer.run_step

    def step_then_explode():
        terms = step_once()
        if trainer.step == 12:
            with torch.no_grad():
                next(trainer.models[0].parameters()).fill_(float("nan"))
        return terms

    trainer.run_step = step_then_explode
    saved = []
    with pytest.raises(TrainingDiverged, match=r"between steps 11 and 15; the last checkpoint \(step 10\)"):
        trainer.train(
            on_checkpoint=lambda t: saved.append(copy.deepcopy(t.state_dict())), show_progress=False
        )
    assert [state["step"] for state in saved] == [5, 10]
    assert all(torch.isfinite(w).all() for state in saved for w in state["members"][0]["model"].values())
    assert [row["step"] for row in trainer.histories[0]] == [5, 10]  # no NaN row reaches the curves


def test_a_loss_that_overflows_float32_stops_at_the_first_log(small_images):
    objective = ObjectiveConfig(kind="capacity", gamma=1e300)  # finite in params, inf in float32
    trainer = Trainer(ModelConfig(), [Member(objective, TrainConfig(steps=20, log_every=5))], small_images)
    with pytest.raises(TrainingDiverged, match="between steps 1 and 5; no checkpoint was written"):
        trainer.train(show_progress=False)


@pytest.fixture(scope="module")
def train_repo(tmp_path_factory, small_shards):
    """A copy of the repository wired to the small shards and a private MLflow store."""
    repo = copy_repository(tmp_path_factory.mktemp("train") / "repo")
    (repo / "data").mkdir(exist_ok=True)
    (repo / "data" / "shards").symlink_to(small_shards)
    set_params(
        repo,
        {
            "train.steps": 80,
            "train.batch_size": 16,  # what is tested does not depend on it; a quarter of the work
            "train.checkpoint_every": 20,
            "train.log_every": 10,
            "tracking.experiment": "test",
        },
    )
    return repo


def train_env(repo):
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'tracking.db'}"}


def weights(path):
    return load_trusted(path)["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(train_repo):
    """One uninterrupted ``bvae train``: the kill test's reference and the MLflow test's run."""
    run(["bvae", "train", "-q", "--fresh"], train_repo, env=train_env(train_repo))
    return {
        "state": load_trusted(train_repo / "models/model.pt"),
        "run_file": json.loads((train_repo / "models/mlflow_run.json").read_text()),
        "summary": json.loads((train_repo / "reports/train/summary.json").read_text()),
        "manifest": json.loads((train_repo / "data/shards/manifest.json").read_text()),
        "head": run(["git", "rev-parse", "HEAD"], train_repo).stdout.strip(),
    }


def test_the_manifest_is_a_local_dataset_source_without_mlflow_warnings(tmp_path):
    """MLflow registers its local source twice, so resolving the manifest's ``file://`` URI
    printed "can be interpreted in multiple ways" in every training run's log."""
    from bvae.tracking.lineage import manifest_source

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        source = manifest_source(tmp_path / "shards" / "manifest.json")
    assert source._get_source_type() == "local"
    assert source.to_dict() == {"uri": (tmp_path / "shards" / "manifest.json").as_uri()}


@pytest.mark.slow
def test_mlflow_run_contents(uninterrupted, train_repo):
    """Params, step metrics, dataset input, lineage tags and a loadable model."""
    import mlflow
    from mlflow import MlflowClient

    run_file = uninterrupted["run_file"]
    uri = train_env(train_repo)["MLFLOW_TRACKING_URI"]
    client = MlflowClient(uri)
    logged = client.get_run(run_file["run_id"])
    params = logged.data.params
    assert params["train.steps"] == "80" and params["model.architecture"] == "conv"
    assert params["objective.beta"] == "4.0" and params["data.source"] == "auto"
    # MLflow sections charts by the name's prefix, alphabetically: the curves (curves/) first,
    # the end of training in summary/ (each once, at step 0, not a one-point series); a β run
    # has no flat capacity line.
    names = set(logged.data.metrics)
    assert {name.partition("/")[0] for name in names} == {"curves", "summary"}
    assert "curves/capacity" not in names and "summary/capacity" not in names
    history = client.get_metric_history(run_file["run_id"], "curves/loss")
    assert [m.step for m in history] == list(range(10, 81, 10))
    assert client.get_metric_history(run_file["run_id"], "curves/kl/z9")
    # The final figures are the ones written to reports/train/summary.json.
    summary = uninterrupted["summary"]
    assert logged.data.metrics["summary/active_latents"] == summary["active_latents"]
    assert logged.data.metrics["summary/loss"] == pytest.approx(summary["loss"])
    assert [m.step for m in client.get_metric_history(run_file["run_id"], "summary/loss")] == [0]
    assert summary["active_latents"] == sum(kl > 0.1 for kl in summary["kl_per_latent"])
    # A healthy run: the init is recorded, and the detector's verdict is in the summary and a tag.
    assert params["model.init"] == "kaiming"
    assert summary["collapsed"] is False and summary["collapse_first_step"] is None
    assert logged.data.tags["collapsed"] == "false"
    assert client.get_metric_history(run_file["run_id"], "curves/largest_mean_sd")
    manifest = uninterrupted["manifest"]
    (dataset_input,) = logged.inputs.dataset_inputs
    assert dataset_input.dataset.digest == manifest["digest"][:32]
    assert dataset_input.dataset.name == "dsprites-procedural"
    assert dataset_input.dataset.source_type == "local" and "manifest.json" in dataset_input.dataset.source
    assert logged.data.tags["git_commit"] == uninterrupted["head"]
    # The kernels the weights came from: the same seed is the same weights only on these.
    tags = logged.data.tags
    assert tags["train_device"] == "cpu" and tags["torch_version"] == torch.__version__
    assert tags["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    # No DVC experiment name (bvae train run by hand): the run is named by what it trained.
    assert logged.info.status == "FINISHED" and logged.info.run_name == "beta4-seed0-conv"
    # MLflow 3's UI opens the experiment on its runs, not on an empty GenAI dashboard.
    experiment = client.get_experiment(logged.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    artifacts = {a.path for a in client.list_artifacts(run_file["run_id"], "training")}
    assert artifacts == {"training/curves.csv", "training/summary.json"}

    # The logged model is the served pyfunc: named outputs for any batch size, equal to the
    # trained network's, the reconstruction only when asked; it refuses non-binary pixels.
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(run_file["model_uri"])
    from bvae.models import BetaVAE

    state = uninterrupted["state"]
    model = BetaVAE(ModelConfig(**state["config"]["model"])).eval()
    model.load_state_dict(state["state_dict"])
    images = render.render_images(factors.all_classes()[::100000]).astype(np.float32)[:, None]
    with torch.no_grad():
        mean, logvar, logits = model(torch.from_numpy(images))
    encoded = served.predict(images)
    assert sorted(encoded) == ["latents_logvar", "latents_mean"]
    assert np.allclose(encoded["latents_mean"], mean.numpy(), atol=1e-5)
    assert np.allclose(encoded["latents_logvar"], logvar.numpy(), atol=1e-5)
    one = served.predict(images[:1], params={"reconstruction": True})  # batch 1 too
    assert np.allclose(one["latents_mean"], mean[:1].numpy(), atol=1e-5)
    assert np.allclose(one["reconstruction"], torch.sigmoid(logits[:1]).numpy(), atol=1e-5)
    with pytest.raises(mlflow.exceptions.MlflowException, match="pixels must be 0 or 1"):
        served.predict(images * 255)


@pytest.mark.slow
def test_kill_nine_then_rerun_resumes_to_identical_weights(uninterrupted, train_repo):
    env = train_env(train_repo)
    reference = uninterrupted["state"]["state_dict"]
    reference_run = uninterrupted["run_file"]["run_id"]

    (train_repo / "models/checkpoint.pt").unlink()
    killed_at = kill_at_a_checkpoint(
        ["bvae", "train", "-q"], train_repo, env, train_repo / "models/checkpoint.pt", 80
    )
    assert killed_at in (20, 40, 60)
    killed_run = json.loads((train_repo / "models/mlflow_run.json").read_text())["run_id"]

    resumed = run(["bvae", "train", "-q"], train_repo, env=env)
    assert f"resuming from models/checkpoint.pt at step {killed_at}" in resumed.stderr
    for name, tensor in weights(train_repo / "models/model.pt").items():
        assert torch.equal(tensor, reference[name]), name
    run_file = json.loads((train_repo / "models/mlflow_run.json").read_text())
    assert run_file["run_id"] == killed_run != reference_run  # the killed run was reopened

    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert client.get_run(killed_run).info.status == "FINISHED"


def test_a_train_that_cannot_write_fails_before_the_load_and_leaves_no_run(tmp_path, monkeypatch):
    """A blocked output folder: exit 2 in a second, before the data load and before any run."""
    from mlflow import MlflowClient

    from bvae.config import load_params
    from bvae.fileio import NotWritable
    from bvae.stages.run_files import RunFiles
    from bvae.stages.train import run_train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'runs.db'}")
    (tmp_path / "models").write_text("not a folder")
    files = RunFiles(model=tmp_path / "models/model.pt", run_file=tmp_path / "models/run.json")
    with pytest.raises(NotWritable, match="cannot write to"):
        # No shards there: the writable check comes first, or this would be a missing input.
        params = load_params(REPO_ROOT / "params.yaml")
        run_train(params, files, shards=tmp_path / "none", show_progress=False)
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs.db'}")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_a_failed_start_marks_its_run_failed_and_later_stages_refuse_the_stale_run_file(
    tmp_path, monkeypatch, small_shards
):
    """The run file cannot be written (a folder in its place): the run that was just created
    ends FAILED, not RUNNING. Then the run file of a failed train beside an older model file
    is refused by the stages that log into it."""
    from mlflow import MlflowClient

    from bvae import tracking
    from bvae.config import load_params
    from bvae.model_file import save_model_file
    from bvae.stages.run_files import RunFiles, StaleRunFile, trained_run
    from bvae.stages.train import run_train

    uri = f"sqlite:///{tmp_path / 'runs.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    files = RunFiles(
        model=tmp_path / "models/model.pt",
        run_file=tmp_path / "models/run.json",
        curves=tmp_path / "reports/curves.csv",
        summary=tmp_path / "reports/summary.json",
    )
    files.run_file.mkdir(parents=True)  # writable folder, unwritable file
    params = load_params(REPO_ROOT / "params.yaml")
    with pytest.raises(OSError):
        run_train(params, files, shards=small_shards, checkpoint=tmp_path / "ck.pt", show_progress=False)
    client = MlflowClient(uri)
    (failed,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert failed.info.status == "FAILED"

    files.run_file.rmdir()
    failed_run = tracking.RunHandle(failed.info.run_id, failed.info.experiment_id, uri)
    tracking.write_run_file(failed_run, files.run_file)
    save_model_file(
        files.model,
        config={"model": {}, "objective": {}},
        state_dict={},
        step=1,
        data_digest="d",
        mlflow_run_id="an-older-run",
    )
    with pytest.raises(StaleRunFile, match=r"trained in run an-older-run.*dvc repro train"):
        trained_run(files)
