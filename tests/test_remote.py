"""A DVC remote on an S3-compatible server (moto, on 127.0.0.1): push, pull, `dvc repro --pull`
and the run-cache, through the real DVC CLI and a real (tiny) pipeline."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import commit_all, derived_project, run, set_params
from tests.servers import S3_ENV, s3_keys, s3_server

pytestmark = pytest.mark.slow

BUCKET = "bvae-dvc"
STAGES = ("download", "shard", "train", "evaluate", "traverse", "register")
OUTPUTS = ("data/shards/manifest.json", "data/raw/dsprites.npz", "models/model.pt", "reports/metrics.json")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("s3"), buckets=(BUCKET,)) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def published(template, s3, tmp_path_factory):
    """A project that ran its pipeline, committed dvc.lock and pushed to the S3 remote, as the
    README says. Everyone shares one tracking store (as with a tracking server). The clones
    below get DVC caches of their own (a plain ``git clone``): what they hold came from S3."""
    folder = tmp_path_factory.mktemp("remote")
    env = {**os.environ, **S3_ENV, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    repo = derived_project(template, folder / "origin", {"train.seed": 3})  # a training of its own
    run(["dvc", "remote", "add", "-d", "storage", f"s3://{BUCKET}/bvae"], repo)
    run(["dvc", "remote", "modify", "storage", "endpointurl", s3], repo)
    run(["dvc", "repro"], repo, env=env)
    commit_all(repo, "pipeline results and the remote")
    run(["dvc", "push"], repo, env=env)
    return repo, env


def clone(origin: Path, destination: Path) -> Path:
    run(["git", "clone", "-q", str(origin), str(destination)], origin.parent)
    return destination


def ran_stages(output: str) -> list[str]:
    return [stage for stage in STAGES if f"Running stage '{stage}'" in output]


def test_push_stores_shards_and_models_and_pull_restores_them(s3, published, tmp_path):
    origin, env = published
    keys = s3_keys(s3, BUCKET, "bvae/files/md5/")
    assert len(keys) >= 10  # npz, source, 12 shards + manifest, model, run record, traversals …
    copy = clone(origin, tmp_path / "copy")
    assert not (copy / "models/model.pt").exists()
    run(["dvc", "pull", "dvc.yaml"], copy, env=env)  # the README command: the main pipeline's outputs
    for name in OUTPUTS:
        assert (copy / name).read_bytes() == (origin / name).read_bytes(), name
    status = run(["dvc", "status", "dvc.yaml"], copy, env=env).stdout
    assert "up to date" in status, status
    verified = run(["bvae", "verify-data"], copy, env=env).stdout  # every shard's SHA-256
    assert '"images": 737280' in verified


def test_repro_pull_in_a_fresh_clone_runs_nothing(published, tmp_path):
    origin, env = published
    copy = clone(origin, tmp_path / "copy")
    result = run(["dvc", "repro", "--pull"], copy, env=env)
    output = result.stdout + result.stderr
    assert ran_stages(output) == [], output
    assert (copy / "models/model.pt").read_bytes() == (origin / "models/model.pt").read_bytes()


def test_run_cache_on_the_remote_skips_runs_elsewhere(s3, published, tmp_path):
    """Params someone already ran (and pushed with --run-cache) are restored, not rerun: the
    expensive stages, train and evaluate (traverse and register keep small records in git,
    `cache: false`, and rerun in seconds after a restore)."""
    origin, env = published
    set_params(origin, {"train.seed": 5})
    run(["dvc", "repro", "evaluate"], origin, env=env)
    seeded_model = (origin / "models/model.pt").read_bytes()
    run(["dvc", "push", "--run-cache"], origin, env=env)
    assert s3_keys(s3, BUCKET, "bvae/runs/")
    subprocess.run(["git", "checkout", "--", "params.yaml", "dvc.lock"], cwd=origin, check=True)

    copy = clone(origin, tmp_path / "copy")
    set_params(copy, {"train.seed": 5})  # never committed anywhere: only the run-cache knows it
    result = run(["dvc", "repro", "--pull", "evaluate"], copy, env=env)
    output = result.stdout + result.stderr
    assert ran_stages(output) == [], output
    assert "Stage 'train' is cached - skipping run" in output
    assert "Stage 'evaluate' is cached - skipping run" in output
    assert (copy / "models/model.pt").read_bytes() == seeded_model
    metrics = (origin / "reports/metrics.json").read_bytes()
    assert (copy / "reports/metrics.json").read_bytes() == metrics
