"""DDP under torchrun on CPU (gloo, 2 processes): one MLflow run, one checkpoint set, and the
same weights as one process taking the same global batch."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from bvae.checkpoint import read_checkpoint as load_trusted
from bvae.models import ModelConfig, images_to_input
from bvae.objectives import ObjectiveConfig
from bvae.training import Member, TrainConfig, Trainer, stream_seed
from tests.helpers import run

STEPS, GLOBAL_BATCH, RANKS = 4, 16, 2


class GlobalBatchTrainer(Trainer):
    """One process drawing what the ranks draw together: rank r's stream gives rows r·B/R…"""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        seed = self.members[0].train.seed
        self.streams = [torch.Generator().manual_seed(stream_seed(seed, rank)) for rank in range(RANKS)]

    def draw(self):
        size, draws = self.members[0].train.batch_size // RANKS, []
        for stream in self.streams:
            index = torch.randint(0, len(self.data), (size,), generator=stream)
            noise = torch.randn((size, self.model_config.latent_dim), generator=stream)
            draws.append((index, noise))
        batch = images_to_input(self.data.index_select(0, torch.cat([d[0] for d in draws])))
        # (batches, noises, shuffles): a β run draws no FactorVAE shuffle
        return batch.unsqueeze(0), torch.cat([d[1] for d in draws]).unsqueeze(0), None


def write_project(folder: Path, shards: Path, train: dict) -> dict[str, str]:
    (folder / "data").mkdir(parents=True)
    (folder / "data/shards").symlink_to(shards)
    params = {
        "train": {
            "steps": STEPS,
            "batch_size": GLOBAL_BATCH,
            "log_every": 2,
            "checkpoint_every": 2,
            "device": "cpu",
            "threads": 1,
            **train,
        },
        "tracking": {"experiment": "ddp-test"},
    }
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    return env


@pytest.mark.slow
def test_ddp_two_gloo_processes_equal_one_process_on_the_global_batch(tmp_path, small_shards):
    from bvae.data.shards import load_dataset

    env = write_project(tmp_path, small_shards, {"nproc": RANKS})
    run(["bvae", "train", "--quiet"], tmp_path, env=env)  # relaunches itself under torchrun

    # Rank 0 alone tracked and wrote: one MLflow run, one checkpoint set.
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    (experiment,) = [e for e in client.search_experiments() if e.name == "ddp-test"]
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.data.tags["world_size"] == "2"
    assert mlflow_run.data.params["train.nproc"] == "2"
    losses = client.get_metric_history(mlflow_run.info.run_id, "curves/loss")
    assert [m.step for m in losses] == [2, 4]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        "checkpoint.pt",
        "mlflow_run.json",
        "model.pt",
    ]
    checkpoint = load_trusted(tmp_path / "models/checkpoint.pt")
    (member,) = checkpoint["members"]
    assert checkpoint["step"] == STEPS and len(member["rng_per_rank"]) == RANKS
    assert member["config"]["world_size"] == RANKS

    # The maths: DDP averages the ranks' gradients of their half-batch means, which is the
    # gradient of the mean over the whole batch. One process on that batch must agree.
    config = TrainConfig(steps=STEPS, batch_size=GLOBAL_BATCH, log_every=2, device="cpu", threads=1)
    images = load_dataset(small_shards).images
    reference = GlobalBatchTrainer(ModelConfig(), [Member(ObjectiveConfig(), config)], images)
    reference.train(show_progress=False)
    other_batch = Trainer(ModelConfig(), [Member(ObjectiveConfig(), config)], images)
    other_batch.train(show_progress=False)
    ddp = load_trusted(tmp_path / "models/model.pt")["state_dict"]
    same = reference.models[0].state_dict()
    different = other_batch.models[0].state_dict()
    gap_same = max((ddp[k] - same[k]).abs().max().item() for k in ddp)
    gap_other = max((ddp[k] - different[k]).abs().max().item() for k in ddp)
    assert gap_same < 1e-5, gap_same
    assert gap_other > 100 * max(gap_same, 1e-7)  # the check has teeth: other batches differ


def kill_everything_in(folder: Path, signal_number: int) -> None:
    """Signal every process working in ``folder`` (torchrun puts its workers in their own group)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")) == folder:
                os.kill(int(proc.name), signal_number)
        except OSError:
            continue


@pytest.mark.slow
def test_a_killed_ddp_run_resumes_to_the_uninterrupted_weights(tmp_path, small_shards):
    import signal
    import subprocess
    import time

    train = {"nproc": RANKS, "steps": 120, "checkpoint_every": 30, "log_every": 30}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    env = write_project(straight, small_shards, train)
    run(["bvae", "train", "--quiet"], straight, env=env)

    env = write_project(killed, small_shards, train)
    process = subprocess.Popen(
        ["bvae", "train", "--quiet"],
        cwd=killed,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = killed / "models/checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    kill_everything_in(killed, signal.SIGKILL)  # the launcher, torchrun and both ranks, mid-run
    process.wait()
    step = load_trusted(checkpoint)["step"]
    assert 0 < step < 120 and not (killed / "models/model.pt").exists()

    rerun = run(["bvae", "train", "--quiet"], killed, env=env)
    assert f"resuming from models/checkpoint.pt at step {step}" in rerun.stderr
    resumed = load_trusted(killed / "models/model.pt")["state_dict"]
    expected = load_trusted(straight / "models/model.pt")["state_dict"]
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    (experiment,) = [e for e in client.search_experiments() if e.name == "ddp-test"]
    (mlflow_run,) = client.search_runs([experiment.experiment_id])  # the same run, reopened
    assert mlflow_run.info.status == "FINISHED"
