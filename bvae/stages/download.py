"""Stage ``download``: ``data/raw/dsprites.npz`` plus ``data/raw/source.json``.

``data.source`` picks the official file (MD5-verified download), the procedural renderer, or
``auto``: official when reachable, else procedural with a loud warning. ``source.json``
records which one was used and the file's checksums; the shard manifest carries them on.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from bvae import __version__
from bvae.config import DataConfig
from bvae.data import factors, npz, render
from bvae.data.download import UnreachableError, download_verified
from bvae.data.npz import NpzFormatError
from bvae.errors import MissingInput
from bvae.fileio import file_digest, write_json

log = logging.getLogger(__name__)

DEFAULT_NPZ = Path("data/raw/dsprites.npz")
RECORD_NAME = "source.json"


def record_path(npz_path: str | os.PathLike) -> Path:
    return Path(npz_path).with_name(RECORD_NAME)


def render_npz(out_path: str | os.PathLike, *, workers: int = 2) -> None:
    """Render the full grid into an official-layout npz (about 15 s on 2 cores)."""
    classes = factors.all_classes()
    metadata = factors.metadata()
    metadata["generator"] = f"bvae {__version__} procedural renderer (bvae.data.render)"
    npz.write_npz(
        out_path,
        render.iter_sprite_blocks(workers=workers),
        factors.NUM_IMAGES,
        classes,
        factors.values_from_classes(classes),
        metadata,
    )


def _warn_fallback(reason: str) -> None:
    banner = "!" * 78
    log.warning(
        "\n%s\n  The official dSprites file could not be reached:\n  %s\n"
        "  FALLING BACK to the procedural renderer (same factor grid, ~0.3%% pixel difference).\n"
        "  Set data.source: official to insist on the real file, procedural to silence this.\n%s",
        banner,
        reason.replace("\n", "\n  "),
        banner,
    )


def run_download(
    config: DataConfig, out_path: str | os.PathLike = DEFAULT_NPZ, *, show_progress: bool = True
) -> dict:
    """Produce the npz and its source record; returns the record."""
    out_path = Path(out_path)
    record: dict = {"requested": config.source, "file": out_path.name}
    if config.source in ("official", "auto"):
        try:
            result = download_verified(
                config.urls,
                out_path,
                config.md5,
                timeout_s=config.timeout_s,
                retries=config.retries,
                backoff_s=config.backoff_s,
                # auto must not stall an offline machine: one try per URL to connect.
                connect_retries=0 if config.source == "auto" else None,
                show_progress=show_progress,
            )
            record.update(source="official", url=result.url, md5=result.md5, sha256=result.sha256)
        except UnreachableError as error:
            if config.source == "official":
                raise
            _warn_fallback(str(error))
            record["fallback_reason"] = str(error)
    if "source" not in record:
        log.info("rendering the dSprites grid procedurally into %s", out_path)
        render_npz(out_path)
        record.update(
            source="procedural",
            generator=f"bvae {__version__} procedural renderer",
            md5=file_digest(out_path, "md5"),
            sha256=file_digest(out_path),
        )
    record["num_bytes"] = out_path.stat().st_size
    write_json(record_path(out_path), record)
    log.info("dSprites (%s) at %s, MD5 %s", record["source"], out_path, record["md5"])
    return record


def read_record(npz_path: str | os.PathLike) -> dict:
    """The source record beside an npz, checked against the npz's MD5."""
    path = record_path(npz_path)
    if not path.exists():
        raise MissingInput(f"{path} not found: run `dvc repro download` (or `bvae download`).")
    record = json.loads(path.read_text())
    actual = file_digest(npz_path, "md5")
    if actual != record.get("md5"):
        raise NpzFormatError(
            f"{npz_path} has MD5 {actual} but {path} records {record.get('md5')}: the file changed "
            "after download. Run `dvc repro -f download`."
        )
    return record
