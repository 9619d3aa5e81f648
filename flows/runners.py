"""Where a sweep's points run: Prefect's own threads, or a Dask or Ray cluster.

The engines are Prefect's task runners (``prefect-dask``, ``prefect-ray``); bvae only picks
one from a name and an optional cluster address, so the choice can be a flow parameter or a
command-line flag:

- ``threads``: this process (the default); the ``bvae-experiments`` limit bounds the points.
- ``dask``: ``cluster`` is a scheduler address (``tcp://host:8786``); without one, a
  temporary ``distributed.LocalCluster`` with one single-threaded worker process per slot.
- ``ray``: ``cluster`` is a Ray address (``ray://host:10001``); without one, a local Ray.

A point is a whole ``dvc exp run``, so one worker thread runs one point at a time.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from bvae.config import ParamsError

RUNNERS = ("threads", "dask", "ray")
_PACKAGES = {"dask": "prefect_dask", "ray": "prefect_ray"}


@dataclass(frozen=True)
class RunnerChoice:
    """A validated runner name and cluster address (``None``: a temporary local cluster)."""

    kind: str = "threads"
    cluster: str | None = None

    @property
    def local(self) -> bool:
        """Do the points run on this machine (so its concurrency limit applies)?"""
        return self.cluster is None


def choose_runner(kind: str, cluster: str | None = None) -> RunnerChoice:
    """Check the name, the address and that the engine's package is installed, before any run."""
    if kind not in RUNNERS:
        raise ParamsError(f"task runner {kind!r} is unknown: use one of {', '.join(RUNNERS)}")
    if kind == "threads" and cluster:
        raise ParamsError(
            f"cluster {cluster!r} needs a cluster runner: pass runner='dask' or runner='ray' with it"
        )
    package = _PACKAGES.get(kind)
    if package and importlib.util.find_spec(package) is None:
        extra = "scale" if kind == "dask" else "ray"
        raise ParamsError(
            f"task runner {kind!r} needs the {package.replace('_', '-')} package: "
            f"pip install -c constraints/cpu.txt -e '.[{extra}]'"
        )
    return RunnerChoice(kind, cluster or None)


def task_runner(choice: RunnerChoice, slots: int) -> TaskRunner:
    """The Prefect task runner for ``choice``; a temporary local cluster gets ``slots`` workers."""
    if choice.kind == "dask":
        from prefect_dask import DaskTaskRunner

        if choice.cluster:
            return DaskTaskRunner(address=choice.cluster)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": slots,
                "threads_per_worker": 1,
                "processes": True,
                "host": "127.0.0.1",
                "dashboard_address": None,
            }
        )
    if choice.kind == "ray":
        from prefect_ray import RayTaskRunner

        if choice.cluster:
            return RayTaskRunner(address=choice.cluster)
        # A temporary local Ray: on loopback, no dashboard, no usage report.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        return RayTaskRunner(
            init_kwargs={"num_cpus": slots, "include_dashboard": False, "_node_ip_address": "127.0.0.1"}
        )
    return ThreadPoolTaskRunner(max_workers=slots)
