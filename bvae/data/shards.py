"""dSprites as verified HDF5 shards: ``data/shards/shard-NNNNN.h5`` plus ``manifest.json``.

Each shard holds a contiguous run of the dataset: ``images`` (n, 64, 64) uint8 (chunked,
compressed), ``latents_classes`` (n, 6) int64 and ``latents_values`` (n, 6) float64. The
manifest records every shard's SHA-256 and range, the factor grid, and where the data came
from. It is checked as a whole when read: its digest covers every field (an edit shows), the
ranges follow each other in order from 0, the shard files lie inside the folder, and the
image shape and factor grid are dSprites'. :func:`load_dataset` refuses shards that do not
match it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from bvae.data import factors, npz
from bvae.errors import BadInput
from bvae.fileio import atomic_path, file_digest
from bvae.iterators import prefetch
from bvae.progress import progress

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 2  # 2: the digest covers every field (1 covered the shards' SHA-256s only)
_SHARD_NAME = re.compile(r"^shard-\d{5}\.h5$")
_IMAGE_CHUNK = 256  # images per HDF5 chunk: ~1 MiB uncompressed, read whole by batch loaders


class ShardError(BadInput, RuntimeError):
    """Shards that are missing, corrupted or inconsistent with their manifest."""


@dataclass(frozen=True)
class ShardEntry:
    file: str
    start: int
    count: int
    sha256: str
    num_bytes: int


@dataclass(frozen=True)
class Manifest:
    format_version: int
    num_images: int
    image_shape: tuple[int, int]
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    source: str  # "official" or "procedural"
    source_md5: str
    source_sha256: str
    compression: str
    shards: tuple[ShardEntry, ...]

    @property
    def digest(self) -> str:
        """One digest for the whole dataset: the SHA-256 of every field (shards in order)."""
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> dict:
        data = asdict(self)
        data["digest"] = self.digest
        return data

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        data = dict(data)
        data.pop("digest", None)
        shards = tuple(ShardEntry(**entry) for entry in data.pop("shards"))
        return cls(
            **{
                **data,
                "image_shape": tuple(data["image_shape"]),
                "factor_names": tuple(data["factor_names"]),
                "factor_sizes": tuple(data["factor_sizes"]),
                "shards": shards,
            }
        )


def check_factor_table(found: npz.DSpritesFactors, path: Path) -> None:
    """The npz must hold the full grid in dataset order, or the shards would mislabel images."""
    expected = factors.all_classes()
    if found.latents_classes.shape != expected.shape or not np.array_equal(found.latents_classes, expected):
        raise ShardError(
            f"{path}: latents_classes is not the dSprites factor grid in dataset order "
            f"(shape {found.latents_classes.shape}). Re-create it with `dvc repro download`."
        )
    if not np.allclose(found.latents_values, factors.values_from_classes(expected), atol=1e-6):
        raise ShardError(f"{path}: latents_values disagree with the factor classes.")


def _write_one_shard(
    path: Path,
    images: np.ndarray,
    classes: np.ndarray,
    values: np.ndarray,
    start: int,
    compression: str,
    level: int,
) -> None:
    options = {} if compression == "none" else {"compression": compression}
    if compression == "gzip":
        options["compression_opts"] = level
    with h5py.File(path, "w") as shard:
        shard.create_dataset(
            "images", data=images, chunks=(min(_IMAGE_CHUNK, len(images)), 64, 64), **options
        )
        shard.create_dataset("latents_classes", data=classes)
        shard.create_dataset("latents_values", data=values)
        shard.attrs["start"] = start
        shard.attrs["count"] = len(images)
        shard.attrs["factor_names"] = list(factors.FACTOR_NAMES)


def write_shards(
    npz_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    source: str,
    source_md5: str,
    source_sha256: str,
    images_per_shard: int = 65536,
    compression: str = "gzip",
    compression_level: int = 1,
    show_progress: bool = True,
    force: bool = False,
) -> Manifest:
    """Cut an official-layout npz into shards and a manifest; the folder appears atomically
    (replacing ``out_dir`` only as ``fileio.check_output_folder`` allows, or with ``force``)."""
    npz_path, out_dir = Path(npz_path), Path(out_dir)
    table = npz.read_factors(npz_path)
    check_factor_table(table, npz_path)
    num_images = npz.count_images(npz_path)
    if num_images != factors.NUM_IMAGES:
        raise ShardError(f"{npz_path} holds {num_images} images, expected {factors.NUM_IMAGES}")
    blocks = prefetch(npz.iter_image_chunks(npz_path, images_per_shard))
    return _write_folder(
        out_dir,
        blocks,
        table.latents_classes,
        table.latents_values,
        source=(source, source_md5, source_sha256),
        compression=(compression, compression_level),
        show_progress=show_progress,
        force=force,
    )


def write_array_shards(
    out_dir: str | os.PathLike,
    images: np.ndarray,
    latents_classes: np.ndarray,
    latents_values: np.ndarray,
    *,
    source: str,
    images_per_shard: int = 65536,
    compression: str = "gzip",
    compression_level: int = 1,
) -> Manifest:
    """Shards of images already in memory: a subset of the grid for smoke runs and tests of
    training, which reads only images. Same format; ``num_images`` says how many it holds."""
    if not len(images) == len(latents_classes) == len(latents_values):
        raise ShardError(
            f"{len(images)} images, {len(latents_classes)} class rows and {len(latents_values)} "
            "value rows: one row of each per image"
        )
    blocks = (images[start : start + images_per_shard] for start in range(0, len(images), images_per_shard))
    return _write_folder(
        Path(out_dir),
        blocks,
        latents_classes,
        latents_values,
        source=(source, "", ""),
        compression=(compression, compression_level),
        show_progress=False,
    )


def _write_folder(
    out_dir: Path,
    blocks: Iterable[np.ndarray],
    latents_classes: np.ndarray,
    latents_values: np.ndarray,
    *,
    source: tuple[str, str, str],
    compression: tuple[str, int],
    show_progress: bool,
    force: bool = False,
) -> Manifest:
    """Write ``blocks`` of images as consecutive shards plus the manifest, atomically."""
    num_images = len(latents_classes)
    method, level = compression
    entries = []
    with (
        atomic_path(out_dir, directory=True, force=force) as staging,
        progress(total=num_images, unit="img", desc="shard", disable=not show_progress) as bar,
    ):
        start = 0
        for number, images in enumerate(blocks):
            name = f"shard-{number:05d}.h5"
            stop = start + len(images)
            _write_one_shard(
                staging / name,
                images,
                latents_classes[start:stop],
                latents_values[start:stop],
                start,
                method,
                level,
            )
            entries.append(
                ShardEntry(
                    file=name,
                    start=start,
                    count=len(images),
                    sha256=file_digest(staging / name),
                    num_bytes=(staging / name).stat().st_size,
                )
            )
            start = stop
            bar.update(len(images))
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            num_images=num_images,
            image_shape=npz.IMAGE_SHAPE,
            factor_names=factors.FACTOR_NAMES,
            factor_sizes=factors.FACTOR_SIZES,
            source=source[0],
            source_md5=source[1],
            source_sha256=source[2],
            compression=method if method != "gzip" else f"gzip-{level}",
            shards=tuple(entries),
        )
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    return manifest


_RESTORE = "Restore it with `dvc checkout data/shards` or rebuild with `dvc repro -f shard`."


def read_manifest(shard_dir: str | os.PathLike) -> Manifest:
    """The manifest, checked as a whole (see the module docstring); ``ShardError`` otherwise."""
    path = Path(shard_dir) / MANIFEST_NAME
    if not path.exists():
        raise ShardError(f"{path} not found: create the shards with `dvc repro shard`.")
    try:
        data = json.loads(path.read_text())
        manifest = Manifest.from_json(data)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ShardError(f"{path} is not a valid manifest ({error}). {_RESTORE}") from None
    if manifest.format_version != FORMAT_VERSION:
        raise ShardError(
            f"{path} has format {manifest.format_version}, this bvae reads format {FORMAT_VERSION}: "
            "rebuild the shards with `dvc repro -f shard`."
        )
    if data.get("digest") != manifest.digest:
        raise ShardError(f"{path} was edited: its digest does not match its content. {_RESTORE}")
    _check_layout(manifest, path)
    return manifest


def _check_layout(manifest: Manifest, path: Path) -> None:
    """What a consistent digest alone cannot promise: dSprites' layout, in-folder files, order."""
    if manifest.image_shape != npz.IMAGE_SHAPE:
        raise ShardError(
            f"{path}: image_shape {list(manifest.image_shape)} is not dSprites' 64×64. {_RESTORE}"
        )
    if manifest.factor_names != factors.FACTOR_NAMES or manifest.factor_sizes != factors.FACTOR_SIZES:
        raise ShardError(f"{path}: the factor grid is not dSprites'. {_RESTORE}")
    start = 0
    for entry in manifest.shards:
        if not _SHARD_NAME.match(entry.file):
            raise ShardError(
                f"{path}: shard file {entry.file!r} is not a shard-NNNNN.h5 inside the folder. {_RESTORE}"
            )
        if entry.start != start or entry.count < 1:
            raise ShardError(
                f"{path}: shard {entry.file} covers images {entry.start}..{entry.start + entry.count - 1}, "
                f"but the shards must run in order from 0 and this one must start at {start}. {_RESTORE}"
            )
        start += entry.count
    if start != manifest.num_images:
        raise ShardError(f"{path}: the shards hold {start} images, num_images says {manifest.num_images}")
    if manifest.num_images > factors.NUM_IMAGES:  # checked before 2.8 GiB (or more) is allocated
        raise ShardError(
            f"{path}: num_images {manifest.num_images:,} is more than dSprites' {factors.NUM_IMAGES:,}. "
            + _RESTORE
        )


