"""The DVC pipeline through the real CLI, in a fresh copy of the repository."""

from __future__ import annotations

import json
import os
import shlex

import pytest

from bvae.report_keys import figure_keys
from bvae.tracking import flatten
from tests.helpers import REPO_ROOT, copy_repository, derived_project, run, set_params


def clean_env():
    """The environment of a user who has not configured MLflow: the default store applies."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}


# Every metric, both representations and every baseline: the evaluate test proves the stage
# wires them all into reports/metrics.json and MLflow (the metric values are test_metrics').
ALL_FIGURES = {
    "evaluate.metrics": ["beta_vae", "factor_vae", "mig", "dci", "sap", "modularity"],
    "evaluate.representations": ["mean", "sampled"],
    "evaluate.baselines": ["ground_truth", "pca", "ica", "untrained"],
    "evaluate.baseline_fit_images": 2000,
    "evaluate.dci_estimator": "forest",  # dlib's gbt is minutes on 2 cores; test_metrics has it
}


@pytest.fixture(scope="module")
def pipeline_repo(template, tmp_path_factory):
    """A clone of the template (data stages done) with a training no other test runs."""
    params = {"train.steps": 40, "train.checkpoint_every": 20, "traverse.steps": 7, **ALL_FIGURES}
    return derived_project(template, tmp_path_factory.mktemp("pipeline") / "repo", params)


@pytest.mark.slow
def test_dvc_repro_shard_renders_offline_once(template):
    """The session's one render: ``dvc repro shard`` from scratch, offline, in the template."""
    manifest = json.loads((template / "data/shards/manifest.json").read_text())
    assert manifest["num_images"] == 737280 and manifest["source"] == "procedural"
    assert len(manifest["shards"]) == 12
    verified = json.loads(run(["bvae", "verify-data"], template).stdout)
    assert verified["images"] == 737280 and verified["digest"] == manifest["digest"]
    again = run(["dvc", "repro", "shard"], template)
    assert "didn't change, skipping" in again.stdout + again.stderr


@pytest.mark.slow
def test_a_clone_checks_the_data_out_of_the_shared_cache(pipeline_repo, template):
    status = run(["dvc", "status", "download", "shard"], pipeline_repo).stdout
    assert "up to date" in status, status
    for name in ("data/raw/dsprites.npz", "data/shards/manifest.json", "data/shards/shard-00011.h5"):
        assert (pipeline_repo / name).read_bytes() == (template / name).read_bytes(), name


@pytest.mark.slow
def test_dvc_repro_train_metrics_plots_and_mlflow(pipeline_repo):
    repo = pipeline_repo
    run(["dvc", "repro", "train"], repo, env=clean_env())
    assert (repo / "models/model.pt").exists() and (repo / "models/checkpoint.pt").exists()
    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    summary = metrics[""]["data"]["reports/train/summary.json"]["data"]
    assert summary["step"] == 40 and summary["loss"] > 0
    run(["dvc", "plots", "show", "-o", "plots-out"], repo)
    page = (repo / "plots-out/index.html").read_text()
    assert "KL per latent" in page and "Training loss" in page
    # Offline the Vega curves stay blank: the page says so once and points at the report.
    assert 'id="offline"' in page and "reports/report.html" in page and page.count("cdn.jsdelivr.net") >= 2
    # The default store is an absolute SQLite file in the repository root.
    run_file = json.loads((repo / "models/mlflow_run.json").read_text())
    assert run_file["tracking_uri"] == f"sqlite:///{repo / 'mlflow.db'}"
    assert not (repo / "mlruns").exists()


