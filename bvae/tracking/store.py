"""Where the MLflow store is, whether its server answers, and one client per URI.

- The tracking URI comes from ``MLFLOW_TRACKING_URI``; the default is a SQLite database at an
  *absolute* path in the project root (``<root>/mlflow.db``, artifacts in
  ``<root>/mlartifacts``). The root is DVC's ``DVC_ROOT``, which DVC points at the parent
  repository even inside ``dvc exp run --temp`` and queue workspaces, so experiments run
  there land in the same store (a relative ``sqlite:///mlflow.db`` would not).
- The default store moves with its project (:func:`relocate_store`): MLflow records absolute
  artifact paths, so a moved or copied project would read and write the original's
  ``mlartifacts/``. When this project's ``mlflow.db`` names another root, its paths are
  rewritten to this one the first time it is opened; and a run file written in the old
  place means this project's store when that holds the run (:func:`store_of_run_file`). No
  stage but training creates a store where there was none.
- A server that stops answering fails a call in seconds, not minutes: MLflow's HTTP retries
  (7 by default, with a doubling back-off: about 4 minutes a call) are capped here unless the
  user set them, and :func:`server_calls` turns the failure into one :class:`TrackingError`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from bvae.errors import MissingInput, Transient

_DVC_TEMP_MARKER = f"{os.sep}.dvc{os.sep}tmp{os.sep}exps{os.sep}"
# MLflow reads these at every request; the user's own settings win.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
for _variable, _value in HTTP_DEFAULTS.items():
    os.environ.setdefault(_variable, _value)


log = logging.getLogger(__name__)

# Where MLflow's SQL schema holds artifact paths (MLflow 3); a table an older store lacks is skipped.
ARTIFACT_COLUMNS = {
    "experiments": ("artifact_location",),
    "runs": ("artifact_uri",),
    "logged_models": ("artifact_location",),
    "model_versions": ("source", "storage_location"),
}


class TrackingError(Transient, RuntimeError):
    """The tracking server cannot be used; the message names the URI and what to do."""


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The repository root that owns the default MLflow store, never a temporary copy."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path(start or Path.cwd()).resolve()
    text = str(here)
    if _DVC_TEMP_MARKER in text:  # inside .dvc/tmp/exps/...: the owner is above it
        return Path(text.split(_DVC_TEMP_MARKER)[0])
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir() or (folder / "dvc.yaml").exists():
            return folder
    return here


def tracking_uri(root: str | os.PathLike | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<absolute root>/mlflow.db``.

    ``root`` names the project when it is not the working directory (a flow serving a checkout).
    """
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    return f"sqlite:///{project_root(root) / 'mlflow.db'}"


def default_artifact_location() -> str | None:
    """Where new experiments keep artifacts: ``<root>/mlartifacts`` for the local default.

    For a tracking server the server decides (artifact proxying), so nothing here assumes a
    local path for artifacts.
    """
    uri = tracking_uri()
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        return (project_root() / "mlartifacts").as_uri()
    return None


