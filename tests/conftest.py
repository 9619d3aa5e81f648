"""Shared fixtures: the environment every test runs in, the one render of the full grid, and
the signal handling that stops every test server when pytest is interrupted.

The full 737,280-image grid is rendered and sharded once per session, by ``dvc repro shard``
in the template project (``template``). Every end-to-end project is a clone of it sharing its
DVC cache, run-cache included: the data stages are checked out, never re-rendered, and any
stage that already ran in the session with the same code and params is restored instead of
rerun. A test that needs a stage to really run uses params no other test uses (its own
``train.seed``). Training-only tests use ``small_shards`` (65,536 images, one shard).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import servers
from tests.helpers import TINY_PARAMS, commit_all, copy_repository, run, set_params

# Subprocesses (bvae, dvc, mlflow) must come from this interpreter's environment, and nothing
# may phone home.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
from bvae.telemetry import TELEMETRY_OFF  # noqa: E402

os.environ.update(TELEMETRY_OFF)

# pytest-xdist workers share the machine's cores: each worker (and the bvae, dvc and torchrun
# processes it starts, which inherit this) gets its share of OpenMP threads, so that two torch
# processes do not fight over the same cores. Set before anything imports torch.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))


# Seconds each module took in a two-worker `.ci/run` (junit, 2026-12-02, commit d727381, on
# that day's AVX-512 machine; earlier machines took about 1.7x as long, the ratios held).
# pytest-xdist hands out whole modules (--dist loadfile) in collection order, so the longest
# go first and the short ones fill in at the end, instead of one long module running alone
# while the other worker idles.
MODULE_SECONDS = {
    "test_flows": 417,
    "test_sweep": 171,
    "test_pipeline": 141,
    "test_remote": 122,
    "test_schedule": 113,
    "test_registry": 111,
    "test_shared_tracking": 90,
    "test_distributed": 63,
    "test_training": 59,
    "test_metrics": 53,
    "test_ensemble": 43,
    "test_servers": 32,
    "test_tracking_lost": 25,
    "test_shards": 23,
    "test_download": 18,
    "test_render": 10,
    "test_store_moves": 10,
}


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: -MODULE_SECONDS.get(item.path.stem, 0))  # stable within a module
    # The first two modules start at once, one on each worker. The second is the longest that
    # does not need the template, so it runs while the first worker renders the grid.
    modules = list(dict.fromkeys(item.path for item in items))
    needs_template = {item.path for item in items if "template" in item.fixturenames}
    free = next((path for path in modules[1:] if path not in needs_template), None)
    if modules and modules[0] in needs_template and free is not None:
        ordered = [modules[0], free, *(path for path in modules[1:] if path != free)]
        rank = {path: place for place, path in enumerate(ordered)}
        items.sort(key=lambda item: rank[item.path])


def _stop_servers_then_interrupt(signum, frame):
    """SIGTERM / SIGINT: stop every server group now, then let pytest tear down as for Ctrl-C."""
    servers.stop_all_servers()
    raise KeyboardInterrupt(f"pytest received {signal.Signals(signum).name}")


def pytest_configure(config):
    signal.signal(signal.SIGTERM, _stop_servers_then_interrupt)
    signal.signal(signal.SIGINT, _stop_servers_then_interrupt)
    atexit.register(servers.stop_all_servers)


@pytest.fixture(autouse=True)
def _tracking_uri_stays_in_its_test():
    """``mlflow.set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI`` in ``os.environ`` (so that
    subprocesses inherit it). Undo it after each test, or a later test's subprocesses (a
    served flow, a pipeline) would log to an earlier test's store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if before is not None:
        os.environ["MLFLOW_TRACKING_URI"] = before


def refused_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/dsprites.npz"


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """``build(folder)`` once per pytest run, shared by every xdist worker: the first worker
    to ask builds it under a file lock, the others wait for it and reuse it (one render of the
    grid per run, not one per worker). A build that failed half-way is redone."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-N/, above every worker's own popen-gwK/
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


def _build_template(folder: Path) -> None:
    repo = copy_repository(folder / "repo")
    set_params(
        repo,
        {**TINY_PARAMS, "data.source": "auto", "data.urls": [refused_url()], "data.retries": 0},
    )
    run(["dvc", "cache", "dir", "--local", str(folder / "dvc-cache")], repo)
    commit_all(repo, "tiny params")
    run(["dvc", "repro", "shard"], repo)
    commit_all(repo, "data stages")


@pytest.fixture(scope="session")
def template(tmp_path_factory) -> Path:
    """The one project that renders and shards the full grid through the real CLI, once per
    run (:func:`built_once`).

    ``data.source: auto`` with an unreachable mirror: the real offline fallback. Its DVC cache
    lives beside it and every ``helpers.derived_project`` shares it (``.dvc/config.local``), so
    the run-cache is the whole run's: a test that needs a stage to really run uses params no
    other test of any module uses.
    """
    return built_once(tmp_path_factory, "template", _build_template) / "repo"


@pytest.fixture(scope="session")
def full_npz(template) -> Path:
    return template / "data/raw/dsprites.npz"


@pytest.fixture(scope="session")
def full_shards(template) -> Path:
    return template / "data/shards"


@pytest.fixture(scope="session")
def full_dataset(full_shards):
    from bvae.data.shards import load_dataset

    return load_dataset(full_shards)


SMALL_IMAGES = 65536


def _build_small_shards(folder: Path) -> None:
    import numpy as np

    from bvae.data import factors, render
    from bvae.data.shards import write_array_shards

    index = np.arange(0, factors.NUM_IMAGES, 11)[:SMALL_IMAGES]
    classes = factors.classes_from_index(index)
    write_array_shards(
        folder / "shards",
        render.render_images(classes),
        classes,
        factors.values_from_classes(classes),
        source="procedural",
    )


@pytest.fixture(scope="session")
def small_shards(tmp_path_factory) -> Path:
    """One shard of 65,536 images spread over the grid (every 11th): enough for training,
    resume, DDP and registry tests, a tenth of the full grid's load time and memory."""
    return built_once(tmp_path_factory, "small", _build_small_shards) / "shards"


@pytest.fixture(scope="session")
def prefect():
    """Prefect's test server, started once per session (it takes several seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
