"""Where the MLflow store is, whether its server answers, and one client per URI.

- The tracking URI comes from ``MLFLOW_TRACKING_URI``; the default is a SQLite database at an
  *absolute* path in the project root (``<root>/mlflow.db``, artifacts in
  ``<root>/mlartifacts``). The root is DVC's ``DVC_ROOT``, which DVC points at the parent
  repository even inside ``dvc exp run --temp`` and queue workspaces, so experiments run
  there land in the same store (a relative ``sqlite:///mlflow.db`` would not).
- A server that stops answering fails a call in seconds, not minutes: MLflow's HTTP retries
  (7 by default, with a doubling back-off: about 4 minutes a call) are capped here unless the
  user set them, and :func:`server_calls` turns the failure into one :class:`TrackingError`.
"""

from __future__ import annotations

import contextlib
import functools
import os
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
