"""A real schedule: a Prefect server on 127.0.0.1, `python -m flows.serve`, a retrain by itself."""

from __future__ import annotations

import json
import sys
import time
import urllib.request

import mlflow
import pytest

from tests.helpers import derived_project, run
from tests.servers import background, prefect_env, prefect_server

FINAL = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]


def finished_flow_runs(api: str) -> list[dict]:
    body = json.dumps({"flow_runs": {"state": {"type": {"any_": FINAL}}}}).encode()
    request = urllib.request.Request(
        f"{api}/flow_runs/filter", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def deployments(api: str) -> dict[str, dict]:
    request = urllib.request.Request(
        f"{api}/deployments/filter", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return {item["name"]: item for item in json.loads(response.read())}


@pytest.mark.slow
def test_served_retrain_runs_on_its_schedule_and_lands_a_model(template, tmp_path):
    repo = derived_project(template, tmp_path / "repo", {"train.seed": 7})  # a training of its own
    with prefect_server(tmp_path) as api:
        env = prefect_env(tmp_path / "serve-home", api)
        # A run ~30 s after start; should a busy machine miss it, the next comes 150 s later.
        serve = [sys.executable, "-m", "flows.serve", "--interval", "150", "--project", str(repo)]
        with background(serve, tmp_path, "serve", env, None, cwd=repo) as process:
            deadline = time.monotonic() + 360
            finished: list[dict] = []
            while not finished and time.monotonic() < deadline:
                assert process.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(2)
                # A run that came due while the first still ran is cancelled (CANCEL_NEW, checked
                # below): on a busy machine that one finishes first. The retrain is the other.
                finished = [r for r in finished_flow_runs(api) if r["state"]["type"] != "CANCELLED"]
            declared = deployments(api)
            assert sorted(declared) == ["on-demand", "scheduled"]
            # At most one retrain at a time: one due while another runs is cancelled.
            assert declared["scheduled"]["global_concurrency_limit"]["limit"] == 1
            assert declared["scheduled"]["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
        log = (tmp_path / "serve.log").read_text()
    assert finished, f"no scheduled run finished in time; serve log:\n{log[-3000:]}"
    (flow_run,) = finished
    assert flow_run["state"]["type"] == "COMPLETED", log[-3000:]
    assert flow_run["auto_scheduled"] is True  # the schedule started it, not the test
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps/"], repo).stdout.split()
    assert len(refs) == 1 and refs[0].rsplit("/", 1)[-1].startswith("retrain-")
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    (version,) = client.search_model_versions("name = 'bvae-dsprites'")
    mlflow_run = client.get_run(version.run_id)
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.tags["dvc_experiment"] == refs[0].rsplit("/", 1)[-1]
