"""Read and write dSprites in the official npz layout, streaming the 2.8 GiB of images.

Keys: ``imgs`` (737280, 64, 64) uint8 {0, 1}; ``latents_values`` (737280, 6) float64;
``latents_classes`` (737280, 6) int64; ``metadata``. DeepMind's file stores ``metadata`` as a
Python-2 pickle; ours stores the same dict as a JSON string, so it loads without pickle. The
arrays never need pickle, so nothing here unpickles unless asked to after a verified checksum.

Images stream through the zip member in chunks: the writer deflates blocks as a renderer
yields them and the reader inflates chunks as a consumer asks, so neither holds the whole
array, and the deflating overlaps the rendering or shard writing on another core.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bvae.errors import BadInput
from bvae.fileio import atomic_path

ARRAY_KEYS = ("imgs", "latents_values", "latents_classes")
IMAGE_SHAPE = (64, 64)


class NpzFormatError(BadInput, ValueError):
    """The file is not in the dSprites npz layout."""


@dataclass(frozen=True)
class DSpritesFactors:
    """The factor table of an npz, in dataset order."""

    latents_classes: np.ndarray  # (n, 6) int64
    latents_values: np.ndarray  # (n, 6) float64


def _member_info(archive: zipfile.ZipFile, key: str) -> zipfile.ZipInfo:
    """A member entry with a fixed timestamp, so equal arrays give a byte-identical file."""
    info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = archive.compression
    # zipfile reads the level from `_compresslevel` (3.11-3.12) or `compress_level` (3.13+).
    level_attribute = "compress_level" if hasattr(zipfile.ZipInfo, "compress_level") else "_compresslevel"
    setattr(info, level_attribute, archive.compresslevel)
    return info


def _write_member(archive: zipfile.ZipFile, key: str, array: np.ndarray) -> None:
    with archive.open(_member_info(archive, key), "w", force_zip64=True) as member:
        # np.ascontiguousarray would turn the 0-d metadata string into shape (1,).
        contiguous = array if array.flags.c_contiguous else np.ascontiguousarray(array)
        np.lib.format.write_array(member, contiguous, allow_pickle=False)


def write_npz(
    path: str | os.PathLike,
    image_blocks: Iterable[np.ndarray],
    num_images: int,
    latents_classes: np.ndarray,
    latents_values: np.ndarray,
    metadata: dict,
    *,
    compress_level: int = 1,
) -> None:
    """Write the official layout atomically, images streamed from ``image_blocks`` in order.

    ``np.savez_compressed`` always deflates at level 6; level 1 is several times faster on
    these sparse binary images and only slightly larger.
    """
    header = {"descr": "|u1", "fortran_order": False, "shape": (num_images, *IMAGE_SHAPE)}
    with atomic_path(path) as temporary:
        with zipfile.ZipFile(
            temporary, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compress_level
        ) as archive:
            with archive.open(_member_info(archive, "imgs"), "w", force_zip64=True) as member:
                np.lib.format.write_array_header_2_0(member, header)
                written = 0
                for block in image_blocks:
                    block = np.ascontiguousarray(block, dtype=np.uint8)
                    if block.shape[1:] != IMAGE_SHAPE:
                        raise ValueError(f"image blocks must be (n, 64, 64), got {block.shape}")
                    member.write(block.data)
                    written += len(block)
            if written != num_images:
                raise ValueError(f"expected {num_images} images, the blocks held {written}")
            _write_member(archive, "latents_values", latents_values.astype(np.float64))
            _write_member(archive, "latents_classes", latents_classes.astype(np.int64))
            _write_member(archive, "metadata", np.array(json.dumps(metadata)))


def _open_images(archive: zipfile.ZipFile, path: Path) -> tuple[zipfile.ZipExtFile, tuple[int, ...]]:
    if "imgs.npy" not in archive.namelist():
        raise NpzFormatError(f"{path} has no 'imgs' array: not a dSprites npz")
    member = archive.open("imgs.npy")
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(member)
    else:
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(member)
    if dtype != np.uint8 or fortran_order or len(shape) != 3 or tuple(shape[1:]) != IMAGE_SHAPE:
        member.close()
        raise NpzFormatError(
            f"{path}: imgs is {dtype} {shape} (fortran_order={fortran_order}); "
            "expected C-ordered uint8 (n, 64, 64)"
        )
    return member, tuple(shape)


def count_images(path: str | os.PathLike) -> int:
    """Number of images in the npz, from the array header alone."""
    with zipfile.ZipFile(path) as archive:
        member, shape = _open_images(archive, Path(path))
        member.close()
        return shape[0]


def iter_image_chunks(path: str | os.PathLike, chunk_images: int) -> Iterator[np.ndarray]:
    """Yield the images as consecutive ``(<= chunk_images, 64, 64)`` uint8 arrays."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise NpzFormatError(f"{path} is not a zip/npz file ({error})") from None
    with archive:
        member, shape = _open_images(archive, path)
        with member:
            for start in range(0, shape[0], chunk_images):
                count = min(chunk_images, shape[0] - start)
                chunk = np.empty((count, *IMAGE_SHAPE), dtype=np.uint8)
                view, filled = memoryview(chunk.reshape(-1)), 0
                while filled < chunk.nbytes:
                    got = member.readinto(view[filled:])
                    if not got:
                        raise NpzFormatError(f"{path}: imgs ends after {start * 4096 + filled} bytes")
                    filled += got
                yield chunk


def read_factors(path: str | os.PathLike) -> DSpritesFactors:
    """The factor classes and values, never unpickling anything."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as archive:
        missing = [key for key in ARRAY_KEYS if key not in archive.files]
        if missing:
            raise NpzFormatError(f"{path} lacks {missing}: not a dSprites npz")
        return DSpritesFactors(
            latents_classes=archive["latents_classes"].astype(np.int64),
            latents_values=archive["latents_values"].astype(np.float64),
        )


def read_metadata(path: str | os.PathLike, *, checksum_verified: bool = False) -> dict:
    """The ``metadata`` dict: JSON for our files; the official pickle only once its MD5 verified."""
    with np.load(path, allow_pickle=False) as archive:
        try:
            stored = archive["metadata"]
        except ValueError:
            stored = None  # an object array: the official pickle
        if stored is not None:
            return json.loads(str(stored.reshape(-1)[0]))
    if not checksum_verified:
        raise NpzFormatError(
            f"{path} stores its metadata as a pickle; refusing to unpickle a file whose "
            "checksum was not verified. Verify the MD5 first (bvae download does)."
        )
    with np.load(path, allow_pickle=True, encoding="latin1") as archive:
        return archive["metadata"][()]
