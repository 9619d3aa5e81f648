"""One HTML file that holds a run's results, readable offline.

``dvc plots show`` loads Vega from a CDN, so offline its curves are blank. This page needs
nothing but itself: the images (training curves, KL per latent, traversal grids and GIFs,
reconstructions) are embedded as data URIs, the tables are plain HTML, and it has no
scripts. The page is the Jinja2 template ``report.html.j2`` (autoescaped; numbers through
:func:`bvae.tables.number`), filled by a pure function of what the stages wrote;
``bvae.stages.report`` reads and writes.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from bvae.config import OBJECTIVE_SETTINGS
from bvae.report_keys import SCORE_NAMES
from bvae.tables import MISSING, number
from bvae.traversal import COLLAPSED_NOTE, summary_line

MIME = {".png": "image/png", ".gif": "image/gif"}


@dataclass(frozen=True)
class Figure:
    """An image for the page: its caption, file suffix (``.png``/``.gif``) and bytes."""

    caption: str
    suffix: str
    data: bytes

    @property
    def data_uri(self) -> str:
        mime = MIME.get(self.suffix, "application/octet-stream")
        return f"data:{mime};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(frozen=True)
class ReportInputs:
    title: str
    params: Mapping[str, object]  # flat: {"objective.beta": 4.0, ...}
    train_summary: Mapping[str, object]
    metrics: Mapping[str, object]  # reports/metrics.json
    latents: Mapping[str, object]  # reports/latents.json
    figures: Sequence[Figure] = field(default_factory=tuple)
    run_link: str | None = None  # the MLflow run's page
    run_id: str | None = None
    browse_command: str | None = None  # how to open the run's page (a file store needs `mlflow ui`)
    commit: str | None = None  # the code that made the model
    data_source: str | None = None  # what the model trained on, in words


# The scores the chart of the model against the baselines shows (each metric's own, all in [0, 1]).
CHART_SCORES = (
    ("beta_vae", "eval_accuracy"),
    ("factor_vae", "eval_accuracy"),
    ("mig", "discrete_mig"),
    ("dci", "disentanglement"),
    ("sap", "sap_score"),
    ("modularity", "modularity"),
)

# Objective params a run of another kind never reads: left off its page.
UNUSED_BY = {
    kind: tuple(
        f"objective.{key}" for other in OBJECTIVE_SETTINGS.values() for key in other if key not in own
    )
    for kind, own in OBJECTIVE_SETTINGS.items()
}


def shown_params(params: Mapping[str, object]) -> dict[str, object]:
    """The params that made this model: without the other objective's settings, and without
    ``objective.gaussian_std`` for a Bernoulli model."""
    hidden = set(UNUSED_BY.get(str(params.get("objective.kind")), ()))
    if params.get("model.likelihood", "bernoulli") != "gaussian":
        hidden.add("objective.gaussian_std")
    return {key: value for key, value in params.items() if key not in hidden}


def metric_columns(metrics: Mapping[str, object]) -> list[tuple[str, Mapping]]:
    """The columns of the metric table: the model's representations, then each baseline."""
    columns = [(f"model ({kind})", scores) for kind, scores in (metrics.get("model") or {}).items()]
    columns += [(f"baseline: {name}", scores) for name, scores in (metrics.get("baselines") or {}).items()]
    return columns


def metric_rows(metrics: Mapping[str, object]) -> tuple[list[str], list[list[object]]]:
    """A row per score (``mig.discrete_mig``…) with the model beside every baseline."""
    columns = metric_columns(metrics)
    rows = []
    for metric, names in SCORE_NAMES.items():
        for name in names:
            values = [(scores.get(metric) or {}).get(name) for _, scores in columns]
            if any(value is not None for value in values):
                rows.append([f"{metric}.{name}", *values])
    return ["score", *(label for label, _ in columns)], rows


def collapse_found(inputs: ReportInputs) -> list[str]:
    """Where the code was found collapsed (training, evaluation, the latent table): the page
    opens with one plain warning when any did."""
    return [
        where
        for where, collapsed in (
            ("training", inputs.train_summary.get("collapsed")),
            ("evaluation", (inputs.metrics.get("protocol") or {}).get("collapsed")),
            ("latent table", inputs.latents.get("collapsed")),
        )
        if collapsed
    ]


def latent_rows(latents: Mapping[str, object]) -> tuple[list[str], list[list[object]]]:
    table = latents.get("latents") or []
    names = list(table[0]["normalized_mi"]) if table else []
    header = ["latent", "encodes", "best", "second", "relative gap", "KL (nats)", "posterior variance"]
    rows = [
        [
            row["latent"],
            row["encodes"],
            row.get("best_factor"),
            row.get("second_factor") or MISSING,
            f"{row.get('relative_gap', 0):.0%}",
            row["kl"],
            row["mean_posterior_variance"],
            *(round(row["normalized_mi"][name], 2) for name in names),
        ]
        for row in table
    ]
    return [*header, *(f"MI/H {name}" for name in names)], rows


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        autoescape=True,  # every caption, param and table cell is escaped
        undefined=jinja2.StrictUndefined,  # a name the page uses but was not given fails loudly
    )
    environment.filters["number"] = number
    environment.tests["numeric"] = lambda value: (
        isinstance(value, int | float) and not isinstance(value, bool)
    )
    return environment


TEMPLATE = Path(__file__).with_name("report.html.j2")


def render_html(inputs: ReportInputs) -> str:
    """The whole page (``report.html.j2``): headline, params, training, metrics beside the
    baselines, the latent table, and every figure."""
    summary = inputs.train_summary
    heldout = inputs.metrics.get("heldout") or {}
    protocol = dict(inputs.metrics.get("protocol") or {})
    verdicts = ("comparable_to_dlib", "differs_from_dlib")
    metric_header, metric_table = metric_rows(inputs.metrics)
    latent_header, latent_table = latent_rows(inputs.latents)
    summary_of_latents = inputs.latents.get("summary")
    training = [
        ["steps", summary.get("step")],
        ["loss (nats / image)", summary.get("loss")],
        ["reconstruction (nats / image)", summary.get("reconstruction")],
        ["KL (nats)", summary.get("kl")],
        ["active latents", summary.get("active_latents")],
        ["steps / s", summary.get("steps_per_second")],
    ]
    training += [[f"held-out {key.replace('_', ' ')}", value] for key, value in heldout.items()]
    template = _environment().from_string(TEMPLATE.read_text(encoding="utf-8"))
    return template.render(
        title=inputs.title,
        data_source=inputs.data_source,
        run_link=inputs.run_link,
        run_id=inputs.run_id,
        browse_command=inputs.browse_command,
        commit=inputs.commit,
        collapse_found=collapse_found(inputs),
        collapsed_note=COLLAPSED_NOTE,
        training=training,
        metric_header=metric_header,
        metric_rows=metric_table,
        protocol_rows=[[k, v] for k, v in protocol.items() if k not in verdicts] if protocol else None,
        comparable=bool(protocol.get("comparable_to_dlib")),
        differs=protocol.get("differs_from_dlib", ""),
        latent_header=latent_header,
        latent_rows=latent_table,
        latent_summary=summary_line(summary_of_latents) if summary_of_latents else None,
        entangled_share=inputs.latents.get("entangled_share"),
        figures=inputs.figures,
        params=[[key, value] for key, value in shown_params(inputs.params).items()],
    )
