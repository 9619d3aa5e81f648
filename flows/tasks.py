"""Prefect tasks shared by the flows: run one DVC experiment, guarded by a concurrency limit,
with each DVC stage as a task run of its own while it runs.

No task here caches its result (``NO_CACHE``): each call has side effects (a DVC experiment,
an MLflow run, a registry version) that a cached result would silently skip.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.tasks import exponential_backoff

from bvae.config import ParamsError
from bvae.tracking.lineage import PREFECT_FLOW_RUN_ENV, PREFECT_FLOW_RUN_URL_ENV
from flows.experiments import (
    STAGE_FAILED,
    STAGE_RUNS,
    STAGE_SKIPPED,
    Experiment,
    ExperimentFailed,
    run_experiment,
)

# Experiments on one machine share this Prefect global concurrency limit (retrains and sweep
# points alike); its size is the machine's GPUs, or its CPU cores without one.
EXPERIMENT_LIMIT = "bvae-experiments"
RETRIES = 2
RETRY_BACKOFF_S = 30.0


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable torch/CUDA
        return 0


def default_slots() -> int:
    """One experiment per GPU, else one per CPU core."""
    return gpu_count() or (os.cpu_count() or 1)


def ensure_limit(name: str, slots: int | None) -> int:
    """Create the global concurrency limit if missing; ``slots`` (when given) resizes it."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        if slots is not None:
            client.upsert_global_concurrency_limit_by_name(name, int(slots))
            return int(slots)
        try:
            return client.read_global_concurrency_limit_by_name(name).limit
        except ObjectNotFound:
            size = default_slots()
            client.upsert_global_concurrency_limit_by_name(name, size)
            return size


def prefect_lineage() -> dict[str, str]:
    """The flow run this experiment runs under, for the stages' MLflow runs to point back to
    (``bvae.tracking.lineage``: tags ``prefect_flow_run_id`` and ``prefect_flow_run_url``)."""
    from prefect.runtime import flow_run

    found = {}
    if flow_run.id:
        found[PREFECT_FLOW_RUN_ENV] = str(flow_run.id)
    url = getattr(flow_run, "ui_url", None)
    if url:
        found[PREFECT_FLOW_RUN_URL_ENV] = str(url)
    return found


def retry_unless_permanent(task_, task_run, state) -> bool:
    """Retry network hiccups and crashes; never a bad parameter or a stage that rejected input."""
    try:
        state.result()
    except ParamsError:
        return False
    except ExperimentFailed as error:
        return not error.permanent
    except Exception:  # noqa: BLE001
        return True
    return True


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero (the experiment's error says how and what to do)."""


# bvae's log lines ("12:00:01 WARNING bvae.stages.train: …") and DVC's ("ERROR: …") carry
# their level; terminal colour codes are stripped before a line reaches Prefect.
_BVAE_LEVEL = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
_DVC_LEVEL = re.compile(r"^(ERROR|WARNING):")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def log_line(logger, line: str) -> None:
    """``line`` to ``logger`` at the level the line itself names (INFO otherwise), uncoloured."""
    text = _ANSI.sub("", line)
    found = _BVAE_LEVEL.match(text) or _DVC_LEVEL.match(text)
    logger.log(logging.getLevelName(found[1]) if found else logging.INFO, "%s", text)


class StageOutput:
    """DVC's output lines, read one stage at a time; every line read is echoed once, to the
    logger of the task run of the stage it belongs to (``echo_to``)."""

    def __init__(self, lines: Iterator[str], echo: Callable[[str], None]):
        self.lines, self.echo, self.pending = lines, echo, None

    def echo_to(self, echo: Callable[[str], None]) -> Callable[[str], None]:
        """Echo later lines with ``echo``; returns the previous echo."""
        previous, self.echo = self.echo, echo
        return previous

    def next_line(self) -> str | None:
        if self.pending is not None:
            line, self.pending = self.pending, None
            return line
        line = next(self.lines, None)
        if line is not None:
            self.echo(line)
        return line

    def rest_of_stage(self, stage: str) -> None:
        """Read up to the next stage's first line; raise if DVC says ``stage`` failed."""
        while (line := self.next_line()) is not None:
            if STAGE_RUNS.match(line) or STAGE_SKIPPED.match(line):
                self.pending = line
                return
            failed = STAGE_FAILED.search(line)
            if failed and failed["stage"] == stage:
                raise StageFailed(line.removeprefix("ERROR: "))


@task(name="dvc-stage", task_run_name="{stage}", cache_policy=NO_CACHE, retries=0)
def dvc_stage(stage: str, output: StageOutput, skipped: str | None = None) -> str:
    """One stage of the running pipeline, for as long as DVC runs it (its output is the log)."""
    if skipped:
        return skipped
    logger = get_run_logger()
    previous = output.echo_to(lambda line: log_line(logger, line))  # the stage's lines on its own run
    try:
        output.rest_of_stage(stage)
    finally:
        output.echo_to(previous)
    return "ran"


def follow_stages(lines: Iterator[str], echo: Callable[[str], None]) -> None:
    """Each stage DVC runs becomes a task run of the flow (name, duration, outcome); a stage
    DVC skips (unchanged, or restored from the run-cache) a task run that says so."""
    output = StageOutput(lines, echo)
    while (line := output.next_line()) is not None:
        if runs := STAGE_RUNS.match(line):
            dvc_stage(runs["stage"], output, return_state=True)
        elif skipped := STAGE_SKIPPED.match(line):
            why = "unchanged" if skipped["why"] == "didn't change" else "restored from the run-cache"
            named = dvc_stage.with_options(task_run_name=f"{skipped['stage']} ({why})")
            named(skipped["stage"], output, skipped=why, return_state=True)


@task(
    name="dvc-experiment",
    task_run_name="dvc exp run {name}",
    retries=RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=RETRY_BACKOFF_S),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_unless_permanent,
    cache_policy=NO_CACHE,
)
def run_pipeline(
    project: str,
    name: str,
    overrides: Mapping[str, Any],
    extra_env: Mapping[str, str] | None = None,
    limit: str | None = EXPERIMENT_LIMIT,
    pipeline: str = "dvc.yaml",
) -> Experiment:
    """The whole DVC pipeline (``pipeline``: one model, or ``sweeps/dvc.yaml``: an ensemble)
    as experiment ``name``, holding one slot of ``limit`` while it runs."""
    logger = get_run_logger()
    project_dir = Path(project)
    extra_env = {**prefect_lineage(), **(extra_env or {})}

    def follow(lines: Iterator[str]) -> None:
        follow_stages(lines, lambda line: log_line(logger, line))

    if limit is None:
        return run_experiment(
            project_dir, name, overrides, extra_env=extra_env, follow=follow, pipeline=pipeline
        )
    with concurrency(limit, occupy=1, strict=True):
        return run_experiment(
            project_dir, name, overrides, extra_env=extra_env, follow=follow, pipeline=pipeline
        )
