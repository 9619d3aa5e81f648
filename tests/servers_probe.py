"""Run only by ``test_servers.py``, in a child pytest (its name keeps the parent from collecting
it): start the servers named in ``BVAE_PROBE_SERVERS``, report that they are up, then wait to
be interrupted."""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests import servers


def test_start_servers_then_wait(tmp_path, request):
    wanted = os.environ["BVAE_PROBE_SERVERS"].split(",")
    starts = {
        "mlflow": lambda: servers.mlflow_server(tmp_path / "mlflow"),
        "s3": lambda: servers.s3_server(tmp_path / "s3", buckets=("probe",)),
        "prefect": lambda: servers.prefect_server(tmp_path / "prefect"),
        "postgres": lambda: servers.postgres_server(("probe",)),
    }
    if servers.postgres_bin() is None:
        starts.pop("postgres")
    with contextlib.ExitStack() as stack:
        if "harness" in wanted:  # Prefect's in-process test server (a child of pytest)
            request.getfixturevalue("prefect")
        contexts = [start() for name, start in starts.items() if name in wanted]
        for name in ("mlflow", "s3", "prefect"):
            (tmp_path / name).mkdir()
        with ThreadPoolExecutor(len(contexts) or 1) as pool:  # they start at once
            entered = [(context, pool.submit(context.__enter__)) for context in contexts]
            for context, started in entered:
                started.result()
                stack.push(context.__exit__)  # stopped on the way out
        Path(os.environ["BVAE_PROBE_READY"]).write_text(" ".join(map(str, servers.LIVE_GROUPS)))
        time.sleep(600)
