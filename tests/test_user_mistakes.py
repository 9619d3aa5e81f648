"""A user's OS-level mistakes end in one line and exit 2, through the one place that maps
errors to exit codes (``bvae.cli.main``), and lose nothing."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest

from bvae.cli import main
from bvae.errors import EXIT_BAD_INPUT, machine_error


def fails_in_one_line(capsys, argv: list[str], expected: str) -> None:
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and err.count("\n") == 1, err


def test_encode_names_a_missing_input(capsys, tmp_path):
    # The images are read before the model (here a folder holding none) is loaded.
    fails_in_one_line(capsys, ["encode", str(tmp_path), str(tmp_path / "nope.npz")], "nope.npz not found")


def test_encode_refuses_object_arrays_and_truncated_files(capsys, tmp_path):
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    fails_in_one_line(capsys, ["encode", str(tmp_path), str(objects)], "no array of numbers")
    truncated = tmp_path / "cut.npz"
    truncated.write_bytes(b"PK\x03\x04 not really a zip")
    argv = ["encode", str(tmp_path), str(truncated)]
    fails_in_one_line(capsys, argv, "truncated or not a numpy")


@pytest.mark.parametrize("kind", ["folder", "binary", "empty"])
def test_params_that_are_not_a_params_file(capsys, tmp_path, kind):
    path = tmp_path / "params.yaml"
    if kind == "folder":
        path.mkdir()
        expected = "is a folder"
    elif kind == "binary":
        path.write_bytes(bytes(range(256)))
        expected = "not a text file"
    else:
        path.write_text("")
        expected = "is empty"
    fails_in_one_line(capsys, ["shard", "--params", str(path), "--out", str(tmp_path / "o")], expected)


def test_a_symlink_as_out_is_refused_before_any_work(capsys, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    argv = ["shard", "--npz", str(tmp_path / "x.npz"), "--out", str(tmp_path / "link")]
    fails_in_one_line(capsys, argv, "symbolic link")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]  # no orphan left


def test_a_forged_manifest_is_refused_before_the_allocation(tmp_path):
    """A manifest with a consistent digest (recomputed, as a forger would) but 10^12 images:
    refused when read, before ``load_dataset`` allocates them."""
    from bvae.data import factors
    from bvae.data.shards import FORMAT_VERSION, MANIFEST_NAME, Manifest, ShardEntry, ShardError, load_dataset

    huge = 10**12
    forged = Manifest(
        format_version=FORMAT_VERSION,
        num_images=huge,
        image_shape=(64, 64),
        factor_names=factors.FACTOR_NAMES,
        factor_sizes=factors.FACTOR_SIZES,
        source="procedural",
        source_md5="0" * 32,
        source_sha256="0" * 64,
        compression="gzip",
        shards=(ShardEntry(file="shard-00000.h5", start=0, count=huge, sha256="0" * 64, num_bytes=1),),
    )
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(forged.to_json()))
    with pytest.raises(ShardError, match="more than dSprites"):
        load_dataset(tmp_path)


def test_machine_errors_are_one_line_and_others_are_bugs():
    full = OSError(errno.ENOSPC, "No space left on device", "/data/out.h5")
    assert machine_error(full).startswith("No space left on device (/data/out.h5): free space")
    assert machine_error(OSError(errno.EBADF, "Bad file descriptor")) is None


def test_a_full_disk_is_one_line_and_exit_2(capsys, monkeypatch, tmp_path):
    """What a full disk raises anywhere under a command (here inside ``encode``'s write)."""
    import bvae.consume

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "latents.npz"))

    monkeypatch.setattr(bvae.consume, "encode_file", full)
    fails_in_one_line(capsys, ["encode", str(tmp_path), str(tmp_path / "x.npz")], "free space there")