@pytest.mark.slow
def test_dvc_repro_evaluate_scores_model_and_baselines(pipeline_repo):
    repo = pipeline_repo
    run(["dvc", "repro", "evaluate"], repo, env=clean_env())
    report = json.loads((repo / "reports/metrics.json").read_text())
    metrics = {"beta_vae", "factor_vae", "mig", "dci", "sap", "modularity"}
    assert set(report["model"]) == {"mean", "sampled"}
    assert set(report["baselines"]) == {"ground_truth", "pca", "ica", "untrained"}
    for scores in [*report["model"].values(), *report["baselines"].values()]:
        assert set(scores) == metrics
    truth = report["baselines"]["ground_truth"]
    assert truth["factor_vae"]["eval_accuracy"] == 1.0 and truth["dci"]["disentanglement"] > 0.99
    assert report["heldout"]["num_images"] == 1000 and report["heldout"]["reconstruction_nats"] > 0
    expected_timings = {f"model.{r}.{m}" for r in ("mean", "sampled") for m in metrics}
    expected_timings |= {f"baselines.{b}.{m}" for b in report["baselines"] for m in metrics}
    expected_timings |= {"baselines.pca.fit", "baselines.ica.fit", "encoding"}
    assert set(report["seconds"]) == expected_timings
    assert all(seconds > 0 for seconds in report["seconds"].values())
    numeric = {key for key, value in flatten(report).items() if not key.startswith(("seconds.", "protocol."))}
    assert numeric == figure_keys(metrics, ("mean", "sampled"), report["baselines"])  # what params check
    assert report["protocol"]["comparable_to_dlib"] is False
    assert report["protocol"]["differs_from_dlib"] == (
        "sample_sizes smoke (dlib: 10,000 / 5,000 points); "
        "dci_estimator forest (dlib: gbt, gradient-boosted trees)"
    )
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    assert "reports/metrics.json" in shown[""]["data"]
    from mlflow import MlflowClient

    run_file = json.loads((repo / "models/mlflow_run.json").read_text())
    run_id = run_file["run_id"]
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    # The run's metrics are its curves and a few headline figures; every figure is in the
    # evaluation table; the headline figures are also the logged model's, per dataset.
    logged = client.get_run(run_id).data.metrics
    evaluation = {key for key in logged if key.startswith("eval/")}
    assert evaluation == {
        "eval/model.mean.factor_vae.eval_accuracy",
        "eval/model.mean.beta_vae.eval_accuracy",
        "eval/model.mean.mig.discrete_mig",
        "eval/model.mean.dci.disentanglement",
        "eval/heldout.reconstruction_nats",
        "eval/heldout.kl_nats",
        "eval/heldout.negative_elbo_nats",
    }
    assert (
        logged["eval/model.mean.factor_vae.eval_accuracy"]
        == report["model"]["mean"]["factor_vae"]["eval_accuracy"]
    )
    table_file = client.download_artifacts(run_id, "evaluation/figures.json", str(repo / "downloaded"))
    table = json.loads(open(table_file).read())
    assert table["columns"] == ["figure", "value"]
    figures = {name: value for name, value in table["data"]}
    assert set(figures) == numeric | {f"seconds.{key}" for key in report["seconds"]}
    truth_mig = figures["baselines.ground_truth.mig.discrete_mig"]
    assert truth_mig == pytest.approx(truth["mig"]["discrete_mig"], rel=1e-9)  # the table keeps 10 digits
    model_metrics = client.get_logged_model(run_file["model_id"]).metrics
    assert {m.key for m in model_metrics} == evaluation
    assert {m.dataset_name for m in model_metrics} == {"dsprites-procedural"}
    tags = client.get_run(run_id).data.tags
    assert (
        tags["eval.protocol.dci_estimator"] == "forest"
        and tags["eval.protocol.comparable_to_dlib"] == "False"
    )


@pytest.mark.slow
def test_dvc_repro_traverse_images_plots_and_mlflow(pipeline_repo):
    repo = pipeline_repo
    run(["dvc", "repro", "traverse"], repo, env=clean_env())
    images = {p.name for p in (repo / "reports/traversals").iterdir()}
    assert {"traversal_square.png", "traversal_heart.gif", "reconstructions.png"} <= images
    assert {"kl_per_latent.png", "training_curves.png"} <= images
    latents = json.loads((repo / "reports/latents.json").read_text())
    assert (
        len(latents["latents"]) == 10 and "| latent | encodes |" in (repo / "reports/latents.md").read_text()
    )
    run(["dvc", "plots", "show", "-o", "plots-all"], repo)
    page = (repo / "plots-all/index.html").read_text()
    assert "traversal_square.png" in page and "KL per latent" in page  # images beside the curves
    from mlflow import MlflowClient

    run_id = json.loads((repo / "models/mlflow_run.json").read_text())["run_id"]
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    logged = {a.path for a in client.list_artifacts(run_id, "traversals")}
    assert {
        "traversals/traversal_square.png",
        "traversals/latents.json",
        "traversals/latents.md",
    } <= logged


