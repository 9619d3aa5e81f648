"""The offline report page: every figure embedded, the metrics beside the baselines, nothing
fetched from the network (``dvc plots show`` offline once dropped its curves silently)."""

from __future__ import annotations

import base64
import io

from PIL import Image

from bvae.report import Figure, ReportInputs, render_html


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (4, 4), color=128).save(buffer, format="PNG")
    return buffer.getvalue()


METRICS = {
    "model": {
        "mean": {"mig": {"discrete_mig": 0.21}, "factor_vae": {"eval_accuracy": 0.63}},
        "sampled": {"mig": {"discrete_mig": 0.11}, "factor_vae": {"eval_accuracy": 0.5}},
    },
    "baselines": {"ground_truth": {"mig": {"discrete_mig": 0.9}}},
    "heldout": {"reconstruction_nats": 35.6, "kl_nats": 15.4},
    "protocol": {
        "sample_sizes": "fast",
        "comparable_to_dlib": False,
        "differs_from_dlib": "sample_sizes fast",
    },
}
LATENTS = {
    "latents": [
        {
            "latent": "z0",
            "encodes": "entangled: posX+posY",
            "best_factor": "posX",
            "second_factor": "posY",
            "relative_gap": 0.29,
            "kl": 3.2,
            "mean_posterior_variance": 0.01,
            "normalized_mi": {"posX": 0.14, "posY": 0.10},
        },
        {
            "latent": "z1",
            "encodes": "inactive",
            "best_factor": "posY",
            "second_factor": "posX",
            "relative_gap": 0.5,
            "kl": 0.01,
            "mean_posterior_variance": 0.99,
            "normalized_mi": {"posX": 0.0, "posY": 0.0},
        },
    ],
    "summary": {"active": 1, "disentangled": 0, "entangled": 1, "inactive": 1},
    "entangled_share": 0.5,
}


def test_the_page_embeds_every_figure_and_fetches_nothing():
    png = png_bytes()
    figures = [Figure("curves <loss>", ".png", png), Figure("traversal", ".gif", b"GIF89a")]
    page = render_html(
        ReportInputs(
            title="a run",
            params={"objective.beta": 4.0},
            train_summary={"step": 300000, "loss": 51.0},
            metrics=METRICS,
            latents=LATENTS,
            figures=figures,
            run_link="http://127.0.0.1:5000/#/experiments/1/runs/abc",
            data_source="procedural",
        )
    )
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in page
    assert 'src="data:image/gif;base64,' in page
    assert "<script" not in page and 'src="http' not in page and "<link" not in page
    assert "curves &lt;loss&gt;" in page  # captions are escaped
    # The metric table: a row per score, the model's representations beside the baselines.
    assert "<th>model (mean)</th><th>model (sampled)</th><th>baseline: ground_truth</th>" in page
    assert (
        "<tr><td>mig.discrete_mig</td><td class=n>0.21</td><td class=n>0.11</td><td class=n>0.9</td></tr>"
        in page
    )
    assert (
        "<tr><td>factor_vae.eval_accuracy</td><td class=n>0.63</td><td class=n>0.5</td><td>–</td></tr>"
        in page
    )
    assert "Not comparable with disentanglement_lib" in page and "sample_sizes fast" in page
    assert "1 active latents: 0 encode one factor, 1 entangled; 1 inactive" in page
    assert "<td>entangled: posX+posY</td>" in page and "<td class=n>300,000</td>" in page


def test_a_collapsed_model_is_named_so_at_the_top():
    inputs = dict(title="a run", params={}, metrics=METRICS, latents=LATENTS)
    healthy = render_html(ReportInputs(train_summary={"collapsed": False}, **inputs))
    assert "Posterior collapse" not in healthy
    collapsed_metrics = METRICS | {"protocol": METRICS["protocol"] | {"collapsed": True}}
    page = render_html(
        ReportInputs(**(inputs | {"metrics": collapsed_metrics}), train_summary={"collapsed": True})
    )
    banner = page.index("Posterior collapse: every image gets the same code")
    assert banner < page.index("<h2>Training</h2>") and "(found by: training, evaluation)" in page


def test_the_page_shows_what_made_the_model_and_where_its_run_is():
    """The commit, the MLflow run and how to open it, and only the params the objective reads."""
    params = {
        "objective.kind": "beta",
        "objective.beta": 4.0,
        "objective.gamma": 1000.0,
        "objective.capacity_max_nats": 25.0,
        "objective.capacity_steps": 100000,
        "objective.gaussian_std": 0.1,
        "model.likelihood": "bernoulli",
    }
    page = render_html(
        ReportInputs(
            title="a run",
            params=params,
            train_summary={"step": 10},
            metrics=METRICS,
            latents=LATENTS,
            run_link="http://127.0.0.1:5000/#/experiments/1/runs/abc123",
            run_id="abc123",
            browse_command="mlflow ui --backend-store-uri sqlite:///repo/mlflow.db",
            commit="0123456789abcdef",
        )
    )
    assert "commit <code>0123456789ab</code>" in page and "MLflow run <code>abc123</code>" in page
    assert 'href="http://127.0.0.1:5000/#/experiments/1/runs/abc123"' in page
    assert "mlflow ui --backend-store-uri sqlite:///repo/mlflow.db" in page
    assert "objective.beta" in page
    unused = ("objective.gamma", "objective.capacity_max_nats", "objective.capacity_steps", "gaussian_std")
    assert not [key for key in unused if key in page]
    capacity = render_html(
        ReportInputs(
            title="t",
            params={**params, "objective.kind": "capacity"},
            train_summary={},
            metrics={},
            latents={},
        )
    )
    assert "objective.gamma" in capacity and "objective.beta<" not in capacity
    assert "not tracked in MLflow" in capacity


def test_the_chart_of_the_model_against_the_baselines_is_a_png():
    from bvae.stages.report import metrics_figure

    figure = metrics_figure(METRICS)
    assert figure is not None and figure.caption == "The model against the baselines"
    assert figure.data.startswith(b"\x89PNG") and Image.open(io.BytesIO(figure.data)).size[0] > 500
    assert metrics_figure({}) is None


def test_reconstructions_are_drawn_across_shape_scale_and_orientation():
    import numpy as np

    from bvae.stages.traverse import reconstruction_classes

    classes = reconstruction_classes(10, np.random.default_rng(0))
    assert set(classes[:, 1]) == {0, 1, 2}  # every shape
    assert classes[:, 2].min() == 0 and classes[:, 2].max() == 5  # smallest to largest
    assert len(set(classes[:, 3])) == 10 and classes[:, 3].max() == 39  # orientations spread
    assert len({tuple(row) for row in classes}) == 10
