"""Stage ``shard``: ``data/shards/`` (HDF5 shards) and ``data/shards/manifest.json``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from bvae.config import ShardConfig
from bvae.data.shards import Manifest, write_shards
from bvae.stages.download import DEFAULT_NPZ, read_record

log = logging.getLogger(__name__)

DEFAULT_SHARDS = Path("data/shards")


def run_shard(
    config: ShardConfig,
    npz_path: str | os.PathLike = DEFAULT_NPZ,
    out_dir: str | os.PathLike = DEFAULT_SHARDS,
    *,
    show_progress: bool = True,
    force: bool = False,
) -> Manifest:
    record = read_record(npz_path)
    manifest = write_shards(
        npz_path,
        out_dir,
        source=record["source"],
        source_md5=record["md5"],
        source_sha256=record["sha256"],
        images_per_shard=config.images_per_shard,
        compression=config.compression,
        compression_level=config.compression_level,
        show_progress=show_progress,
        force=force,
    )
    log.info(
        "%d images (%s) in %d shards at %s, digest %s",
        manifest.num_images,
        manifest.source,
        len(manifest.shards),
        out_dir,
        manifest.digest[:12],
    )
    return manifest