@pytest.mark.slow
def test_dvc_repro_registers_a_champion_and_a_no_op_repro_leaves_the_registry_alone(pipeline_repo):
    repo = pipeline_repo
    run(["dvc", "repro"], repo, env=clean_env())
    registered = json.loads((repo / "models/registered.json").read_text())
    assert registered["name"] == "bvae-dsprites" and registered["champion_version"] == registered["version"]
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("bvae-dsprites", "champion")
    assert champion.tags["data_digest"] and champion.tags["objective"] == "beta"
    # Tags describe this model: β for a β-VAE (no γ or C), its training, where its data came from.
    assert champion.tags["beta"] == "4.0" and "gamma" not in champion.tags
    assert "capacity_max_nats" not in champion.tags and champion.tags["train.steps"] == "40"
    assert champion.tags["data_source"] == "procedural"
    # Its card: the headline figures first, beside the baselines; then lineage.
    env = {**clean_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    run(["bvae", "pull", "bvae-dsprites@champion", "--out", str(repo.parent / "pulled")], repo, env=env)
    card = (repo.parent / "pulled/MODEL_CARD.md").read_text()
    assert card.index("## Headline figures") < card.index("## Lineage") < card.index("## Params")
    assert "| figure | this model | baseline: ground_truth | baseline: ica |" in card
    assert "| model.mean.factor_vae.eval_accuracy | " in card and "| heldout.kl_nats | " in card
    # The offline report: one page with everything embedded, also in the MLflow run.
    page = (repo / "reports/report.html").read_text()
    assert "<script" not in page and 'src="http' not in page and "<link" not in page  # nothing fetched
    run_id = json.loads((repo / "models/mlflow_run.json").read_text())["run_id"]
    # Its one link: the run's page where `mlflow ui` on the SQLite store serves it.
    assert page.count('href="http') == 1 and f"/runs/{run_id}?" in page
    assert "mlflow ui --backend-store-uri" in page
    assert page.count('src="data:image/png;base64,') >= 7 and "data:image/gif;base64," in page
    for column in ("model (mean)", "model (sampled)", "baseline: ground_truth", "baseline: untrained"):
        assert f"<th>{column}</th>" in page
    assert "<td>factor_vae.eval_accuracy</td><td class=n>" in page and "<td>dci.disentanglement</td>" in page
    assert "active latents:" in page and "Not comparable with disentanglement_lib" in page
    assert [a.path for a in client.list_artifacts(run_id, "report")] == ["report/report.html"]
    assert (
        champion.tags["mlflow_run_id"] == json.loads((repo / "models/mlflow_run.json").read_text())["run_id"]
    )
    before = [
        (v.version, v.last_updated_timestamp) for v in client.search_model_versions("name = 'bvae-dsprites'")
    ]
    again = run(["dvc", "repro"], repo, env=clean_env())
    assert "Stage 'register' didn't change, skipping" in again.stdout + again.stderr
    after = [
        (v.version, v.last_updated_timestamp) for v in client.search_model_versions("name = 'bvae-dsprites'")
    ]
    assert after == before


@pytest.mark.slow
def test_temp_experiments_log_into_the_parent_store(pipeline_repo):
    """`dvc exp run --temp` runs in .dvc/tmp/exps/...: its MLflow run must not be lost there."""
    repo = pipeline_repo
    run(
        ["dvc", "exp", "run", "--temp", "-S", "train.steps=20", "-n", "tiny-temp", "train"],
        repo,
        env=clean_env(),
    )
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bvae-dsprites")
    runs = client.search_runs([experiment.experiment_id], "tags.dvc_experiment = 'tiny-temp'")
    assert len(runs) == 1 and runs[0].data.params["train.steps"] == "20"
    assert runs[0].info.status == "FINISHED"
    assert not list((repo / ".dvc/tmp").rglob("mlflow.db"))
    shown = run(["dvc", "exp", "show", "--json"], repo).stdout
    assert "tiny-temp" in shown
    # The docs' line for a terminal: every cell readable in 160 columns (DVC's own table is `…`).
    documented = (REPO_ROOT / "docs/pipeline.md").read_text().splitlines()
    line = next(text for text in documented if text.startswith("dvc exp show --drop"))
    table = run(shlex.split(line), repo, env={**clean_env(), "COLUMNS": "160"}).stdout
    assert max(map(len, table.splitlines())) <= 160 and "…" not in table
    assert "tiny-temp" in table and "train.seed" in table
    if (repo / "reports/metrics.json").exists():  # the module's evaluate test ran first
        assert "model.mean.mig.discrete_mig" in table
    # bvae's own narrow table of the same experiments: what was trained and how it did.
    compared = run(["bvae", "compare"], repo, env=clean_env()).stdout.splitlines()
    assert max(map(len, compared)) <= 160 and compared[0].startswith("experiment  objective")
    (tiny,) = (line.split() for line in compared if line.startswith("tiny-temp "))
    assert tiny[1:6] == ["beta", "β", "4", "0", "20"]


def test_bad_params_fail_early_naming_the_key(tmp_path):
    repo = copy_repository(tmp_path / "repo")
    set_params(repo, {"shard.compression": "zip"})
    failed = run(["bvae", "shard"], repo, check=False)
    assert failed.returncode == 2 and "shard.compression = 'zip'" in failed.stderr
