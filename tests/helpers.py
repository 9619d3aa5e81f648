"""Helpers for end-to-end tests: a throw-away copy of this repository and its commands."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def copy_repository(destination: Path, *, as_cloned: bool = False) -> Path:
    """Copy the tracked and untracked-not-ignored files into a fresh git + DVC repository.
    ``as_cloned``: all of them, lock files and committed records too, as ``git clone`` gives them."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO_ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    destination.mkdir(parents=True, exist_ok=True)
    for name in filter(None, listed):
        source = REPO_ROOT / name
        # No lock file: a copy has not run its pipelines (a dvc.lock would name outputs that
        # neither the copy nor its remote has, and `dvc pull` would fail on them). No results/:
        # no pipeline reads them, and the GPU recipes' .dvc file names data no copy has. No
        # registry record: it names versions in this checkout's registry, not the copy's; no
        # sweep comparison: it is the record of a sweep the copy has not run.
        if not source.is_file() or (
            not as_cloned
            and (
                Path(name).name in ("dvc.lock", "registered.json", "comparison.json")
                or name.startswith(("data/", "models/", "reports/", "results/"))
            )
        ):
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    run(["git", "init", "-q"], destination)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], destination)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"], destination)
    return destination


def set_params(repo: Path, updates: dict[str, object]) -> None:
    """Set dotted keys in the copy's params.yaml (as `dvc exp run -S` would)."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in updates.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def run(
    command: list[str],
    cwd: Path,
    timeout: float = 900,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


# The smallest pipeline that still exercises every stage (seconds of training, one metric).
TINY_PARAMS: dict[str, object] = {
    "data.source": "procedural",  # tests never contact the internet
    "train.steps": 20,
    "train.checkpoint_every": 10,
    "train.log_every": 10,
    "evaluate.sample_sizes": "smoke",
    "evaluate.heldout_images": 1000,
    "evaluate.baselines": [],
    "evaluate.representations": ["mean"],
    "evaluate.metrics": ["mig"],
    "registry.selection_metric": "model.mean.mig.discrete_mig",
    "traverse.sample_images": 1000,
    "traverse.steps": 5,
}


def commit_all(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], repo)


def derived_project(template: Path, destination: Path, params: dict[str, object] | None = None) -> Path:
    """A clone of the session's template project (``conftest.template``): its data checked out
    from the shared DVC cache, not re-rendered, and ``params`` (dotted keys) committed on top."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    run(["git", "clone", "-q", str(template), str(destination)], destination.parent)
    shutil.copy(template / ".dvc/config.local", destination / ".dvc/config.local")
    run(["dvc", "checkout", "-q", "download", "shard"], destination)  # the stages the template ran
    if params:
        set_params(destination, params)
        commit_all(destination, "test params")
    return destination


def kill_at_a_checkpoint(
    command: list[str], cwd: Path, env: dict[str, str], checkpoint: Path, before_step: int
) -> int:
    """Start ``command``, SIGKILL it as soon as ``checkpoint`` holds a step below ``before_step``
    (a ``kill -9`` mid-training), and return that step; fail if it finished first."""
    import os
    import signal
    import time

    from bvae.checkpoint import read_checkpoint as load_trusted

    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    killed_at = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if checkpoint.exists():
            killed_at = load_trusted(checkpoint)["step"]
            if killed_at < before_step:
                os.kill(process.pid, signal.SIGKILL)
                break
        time.sleep(0.05)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "training finished before it could be killed"
    return killed_at
