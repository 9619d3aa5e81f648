"""Nothing a test starts outlives the test session, also when pytest itself is interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT
from tests.servers import group_members


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (by parent pid, read from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signal_number", "started"),
    [
        (signal.SIGTERM, "harness,mlflow,s3,prefect,postgres"),  # every kind of server
        (signal.SIGINT, "s3"),  # Ctrl-C takes the same path
    ],
)
def test_an_interrupted_pytest_leaves_no_server_running(tmp_path, signal_number, started):
    ready = tmp_path / "ready"
    env = {**os.environ, "BVAE_PROBE_SERVERS": started, "BVAE_PROBE_READY": str(ready)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/servers_probe.py"]
    log = open(tmp_path / "child.log", "w")  # noqa: SIM115 - closed below
    child = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not ready.exists():
            assert child.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the servers did not start in time"
            time.sleep(0.5)
        groups = [int(group) for group in ready.read_text().split()]
        processes = descendants(child.pid)
        assert groups and set(groups) <= processes and all(group_members(group) for group in groups)

        child.send_signal(signal_number)
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
        log.close()
    left = {group: group_members(group) for group in groups}
    assert not any(left.values()), left
    assert not [pid for pid in processes if alive(pid)]
    assert child.returncode == pytest.ExitCode.INTERRUPTED, (tmp_path / "child.log").read_text()[-3000:]
