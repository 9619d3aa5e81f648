"""What `bvae encode` accepts: binary 64×64 single-channel images, binarised explicitly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bvae.cli import main
from bvae.consume import ImageInputError, encode, read_images
from bvae.data import factors, render
from bvae.errors import EXIT_BAD_INPUT
from bvae.models import BetaVAE, ModelConfig


@pytest.fixture(scope="module")
def sprites() -> np.ndarray:
    """Four real dSprites images: uint8 0/1, as in the dataset's own file."""
    return render.render_images(factors.classes_from_index(np.array([0, 1000, 300000, 737279])))


def png_folder(folder, images, mode="L"):
    folder.mkdir()
    for number, image in enumerate(images):
        Image.fromarray(image).convert(mode).save(folder / f"{number}.png")
    return folder


@pytest.mark.parametrize("scale", [1, 255])
def test_zero_one_and_zero_255_pngs_read_as_the_same_binary_images(tmp_path, sprites, scale):
    """0/1 PNGs (dSprites' own pixels) were once divided by 255 and encoded as blank images."""
    images, names = read_images(png_folder(tmp_path / "pngs", sprites * scale))
    assert names == ["0.png", "1.png", "2.png", "3.png"]
    assert images.dtype == np.float32 and np.array_equal(images, sprites.astype(np.float32))


def test_bilevel_pngs_npz_and_npy_give_the_same_images(tmp_path, sprites):
    bilevel, _ = read_images(png_folder(tmp_path / "bilevel", sprites * 255, mode="1"))
    np.savez(tmp_path / "sprites.npz", imgs=sprites, other=np.zeros(3))
    np.save(tmp_path / "sprites.npy", sprites[:, None].astype(np.float64))  # (n, 1, 64, 64) floats
    for images in (
        bilevel,
        read_images(tmp_path / "sprites.npz")[0],
        read_images(tmp_path / "sprites.npy")[0],
    ):
        assert np.array_equal(images, sprites.astype(np.float32))


def test_what_is_not_a_binary_sprite_is_refused_saying_what_was_found(tmp_path, sprites):
    gray = (np.arange(4 * 64 * 64) % 256).astype(np.uint8).reshape(4, 64, 64)
    with pytest.raises(ImageInputError, match=r"must be binary, 0/1 .* or 0/255; found 256 distinct values"):
        read_images(png_folder(tmp_path / "gray", gray))
    with pytest.raises(ImageInputError, match="is a RGB image: give single-channel"):
        read_images(png_folder(tmp_path / "rgb", sprites * 255, mode="RGB"))
    np.savez(tmp_path / "no-imgs.npz", images=sprites, labels=np.zeros(4))
    with pytest.raises(ImageInputError, match="has no 'imgs' array \\(it holds images, labels\\)"):
        read_images(tmp_path / "no-imgs.npz")
    with_nan = sprites.astype(np.float32)
    with_nan[1, 3, 3] = np.nan
    np.save(tmp_path / "nan.npy", with_nan)
    with pytest.raises(ImageInputError, match="NaN or infinite"):
        read_images(tmp_path / "nan.npy")
    np.save(tmp_path / "small.npy", np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(ImageInputError, match=r"expected 64×64 single-channel images.*\(2, 32, 32\)"):
        read_images(tmp_path / "small.npy")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.png").write_text("not an image")
    with pytest.raises(ImageInputError, match="a.png is not a readable PNG image"):
        read_images(tmp_path / "text")


def test_encode_refuses_nan_instead_of_returning_nan(sprites):
    model = BetaVAE(ModelConfig()).eval()
    mean, logvar = encode(model, sprites)
    assert mean.shape == logvar.shape == (4, 10) and np.isfinite(mean).all()
    with pytest.raises(ImageInputError, match="NaN"):
        encode(model, np.full((1, 64, 64), np.nan, np.float32))


def test_the_cli_says_it_in_one_line_before_loading_any_model(tmp_path, monkeypatch, capsys, sprites):
    np.savez(tmp_path / "bad.npz", pixels=sprites)
    monkeypatch.chdir(tmp_path)
    assert main(["encode", "no-such-model.pt", "bad.npz", "--out", "codes.npz"]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "has no 'imgs' array" in error
    assert not (tmp_path / "codes.npz").exists()
