"""Serve the deployments: ``bvae-retrain/scheduled`` (cron, weekly by default) and
``bvae-sweep/on-demand``.

    prefect server start --host 127.0.0.1 --port 4200        # another terminal
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m flows.serve                                     # --cron, --interval, --project
    python -m flows.serve --sweep-runner dask --sweep-cluster tcp://scheduler:8786

The process keeps polling the server and runs each scheduled or triggered flow run in a
subprocess; stop it with Ctrl-C. A schedule needs a real Prefect server: the temporary one
Prefect starts without ``PREFECT_API_URL`` cannot schedule.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.schedules import Cron, Interval

from bvae.telemetry import TELEMETRY_OFF
from flows.retrain import retrain
from flows.runners import RUNNERS, choose_runner
from flows.sweep import DEFAULT_GRID, sweep

WEEKLY = "0 3 * * 1"  # Mondays 03:00
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


def deployments(
    project: str,
    cron: str = WEEKLY,
    timezone: str = "UTC",
    interval_s: float | None = None,
    sweep_runner: str = "threads",
    sweep_cluster: str | None = None,
):
    """The two deployments, declared in code (the same flows, run with ``project``'s pipeline).
    ``sweep_runner``/``sweep_cluster``: the sweep's default task runner (a run may override)."""
    choose_runner(sweep_runner, sweep_cluster)  # a bad choice fails here, not at the first sweep
    if interval_s:  # the first run shortly after start, then every interval_s
        # The server schedules only future runs: an anchor that passes before the deployment
        # is registered (a busy machine) would skip the first run. 30 s leaves room.
        start = datetime.now(UTC) + timedelta(seconds=30)
        schedule = Interval(interval_s, anchor_date=start, timezone=timezone)
    else:
        schedule = Cron(cron, timezone=timezone)
    scheduled = retrain.to_deployment(
        name="scheduled",
        schedule=schedule,
        # One retrain at a time: a run that comes due while the last still runs is cancelled
        # (retraining twice on the same data is waste, and queued runs would pile up).
        concurrency_limit=ONE_AT_A_TIME,
        parameters={"project": project},
        description="Retrain: the DVC pipeline as an experiment; register and gate the model.",
        tags=["bvae", "retrain"],
    )
    on_demand = sweep.to_deployment(
        name="on-demand",
        parameters={
            "project": project,
            "grid": DEFAULT_GRID,
            "runner": sweep_runner,
            "cluster": sweep_cluster,
        },
        description="A grid of DVC experiments in parallel; the best point goes through the gate.",
        tags=["bvae", "sweep"],
    )
    return scheduled, on_demand


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", default=".", help="the bvae checkout whose pipeline runs (default: .)")
    parser.add_argument(
        "--cron",
        default=os.environ.get("BVAE_RETRAIN_CRON", WEEKLY),
        help=f"retrain schedule (default {WEEKLY!r})",
    )
    parser.add_argument("--timezone", default=os.environ.get("BVAE_RETRAIN_TIMEZONE", "UTC"))
    parser.add_argument("--interval", type=float, help="retrain every this many seconds instead of the cron")
    parser.add_argument("--limit", type=int, help="at most this many flow runs at once in this process")
    parser.add_argument("--sweep-runner", choices=RUNNERS, default="threads", help="where sweep points run")
    parser.add_argument("--sweep-cluster", help="the Dask scheduler / Ray address (default: a local cluster)")
    args = parser.parse_args(argv)
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    project = str(Path(args.project).resolve())
    declared = deployments(
        project, args.cron, args.timezone, args.interval, args.sweep_runner, args.sweep_cluster
    )
    serve(*declared, limit=args.limit)


if __name__ == "__main__":
    main()
