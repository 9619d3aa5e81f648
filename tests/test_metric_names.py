"""MLflow metric names: curves under train/, single figures under summary/ and eval/."""

from __future__ import annotations

from bvae.config import ObjectiveConfig
from bvae.tracking.metric_names import curve_metrics, eval_metric, run_name, summary_metrics

ROW = {
    "step": 50,
    "loss": 120.0,
    "reconstruction": 100.0,
    "kl": 20.0,
    "largest_mean_sd": 1.5,
    "capacity": 2.5,
    "steps_per_second": 11.0,
    "kl_z0": 9.0,
    "kl_z1": 11.0,
}


def test_a_curve_row_is_train_metrics_and_capacity_only_for_the_capacity_objective():
    beta = curve_metrics(ROW, "beta")
    assert beta == {
        "curves/loss": 120.0,
        "curves/reconstruction": 100.0,
        "curves/kl": 20.0,
        "curves/largest_mean_sd": 1.5,
        "curves/steps_per_second": 11.0,
        "curves/kl/z0": 9.0,
        "curves/kl/z1": 11.0,
    }
    assert curve_metrics(ROW, "capacity") == {**beta, "curves/capacity": 2.5}


def test_summary_figures_are_numbers_under_summary():
    summary = {"step": 2000, "loss": 1.0, "capacity": 0.0, "collapsed": False, "kl_per_latent": [1.0]}
    assert summary_metrics(summary, "beta") == {"summary/step": 2000.0, "summary/loss": 1.0}
    assert summary_metrics(summary, "capacity")["summary/capacity"] == 0.0


def test_names_of_evaluations_and_runs():
    assert eval_metric("model.mean.mig.discrete_mig") == "eval/model.mean.mig.discrete_mig"
    assert run_name(ObjectiveConfig(beta=4.0), 0, "conv") == "beta4-seed0-conv"
    capacity = ObjectiveConfig(kind="capacity", gamma=1000.0, capacity_max_nats=25.0)
    assert run_name(capacity, 3, "mlp") == "capacity-g1000-c25-seed3-mlp"
