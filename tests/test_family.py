"""The β-VAE family's objectives (β-TCVAE, DIP-VAE-I/II) against hand-derived values and the
papers' definitions, and each member of a mixed ensemble equal to its own single run."""

from __future__ import annotations

import math

import pytest
import torch

from bvae.errors import InvalidSetting
from bvae.objectives import (
    TERM_COLUMNS,
    MemberObjectives,
    ObjectiveConfig,
    dip_covariance,
    dip_penalties,
    gaussian_log_density,
    kl_per_latent,
    log_importance_weights,
    objective_terms,
    tc_decomposition,
    term_columns,
)

N = 737_280  # dSprites


def codes(seed=0, n=8, d=4, same_posterior=False):
    generator = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, d, generator=generator, dtype=torch.float64)
    logvar = torch.randn(n, d, generator=generator, dtype=torch.float64) * 0.3
    if same_posterior:
        mean, logvar = mean[:1].expand(n, d), logvar[:1].expand(n, d)
    noise = torch.randn(n, d, generator=generator, dtype=torch.float64)
    return mean + torch.exp(0.5 * logvar) * noise, mean, logvar, noise


def test_the_importance_weights_are_the_papers():
    """MWS: every pair 1/(N·B). MSS (corrected): own 1/N, the next image (N − M)/(N·M), the
    other M − 1 images 1/M, M = B − 1; each row sums to 1."""
    b, n = 4, 100
    assert torch.allclose(log_importance_weights(b, n, "mws").exp(), torch.full((b, b), 1 / (n * b)))
    weights = log_importance_weights(b, n, "mss").double().exp()
    m, stratum = 3, (100 - 3) / (100 * 3)
    expected = torch.tensor(
        [
            [1 / n, stratum, 1 / m, 1 / m],
            [1 / m, 1 / n, stratum, 1 / m],
            [1 / m, 1 / m, 1 / n, stratum],
            [stratum, 1 / m, 1 / m, 1 / n],
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(weights, expected, rtol=1e-6)
    assert torch.allclose(weights.sum(dim=1), torch.ones(b, dtype=torch.float64), rtol=1e-6)
    with pytest.raises(ValueError, match="2 or more images"):
        log_importance_weights(1, n, "mss")


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_the_three_terms_add_up_to_the_sampled_kl(estimator):
    z, mean, logvar, _ = codes()
    mi, tc, dimwise = tc_decomposition(z, mean, logvar, log_importance_weights(8, N, estimator).double())
    log_q = gaussian_log_density(z, mean, logvar).sum(dim=-1)
    log_p = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(dim=-1)
    assert (mi + tc + dimwise).item() == pytest.approx((log_q - log_p).mean().item(), rel=1e-12)


def test_one_posterior_for_every_image_has_the_hand_derived_terms():
    """Every image with the same posterior: q(z) = q(z|x). Derived: under MWS each log q term
    is log(B · q / (N·B)), so MI = log N and TC = (D − 1)·log N; MSS's rows sum to 1, so its
    MI and TC are exactly 0. The dimension-wise KL is then E[log q(z|x) − log p(z)] − MI − TC."""
    z, mean, logvar, _ = codes(same_posterior=True)
    d = z.shape[-1]
    mi, tc, _ = tc_decomposition(z, mean, logvar, log_importance_weights(8, N, "mws").double())
    assert mi.item() == pytest.approx(math.log(N), rel=1e-6)
    assert tc.item() == pytest.approx((d - 1) * math.log(N), rel=1e-6)
    mi, tc, _ = tc_decomposition(z, mean, logvar, log_importance_weights(8, N, "mss").double())
    assert abs(mi.item()) < 1e-6 and abs(tc.item()) < 1e-6


def test_dip_covariances_and_penalties_by_hand():
    """Means (±1, ±2) over four images: Cov[μ] = diag(1, 4) with no correlation; DIP-II adds
    the mean posterior variance (e^0 = 1, e^{ln 2} = 2) to the diagonal. Penalties:
    Σ_{i≠j} C_ij² and Σ_i (C_ii − 1)²."""
    mean = torch.tensor([[1.0, 2.0], [-1.0, 2.0], [1.0, -2.0], [-1.0, -2.0]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, math.log(2)]] * 4, dtype=torch.float64)
    first = dip_covariance(mean, logvar, False)
    assert torch.allclose(first, torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64))
    assert [x.item() for x in dip_penalties(first)] == pytest.approx([0.0, 9.0])
    second = dip_covariance(mean, logvar, True)
    assert torch.allclose(second, torch.tensor([[2.0, 0.0], [0.0, 6.0]], dtype=torch.float64))
    correlated = torch.tensor([[1.0, 0.5], [0.5, 1.0]])
    assert [x.item() for x in dip_penalties(correlated)] == pytest.approx([0.5, 0.0])


