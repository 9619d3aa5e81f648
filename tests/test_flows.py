"""The Prefect flows, in-process against Prefect's test server, on a real (tiny) DVC pipeline."""

from __future__ import annotations

import json

import mlflow
import pytest
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.experiments import ExperimentFailed
from tests.helpers import derived_project, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(template, tmp_path_factory, prefect):
    """A clone of the template: tiny params, data stages done. Its seeds (1, 11, 12) are this
    module's own, so the first run of each trains for real."""
    return derived_project(template, tmp_path_factory.mktemp("flows") / "repo")


def experiment_refs(project) -> list[str]:
    return run(["git", "for-each-ref", "--format=%(refname)", "refs/exps/"], project).stdout.split()


def client_for(project) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")


def task_runs_in(flow_run_id) -> list:
    with get_client(sync_client=True) as client:
        flow_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        return client.read_task_runs(flow_run_filter=flow_run)


def task_runs_of(state) -> list:
    return task_runs_in(state.state_details.flow_run_id)


def stage_runs(flow_run_id) -> list[tuple[str, str]]:
    """(name, state) of the flow run's DVC stage task runs, in the order they started."""
    stages = [run_ for run_ in task_runs_in(flow_run_id) if run_.task_key.startswith("dvc_stage")]
    stages.sort(key=lambda run_: run_.start_time)
    return [(run_.name, run_.state.type.value) for run_ in stages]


def stage_logs(flow_run_id, name: str) -> list:
    """The log lines Prefect holds for the flow run's stage task run ``name``."""
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # the handler sends in batches
    (stage,) = [run_ for run_ in task_runs_in(flow_run_id) if run_.name == name]
    with get_client(sync_client=True) as client:
        return client.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[stage.id])))


def test_retrain_runs_the_pipeline_as_an_experiment_and_registers(project):
    from flows.retrain import retrain

    params_before = (project / "params.yaml").read_text()
    result = retrain(project=str(project), overrides={"train.seed": 1}, name="retrain-one")
    assert result["ref"] in experiment_refs(project) and result["ref"].endswith("/retrain-one")
    # The workspace is untouched: the experiment ran in a temporary copy.
    assert (project / "params.yaml").read_text() == params_before
    assert run(["git", "status", "--porcelain", "--untracked-files=no"], project).stdout == ""
    registration = result["registration"]
    assert registration["version"] == "1" and registration["promoted"] is True
    client = client_for(project)
    mlflow_run = client.get_run(registration["mlflow_run_id"])
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.tags["dvc_experiment"] == "retrain-one"
    assert mlflow_run.data.params["train.seed"] == "1"
    # The flow's figures are the experiment's reports/metrics.json: the same value the
    # evaluate stage logged to the run, and the one the registry was gated on.
    mig = result["metrics"]["model"]["mean"]["mig"]["discrete_mig"]
    assert 0.0 <= mig <= 1.0 and mlflow_run.data.metrics["eval/model.mean.mig.discrete_mig"] == mig
    assert registration["selection_value"] == mig
    assert client.get_model_version_by_alias("bvae-dsprites", "champion").version in ("1", 1)
    artifact = Artifact.get("bvae-retrain")
    assert artifact is not None and "retrain-one" in artifact.data
    assert f"/runs/{registration['mlflow_run_id']}" in artifact.data and "version 1" in artifact.data
    assert f"/runs/{registration['mlflow_run_id']}/artifacts/report/report.html" in artifact.data
    # Each DVC stage showed as a task run while it ran: the data stages restored, the rest run.
    stages = stage_runs(result["flow_run_id"])
    assert [name for name, _ in stages] == [
        "download (unchanged)",
        "shard (unchanged)",
        "train",
        "evaluate",
        "traverse",
        "report",
        "register",
    ]
    assert all(state == "COMPLETED" for _, state in stages)
    # Each stage's lines are on its own task run, at their own level, uncoloured; the MLflow
    # run links back to the flow run.
    train_lines = [entry.message for entry in stage_logs(result["flow_run_id"], "train")]
    assert any("bvae.stages.train: done" in line for line in train_lines)
    evaluate_logs = stage_logs(result["flow_run_id"], "evaluate")
    assert any(entry.level == 30 and "not comparable" in entry.message for entry in evaluate_logs)
    assert not any("\x1b[" in entry.message for entry in evaluate_logs)
    assert mlflow_run.data.tags["prefect_flow_run_id"] == result["flow_run_id"]


