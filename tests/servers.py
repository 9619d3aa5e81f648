"""Real servers for tests, on 127.0.0.1 only, stopped afterwards.

Every server runs in its own process group, recorded in ``LIVE_GROUPS`` while it runs. The
group is stopped when its context exits (a pass, a failure, a ``KeyboardInterrupt``), and
``stop_all_servers`` stops whatever is left: ``conftest.py`` calls it when pytest receives
SIGTERM or SIGINT and at interpreter exit, so a killed test run leaves no server behind.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

# Process-group id -> the signal that stops that server cleanly (PostgreSQL wants SIGINT).
LIVE_GROUPS: dict[int, int] = {}


def stop_group(group: int, stop_signal: int = signal.SIGTERM, grace_s: float = 10.0) -> None:
    """Signal a whole process group, then SIGKILL whatever is still in it after ``grace_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, stop_signal)
    deadline = time.monotonic() + grace_s
    while group_members(group) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(-group, os.WNOHANG)  # reap our own children, or they linger as zombies
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    LIVE_GROUPS.pop(group, None)


def stop_all_servers() -> None:
    """Stop every server group still running (signal handlers and atexit call this)."""
    for group, stop_signal in list(LIVE_GROUPS.items()):
        stop_group(group, stop_signal, grace_s=5.0)


def live_processes() -> dict[int, tuple[int, int]]:
    """Every live (non-zombie) process: pid -> (parent pid, process group), read from /proc."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if state != "Z":
            found[int(stat.parent.name)] = (int(parent), int(group))
    return found


def group_members(group: int) -> list[int]:
    """Live processes whose process group is ``group``."""
    return [pid for pid, (_, member_of) in live_processes().items() if member_of == group]


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
    stop_signal: int = signal.SIGTERM,
) -> Iterator[subprocess.Popen]:
    """Run ``command`` (in ``cwd``, default ``folder``) in its own process group, logging to
    ``folder/name.log``; wait for ``ready_url`` to answer; on exit stop the whole group."""
    log_path = folder / f"{name}.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        command, cwd=cwd or folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    LIVE_GROUPS[process.pid] = stop_signal  # a new session: its group id is the leader's pid
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
        stop_group(process.pid, stop_signal, grace_s=20.0)
        process.wait()
        log.close()


@contextlib.contextmanager
def mlflow_server(
    folder: Path,
    timeout_s: float = 90,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1; by default a SQLite backend and a local artifact root."""
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **(extra_env or {}),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store_uri or f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination",
        artifacts_destination or str(folder / "artifacts"),
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
def prefect_server(
    folder: Path, timeout_s: float = 120, extra_env: dict[str, str] | None = None
) -> Iterator[str]:
    """``prefect server start`` on 127.0.0.1 with its own home; yields the API URL."""
    port = free_port()
    env = {
        **prefect_env(folder / "prefect-home"),
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
        **(extra_env or {}),
    }
    command = ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    api = f"http://127.0.0.1:{port}/api"
    with background(command, folder, "prefect-server", env, f"{api}/health", timeout_s):
        yield api


# Dummy credentials for the S3-compatible test server; no instance-metadata lookups (which
# would go to 169.254.169.254), a fixed region.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "bvae-test",
    "AWS_SECRET_ACCESS_KEY": "bvae-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@contextlib.contextmanager
def s3_server(folder: Path, buckets: tuple[str, ...] = (), timeout_s: float = 60) -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1 with ``buckets`` created; yields its endpoint URL."""
    port = free_port()
    command = ["moto_server", "-H", "127.0.0.1", "-p", str(port)]
    endpoint = f"http://127.0.0.1:{port}"
    with background(command, folder, "s3-server", {**os.environ, **S3_ENV}, endpoint, timeout_s):
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield endpoint


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


def s3_keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    """Every key under ``prefix`` in ``bucket`` on the test server."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def postgres_bin() -> Path | None:
    """The folder holding Debian's PostgreSQL server programs, if the package is installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


@contextlib.contextmanager
def postgres_server(databases: tuple[str, ...], timeout_s: float = 60) -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust auth, its own socket folder) with
    ``databases`` created; yields ``postgresql://bvae@127.0.0.1:PORT`` (append ``/NAME``). As
    root, the server runs as ``postgres`` (PostgreSQL refuses root), so its folder lives outside
    pytest's private temp tree."""
    binaries = postgres_bin()
    if binaries is None:
        raise FileNotFoundError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="bvae-postgres-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        account = pwd.getpwnam("postgres")
        os.chown(folder, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()
    try:
        subprocess.run(
            [*as_user, str(binaries / "initdb"), "-D", str(data), "-U", "bvae", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
            text=True,
        )
        command = [
            *as_user,
            str(binaries / "postgres"),
            "-D",
            str(data),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-k",
            str(folder),
        ]
        with background(command, folder, "postgres", dict(os.environ), None, stop_signal=signal.SIGINT):
            _wait_for_postgres(binaries, port, timeout_s, folder / "postgres.log")
            for database in databases:
                subprocess.run(
                    [str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "bvae", database],
                    check=True,
                    capture_output=True,
                    text=True,
                )
            yield f"postgresql://bvae@127.0.0.1:{port}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _wait_for_postgres(binaries: Path, port: int, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    ready = [str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "bvae", "-q"]
    while subprocess.run(ready).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL did not start: {log.read_text()[-2000:]}")
        time.sleep(0.3)
