"""Run the DVC pipeline as a DVC experiment, and read back what it produced.

Every run is ``dvc exp run --temp``: DVC copies the project into ``.dvc/tmp/exps/`` and runs
``dvc.yaml`` there, so several experiments (a sweep, a retrain beside it) never hold the
workspace's lock at once and the user's workspace is left alone. The result is a git ref
(``refs/exps/…/NAME``) whose commit holds ``dvc.lock`` and ``models/registered.json``;
outputs (``reports/metrics.json`` among them) land in the shared DVC cache.

Overrides are validated against ``params.yaml`` here, before DVC runs, so a bad value fails
at once with the config's message instead of deep inside a stage.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bvae.config import ParamsError
from bvae.errors import EXIT_BAD_INPUT, EXIT_BUG
from bvae.overrides import override_args, validate_overrides
from bvae.telemetry import TELEMETRY_OFF
from bvae.tracking import tracking_uri

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# What `dvc repro` / `dvc exp run` print as the pipeline goes.
STAGE_RUNS = re.compile(r"^Running stage '(?P<stage>[^']+)':")
STAGE_SKIPPED = re.compile(r"^Stage '(?P<stage>[^']+)' (?P<why>didn't change|is cached)")
STAGE_FAILED = re.compile(r"failed to reproduce '(?P<stage>[^']+)'")
_EXITED = re.compile(STAGE_FAILED.pattern + r".*?exited with (?P<code>-?\d+)", re.S)


class ExperimentFailed(RuntimeError):
    """``dvc exp run`` failed. ``permanent``: the stage rejected its input, a retry cannot help."""

    def __init__(self, message: str, *, stage: str | None, exit_code: int | None, permanent: bool):
        super().__init__(message)
        self.stage, self.exit_code, self.permanent = stage, exit_code, permanent


# What each pipeline's experiment is read back by: (metrics, registry record, members).
PIPELINES = {
    "dvc.yaml": ("reports/metrics.json", "models/registered.json", None),
    "sweeps/dvc.yaml": ("sweeps/comparison.json", "sweeps/registered.json", "sweeps/train/sweep.json"),
}


@dataclass(frozen=True)
class Experiment:
    """A finished DVC experiment: its ref, its metrics and its registry record (for a sweep
    pipeline: the comparison, the members' versions, and ``sweep.json``'s members)."""

    name: str
    ref: str
    overrides: dict[str, Any]
    metrics: dict[str, Any]
    registration: dict[str, Any] | None = None
    output_tail: list[str] = field(default_factory=list)
    worker: str = ""  # host:pid of the process that ran it (a sweep on a cluster shows where)
    members: list[dict[str, Any]] | None = None  # an ensemble's members (sweeps/dvc.yaml)

    @property
    def run_id(self) -> str | None:
        return (self.registration or {}).get("mlflow_run_id")


def pipeline_env(project: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The stages' environment: this interpreter's tools, no telemetry, an absolute MLflow store."""
    env = dict(os.environ)
    for key, value in TELEMETRY_OFF.items():
        env.setdefault(key, value)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = tracking_uri(project)
    env.update(extra or {})
    return env


def _git(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=project, capture_output=True, text=True, timeout=60)


def find_ref(project: Path, name: str) -> str | None:
    """The ``refs/exps/…/NAME`` ref DVC made for experiment ``name``."""
    listed = _git(project, "for-each-ref", "--format=%(refname)", "refs/exps/").stdout.split()
    matches = [ref for ref in listed if ref.rsplit("/", 1)[-1] == name]
    return matches[-1] if matches else None


def read_outputs(project: Path, ref: str, paths: list[str]) -> dict[str, Any | None]:
    """JSON outputs of the experiment at ``ref``, committed to git or kept in the DVC cache
    (one DVC view of that commit reads both); ``None`` for a path it does not have."""
    from dvc.api import DVCFileSystem

    commit = _git(project, "rev-parse", ref).stdout.strip()
    view = DVCFileSystem(str(project), rev=commit)
    found: dict[str, Any | None] = {}
    for path in paths:
        try:
            found[path] = json.loads(view.read_text(path))
        except FileNotFoundError:
            found[path] = None
    return found


