"""Traversals and the latent table, on decoders and codes whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bvae import traversal


def x_position_decoder(latent: int):
    """A decoder whose latent ``latent`` moves a 10×10 square left/right; the others do nothing."""

    def decode(codes: np.ndarray) -> np.ndarray:
        images = np.zeros((len(codes), 64, 64), dtype=np.float32)
        for n, code in enumerate(codes):
            left = int(np.clip(27 + 8 * code[latent], 0, 54))
            images[n, 27:37, left : left + 10] = 1.0
        return images

    return decode


def test_grid_shape_order_and_the_moving_sprite():
    kl = np.array([0.01, 0.5, 3.0, 0.2])
    order = traversal.order_by_kl(kl)
    assert order.tolist() == [2, 1, 3, 0]
    values = traversal.linear_values(4, 7)
    grid = traversal.traversal_grid(x_position_decoder(2), np.zeros(4), values, order)
    assert grid.shape == (4, 7, 64, 64)
    columns = [np.argwhere(image)[:, 1].mean() for image in grid[0]]  # row 0 is z2
    assert all(b > a for a, b in zip(columns, columns[1:], strict=False))  # moves right
    assert columns[-1] - columns[0] == pytest.approx(48, abs=1)
    for row in grid[1:]:  # the other latents do nothing
        assert all(np.array_equal(row[0], image) for image in row)


def test_mosaic_and_animation_frames():
    grid = np.random.default_rng(0).random((3, 5, 64, 64))
    canvas = traversal.mosaic(grid, padding=2)
    assert canvas.shape == (3 * 66 + 2, 5 * 66 + 2)
    assert np.array_equal(canvas[2:66, 68:132], grid[0, 1])
    frames = traversal.animation_frames(grid)
    assert frames.shape == (8, 66 + 2, 3 * 66 + 2)  # forward 5, back 3: a smooth loop


def test_quantile_values_follow_the_data():
    means = np.random.default_rng(0).normal([0.0, 5.0], [1.0, 0.1], size=(5000, 2))
    values = traversal.quantile_values(means, 5)
    assert values.shape == (2, 5)
    assert values[1].min() > 4.7 and values[1].max() < 5.3
    assert values[0, 2] == pytest.approx(0.0, abs=0.1)


def test_latent_table_finds_a_known_factor():
    rng = np.random.default_rng(0)
    factor_classes = np.stack([rng.integers(0, 3, 5000), rng.integers(0, 32, 5000)], axis=1)
    means = np.stack(
        [
            rng.normal(0, 0.01, 5000),
            factor_classes[:, 1] / 8 - 2 + rng.normal(0, 0.02, 5000),
            rng.normal(0, 1, 5000),
        ],
        axis=1,
    )
    logvars = np.log(np.stack([np.ones(5000), np.full(5000, 2e-4), np.ones(5000)], axis=1))
    kl = np.array([0.001, 4.0, 0.02])
    table = traversal.latent_factor_table(means, logvars, factor_classes, ["shape", "posX"], kl)
    assert [row["latent"] for row in table] == ["z1", "z2", "z0"]
    assert table[0]["encodes"] == "posX" and table[0]["normalized_mi"]["posX"] > 0.8
    assert table[0]["mean_posterior_variance"] == pytest.approx(2e-4)
    assert table[1]["encodes"] == "inactive" and table[2]["encodes"] == "inactive"
    assert table[0]["best_factor"] == "posX" and table[0]["second_factor"] == "shape"
    assert table[0]["relative_gap"] > 0.9
    markdown = traversal.latent_table_markdown(table)
    assert "| z1 | posX | posX | shape | " in markdown and "| 4.00 | 0.0002 |" in markdown
    assert markdown.startswith("1 active latents: 1 encode one factor, 0 entangled; 2 inactive.")
    assert "collapse" not in markdown
    collapsed = traversal.latent_table_markdown(table, collapsed=True)
    assert collapsed.startswith("**Posterior collapse: every image gets the same code.")


def test_a_latent_moving_the_sprite_diagonally_is_entangled_not_labelled_posx():
    """The committed model's z0 had MI/H 0.14 with posX and 0.10 with posY, and the table
    said "posX". A latent that follows posX + posY (a diagonal) is entangled between them;
    one that follows posX alone beside it is not."""
    rng = np.random.default_rng(1)
    n = 20000
    factor_classes = np.stack([rng.integers(0, 32, n), rng.integers(0, 32, n)], axis=1)  # posX, posY
    diagonal = factor_classes[:, 0] + factor_classes[:, 1] + rng.normal(0, 0.5, n)
    mostly_x = factor_classes[:, 0] + 0.1 * factor_classes[:, 1] + rng.normal(0, 0.5, n)
    means = np.stack([diagonal, mostly_x], axis=1)
    table = traversal.latent_factor_table(
        means, np.zeros((n, 2)), factor_classes, ["posX", "posY"], np.array([3.0, 2.0])
    )
    by_latent = {row["latent"]: row for row in table}
    assert by_latent["z0"]["encodes"] in ("entangled: posX+posY", "entangled: posY+posX")
    assert by_latent["z0"]["relative_gap"] < 0.5
    assert by_latent["z1"]["encodes"] == "posX" and by_latent["z1"]["relative_gap"] >= 0.5
    assert traversal.latent_summary(table) == {
        "active": 2,
        "disentangled": 1,
        "entangled": 1,
        "uninformative": 0,
        "inactive": 0,
    }
    strict = traversal.latent_factor_table(
        means, np.zeros((n, 2)), factor_classes, ["posX", "posY"], np.array([3.0, 2.0]), entangled_share=1.0
    )
    assert not any(row["encodes"].startswith("entangled") for row in strict)


def test_rendered_reports_exist_and_are_not_blank(full_dataset, tmp_path):
    import torch

    from bvae.config import TraverseConfig
    from bvae.data.ground_truth import DSprites
    from bvae.models import BetaVAE, ModelConfig
    from bvae.stages.traverse import render_reports

    torch.manual_seed(0)
    model = BetaVAE(ModelConfig(latent_dim=4))
    config = TraverseConfig(steps=5, sample_images=500, reconstructions=4, device="cpu")
    report = render_reports(model, DSprites(full_dataset.images), config, tmp_path)
    expected = {
        f"traversal_{n}.{e}" for n in ("square", "ellipse", "heart", "random1") for e in ("png", "gif")
    }
    expected |= {"reconstructions.png", "kl_per_latent.png"}
    assert {p.name for p in tmp_path.iterdir()} == expected
    for path in tmp_path.glob("*.png"):
        pixels = np.asarray(Image.open(path).convert("L"), dtype=float)
        assert pixels.std() > 1.0, path.name  # not blank
    with Image.open(tmp_path / "traversal_square.gif") as gif:
        assert gif.n_frames == 8
    assert len(report["latents"]) == 4 and report["sample_images"] == 500


def test_a_latent_with_kl_but_no_factor_information_is_uninformative_not_a_factor():
    """A capacity model (issue #17) met its KL target by shifting posterior means by a
    constant: KL 4.7 nats, MI 0 with every factor, and the table said "shape". Such a latent,
    and one that is pure noise, are "uninformative"; one that follows shape is still "shape"."""
    rng = np.random.default_rng(2)
    n = 10000
    factor_classes = np.stack([rng.integers(0, 3, n), rng.integers(0, 40, n)], axis=1)  # shape, orientation
    means = np.stack(
        [np.full(n, 3.05), rng.normal(0, 1, n), factor_classes[:, 0] + rng.normal(0, 0.1, n)], axis=1
    )
    table = traversal.latent_factor_table(
        means, np.full((n, 3), -4.0), factor_classes, ["shape", "orientation"], np.array([4.7, 2.0, 1.5])
    )
    assert [row["encodes"] for row in table] == ["uninformative", "uninformative", "shape"]
    summary = traversal.latent_summary(table)
    assert summary == {"active": 3, "disentangled": 1, "entangled": 0, "uninformative": 2, "inactive": 0}
    assert traversal.summary_line(summary) == (
        "3 active latents: 1 encode one factor, 0 entangled, 2 carry KL but no factor information; 0 inactive"
    )
