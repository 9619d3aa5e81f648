import json
import re
import shutil

import h5py
import numpy as np
import pytest

from bvae.data import factors, npz, render
from bvae.data.ground_truth import DSprites, FactorGridData, GroundTruthData
from bvae.data.shards import Manifest, ShardError, load_dataset, read_manifest, write_shards


def test_manifest_describes_verified_shards(full_shards, full_npz):
    manifest = read_manifest(full_shards)
    record = json.loads(full_npz.with_name("source.json").read_text())
    assert manifest.num_images == 737280 and manifest.source == "procedural"
    assert manifest.source_md5 == record["md5"] and manifest.source_sha256 == record["sha256"]
    assert manifest.factor_names == factors.FACTOR_NAMES and manifest.factor_sizes == factors.FACTOR_SIZES
    assert len(manifest.shards) == 12 and sum(s.count for s in manifest.shards) == 737280
    assert len(manifest.digest) == 64
    with h5py.File(full_shards / manifest.shards[3].file) as shard:
        assert shard["images"].shape == (65536, 64, 64) and shard["images"].compression == "gzip"
        assert shard.attrs["start"] == 3 * 65536
        assert np.array_equal(shard["latents_classes"][:5], factors.all_classes()[3 * 65536 :][:5])


def test_load_returns_the_npz_images_in_order(full_dataset, full_npz):
    assert full_dataset.images.shape == (737280, 64, 64) and full_dataset.images.dtype == np.uint8
    assert np.array_equal(full_dataset.latents_classes, factors.all_classes())
    first = next(npz.iter_image_chunks(full_npz, 4096))
    assert np.array_equal(full_dataset.images[:4096], first)
    rng = np.random.default_rng(1)
    index = rng.integers(0, 737280, 200)
    assert np.array_equal(full_dataset.images[index], render.render_images(factors.classes_from_index(index)))


@pytest.fixture
def shard_copy(full_shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(full_shards, copy)
    return copy


def test_corrupted_shard_is_detected(shard_copy):
    victim = shard_copy / "shard-00004.h5"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="shard-00004.h5 is corrupted.*dvc checkout"):
        load_dataset(shard_copy)


def edit_manifest(folder, change, *, redigest: bool) -> None:
    """Edit ``manifest.json`` in place; ``redigest``: as someone who also fixed up the digest."""
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    if redigest:
        data["digest"] = Manifest.from_json(data).digest
    path.write_text(json.dumps(data))


def swap_first_two(data):
    data["shards"][0], data["shards"][1] = data["shards"][1], data["shards"][0]


def swap_first_two_files(data):  # ranges kept in order, contents out of order
    first, second = data["shards"][0], data["shards"][1]
    first["file"], second["file"] = second["file"], first["file"]
    first["sha256"], second["sha256"] = second["sha256"], first["sha256"]