def _failure(name: str, code: int, tail: list[str]) -> ExperimentFailed:
    text = "\n".join(tail)
    matches = list(_EXITED.finditer(text))
    found = matches[-1] if matches else None  # the last failing stage stopped the run
    stage = found["stage"] if found else None
    stage_code = int(found["code"]) if found else None
    # bvae's exit codes: 2 bad input, 1 a bug (traceback above): neither passes on a retry.
    permanent = stage_code in (EXIT_BAD_INPUT, EXIT_BUG)
    what = f"stage {stage!r} exited with {stage_code}" if stage else f"dvc exited with {code}"
    advice = (
        "fix the input named above; retrying will not help"
        if stage_code == EXIT_BAD_INPUT
        else "a bug in bvae, see the traceback above; retrying will not help"
        if stage_code == EXIT_BUG
        else "may be transient"
    )
    return ExperimentFailed(
        f"DVC experiment {name!r} failed: {what} ({advice}). Output tail:\n{text}",
        stage=stage,
        exit_code=stage_code,
        permanent=permanent,
    )


def _output_lines(stream, tail: deque[str]) -> Iterator[str]:
    """Non-empty output lines (a progress bar: its last state), each also kept in ``tail``."""
    for raw in stream:
        line = raw.rstrip("\n").split("\r")[-1].rstrip()
        if line:
            tail.append(line)
            yield line


def run_experiment(
    project: str | os.PathLike,
    name: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    extra_env: Mapping[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
    follow: Callable[[Iterator[str]], None] | None = None,
    tail_lines: int = 60,
    pipeline: str = "dvc.yaml",
) -> Experiment:
    """``dvc exp run --temp -n NAME -S … [PIPELINE]`` in ``project``; each output line goes to
    ``echo``, or the stream of lines to ``follow`` (which echoes them itself: the flows' stage
    tasks). ``pipeline``: ``dvc.yaml`` (one model) or ``sweeps/dvc.yaml`` (an ensemble)."""
    project = Path(project).resolve()
    overrides = dict(overrides or {})
    if not _NAME.match(name):
        raise ParamsError(f"experiment name {name!r}: use letters, digits, '.', '_' and '-'")
    validate_overrides(project, overrides)
    if pipeline not in PIPELINES:
        raise ParamsError(f"pipeline {pipeline!r} is not one of {', '.join(PIPELINES)}")
    command = ["dvc", "exp", "run", "--temp", "-n", name, *override_args(overrides)]
    if pipeline != "dvc.yaml":
        command.append(pipeline)
    echo = echo or log.info
    echo("$ " + " ".join(command))
    tail: deque[str] = deque(maxlen=tail_lines)
    with subprocess.Popen(
        command,
        cwd=project,
        env=pipeline_env(project, extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as process:
        assert process.stdout is not None
        lines = _output_lines(process.stdout, tail)
        if follow is None:
            for line in lines:
                echo(line)
        else:
            follow(lines)
            for _ in lines:  # whatever follow left unread still belongs to the tail
                pass
        code = process.wait()
    if code != 0:
        raise _failure(name, code, list(tail))
    ref = find_ref(project, name)
    if ref is None:
        raise ExperimentFailed(
            f"dvc exp run finished but made no experiment ref for {name!r}",
            stage=None,
            exit_code=code,
            permanent=False,
        )
    metrics_path, registered_path, members_path = PIPELINES[pipeline]
    outputs = read_outputs(project, ref, [path for path in PIPELINES[pipeline] if path])
    return Experiment(
        name=name,
        ref=ref,
        overrides=overrides,
        metrics=outputs[metrics_path] or {},
        registration=outputs[registered_path],
        output_tail=list(tail)[-10:],
        worker=f"{socket.gethostname()}:{os.getpid()}",
        members=(outputs[members_path] or {}).get("members") if members_path else None,
    )
