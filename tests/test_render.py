"""The offline renderer against the facts measured on the real dataset (../shared/DSPRITES.md)."""

import numpy as np
import pytest

from bvae.data import factors, npz, render

REAL_WHITE_PIXELS = 128_328_862


def image(shape, scale, orientation=0, pos_x=0, pos_y=0):
    return render.render_images(np.array([[0, shape, scale, orientation, pos_x, pos_y]]))[0]


@pytest.mark.parametrize("scale_class", range(6))
def test_orientation_zero_squares_are_exact(scale_class):
    side = 10 + 2 * scale_class  # 10, 12, ..., 20 px
    for pos in (0, 31):  # reference points 16 and 48: whole pixels, so the square is exact
        img = image(0, scale_class, 0, pos, pos)
        rows, cols = np.nonzero(img)
        assert img.sum() == side * side
        assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side
        centre = 16 + 32 * pos // 31
        assert rows.min() == centre - side // 2 and cols.min() == centre - side // 2


def test_measured_pixel_counts_of_ellipse_and_heart_size():
    assert [int(image(1, s).sum()) for s in range(6)] == [76, 104, 144, 184, 228, 288]
    rows, cols = np.nonzero(image(2, 5))
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (17, 20)


def test_binary_and_orientation_two_pi_equals_zero():
    for shape in range(3):
        for scale in (0.5, 1.0):
            first = render.render_sprite_block(shape, scale, 0)
            last = render.render_sprite_block(shape, scale, 39)
            assert set(np.unique(first)) <= {0, 1}
            assert np.array_equal(first, last)


def test_positions_and_rotation_sense():
    base = image(1, 5)
    moved_right = image(1, 5, 0, pos_x=10)
    moved_down = image(1, 5, 0, pos_y=10)
    com = lambda img: np.argwhere(img).mean(axis=0)  # noqa: E731  (row, col)
    assert com(moved_right)[1] - com(base)[1] == pytest.approx(320 / 31, abs=0.3)
    assert com(moved_right)[0] == pytest.approx(com(base)[0], abs=0.3)
    assert com(moved_down)[0] - com(base)[0] == pytest.approx(320 / 31, abs=0.3)
    # Heart lobes point up at 0; a counter-clockwise quarter turn as displayed puts them left.
    upright, turned = image(2, 5, 0, 15, 15), image(2, 5, 10, 15, 15)
    centre = 16 + 32 * 15 / 31 - 0.5
    assert upright[: int(centre)].sum() > upright[int(centre) + 1 :].sum()
    assert turned[:, : int(centre)].sum() > turned[:, int(centre) + 1 :].sum()


def test_grid_path_agrees_with_direct_rendering():
    rng = np.random.default_rng(0)
    classes = factors.classes_from_index(rng.integers(0, factors.NUM_IMAGES, 300))
    scales = factors.factor_values()["scale"]
    from_blocks = np.stack(
        [render.render_sprite_block(c[1], float(scales[c[2]]), c[3])[c[4], c[5]] for c in classes]
    )
    assert np.array_equal(from_blocks, render.render_images(classes))


def test_whole_grid_matches_real_dataset_statistics(full_npz):
    table = npz.read_factors(full_npz)
    assert np.array_equal(table.latents_classes, factors.all_classes())
    assert np.allclose(table.latents_values, factors.values_from_classes(factors.all_classes()))
    white = 0
    count = 0
    for chunk in npz.iter_image_chunks(full_npz, 65536):
        assert chunk.dtype == np.uint8
        white += int(chunk.sum(dtype=np.int64))
        count += len(chunk)
    assert count == 737280
    assert abs(white - REAL_WHITE_PIXELS) / REAL_WHITE_PIXELS < 0.005
    metadata = npz.read_metadata(full_npz)  # plain JSON: no pickle needed
    assert metadata["latents_sizes"] == list(factors.FACTOR_SIZES)
    assert metadata["latents_names"] == list(factors.FACTOR_NAMES)


def test_a_spread_takes_every_kth_image_in_dataset_order():
    """720 spread images are the first image of each 1,024-image block of the grid."""
    import itertools

    spread = render.render_spread(720)
    blocks = list(itertools.islice(render.iter_sprite_blocks(), 3))
    assert spread.shape == (720, 64, 64)
    for k, block in enumerate(blocks):
        assert np.array_equal(spread[k], block[0])