@pytest.mark.parametrize(
    ("change", "redigest", "message"),
    [
        (lambda d: d.update(image_shape=[32, 128]), False, "was edited"),
        (lambda d: d.update(image_shape=[32, 128]), True, r"image_shape \[32, 128\] is not dSprites'"),
        (swap_first_two, False, "was edited"),
        (swap_first_two, True, "must run in order from 0 and this one must start at 0"),
        (swap_first_two_files, True, "holds images 65536.. .*the manifest says 0"),
        (lambda d: d.update(digest="0" * 64), False, "was edited"),
        (lambda d: d["shards"][2].update(file="../../outside.h5"), True, "not a shard-NNNNN.h5 inside"),
        (lambda d: d.update(factor_sizes=[1, 3, 6, 40, 32, 31]), True, "factor grid is not dSprites'"),
        (lambda d: d.update(format_version=1), True, "has format 1.*dvc repro -f shard"),
    ],
)
def test_an_edited_manifest_is_refused(full_shards, tmp_path, monkeypatch, capsys, change, redigest, message):
    """Each of these edits once passed `bvae verify-data --load` (131,072 images out of order)."""
    from bvae.cli import main
    from bvae.errors import EXIT_BAD_INPUT

    folder = tmp_path / "shards"  # the real shards (linked) beside an editable manifest
    folder.mkdir()
    for shard in full_shards.glob("shard-*.h5"):
        (folder / shard.name).symlink_to(shard)
    shutil.copy(full_shards / "manifest.json", folder)
    edit_manifest(folder, change, redigest=redigest)
    monkeypatch.chdir(tmp_path)
    assert main(["verify-data", "--load", "-q", "--shards", str(folder)]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and re.search(message, error), error


def test_missing_shard_and_manifest_are_detected(shard_copy):
    (shard_copy / "shard-00007.h5").unlink()
    with pytest.raises(ShardError, match="shard-00007.h5 is missing"):
        load_dataset(shard_copy)
    (shard_copy / "manifest.json").unlink()
    with pytest.raises(ShardError, match="dvc repro shard"):
        load_dataset(shard_copy)


def test_an_npz_that_is_not_the_grid_is_refused(tmp_path):
    classes = factors.all_classes()[:2048]
    path = tmp_path / "small.npz"
    npz.write_npz(
        path,
        [render.render_images(classes)],
        2048,
        classes,
        factors.values_from_classes(classes),
        {},
    )
    with pytest.raises(ShardError, match="not the dSprites factor grid"):
        write_shards(path, tmp_path / "out", source="procedural", source_md5="x", source_sha256="y")
    assert not (tmp_path / "out").exists()


def test_dsprites_ground_truth_interface(full_dataset):
    data = DSprites(full_dataset.images)
    assert isinstance(data, GroundTruthData)
    assert data.factor_names == ("shape", "scale", "orientation", "posX", "posY")
    assert data.factor_sizes == (3, 6, 40, 32, 32)
    rng = np.random.default_rng(0)
    sampled = data.sample_factors(5000, rng)
    assert sampled.shape == (5000, 5) and (sampled >= 0).all()
    assert (sampled.max(axis=0) == np.array(data.factor_sizes) - 1).all()
    observations = data.sample_observations_from_factors(sampled[:50], rng)
    full_classes = np.concatenate([np.zeros((50, 1), np.int64), sampled[:50]], axis=1)
    assert np.array_equal(observations, render.render_images(full_classes))
    index = data.index_from_factors(sampled)
    assert np.array_equal(data.factors_from_index(index), sampled)


def test_factor_grid_on_a_synthetic_grid():
    sizes = (1, 2, 3)
    images = np.arange(6).reshape(6, 1, 1)
    grid = FactorGridData(images, ("constant", "a", "b"), sizes)
    assert grid.factor_sizes == (2, 3) and grid.factor_names == ("a", "b")
    assert grid.sample_observations_from_factors(np.array([[1, 2], [0, 1]]))[:, 0, 0].tolist() == [
        5,
        1,
    ]
    with pytest.raises(ValueError, match="full grid"):
        FactorGridData(images[:5], ("constant", "a", "b"), sizes)


@pytest.mark.parametrize(
    "options",
    [
        {"compression": "gzip", "compression_opts": 1, "chunks": (256, 64, 64)},
        {
            "compression": "gzip",
            "compression_opts": 4,
            "chunks": (100, 64, 64),
        },  # padded edge chunk
        {"compression": "gzip", "shuffle": True, "chunks": (256, 64, 64)},  # h5py's own path
        {"compression": "lzf", "chunks": (256, 64, 64)},
        {},
    ],
)
def test_chunk_reader_matches_h5py(tmp_path, options):
    from concurrent.futures import ThreadPoolExecutor

    from bvae.data.shards import _read_images

    rng = np.random.default_rng(0)
    images = (rng.random((1000, 64, 64)) < 0.05).astype(np.uint8)
    with h5py.File(tmp_path / "s.h5", "w") as shard:
        shard.create_dataset("images", data=images, **options)
    out = np.zeros_like(images)
    with h5py.File(tmp_path / "s.h5") as shard, ThreadPoolExecutor(2) as executor:
        for future in _read_images(shard["images"], out, executor):
            future.result()
    assert np.array_equal(out, images)