def test_a_bad_parameter_fails_at_once_and_is_never_retried(project):
    from flows.retrain import retrain

    refs_before = experiment_refs(project)
    state = retrain(project=str(project), overrides={"objective.bta": 8}, return_state=True)
    assert state.is_failed()
    assert "objective.bta" in state.message and "did you mean 'beta'" in state.message
    assert task_runs_of(state) == []  # it failed before any experiment was started
    assert experiment_refs(project) == refs_before


def test_a_failing_stage_fails_the_flow_with_its_error_and_no_retry(project):
    from flows.retrain import retrain

    # Same seed as the first test: DVC's run-cache restores train and evaluate, so traverse
    # runs and rejects a device no machine has (exit 2: bad input, not transient). Params
    # validation cannot know which devices a machine has, so this fails in the stage.
    state = retrain(
        project=str(project),
        overrides={"train.seed": 1, "traverse.device": "cuda:99"},
        name="retrain-bad-device",
        return_state=True,
    )
    assert state.is_failed()
    assert "stage 'traverse' exited with 2" in state.message
    assert "traverse.device is cuda:99 but no CUDA GPU is visible" in state.message
    (task_run,) = [run_ for run_ in task_runs_of(state) if run_.task_key.startswith("run_pipeline")]
    assert task_run.state.is_failed() and task_run.run_count == 1  # a bad input is not retried
    stages = dict(stage_runs(state.state_details.flow_run_id))
    assert stages["traverse"] == "FAILED" and stages["train (restored from the run-cache)"] == "COMPLETED"
    with pytest.raises(ExperimentFailed):
        state.result()


# The threads sweep trains these points; the Dask and Ray sweeps run the same points, so DVC's
# run-cache restores their training and evaluation and those tests prove only what is theirs:
# where each point ran, and the sub-flow.
SWEEP_SEEDS = [11, 12]


def test_sweep_runs_points_in_parallel_nests_runs_and_promotes_the_best(project):
    from flows.sweep import sweep

    result = sweep(
        project=str(project),
        grid={"train.seed": SWEEP_SEEDS},
        max_parallel=2,
        name="sweep-two",
        max_members=1,  # every point alone: the per-point path (ensembles: the test below)
    )
    refs = experiment_refs(project)
    for index in range(2):
        assert any(ref.endswith(f"/sweep-two-{index}") for ref in refs)
    rows = result["rows"]
    assert [row["train.seed"] for row in rows] == SWEEP_SEEDS
    assert all(row["status"] == "completed" for row in rows)
    client = client_for(project)
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["bvae.sweep"] == "sweep-two"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(run_.info.run_id for run_ in children) == sorted(row["mlflow_run_id"] for row in rows)
    # Parallel: every point's training overlaps another's.
    spans = sorted((run_.info.start_time, run_.info.end_time) for run_ in children)
    assert all(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1))
    artifacts = [item.path for item in client.list_artifacts(parent.info.run_id, "sweep")]
    assert "sweep/comparison.json" in artifacts and "sweep/comparison.md" in artifacts
    # The best point went through the gate: it is the candidate, and the champion is the best
    # model ever registered (the first test's model, or this sweep's best).
    metric = "model.mean.mig.discrete_mig"
    best = max(rows, key=lambda row: row[metric])
    assert result["best"] == best["experiment"]
    assert str(client.get_model_version_by_alias("bvae-dsprites", "candidate").version) == best["version"]
    versions = client.search_model_versions("name = 'bvae-dsprites'")
    values = {str(v.version): float(v.tags["selection_value"]) for v in versions}
    champion = str(client.get_model_version_by_alias("bvae-dsprites", "champion").version)
    assert values[champion] == max(values.values())
    # Points registered as candidates only: the gate ran once, for the best.
    sweep_versions = {row["version"] for row in rows}
    eligible = {str(v.version) for v in versions if v.tags.get("champion_eligible") == "true"}
    assert eligible & sweep_versions <= {best["version"]}
    artifact = Artifact.get("bvae-sweep")
    assert artifact is not None and artifact.data.count("`sweep-two-") == 2 + 1  # rows + best line
    assert json.loads(parent.data.params["grid"]) == {"train.seed": SWEEP_SEEDS}