def _local_store(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def recorded_root(database: Path) -> Path | None:
    """The project root a local store's artifact paths point into (``<root>/mlartifacts``)."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        try:
            rows = connection.execute("SELECT artifact_location FROM experiments").fetchall()
        except sqlite3.Error:  # an empty file, or not MLflow's: nothing to relocate
            return None
    for (location,) in rows:
        path = (location or "").removeprefix("file://")
        if path.endswith("/mlartifacts"):
            return Path(path).parent
    return None


def relocate_store(database: Path, root: Path) -> bool:
    """Rewrite the artifact paths of ``database`` from the root it was made in to ``root``
    (one transaction); True if there was anything to rewrite."""
    old = recorded_root(database)
    if old is None or old == root:
        return False
    replacements = [(f"{old}/mlartifacts", f"{root}/mlartifacts"), (f"{old}/mlruns", f"{root}/mlruns")]
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table, columns in ARTIFACT_COLUMNS.items():
            if table not in tables:
                continue
            for column in columns:
                for before, after in replacements:
                    connection.execute(
                        f"UPDATE {table} SET {column} = replace({column}, ?, ?) WHERE {column} LIKE ?",
                        (before, after, f"%{before}%"),
                    )
    log.info("the MLflow store %s was made in %s: its artifact paths now point into %s", database, old, root)
    return True


def store_of_run_file(uri: str, run_id: str) -> str:
    """The store a run file's ``tracking_uri`` means here.

    A run file written in this project before it was moved or copied names the default store
    of the old place; that store came along, so when this project's ``mlflow.db`` holds the
    run, the run file means it. A run file from another clone (DVC's run-cache restores one)
    names a run this store lacks: it keeps its own store, as long as that exists. When neither
    holds it, refused with what to do: MLflow would create an empty store at the old path."""
    path = _local_store(uri)
    if path is None or path.name != "mlflow.db" or os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    root = project_root()
    if path.parent == root:
        return uri
    ours = root / "mlflow.db"
    if ours.exists() and _holds_run(ours, run_id):
        return f"sqlite:///{ours}"
    if path.exists():
        return uri
    raise MissingInput(
        f"the run file names MLflow run {run_id} in the store {path}, which does not exist (was the "
        f"project moved?), and this project's store ({ours}) does not hold it. Rerun the train stage "
        "here (`dvc repro -f train`), or set MLFLOW_TRACKING_URI to the store that holds the run."
    )


def _holds_run(database: Path, run_id: str) -> bool:
    with contextlib.closing(sqlite3.connect(database)) as connection:
        try:
            found = connection.execute("SELECT 1 FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        except sqlite3.Error:
            return False
    return found is not None


def check_tracking_server(uri: str | None = None, timeout_s: float = 5.0) -> None:
    """Fail fast, with one clear message, if an http(s) tracking server does not answer."""
    uri = uri or tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError:
        return  # it answered: a server (perhaps behind a proxy without /health) is there
    except (TimeoutError, urllib.error.URLError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(
            f"the MLflow tracking server at {uri} cannot be reached ({reason}). Start it "
            "(see README: Browse runs in MLflow) or unset MLFLOW_TRACKING_URI to use the "
            f"local store {project_root() / 'mlflow.db'}."
        ) from None


def require_existing_store(uri: str | None = None) -> str:
    """For readers (``bvae pull``, ``encode models:/…``): a local SQLite store must exist
    already, or MLflow would create an empty ``mlflow.db`` wherever the user stands."""
    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise MissingInput(
            f"no MLflow store is configured: MLFLOW_TRACKING_URI is unset and "
            f"{uri.removeprefix('sqlite:///')} does not exist. Set MLFLOW_TRACKING_URI to the "
            "tracking server that holds the model, or run from the project that trained it."
        )
    return uri


@functools.lru_cache(maxsize=8)
def _client_for(uri: str):
    import mlflow

    path = _local_store(uri)
    if path is not None and path.exists() and path.parent == project_root():
        relocate_store(path, path.parent)  # this project's own store, moved here with it
    return mlflow.MlflowClient(uri)


def _client(uri: str | None = None):
    """The client for ``uri`` (default: the current one), made once per URI.

    Training logs through it every few steps. Without an explicit ``uri`` it also points
    MLflow's fluent API (``log_model``, ``register_model``) at the current URI.
    """
    if uri is not None:
        return _client_for(uri)
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return _client_for(uri)


@contextlib.contextmanager
def server_calls(uri: str, doing: str) -> Iterator[None]:
    """Calls to the store at ``uri``: if one fails because an http(s) server stopped answering
    (checked by asking it), raise one :class:`TrackingError` saying so; other errors pass."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as error:
        if not uri.startswith(("http://", "https://")):
            raise
        try:
            check_tracking_server(uri, timeout_s=5.0)
        except TrackingError:
            raise TrackingError(
                f"the MLflow tracking server at {uri} stopped answering while {doing}"
            ) from error
        raise
