"""One HTML file that holds a run's results, readable offline.

``dvc plots show`` loads Vega from a CDN, so offline its curves are blank. This page needs
nothing but itself: the images (training curves, KL per latent, traversal grids and GIFs,
reconstructions) are embedded as data URIs, the tables are plain HTML, and it has no
scripts. A pure function of what the stages wrote; ``bvae.stages.report`` reads and writes.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bvae.report_keys import SCORE_NAMES
from bvae.traversal import COLLAPSED_NOTE, summary_line

MIME = {".png": "image/png", ".gif": "image/gif"}


@dataclass(frozen=True)
class Figure:
    """An image for the page: its caption, file suffix (``.png``/``.gif``) and bytes."""

    caption: str
    suffix: str
    data: bytes


@dataclass(frozen=True)
class ReportInputs:
    title: str
    params: Mapping[str, object]  # flat: {"objective.beta": 4.0, ...}
    train_summary: Mapping[str, object]
    metrics: Mapping[str, object]  # reports/metrics.json
    latents: Mapping[str, object]  # reports/latents.json
    figures: Sequence[Figure] = field(default_factory=tuple)
    run_link: str | None = None  # the MLflow run's page
    data_source: str | None = None  # what the model trained on, in words


def _e(value: object) -> str:
    return html.escape(str(value))


def _number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _e(value) if value is not None else "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def _cell(value: object) -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return f"<td class=n>{_number(value)}</td>" if numeric else f"<td>{_number(value)}</td>"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{_e(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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


def _protocol(metrics: Mapping[str, object]) -> str:
    protocol = metrics.get("protocol") or {}
    if not protocol:
        return ""
    if protocol.get("comparable_to_dlib"):
        verdict = "<p class=ok>disentanglement_lib's protocol: comparable with published figures.</p>"
    else:
        verdict = (
            "<p class=warn>Not comparable with disentanglement_lib's or published figures: "
            f"{_e(protocol.get('differs_from_dlib', ''))}.</p>"
        )
    verdicts = ("comparable_to_dlib", "differs_from_dlib")
    rows = [[key, value] for key, value in protocol.items() if key not in verdicts]
    return verdict + _table(["protocol", ""], rows)


def collapse_banner(inputs: ReportInputs) -> str:
    """One plain warning when training, evaluation or the latent table found the code collapsed."""
    found = [
        where
        for where, collapsed in (
            ("training", inputs.train_summary.get("collapsed")),
            ("evaluation", (inputs.metrics.get("protocol") or {}).get("collapsed")),
            ("latent table", inputs.latents.get("collapsed")),
        )
        if collapsed
    ]
    if not found:
        return ""
    return f"<p class=warn><b>{_e(COLLAPSED_NOTE)}</b> (found by: {_e(', '.join(found))})</p>"


def _latent_table(latents: Mapping[str, object]) -> str:
    table = latents.get("latents") or []
    if not table:
        return "<p>No latent table.</p>"
    names = list(table[0]["normalized_mi"])
    header = ["latent", "encodes", "best", "second", "relative gap", "KL (nats)", "posterior variance"]
    header += [f"MI/H {name}" for name in names]
    rows = [
        [
            row["latent"],
            row["encodes"],
            row.get("best_factor"),
            row.get("second_factor") or "–",
            f"{row.get('relative_gap', 0):.0%}",
            row["kl"],
            row["mean_posterior_variance"],
            *(round(row["normalized_mi"][name], 2) for name in names),
        ]
        for row in table
    ]
    summary = latents.get("summary")
    share = latents.get("entangled_share")
    lines = f"<p><b>{_e(summary_line(summary))}.</b>" if summary else "<p>"
    if share is not None:
        lines += (
            f" A latent is entangled when its second factor's MI/H reaches {share:.0%} of its best's. "
            "MI/H: mutual information with the factor over the factor's entropy."
        )
    return lines + "</p>" + _table(header, rows)


def _figure(figure: Figure) -> str:
    encoded = base64.b64encode(figure.data).decode("ascii")
    mime = MIME.get(figure.suffix, "application/octet-stream")
    return (
        f'<figure><img alt="{_e(figure.caption)}" src="data:{mime};base64,{encoded}">'
        f"<figcaption>{_e(figure.caption)}</figcaption></figure>"
    )


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:left}td.n{text-align:right}th{background:#f3f3f3}
figure{display:inline-block;margin:.5em;vertical-align:top}img{max-width:100%;image-rendering:pixelated}
figcaption{font-size:.9em;color:#555}.warn{color:#a40}.ok{color:#060}
"""


def render_html(inputs: ReportInputs) -> str:
    """The whole page: headline, params, training, metrics beside the baselines, the latent
    table, and every figure."""
    summary = inputs.train_summary
    heldout = inputs.metrics.get("heldout") or {}
    header, rows = metric_rows(inputs.metrics)
    link = f' · <a href="{_e(inputs.run_link)}">MLflow run</a>' if inputs.run_link else ""
    training = [
        ["steps", summary.get("step")],
        ["loss (nats / image)", summary.get("loss")],
        ["reconstruction (nats / image)", summary.get("reconstruction")],
        ["KL (nats)", summary.get("kl")],
        ["active latents", summary.get("active_latents")],
        ["steps / s", summary.get("steps_per_second")],
    ]
    training += [[f"held-out {key.replace('_', ' ')}", value] for key, value in heldout.items()]
    params = [[key, value] for key, value in inputs.params.items()]
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>{_e(inputs.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(inputs.title)}</h1>",
        f"<p>data: {_e(inputs.data_source or 'unknown')}{link}</p>",
        collapse_banner(inputs),
        "<h2>Training</h2>",
        _table(["figure", "value"], training),
        "<h2>Disentanglement metrics</h2>",
        _table(header, rows) if rows else "<p>No metrics.</p>",
        _protocol(inputs.metrics),
        "<h2>What each latent encodes</h2>",
        _latent_table(inputs.latents),
        "<h2>Figures</h2>",
        "".join(_figure(figure) for figure in inputs.figures),
        "<h2>Parameters</h2>",
        _table(["param", "value"], params),
        "</body></html>",
    ]
    return "\n".join(parts)
