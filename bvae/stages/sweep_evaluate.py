"""Stage ``sweep-evaluate``: every member through the single pipeline's ``evaluate``,
``traverse`` and ``report``, ``sweep.workers`` members at once in processes, into
``sweeps/members/<member>/``; each logs into its member's MLflow run. The baselines' figures
are ``sweep-baselines``'s, computed once for all members.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
from pathlib import Path

import torch

from bvae.config import Params, ParamsError
from bvae.data.shards import read_manifest
from bvae.fileio import atomic_path
from bvae.stages.evaluate import run_evaluate
from bvae.stages.report import run_report
from bvae.stages.run_files import RunFiles
from bvae.stages.shared_baselines import SharedBaselines, read_shared_baselines
from bvae.stages.sweep_files import SweepPaths, read_sweep
from bvae.stages.traverse import run_traverse
from bvae.sweep import sweep_members

log = logging.getLogger(__name__)


def _inspect_member(
    params_json: dict, name: str, files: RunFiles, shards: Path, threads: int, baselines: SharedBaselines
) -> str:
    """Evaluate, traverse and report one member (a worker process): the single stages' code
    on the member's files."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(name)s: %(message)s", force=True)
    params = Params.model_validate(params_json)
    files.report.parent.mkdir(parents=True, exist_ok=True)
    run_evaluate(params, files, shards=shards, shared_baselines=baselines)
    run_traverse(params, files, shards=shards)
    run_report(params, files)
    return name


def run_sweep_evaluate(params: Params, paths: SweepPaths = SweepPaths()) -> list[str]:
    """Every member through evaluate, traverse and report, ``sweep.workers`` at once."""
    sweep = read_sweep(paths)
    by_name = {member.name: member for member in sweep_members(params)}
    names = [entry["name"] for entry in sweep["members"]]
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ParamsError(
            f"{paths.train} holds members {missing} that sweep.grid no longer makes: rerun sweep-train"
        )
    baselines = read_shared_baselines(paths.baselines)
    baselines.check(params, read_manifest(paths.shards).digest)  # before any worker starts
    cores = os.cpu_count() or 1
    workers = min(params.sweep.workers or cores, len(names))
    threads = max(1, cores // workers)
    log.info("evaluating %d members, %d at once (%d threads each)", len(names), workers, threads)
    with atomic_path(paths.members, directory=True) as staging:
        jobs = {
            name: (
                by_name[name].params.model_dump(mode="json"),
                name,
                paths.member(name, members=staging),
                paths.shards,
                threads,
                baselines,
            )
            for name in names
        }
        if workers == 1:
            for job in jobs.values():
                _inspect_member(*job)
        else:
            context = multiprocessing.get_context("spawn")  # torch and threads: never fork
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
                for done in concurrent.futures.as_completed(
                    [pool.submit(_inspect_member, *job) for job in jobs.values()]
                ):
                    log.info("member %s evaluated, traversed and reported", done.result())
    return names