def test_sweep_runs_its_points_on_a_local_dask_cluster(project):
    import os

    from flows.sweep import sweep

    result = sweep(
        project=str(project),
        grid={"train.seed": SWEEP_SEEDS},
        max_parallel=2,
        name="sweep-dask",
        runner="dask",
        max_members=1,
    )
    rows = result["rows"]
    assert [row["status"] for row in rows] == ["completed", "completed"]
    # Each point ran in its own Dask worker process, not in this (the flow's) process.
    workers = {row["worker"] for row in rows}
    assert len(workers) == 2 and not any(worker.endswith(f":{os.getpid()}") for worker in workers)
    refs = experiment_refs(project)
    assert all(any(ref.endswith(f"/sweep-dask-{index}") for ref in refs) for index in range(2))
    # Points the threads sweep already ran come back from DVC's run-cache with their MLflow
    # runs, which stay nested under the sweep that trained them (a run has one parent).
    client = client_for(project)
    for row in rows:
        point_run = client.get_run(row["mlflow_run_id"])
        assert point_run.info.status == "FINISHED" and "mlflow.parentRunId" in point_run.data.tags
    assert client.get_run(result["parent_run_id"]).data.tags["bvae.sweep"] == "sweep-dask"
    with get_client(sync_client=True) as prefect_client:
        names = [run_.name for run_ in prefect_client.read_flow_runs()]
    assert "sweep-dask-points" in names


def test_sweep_runs_its_points_on_a_local_ray(project):
    import os

    from flows.sweep import sweep

    result = sweep(
        project=str(project),
        grid={"train.seed": SWEEP_SEEDS[:1]},
        max_parallel=1,
        name="sweep-ray",
        runner="ray",
        max_members=1,
    )
    (row,) = result["rows"]
    assert row["status"] == "completed" and not row["worker"].endswith(f":{os.getpid()}")
    assert any(ref.endswith("/sweep-ray-0") for ref in experiment_refs(project))


def test_sweep_trains_points_that_can_share_an_ensemble_as_one(project):
    """Seeds keep tensor shapes: the two points are one `sweeps/dvc.yaml` experiment, whose
    members come back as the sweep's rows, children of the flow's one parent run."""
    from flows.sweep import sweep

    result = sweep(
        project=str(project),
        grid={"train.seed": [21, 22]},
        overrides={"sweep.workers": 1},
        name="sweep-ensemble",
    )
    refs = experiment_refs(project)
    assert any(ref.endswith("/sweep-ensemble-0") for ref in refs)
    assert not any(ref.endswith("/sweep-ensemble-1") for ref in refs)  # one experiment
    rows = result["rows"]
    assert [row["experiment"] for row in rows] == ["sweep-ensemble-0/seed21", "sweep-ensemble-0/seed22"]
    assert [row["train.seed"] for row in rows] == [21, 22]
    assert all(row["status"] == "completed" and row["version"] for row in rows)
    # One parent run for the whole sweep: the members are its own children, with no ensemble
    # parent between them, and it alone holds the comparison.
    client = client_for(project)
    parent = client.get_run(result["parent_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(child.info.run_id for child in children) == sorted(row["mlflow_run_id"] for row in rows)
    ensemble_runs = client.search_runs(
        [parent.info.experiment_id], "tags.`bvae.sweep` = 'sweep-ensemble-0'"
    )  # the members, tagged with their DVC experiment: none is a parent of its own
    assert len(ensemble_runs) == 2 and all(r.data.tags.get("bvae.kind") != "sweep" for r in ensemble_runs)
    for row in rows:
        member_run = client.get_run(row["mlflow_run_id"])
        assert member_run.data.params["train.seed"] == str(row["train.seed"])
    assert parent.info.status == "FINISHED"
    assert "sweep/comparison.json" in [
        item.path for item in client.list_artifacts(parent.info.run_id, "sweep")
    ]
    best = max(rows, key=lambda row: row["model.mean.mig.discrete_mig"])
    assert result["best"] == best["experiment"]
    assert str(client.get_model_version_by_alias("bvae-dsprites", "candidate").version) in {
        row["version"] for row in rows
    }
    assert "`sweep-ensemble-0/seed21`" in Artifact.get("bvae-sweep").data