def family_batch(k, seed=0, n=16, d=6):
    generator = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 1, 64, 64, generator=generator) < 0.1).float()
    logits = torch.randn(n, 1, 64, 64, generator=generator)
    mean = torch.randn(n, d, generator=generator)
    logvar = torch.randn(n, d, generator=generator) * 0.5
    noise = torch.randn(n, d, generator=generator)
    return [t.unsqueeze(0).expand(k, *t.shape) for t in (logits, images, mean, logvar)], noise.expand(k, n, d)


def named_terms(configs, capacities=None):
    stack, noise = family_batch(len(configs))
    objectives = MemberObjectives.of(configs, batch_size=16, dataset_size=N)
    table = objective_terms(
        "bernoulli", *stack, objectives, torch.tensor(capacities or [0.0] * len(configs)), noise
    )
    return [dict(zip(objectives.columns, row.tolist(), strict=False)) for row in table], stack, noise


def test_each_kind_is_its_papers_loss():
    (tc_row,), stack, noise = named_terms([ObjectiveConfig(kind="beta_tc", beta=6.0)])
    logits, images, mean, logvar = (t[0] for t in stack)
    z = mean + torch.exp(0.5 * logvar) * noise[0]
    mi, tc, dimwise = tc_decomposition(z, mean, logvar, log_importance_weights(16, N, "mws"))
    assert tc_row["total_correlation"] == pytest.approx(tc.item(), rel=1e-6)
    assert tc_row["loss"] == pytest.approx(
        tc_row["reconstruction"] + (mi + 6.0 * tc + dimwise).item(), rel=1e-6
    )
    for kind, lambda_d in (("dip_i", 100.0), ("dip_ii", 10.0)):  # dlib: λ_d = 10·λ_od (I), λ_od (II)
        (row,), _, _ = named_terms([ObjectiveConfig(kind=kind, lambda_od=10.0)])
        off, diag = dip_penalties(dip_covariance(mean, logvar, kind == "dip_ii"))
        kl = kl_per_latent(mean, logvar).sum()
        expected = row["reconstruction"] + (kl + 10.0 * off + lambda_d * diag).item()
        assert row["loss"] == pytest.approx(expected, rel=1e-6) and row["dip_diagonal"] == pytest.approx(
            diag.item()
        )


def test_a_mixed_ensembles_rows_are_each_members_own():
    """Five kinds in one call: every member's loss is its K = 1 loss, to the bit for the β and
    capacity members (their arithmetic is unchanged by the other kinds beside them)."""
    configs = [
        ObjectiveConfig(beta=4.0),
        ObjectiveConfig(kind="capacity", gamma=100.0),
        ObjectiveConfig(kind="beta_tc", beta=6.0, tc_estimator="mss"),
        ObjectiveConfig(kind="dip_i", lambda_od=5.0),
        ObjectiveConfig(kind="dip_ii", lambda_od=2.0, lambda_d=3.0),
    ]
    capacities = [0.0, 2.5, 0.0, 0.0, 0.0]
    together, _, _ = named_terms(configs, capacities)
    assert list(together[0]) == [*TERM_COLUMNS, *term_columns([c.kind for c in configs])[4:]]
    for k, (config, capacity) in enumerate(zip(configs, capacities, strict=True)):
        (alone,), _, _ = named_terms([config], [capacity])
        if config.kind in ("beta", "capacity"):
            assert together[k]["loss"] == alone["loss"]
        assert together[k]["loss"] == pytest.approx(alone["loss"], rel=1e-6), config.kind


def test_the_family_settings_are_checked():
    assert ObjectiveConfig(kind="dip_i", lambda_od=2.0).dip_lambda_d() == 20.0
    assert ObjectiveConfig(kind="dip_ii", lambda_od=2.0).dip_lambda_d() == 2.0
    assert ObjectiveConfig(kind="dip_i", lambda_od=2.0, lambda_d=1.0).dip_lambda_d() == 1.0
    with pytest.raises(ValueError, match="tc_estimator"):
        ObjectiveConfig(kind="beta_tc", tc_estimator="exact")
    with pytest.raises(ValueError, match="lambda_od"):
        ObjectiveConfig(kind="dip_i", lambda_od=-1.0)


