"""The default local MLflow store moves with its project: a moved or copied project reads
and writes its own store and artifacts, and no stage creates a store at the old place."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from bvae import tracking
from bvae.errors import MissingInput
from bvae.tracking.store import _client_for


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project with one run in its default store, an artifact logged and a run file."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    root = tmp_path / "original"
    (root / ".dvc").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(root)
    run = tracking.start_run("moves", {"objective.beta": 4.0})
    (root / "note.txt").write_text("logged before the move")
    tracking.log_artifact(run, root / "note.txt", "before")
    tracking.write_run_file(run, root / "models/mlflow_run.json")
    _client_for.cache_clear()  # a new process, as a later stage is
    return root, run


# What a later stage does in its own process, in the moved or copied project.
LATER_STAGE = """
import json, pathlib
from bvae import tracking
run = tracking.read_run_file("models/mlflow_run.json")
client = tracking.store._client(run.tracking_uri)
pathlib.Path("later.txt").write_text("logged after")
tracking.log_artifact(run, "later.txt", "after")
new = tracking.start_run("moves", {"objective.beta": 1.0})
print(json.dumps({"uri": run.tracking_uri, "artifacts": client.get_run(run.run_id).info.artifact_uri,
                  "new": client.get_run(new.run_id).info.artifact_uri}))
"""


@pytest.mark.parametrize("how", ["move", "copy"])
def test_a_moved_or_copied_project_uses_its_own_store_and_artifacts(project, tmp_path, how):
    root, run = project
    elsewhere = tmp_path / "elsewhere"
    (shutil.move if how == "move" else shutil.copytree)(root, elsewhere)
    env = {key: value for key, value in os.environ.items() if key not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    command = [sys.executable, "-c", LATER_STAGE]
    result = subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["uri"] == f"sqlite:///{elsewhere / 'mlflow.db'}"
    assert seen["artifacts"] == f"file://{elsewhere}/mlartifacts/{run.run_id}/artifacts"
    assert seen["new"].startswith(f"file://{elsewhere}/mlartifacts/")  # new runs land here too
    assert (elsewhere / f"mlartifacts/{run.run_id}/artifacts/after/later.txt").exists()
    if how == "move":
        assert not root.exists()  # no empty store was made at the old place
    else:
        assert not (root / f"mlartifacts/{run.run_id}/artifacts/after").exists()  # the original is untouched


def test_a_run_file_without_a_store_is_refused(project, tmp_path, monkeypatch):
    root, _ = project
    elsewhere = tmp_path / "bare"
    shutil.move(root, elsewhere)
    (elsewhere / "mlflow.db").unlink()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(MissingInput, match=r"does not exist \(was the project moved\?\).*dvc repro -f train"):
        tracking.read_run_file(elsewhere / "models/mlflow_run.json")
    assert not root.exists()


def test_a_run_file_from_another_clone_keeps_the_store_that_holds_its_run(project, tmp_path, monkeypatch):
    """DVC's run-cache restores a run file another clone on this machine wrote: its run is in
    that clone's store, not in this one's, so it keeps naming that store."""
    root, run = project
    clone = tmp_path / "clone"
    (clone / ".dvc").mkdir(parents=True)
    (clone / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(clone)
    tracking.start_run("moves", {"objective.beta": 1.0})  # the clone's own store, without that run
    _client_for.cache_clear()
    shutil.copytree(root / "models", clone / "models")
    assert tracking.read_run_file(clone / "models/mlflow_run.json").tracking_uri == run.tracking_uri
