"""Turning arrays into image files: labelled PNG grids, GIFs, and matplotlib charts.

Offline users see everything here: ``dvc plots show`` loads Vega from a CDN, so its curves are
blank without internet, while these PNGs always render.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from bvae import collapse
from bvae.config import KIND_TERMS


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


def save_labelled_grid(
    path: str | os.PathLike,
    canvas: np.ndarray,
    row_labels: Sequence[str],
    *,
    tile: int = 64,
    padding: int = 2,
    scale: int = 2,
    title: str = "",
) -> None:
    """A mosaic (see ``traversal.mosaic``) with a label to the left of each row."""
    image = Image.fromarray(to_uint8(canvas), mode="L").resize(
        (canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST
    )
    font = label_font()
    margin = 12 + max((int(font.getlength(label)) for label in row_labels), default=0)
    header = LABEL_PX + 12 if title else 4
    framed = Image.new("L", (image.width + margin, image.height + header), color=255)
    framed.paste(image, (margin, header))
    draw = ImageDraw.Draw(framed)
    if title:
        draw.text((6, 4), title, fill=0, font=font)
    for row, label in enumerate(row_labels):
        centre = header + scale * (padding + row * (tile + padding) + tile // 2)
        draw.text((6, centre - LABEL_PX // 2), label, fill=0, font=font)
    framed.save(path)


# Labels stay legible when the MLflow UI shows an image at half its size or less.
LABEL_PX = 18


def label_font(size: int = LABEL_PX):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def save_gif(
    path: str | os.PathLike,
    frames: np.ndarray,
    *,
    scale: int = 2,
    frame_ms: int = 120,
    panel_labels: Sequence[str] = (),
    tile: int = 64,
    padding: int = 2,
) -> None:
    """An animation of ``frames``; ``panel_labels`` go above the panels of a one-row mosaic
    (``traversal.animation_frames``): which latent each panel sweeps, and its KL."""
    font = label_font(LABEL_PX - 4)
    header = LABEL_PX + 6 if panel_labels else 0
    images = []
    for frame in frames:
        image = Image.fromarray(to_uint8(frame), mode="L").resize(
            (frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST
        )
        if panel_labels:
            framed = Image.new("L", (image.width, image.height + header), color=255)
            framed.paste(image, (0, header))
            draw = ImageDraw.Draw(framed)
            for panel, label in enumerate(panel_labels):
                draw.text((scale * (padding + panel * (tile + padding)), 3), label, fill=0, font=font)
            image = framed
        images.append(image)
    images[0].save(path, save_all=True, append_images=images[1:], duration=frame_ms, loop=0)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display here or in CI
    import matplotlib.pyplot as plt

    return plt


def save_kl_bar_chart(path: str | os.PathLike, kl_per_latent: np.ndarray, active_kl: float) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3), dpi=100)
    colours = ["tab:blue" if kl >= active_kl else "tab:gray" for kl in kl_per_latent]
    axis.bar([f"z{k}" for k in range(len(kl_per_latent))], kl_per_latent, color=colours)
    axis.axhline(
        active_kl,
        color="tab:red",
        linewidth=0.8,
        linestyle="--",
        label=f"active ≥ {active_kl} nats",
    )
    axis.set_ylabel("KL (nats)")
    axis.set_title("KL per latent (blue: active)")
    axis.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def read_curves(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    return {key: np.array([float(row[key]) for row in rows]) for key in rows[0]} if rows else {}


def save_training_curves(path: str | os.PathLike, curves: dict[str, np.ndarray]) -> None:
    """Loss and reconstruction, KL and capacity, the KL of every latent, and (curves written
    since model.init) the largest sd of a latent's posterior mean, whose floor is collapse."""
    plt = _pyplot()
    spread = curves.get("largest_mean_sd")
    figure, axes = plt.subplots(
        1, 3 if spread is None else 4, figsize=(15 if spread is None else 20, 4), dpi=100
    )
    step = curves["step"]
    axes[0].plot(step, curves["loss"], label="loss")
    axes[0].plot(step, curves["reconstruction"], label="reconstruction")
    axes[0].set_yscale("log")
    axes[0].set_title("Loss (nats / image)")
    axes[1].plot(step, curves["kl"], label="KL")
    capacity = curves.get("capacity")
    if capacity is not None and np.any(capacity):  # a β run's C is 0 throughout
        axes[1].plot(step, capacity, label="capacity C", linestyle="--")
        axes[1].set_title("KL and capacity (nats)")
    else:
        axes[1].set_title("KL (nats)")
    # The objective's own terms (β-TCVAE's split of the KL; DIP-VAE's covariance penalties).
    terms = [key for key in dict.fromkeys(t for ts in KIND_TERMS.values() for t in ts) if key in curves]
    for key in terms:
        axes[1].plot(step, curves[key], label=key.replace("_", " "), linestyle=":")
    if terms:
        axes[1].set_title("KL and the objective's terms")
    for key in sorted((k for k in curves if k.startswith("kl_z")), key=lambda k: int(k[4:])):
        axes[2].plot(step, curves[key], label=key[3:])
    axes[2].set_title("KL per latent (nats)")
    if spread is not None:
        floor = collapse.MAX_MEAN_SD / 100  # a collapsed run's exact zeros, drawn at the bottom
        axes[3].plot(step, np.maximum(spread, floor), label="largest sd of a latent's mean")
        axes[3].axhline(collapse.MAX_MEAN_SD, color="red", linestyle="--", label="collapse below")
        axes[3].set_yscale("log")
        axes[3].set_title("Does the code depend on the image?")
    for axis in axes:
        axis.set_xlabel("step")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def metrics_chart_png(columns: Sequence[tuple[str, Mapping]], scores: Sequence[tuple[str, str]]) -> bytes:
    """The model against the baselines: a bar per column (the model's representations, each
    baseline) for each headline score; PNG bytes for the report page."""
    import io

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(10, 3.6), dpi=100)
    width = 0.8 / max(len(columns), 1)
    for number, (label, values) in enumerate(columns):
        heights = [np.nan if (values.get(m) or {}).get(n) is None else values[m][n] for m, n in scores]
        axis.bar(np.arange(len(scores)) + number * width, heights, width, label=label)
    axis.set_xticks(np.arange(len(scores)) + width * (len(columns) - 1) / 2)
    axis.set_xticklabels([f"{metric}\n{name}" for metric, name in scores], fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_title("The model against the baselines")
    axis.legend(fontsize=7, ncol=min(len(columns), 4))
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def save_sweep_chart(
    path: str | os.PathLike, rows: Sequence[dict], grid_keys: Sequence[str], metric: str
) -> None:
    """The selection metric against the grid's first key, one line per value of the others
    (β on x, a line per seed: the figure of Locatello et al.'s sweeps)."""
    plt = _pyplot()
    x_key, others = grid_keys[0], list(grid_keys[1:])
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    lines: dict[tuple, list[dict]] = {}
    for row in rows:
        lines.setdefault(tuple(row.get(key) for key in others), []).append(row)
    numeric = all(isinstance(row.get(x_key), int | float) for row in rows)
    for label, members in lines.items():
        members = sorted(members, key=lambda row: row[x_key]) if numeric else members
        xs = [row[x_key] if numeric else str(row.get(x_key)) for row in members]
        ys = [np.nan if row[metric] is None else row[metric] for row in members]
        text = ", ".join(
            f"{key.rsplit('.', 1)[-1]} {value}" for key, value in zip(others, label, strict=True)
        )
        axis.plot(xs, ys, marker="o", label=text or None)
    axis.set_xlabel(x_key)
    axis.set_ylabel(metric)
    axis.set_title(f"{len(rows)} members")
    if others:
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def save_study_chart(
    path: str | os.PathLike, study: Sequence[Mapping], metrics: Sequence[tuple[str, str]]
) -> None:
    """One panel per metric: the metric against each method's regularisation strength, a
    line per method (the median over seeds), the seeds' range shaded (Locatello et al.'s
    figures). ``study``: :func:`bvae.sweep.study_rows`; ``metrics``: (label, key)."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), dpi=100, squeeze=False)
    methods = list(dict.fromkeys(row["method"] for row in study))
    numeric = all(isinstance(row["strength"], int | float) for row in study)
    for axis, (label, key) in zip(axes[0], metrics, strict=True):
        for method in methods:
            points = [row for row in study if row["method"] == method and row.get(key) is not None]
            if not points:
                continue
            xs = [row["strength"] if numeric else str(row["strength"]) for row in points]
            median, low, high = (np.array([row[key][i] for row in points]) for i in range(3))
            (line,) = axis.plot(xs, median, marker="o", label=method)
            axis.fill_between(xs, low, high, color=line.get_color(), alpha=0.2)
        if numeric and all(row["strength"] > 0 for row in study):
            axis.set_xscale("log")
        axis.set_title(label, fontsize=10)
        axis.set_xlabel("strength (β; γ; λ_od for DIP)", fontsize=8)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
