"""The posterior-collapse detector (bvae.collapse) on real tiny runs, single and ensemble.

A capacity member at Adam 1e-2 (γ = 1000, C = 2 nats from the first step) kills its encoder
within 20 steps: every posterior mean exactly constant while the KL is paid. A β = 1 member
at the usual 5e-4 beside it stays image-dependent. Both on PyTorch's default init, the one
that let the capacity recipe collapse (RESULTS.md).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from bvae import collapse
from bvae.config import ModelConfig, ObjectiveConfig, TrainConfig
from bvae.data import factors, render
from bvae.training import Member, Trainer

MODEL = ModelConfig(init="pytorch")
DYING = Member(
    ObjectiveConfig(kind="capacity", gamma=1000.0, capacity_max_nats=2.0, capacity_steps=1),
    TrainConfig(steps=30, batch_size=32, log_every=10, learning_rate=1e-2),
)
HEALTHY = Member(
    ObjectiveConfig(kind="beta", beta=1.0),
    TrainConfig(steps=30, batch_size=32, log_every=10, learning_rate=5e-4),
)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return render.render_images(factors.classes_from_index(rng.integers(0, factors.NUM_IMAGES, 2048)))


@pytest.fixture(scope="module")
def ensemble_histories(images):
    trainer = Trainer(MODEL, [DYING, HEALTHY], images, mechanism="loop")
    return trainer.train(show_progress=False)


def test_the_ensemble_flags_the_collapsed_member_alone(ensemble_histories, caplog):
    dying, healthy = ensemble_histories
    assert collapse.collapse_record(dying) == {"collapsed": True, "collapse_first_step": 20}
    assert dying[-1]["kl"] > 1.0 and dying[-1]["largest_mean_sd"] < 1e-6  # KL paid by a constant
    assert collapse.collapse_record(healthy) == {"collapsed": False, "collapse_first_step": None}
    assert min(row["largest_mean_sd"] for row in healthy if row["kl"] > collapse.MIN_KL_NATS) > 0.01

    watches = [collapse.CollapseWatch("member dying"), collapse.CollapseWatch("member healthy")]
    with caplog.at_level(logging.WARNING, logger="bvae.collapse"):
        for rows in range(1, len(dying) + 1):  # as on_log sees them, a row at a time
            for watch, history in zip(watches, ensemble_histories, strict=True):
                watch.catch_up(history[:rows])
    (line,) = [record for record in caplog.records if record.levelno == logging.WARNING]
    message = line.getMessage()
    assert "collapse" in message and "member dying" in message and "step 20" in message
    assert "model.init" in message and "gamma" in message  # what to try
    assert watches[0].warned_at == 20 and watches[1].warned_at is None


def test_a_single_run_is_flagged_as_its_ensemble_member(images, ensemble_histories):
    (single,) = Trainer(MODEL, [DYING], images).train(show_progress=False)
    assert collapse.collapse_record(single) == collapse.collapse_record(ensemble_histories[0])
    assert [row["largest_mean_sd"] for row in single] == [
        row["largest_mean_sd"] for row in ensemble_histories[0]
    ]


def test_codes_of_many_images():
    rng = np.random.default_rng(0)
    constant = np.tile(rng.normal(size=(1, 10)), (1000, 1))
    assert collapse.codes_collapsed(25.0, constant)  # 25 nats paid by one code for every image
    assert not collapse.codes_collapsed(0.01, constant)  # no KL: inactive, not collapsed
    assert not collapse.codes_collapsed(25.0, constant + rng.normal(0, 0.05, size=constant.shape))