FAMILY = [
    ObjectiveConfig(kind="beta", beta=4.0),
    ObjectiveConfig(kind="beta_tc", beta=6.0),
    ObjectiveConfig(kind="dip_i", lambda_od=5.0),
    ObjectiveConfig(kind="dip_ii", lambda_od=2.0),
]


@pytest.fixture(scope="module")
def images():
    from bvae.data import factors, render

    return render.render_images(factors.all_classes()[::360])  # 2,048 images over the grid


def family_members(steps):
    from bvae.training import Member
    from tests.test_ensemble import train_config

    return [
        Member(objective, train_config(seed, 1e-4, steps=steps, every=10))
        for seed, objective in enumerate(FAMILY)
    ]


@pytest.mark.parametrize("mechanism", ["loop", "vmap", "bmm"])
def test_family_members_in_one_ensemble_are_their_single_runs(images, mechanism):
    """Four kinds in one ensemble: loop (the CPU's) runs each member's own kernels, and the
    objectives share no arithmetic, so each member is its single run to the bit, curves and
    all (20 steps). vmap and bmm sum in another order, so after one step each member is its
    single run to rounding. Measured (relative distance of the weights): vmap 2e-8 for every
    kind; bmm 4e-8 for β and DIP, 1.8e-6 for β-TCVAE, whose pairwise log-densities amplify
    the encoder's rounding. Each member's curves hold its own kind's terms."""
    from bvae.training import Trainer
    from tests.test_ensemble import MODEL, relative_distance

    steps = 20 if mechanism == "loop" else 1
    members = family_members(steps)
    ensemble = Trainer(MODEL, members, images, mechanism=mechanism)
    ensemble.train(show_progress=False)
    for k, member in enumerate(members):
        single = Trainer(MODEL, [member], images)
        single.train(show_progress=False)
        got, want = ensemble.models[k].state_dict(), single.models[0].state_dict()
        if mechanism == "loop":
            assert all(torch.equal(got[name], want[name]) for name in want), member.objective.kind
            untimed = [{**row, "steps_per_second": 0} for row in ensemble.histories[k]]
            assert untimed == [{**row, "steps_per_second": 0} for row in single.histories[0]]
        else:
            assert relative_distance(got, want) < 1e-5, member.objective.kind
        row = ensemble.histories[k][-1]
        own = {"beta": (), "beta_tc": ("mutual_information", "total_correlation", "dimwise_kl")}
        own |= {"dip_i": ("dip_off_diagonal", "dip_diagonal"), "dip_ii": ("dip_off_diagonal", "dip_diagonal")}
        others = {"mutual_information", "total_correlation", "dimwise_kl", "dip_off_diagonal", "dip_diagonal"}
        assert set(own[member.objective.kind]) <= set(row)
        assert not (others - set(own[member.objective.kind])) & set(row)


def test_the_stratified_estimate_needs_two_images_a_batch(images):
    from bvae.training import Member, Trainer
    from tests.test_ensemble import MODEL, train_config

    member = Member(ObjectiveConfig(kind="beta_tc", tc_estimator="mss"), train_config(0, 1e-4))
    member = Member(member.objective, member.train.__class__(**{**member.train.__dict__, "batch_size": 1}))
    with pytest.raises(InvalidSetting, match="needs 2 or more images a batch; raise train.batch_size"):
        Trainer(MODEL, [member], images)


def test_every_kind_has_its_settings_and_terms_in_one_place():
    import typing

    from bvae.config import KIND_TERMS, OBJECTIVE_SETTINGS

    kinds = set(typing.get_args(typing.get_type_hints(ObjectiveConfig)["kind"]))
    assert kinds == set(KIND_TERMS) == set(OBJECTIVE_SETTINGS)
    # Every objective setting is some kind's (so the other kinds' pages leave it off) and has a
    # short name in `bvae compare`; gaussian_std is the likelihood's, shown by model.likelihood.
    from dataclasses import fields

    from bvae.compare import SYMBOLS, settings_label
    from bvae.report import shown_params

    owned = {key for keys in OBJECTIVE_SETTINGS.values() for key in keys}
    assert {f.name for f in fields(ObjectiveConfig)} - {"kind", "gaussian_std"} == owned <= set(SYMBOLS)
    factor = {
        "gamma": 40.0,
        "discriminator_learning_rate": 1e-4,
        "discriminator_units": 1000,
        "discriminator_layers": 6,
    }
    assert settings_label("factor", factor) == "γ 40, D lr 1.00e-04, D width 1,000, D depth 6"
    beta_page = shown_params(
        {"objective.kind": "beta", "objective.beta": 4.0, "objective.discriminator_units": 1000}
    )
    assert beta_page == {"objective.kind": "beta", "objective.beta": 4.0}
