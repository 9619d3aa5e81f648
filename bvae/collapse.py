"""Posterior collapse: a code that carries KL but says nothing about its input.

A VAE whose encoder has died (its ReLUs off for every image) gives every image the same
posterior. Such a posterior can still pay any KL the objective asks for, by constant means
and variances away from 1: Burgess et al.'s capacity recipe with PyTorch's default init
paid exactly C = 25 nats that way (RESULTS.md). The KL curve then looks healthy; what gives
it away is that no latent's posterior mean varies across images.

The test uses what a training step already computes (the batch's posterior means, reduced
to ``largest_mean_sd`` on the device and averaged over a log window), so it costs no extra
host sync; ``evaluate`` and ``traverse`` apply it to the codes of thousands of images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

# Below this KL the code carries (almost) nothing, by design or by collapse to the prior: that
# is an inactive code (the latent table's "inactive"), not the failure detected here. The same
# 0.1 nats as traverse.active_kl's default, summed over all latents.
MIN_KL_NATS = 0.1
# A latent whose posterior mean varies by less than this across images (in units of the
# prior's sd) carries at most about ½·0.01² = 5e-5 nats about them. Measured on this CPU over
# 2,000 steps (RESULTS.md, issue #26), once the KL passes MIN_KL_NATS: the capacity recipe
# reads ≤ 0.0002 with PyTorch's init and ≤ 0.004 with Glorot's (both dead: reconstruction
# 570 nats); healthy runs read ≥ 0.05 (that recipe with Kaiming init) and ≥ 0.017 (β = 4 with
# PyTorch's init, at step 300, just out of its early dip to the prior).
MAX_MEAN_SD = 0.01


def is_collapsed(kl_nats: float, largest_mean_sd: float) -> bool:
    """The code pays ``kl_nats`` but no latent's posterior mean moves with the image."""
    return kl_nats > MIN_KL_NATS and largest_mean_sd < MAX_MEAN_SD


def codes_collapsed(kl_nats: float, means: np.ndarray) -> bool:
    """:func:`is_collapsed` for the posterior means ``(n, latent_dim)`` of ``n`` images."""
    spread = float(np.asarray(means, dtype=np.float64).std(axis=0).max()) if len(means) > 1 else 0.0
    return is_collapsed(kl_nats, spread)


def collapse_record(history: list[dict[str, float]]) -> dict:
    """What the curves say: collapsed at the end, and the first log step it was seen."""
    steps = [row["step"] for row in history if is_collapsed(row["kl"], row["largest_mean_sd"])]
    return {
        "collapsed": bool(steps) and bool(history) and steps[-1] == history[-1]["step"],
        "collapse_first_step": int(steps[0]) if steps else None,
    }


WHAT_TO_TRY = (
    "set model.init to kaiming (or glorot) if it is pytorch, or lower objective.gamma / objective.beta"
)


@dataclass
class CollapseWatch:
    """Reads a run's curve rows as they come and warns once when the code collapses, and
    once if it recovers. ``name`` says which run or member it is in the line."""

    name: str = "the model"
    seen_rows: int = 0
    warned_at: int | None = None
    recovered_at: int | None = None
    _state: bool = field(default=False, repr=False)

    def catch_up(self, history: list[dict[str, float]]) -> None:
        for row in history[self.seen_rows :]:
            collapsed = is_collapsed(row["kl"], row["largest_mean_sd"])
            step = int(row["step"])
            if collapsed and self.warned_at is None:
                self.warned_at = step
                log.warning(
                    "posterior collapse in %s at step %d: the KL (%.2f nats) is paid by a constant "
                    "posterior (no latent's mean varies across the batch: largest sd %.4f < %g), so "
                    "the encoder ignores its input. Training goes on; the run is marked collapsed "
                    "if it ends so. Try: %s.",
                    self.name,
                    step,
                    row["kl"],
                    row["largest_mean_sd"],
                    MAX_MEAN_SD,
                    WHAT_TO_TRY,
                )
            elif not collapsed and self._state and self.recovered_at is None:
                self.recovered_at = step
                log.warning("%s: the code depends on its input again at step %d", self.name, step)
            self._state = collapsed
            self.seen_rows += 1
