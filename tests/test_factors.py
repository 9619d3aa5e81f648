import numpy as np

from bvae.data import factors


def test_grid_size_and_strides():
    assert factors.NUM_IMAGES == 737280
    strides = np.array([737280, 245760, 40960, 1024, 32, 1])
    classes = np.array([[0, 2, 5, 39, 31, 31], [0, 1, 3, 7, 2, 9]])
    expected = (classes * strides).sum(axis=1)
    assert np.array_equal(factors.index_from_classes(classes), expected)


def test_posy_varies_fastest_and_round_trip():
    table = factors.all_classes()
    assert table.shape == (737280, 6) and table.dtype == np.int64
    assert np.array_equal(table[1], [0, 0, 0, 0, 0, 1])
    assert np.array_equal(table[32], [0, 0, 0, 0, 1, 0])
    assert np.array_equal(table[-1], [0, 2, 5, 39, 31, 31])
    rng = np.random.default_rng(0)
    index = rng.integers(0, factors.NUM_IMAGES, 1000)
    assert np.array_equal(factors.index_from_classes(factors.classes_from_index(index)), index)


def test_values_follow_the_official_metadata():
    values = factors.factor_values()
    assert np.allclose(values["scale"], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert np.isclose(values["orientation"][39], 2 * np.pi)
    assert np.isclose(values["orientation"][1], 2 * np.pi / 39)
    assert np.allclose(values["posX"], np.arange(32) / 31)
    metadata = factors.metadata()
    assert metadata["latents_names"] == ["color", "shape", "scale", "orientation", "posX", "posY"]
    assert metadata["latents_sizes"] == [1, 3, 6, 40, 32, 32]
    row = factors.values_from_classes(np.array([[0, 2, 1, 3, 4, 5]]))[0]
    assert np.allclose(row, [1.0, 3.0, 0.6, 3 * 2 * np.pi / 39, 4 / 31, 5 / 31])
