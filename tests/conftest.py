"""Shared fixtures: the environment every test runs in, and the full dSprites grid built once."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Subprocesses (bvae, dvc, mlflow) must come from this interpreter's environment, and nothing
# may phone home.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
from bvae.cli import TELEMETRY_OFF  # noqa: E402

os.environ.update(TELEMETRY_OFF)


def refused_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/dsprites.npz"


@pytest.fixture(scope="session")
def full_npz(tmp_path_factory) -> Path:
    """The full 737,280-image npz, made by the real ``auto`` path falling back offline."""
    from bvae.config import DataConfig
    from bvae.stages.download import run_download

    out = tmp_path_factory.mktemp("raw") / "dsprites.npz"
    config = DataConfig(source="auto", urls=(refused_url(),), retries=0, backoff_s=0)
    run_download(config, out, show_progress=False)
    return out


@pytest.fixture(scope="session")
def full_shards(full_npz, tmp_path_factory) -> Path:
    from bvae.config import ShardConfig
    from bvae.stages.shard import run_shard

    out = tmp_path_factory.mktemp("shards") / "shards"
    run_shard(ShardConfig(), full_npz, out, show_progress=False)
    return out


@pytest.fixture(scope="session")
def full_dataset(full_shards):
    from bvae.data.shards import load_dataset

    return load_dataset(full_shards)


@pytest.fixture(scope="session")
def prefect():
    """Prefect's test server, started once per session (it takes several seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
