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
from bvae.stages.evaluate import EvaluatePaths, run_evaluate
from bvae.stages.report import ReportPaths, run_report
from bvae.stages.shared_baselines import SharedBaselines, read_shared_baselines
from bvae.stages.sweep_files import SweepPaths, member_train_paths, read_sweep
from bvae.stages.traverse import TraversePaths, run_traverse
from bvae.sweep import sweep_members

log = logging.getLogger(__name__)


def _inspect_member(
    params_json: dict,
    name: str,
    train_folder: str,
    shards: str,
    out: str,
    threads: int,
    baselines: SharedBaselines,
) -> str:
    """Evaluate, traverse and report one member (a worker process): the single stages' code."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(name)s: %(message)s", force=True)
    params = Params.model_validate(params_json)
    trained = member_train_paths(Path(train_folder), name)
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    metrics = folder / "metrics.json"
    run_evaluate(
        params,
        EvaluatePaths(shards=Path(shards), model=trained.model, run_file=trained.run_file, metrics=metrics),
        shared_baselines=baselines,
    )
    traversals = folder / "traversals"
    run_traverse(
        params,
        TraversePaths(
            shards=Path(shards),
            model=trained.model,
            run_file=trained.run_file,
            curves=trained.curves,
            out_dir=traversals,
            latents=folder / "latents.json",
            latents_markdown=folder / "latents.md",
        ),
    )
    run_report(
        params,
        ReportPaths(
            summary=trained.summary,
            metrics=metrics,
            latents=folder / "latents.json",
            traversals=traversals,
            run_file=trained.run_file,
            html=folder / "report.html",
        ),
    )
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
                str(paths.train),
                str(paths.shards),
                str(staging),
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
