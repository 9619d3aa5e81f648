"""Nothing a test starts outlives the test session, also when pytest itself is interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO_ROOT
from tests.servers import group_members, live_processes


def descendants(root: int) -> set[int]:
    """Every live process below ``root``, by parent pid."""
    parents = {pid: parent for pid, (parent, _) in live_processes().items()}
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


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
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0"]
    command.append("tests/servers_probe.py")
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
    assert not processes & set(live_processes())
    assert child.returncode == pytest.ExitCode.INTERRUPTED, (tmp_path / "child.log").read_text()[-3000:]