def verify_shards(shard_dir: str | os.PathLike, manifest: Manifest) -> None:
    """Check that every shard exists and has its recorded SHA-256 (the manifest's own checks
    ran in :func:`read_manifest`)."""
    shard_dir = Path(shard_dir)
    for entry in manifest.shards:
        path = shard_dir / entry.file
        if not path.exists():
            raise ShardError(f"shard {path} is missing; restore it with `dvc checkout` or `dvc repro shard`.")
        digest = file_digest(path)
        if digest != entry.sha256:
            raise ShardError(
                f"shard {path} is corrupted: SHA-256 {digest} != manifest {entry.sha256}. "
                "Restore it with `dvc checkout data/shards` or rebuild with `dvc repro -f shard`."
            )


@dataclass(frozen=True)
class LoadedDataset:
    """The whole dataset in memory, in dataset order."""

    images: np.ndarray  # (n, 64, 64) uint8
    latents_classes: np.ndarray  # (n, 6) int64
    latents_values: np.ndarray  # (n, 6) float64
    manifest: Manifest


def _read_images(dataset: h5py.Dataset, out: np.ndarray, executor: ThreadPoolExecutor) -> list[Future]:
    """Queue the inflation of every chunk of ``dataset`` into ``out``; return the futures.

    h5py runs HDF5's gzip filter on one thread under its global lock; reading the raw chunks
    and inflating them with zlib (which releases the GIL) uses every core and halves the load
    time on 2 cores. Anything other than plain deflate chunks takes h5py's own path.
    """
    chunk_rows = dataset.chunks[0] if dataset.chunks else 0
    plain_deflate = (
        dataset.compression == "gzip"
        and not dataset.shuffle
        and not dataset.fletcher32
        and dataset.chunks == (chunk_rows, *dataset.shape[1:])
    )
    if not plain_deflate:
        dataset.read_direct(out)
        return []
    flat = out.reshape(len(out), -1)

    def inflate(row: int, raw: bytes) -> None:
        rows = min(chunk_rows, len(out) - row)  # edge chunks are stored padded to full size
        pixels = np.frombuffer(zlib.decompress(raw), dtype=np.uint8)
        flat[row : row + rows] = pixels[: rows * flat.shape[1]].reshape(rows, -1)

    futures = []
    for row in range(0, len(out), chunk_rows):
        filter_mask, raw = dataset.id.read_direct_chunk((row, 0, 0))
        if filter_mask:  # the filter was skipped for this chunk: it is stored raw
            dataset.read_direct(out, np.s_[row : row + chunk_rows], np.s_[row : row + chunk_rows])
            continue
        futures.append(executor.submit(inflate, row, raw))
    return futures


