"""Real servers for tests, on 127.0.0.1 only, stopped afterwards."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def background(
    command: list[str],
    folder: Path,
    name: str,
    env: dict[str, str],
    ready_url: str | None,
    timeout_s: float = 90,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen]:
    """Run ``command`` (in ``cwd``, default ``folder``) in its own process group, logging to
    ``folder/name.log``; wait for ``ready_url`` to answer; on exit stop the whole group."""
    log_path = folder / f"{name}.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        command, cwd=cwd or folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + timeout_s
    try:
        while ready_url is not None:
            try:
                with urllib.request.urlopen(ready_url, timeout=2):
                    break
            except OSError as error:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start: {log_path.read_text()[-2000:]}") from error
                time.sleep(0.5)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
        log.close()


@contextlib.contextmanager
def mlflow_server(folder: Path, timeout_s: float = 90) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 with a SQLite backend and a temporary artifact root."""
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    uri = f"http://127.0.0.1:{port}"
    with background(command, folder, "mlflow-server", env, f"{uri}/health", timeout_s):
        yield uri


def prefect_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """An isolated Prefect home (its own SQLite database), no telemetry, optionally a server."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


@contextlib.contextmanager
def prefect_server(folder: Path, timeout_s: float = 120) -> Iterator[str]:
    """``prefect server start`` on 127.0.0.1 with its own home; yields the API URL."""
    port = free_port()
    env = {**prefect_env(folder / "prefect-home"), "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"}
    command = ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    api = f"http://127.0.0.1:{port}/api"
    with background(command, folder, "prefect-server", env, f"{api}/health", timeout_s):
        yield api
