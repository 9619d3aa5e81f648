"""Run only by ``test_servers.py``, in a child pytest (its name keeps the parent from collecting
it): start the servers named in ``BVAE_PROBE_SERVERS``, report that they are up, then wait to
be interrupted."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from tests import servers


def test_start_servers_then_wait(tmp_path, request):
    wanted = os.environ["BVAE_PROBE_SERVERS"].split(",")
    with contextlib.ExitStack() as stack:
        if "harness" in wanted:  # Prefect's in-process test server (a child of pytest)
            request.getfixturevalue("prefect")
        if "mlflow" in wanted:
            stack.enter_context(servers.mlflow_server(tmp_path))
        if "s3" in wanted:
            stack.enter_context(servers.s3_server(tmp_path, buckets=("probe",)))
        if "prefect" in wanted:
            stack.enter_context(servers.prefect_server(tmp_path))
        if "postgres" in wanted and servers.postgres_bin() is not None:
            stack.enter_context(servers.postgres_server(("probe",)))
        Path(os.environ["BVAE_PROBE_READY"]).write_text(" ".join(map(str, servers.LIVE_GROUPS)))
        time.sleep(600)
