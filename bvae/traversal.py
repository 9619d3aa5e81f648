"""Latent traversals and the latent → factor table: pure functions of a decoder and codes.

A traversal sweeps one latent across a range while the others stay at a seed image's posterior
mean (Higgins et al. 2017, Fig. 7). Rows are ordered by the latent's KL, so the active latents
(the ones that carry information) come first. Nothing here writes files or knows MLflow:
``bvae.stages.traverse`` renders and saves what these return.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from bvae.metrics.discrete import entropy, histogram_discretize, mutual_information
from bvae.tables import markdown_table

# decode(latents (n, d)) -> pixel probabilities (n, 64, 64) in [0, 1]
Decoder = Callable[[np.ndarray], np.ndarray]


def linear_values(latent_dim: int, num_steps: int, low: float = -3.0, high: float = 3.0) -> np.ndarray:
    """``(latent_dim, num_steps)``: the same evenly spaced sweep for every latent."""
    return np.tile(np.linspace(low, high, num_steps), (latent_dim, 1))


def quantile_values(
    latents_mean: np.ndarray, num_steps: int, low: float = 0.05, high: float = 0.95
) -> np.ndarray:
    """``(latent_dim, num_steps)``: per latent, quantiles of its posterior means over the data.

    Sweeps each latent over the range the encoder actually uses, which for an active latent
    can be far from [-3, 3].
    """
    quantiles = np.linspace(low, high, num_steps)
    return np.quantile(latents_mean, quantiles, axis=0).T


def order_by_kl(kl_per_latent: np.ndarray) -> np.ndarray:
    """Latent indices, most informative (highest KL) first."""
    return np.argsort(-np.asarray(kl_per_latent), kind="stable")


def traversal_grid(
    decode: Decoder, seed_code: np.ndarray, values: np.ndarray, order: Sequence[int]
) -> np.ndarray:
    """``(len(order), num_steps, H, W)`` images: row r sweeps latent ``order[r]``."""
    rows = []
    for latent in order:
        codes = np.repeat(seed_code[None, :], values.shape[1], axis=0).astype(np.float32)
        codes[:, latent] = values[latent]
        rows.append(decode(codes))
    return np.stack(rows)


def mosaic(images: np.ndarray, padding: int = 2, fill: float = 0.5) -> np.ndarray:
    """``(rows, cols, H, W)`` images → one ``(rows·(H+p)+p, cols·(W+p)+p)`` float array."""
    rows, cols, height, width = images.shape
    canvas = np.full((rows * (height + padding) + padding, cols * (width + padding) + padding), fill)
    for r in range(rows):
        for c in range(cols):
            top, left = padding + r * (height + padding), padding + c * (width + padding)
            canvas[top : top + height, left : left + width] = images[r, c]
    return canvas


def animation_frames(grid: np.ndarray) -> np.ndarray:
    """Frames for a GIF in which every latent cycles at once, one panel each.

    ``grid`` is a traversal grid ``(latents, steps, H, W)``; frame t shows step t of every
    latent side by side, going forward then back so the loop is smooth.
    """
    steps = grid.shape[1]
    sequence = list(range(steps)) + list(range(steps - 2, 0, -1))
    return np.stack([mosaic(grid[:, t][None]) for t in sequence])


# A latent whose second-best factor holds at least this share of its best factor's
# normalised MI is "entangled" between the two: the relative gap (best - second) / best is
# below 1 - ENTANGLED_SHARE. At 0.5, a latent at MI/H 0.14 posX, 0.10 posY (gap 29 %) is
# entangled; one at 0.80 posX, 0.05 posY (gap 94 %) encodes posX.
ENTANGLED_SHARE = 0.5


def independence_bias(num_bins: int, num_values: int, num_samples: int) -> float:
    """The plug-in MI (nats) a latent independent of a factor shows anyway, to first order
    (Miller 1955): (bins - 1)(values - 1) / 2n. An active latent whose MI with every factor
    stays within twice this carries KL but no factor information: a constant shift of the
    posterior means costs KL and tells nothing (a capacity model did this, issue #17)."""
    return (num_bins - 1) * (num_values - 1) / (2 * num_samples)


def latent_factor_table(
    latents_mean: np.ndarray,
    latents_logvar: np.ndarray,
    factor_classes: np.ndarray,
    factor_names: Sequence[str],
    kl_per_latent: np.ndarray,
    *,
    active_kl: float = 0.1,
    entangled_share: float = ENTANGLED_SHARE,
    num_bins: int = 20,
) -> list[dict]:
    """What each latent encodes: KL, mean posterior variance, MI with each factor, and its best
    and second-best factor with the relative gap between them.

    MI is in nats on 20-bin discretised means (as MIG); ``normalized_mi`` divides by the
    factor's entropy so factors with many values are comparable. A latent whose KL is below
    ``active_kl`` is "inactive" whatever its MI; an active one whose MI with every factor is
    within twice :func:`independence_bias` is "uninformative"; one whose second factor reaches
    ``entangled_share`` of its best is "entangled: best+second".
    """
    binned = histogram_discretize(latents_mean, num_bins)
    factor_entropy = [entropy(factor_classes[:, j]) for j in range(factor_classes.shape[1])]
    chance = [
        2 * independence_bias(num_bins, len(np.unique(factor_classes[:, j])), len(factor_classes))
        for j in range(factor_classes.shape[1])
    ]
    table = []
    for latent in order_by_kl(kl_per_latent):
        information = {
            name: mutual_information(binned[:, latent], factor_classes[:, j])
            for j, name in enumerate(factor_names)
        }
        normalized = {name: information[name] / factor_entropy[j] for j, name in enumerate(factor_names)}
        ranked = sorted(normalized, key=normalized.get, reverse=True)
        best, second = ranked[0], (ranked[1] if len(ranked) > 1 else None)
        top = normalized[best]
        runner_up = normalized[second] if second else 0.0
        relative_gap = (top - runner_up) / top if top > 0 else 0.0
        active = bool(kl_per_latent[latent] >= active_kl)
        informative = any(information[name] > chance[j] for j, name in enumerate(factor_names))
        if not active:
            encodes = "inactive"
        elif not informative:
            encodes = "uninformative"
        elif second and runner_up >= entangled_share * top and top > 0:
            encodes = f"entangled: {best}+{second}"
        else:
            encodes = best
        table.append(
            {
                "latent": f"z{latent}",
                "kl": float(kl_per_latent[latent]),
                "mean_posterior_variance": float(np.mean(np.exp(latents_logvar[:, latent]))),
                "mutual_information": information,
                "normalized_mi": normalized,
                "best_factor": best,
                "second_factor": second,
                "relative_gap": float(relative_gap),
                "encodes": encodes,
            }
        )
    return table


def latent_summary(table: list[dict]) -> dict[str, int]:
    """How many latents are active, and of those how many encode one factor, are entangled,
    or carry no factor information."""
    active = [row for row in table if row["encodes"] != "inactive"]
    entangled = sum(row["encodes"].startswith("entangled") for row in active)
    uninformative = sum(row["encodes"] == "uninformative" for row in active)
    return {
        "active": len(active),
        "disentangled": len(active) - entangled - uninformative,
        "entangled": entangled,
        "uninformative": uninformative,
        "inactive": len(table) - len(active),
    }


def summary_line(summary: dict[str, int]) -> str:
    uninformative = summary.get("uninformative", 0)  # absent from reports made before it
    return (
        f"{summary['active']} active latents: {summary['disentangled']} encode one factor, "
        f"{summary['entangled']} entangled"
        + (f", {uninformative} carry KL but no factor information" if uninformative else "")
        + f"; {summary['inactive']} inactive"
    )


COLLAPSED_NOTE = (
    "Posterior collapse: every image gets the same code. The KL is paid by a constant "
    "posterior, so no latent says anything about the image and every traversal shows one "
    "picture; this model is not a representation (try model.init kaiming, or a smaller γ or β)."
)


def latent_table_markdown(
    table: list[dict], entangled_share: float = ENTANGLED_SHARE, collapsed: bool = False
) -> str:
    """The latent table as Markdown: the summary line (after the collapse note, for a
    collapsed model), then a row per latent."""
    names = list(table[0]["normalized_mi"]) if table else []
    lines = [f"**{COLLAPSED_NOTE}**", ""] if collapsed else []
    lines += [
        summary_line(latent_summary(table)) + ".",
        "",
        f"A latent is *entangled* when its second factor's MI/H is at least {entangled_share:.0%} "
        "of its best factor's (relative gap below "
        f"{1 - entangled_share:.0%}). An active latent is *uninformative* when its MI with every "
        "factor stays within twice what a latent independent of it shows by chance. MI/H: mutual "
        "information with the factor over the factor's entropy, on 20-bin discretised posterior means.",
        "",
    ]
    header = ["latent", "encodes", "best", "second", "gap", "KL (nats)", "mean posterior variance"]
    rows = [
        [
            row["latent"],
            row["encodes"],
            row["best_factor"],
            row["second_factor"] or "-",
            f"{row['relative_gap']:.0%}",
            f"{row['kl']:.2f}",
            f"{row['mean_posterior_variance']:.4f}",
            *(f"{row['normalized_mi'][n]:.2f}" for n in names),
        ]
        for row in table
    ]
    lines.append(markdown_table([*header, *(f"MI/H {n}" for n in names)], rows))
    return "\n".join(lines) + "\n"