def load_dataset(
    shard_dir: str | os.PathLike,
    *,
    verify: bool = True,
    show_progress: bool = False,
    workers: int | None = None,
) -> LoadedDataset:
    """Load every shard into one uint8 array (2.8 GiB for the full grid).

    With ``verify`` (the default) each shard's SHA-256 is checked first (about 0.2 s: the
    shards are small once compressed). Chunks inflate on ``workers`` threads (default: all cores).
    """
    shard_dir = Path(shard_dir)
    manifest = read_manifest(shard_dir)
    if verify:
        verify_shards(shard_dir, manifest)
    height, width = manifest.image_shape
    images = np.empty((manifest.num_images, height, width), dtype=np.uint8)
    classes = np.empty((manifest.num_images, len(manifest.factor_sizes)), dtype=np.int64)
    values = np.empty((manifest.num_images, len(manifest.factor_sizes)), dtype=np.float64)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as executor:
        futures: list[Future] = []
        for entry in progress(manifest.shards, desc="load shards", unit="shard", disable=not show_progress):
            stop = entry.start + entry.count
            try:
                with h5py.File(shard_dir / entry.file, "r") as shard:
                    if shard.attrs.get("start") != entry.start or len(shard["images"]) != entry.count:
                        raise ShardError(
                            f"shard {shard_dir / entry.file} holds images {shard.attrs.get('start')}.. "
                            f"({len(shard['images'])}), the manifest says {entry.start}.. ({entry.count}). "
                            + _RESTORE
                        )
                    futures += _read_images(shard["images"], images[entry.start : stop], executor)
                    shard["latents_classes"].read_direct(classes[entry.start : stop])
                    shard["latents_values"].read_direct(values[entry.start : stop])
            except (OSError, KeyError, TypeError) as error:
                raise ShardError(f"cannot read shard {shard_dir / entry.file}: {error}") from None
        for future in futures:
            try:
                future.result()
            except zlib.error as error:
                raise ShardError(f"a shard in {shard_dir} holds a broken chunk ({error})") from None
    return LoadedDataset(images=images, latents_classes=classes, latents_values=values, manifest=manifest)


def verify_summary(shard_dir: str | os.PathLike, *, load: bool = False, show_progress: bool = True) -> dict:
    """``bvae verify-data``: every shard checked against the manifest; with ``load``, also the
    whole set loaded, with its time and resident size."""
    import time

    manifest = read_manifest(shard_dir)
    verify_shards(shard_dir, manifest)
    summary: dict = {
        "shards": len(manifest.shards),
        "images": manifest.num_images,
        "source": manifest.source,
        "digest": manifest.digest,
    }
    if load:
        start = time.perf_counter()
        dataset = load_dataset(shard_dir, verify=False, show_progress=show_progress)
        summary["load_seconds"] = round(time.perf_counter() - start, 2)
        summary["resident_gib"] = round(dataset.images.nbytes / 2**30, 2)
        summary["mean_pixel"] = float(dataset.images.mean(dtype="float64"))
    return summary
