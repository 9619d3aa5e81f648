"""Atomic writes and file digests: nothing partial is ever left at an output path, and no
folder is replaced unless bvae wrote it.

An output folder bvae writes carries a marker file (``.bvae-output``). Replacing a folder is
allowed only when it carries the marker, is empty, is a DVC output (``dvc checkout`` restores
the folder but not the marker, which ``.dvcignore`` keeps out of its hash), or with
``force``; the working directory, its parents, the home folder and ``/`` are never replaced.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml

from bvae.errors import BadInput

OUTPUT_MARKER = ".bvae-output"


class OutputFolderError(BadInput, ValueError):
    """An output folder bvae refuses to replace; the message names it and the way out."""


def check_output_folder(path: str | os.PathLike, *, force: bool = False) -> None:
    """Raise ``OutputFolderError`` unless replacing the folder ``path`` loses nothing of the user's.

    Called before any work starts (an early error) and again right before the swap.
    """
    given, target = Path(path), Path(path).resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if target == Path(target.anchor):
        reason = "the root folder"
    elif target == home:
        reason = "your home folder"
    elif target == cwd:
        reason = "the working directory"
    elif target in cwd.parents:
        reason = "a parent of the working directory"
    else:
        reason = None
    if reason is None and given.is_symlink():
        reason = f"a symbolic link (to {target})"
    if reason is not None:
        raise OutputFolderError(
            f"refusing to use {given} ({target}) as an output folder: it is {reason}, and bvae "
            f"replaces its output folder whole. Name a folder of its own, e.g. {given / 'out'}."
        )
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputFolderError(f"{given} exists and is not a folder: remove it or choose another output.")
    if force or (target / OUTPUT_MARKER).exists() or not any(target.iterdir()) or dvc_output(target):
        return
    raise OutputFolderError(
        f"{given} already holds files that bvae did not write (it has no {OUTPUT_MARKER} marker): "
        "choose another output folder, or pass --force to replace it and everything in it."
    )


def dvc_output(folder: Path) -> bool:
    """Whether ``folder`` is an output of a stage in its DVC project's ``dvc.lock`` files (the
    project's own and those one level down, e.g. ``sweeps/dvc.lock``) or has a ``.dvc`` file:
    its content is in DVC's cache, so replacing it loses nothing."""
    folder = folder.resolve()
    root = next((parent for parent in folder.parents if (parent / ".dvc").is_dir()), None)
    if root is None:
        return False
    if folder.with_name(folder.name + ".dvc").is_file():
        return True
    for lock in [root / "dvc.lock", *root.glob("*/dvc.lock")]:
        try:
            stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        for stage in stages.values():
            for out in stage.get("outs", []) if isinstance(stage, dict) else []:
                if isinstance(out, dict) and (lock.parent / str(out.get("path", ""))).resolve() == folder:
                    return True
    return False


class NotWritable(BadInput, PermissionError):
    """An output folder cannot be written: found before any work, not after it."""


def check_writable(folders: Iterable[str | os.PathLike]) -> None:
    """Make each folder (and its parents) if it is missing and write a probe file in it, so
    that a read-only or full output folder fails in a second, not after a load and training."""
    for folder in dict.fromkeys(Path(folder) for folder in folders):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".bvae-probe-"):
                pass
        except OSError as error:
            raise NotWritable(
                f"cannot write to {folder}/ ({error.strerror or error}): make it writable "
                f"(e.g. `chmod u+w {folder}`) or free space there, then run again"
            ) from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, directory: bool = False, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success rename it onto ``path``, else delete it.

    The sibling lives in the same folder, so the final ``os.replace`` is atomic on POSIX.
    With ``directory=True`` the temporary is a folder that gets the output marker, and an
    existing ``path`` folder is replaced whole, only as ``check_output_folder`` allows: moved
    aside, the new one renamed into place, then the old one deleted, so a crash at any point
    leaves the old or the new folder whole.
    """
    path = Path(path)
    if directory:
        check_output_folder(path, force=force)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    if directory:
        temporary = Path(tempfile.mkdtemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent))
    else:
        handle, name = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(handle)
        temporary = Path(name)
    _apply_umask(temporary, directory)
    try:
        yield temporary
        if directory:
            (temporary / OUTPUT_MARKER).write_text("written by bvae; replaced whole on the next write\n")
            check_output_folder(path, force=force)  # it may have changed while we worked
            _swap_folder(temporary, path)
        else:
            with open(temporary, "rb+") as stream:
                os.fsync(stream.fileno())
            os.replace(temporary, path)
    except BaseException:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)
        raise


def _temporary_prefix(path: Path) -> str:
    """``.NAME.bvae-PID-``: a temporary beside ``path`` that names the process writing it."""
    return f".{path.name}.bvae-{os.getpid()}-"


def _remove_stale_temporaries(path: Path) -> None:
    """Delete the temporaries a killed bvae process left beside ``path`` (``kill -9`` midway
    through a write); those of a process still running are left alone."""
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.bvae-*-*"):
        owner = candidate.name[len(path.name) + 7 :].split("-", 1)[0]
        if candidate.suffix not in (".tmp", ".old") or not owner.isdigit() or _alive(int(owner)):
            continue
        if candidate.is_dir() and not candidate.is_symlink():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _apply_umask(temporary: Path, directory: bool) -> None:
    """mkstemp / mkdtemp create 0600 / 0700; an output gets the modes the user's umask gives."""
    os.chmod(temporary, (0o777 if directory else 0o666) & ~_umask())


def _umask() -> int:
    """The process umask, read without changing it (Linux); elsewhere set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _swap_folder(new: Path, path: Path) -> None:
    """Put the folder ``new`` at ``path``: the old folder goes aside first and is deleted last."""
    if not path.exists():
        os.replace(new, path)
        return
    aside = Path(tempfile.mkdtemp(prefix=_temporary_prefix(path), suffix=".old", dir=path.parent))
    os.replace(path, aside)  # renaming onto the empty folder just made: atomic
    os.replace(new, path)
    shutil.rmtree(aside)


def write_json(path: str | os.PathLike, data: object) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``hashlib.file_digest``: read in chunks, fine for multi-GB files)."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, algorithm).hexdigest()
