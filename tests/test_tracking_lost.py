"""The tracking server dying mid-training: training once hung ~8 minutes in retries, exited 1
with a ~250-line traceback and left the run RUNNING. Now the result is kept, the stage exits
75 in one line, and the rerun logs the run without training again. A real `mlflow server`
is stopped at a chosen step (the test's only hook), so the failure is the real one."""

from __future__ import annotations

import contextlib

import pytest
import yaml

from bvae import tracking
from bvae.checkpoint import read_checkpoint as load_trusted
from bvae.cli import main
from bvae.errors import EXIT_RETRY_LATER
from bvae.model_file import load_model, weights_digest
from tests.servers import mlflow_server

pytestmark = pytest.mark.slow


def test_a_lost_server_keeps_the_result_and_the_rerun_logs_it(tmp_path, small_shards, monkeypatch, capsys):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data/shards").symlink_to(small_shards)
    params = {
        "train": {"steps": 40, "batch_size": 16, "log_every": 10, "checkpoint_every": 20, "seed": 21},
        "tracking": {"experiment": "lost-server"},
        "registry": {"selection_metric": "model.mean.mig.discrete_mig"},
    }
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(project)
    # No HTTP retries: a refused connection is then final at once (retries only add waiting).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    store = tmp_path / "store"
    store.mkdir()
    backend = f"sqlite:///{store / 'mlflow.db'}"
    real_log_metrics = tracking.log_metrics

    with contextlib.ExitStack() as first_server:
        uri = first_server.enter_context(mlflow_server(store, backend_store_uri=backend))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        calls = []

        def log_then_stop_the_server_at_step_20(run, metrics, step=None):
            real_log_metrics(run, metrics, step)
            calls.append(step)
            if step == 20:
                first_server.close()  # the server process is gone from here on

        monkeypatch.setattr(tracking, "log_metrics", log_then_stop_the_server_at_step_20)
        assert main(["train", "-q"]) == EXIT_RETRY_LATER
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "Traceback" not in error, error
    assert "stopped answering" in error and "rerun `dvc repro`" in error and "models/model.pt" in error
    checkpoint = load_trusted(project / "models/checkpoint.pt")
    assert checkpoint["step"] == 40 and checkpoint["model_logged"] is False
    assert checkpoint["logged_rows"] == [2]  # steps 10 and 20 reached MLflow
    trained = weights_digest(load_model(project / "models/model.pt"))
    assert (project / "reports/train/summary.json").exists()

    monkeypatch.setattr(tracking, "log_metrics", real_log_metrics)
    with mlflow_server(store, backend_store_uri=backend) as uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        assert main(["train", "-q"]) == 0
        run_file = tracking.read_run_file(project / "models/mlflow_run.json")
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        logged = client.get_run(run_file.run_id)
        steps = [point.step for point in client.get_metric_history(run_file.run_id, "curves/loss")]
    assert logged.info.status == "FINISHED" and run_file.model_uri is not None
    assert sorted(steps) == [10, 20, 30, 40]  # every row once: none lost, none twice
    assert logged.data.metrics["summary/step"] == 40
    assert weights_digest(load_model(project / "models/model.pt")) == trained  # not retrained
    assert load_trusted(project / "models/checkpoint.pt")["model_logged"] is True
