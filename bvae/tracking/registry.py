"""The MLflow model registry: register, promote with aliases, resolve, download.

MLflow 3 aliases, not the deprecated stages: a new version gets ``candidate``; it becomes
``champion`` when its selection metric beats the current champion's by ``margin`` (or there
is none). Registration is idempotent on the weights digest.

Races: two processes registering at once may each decide to promote on a stale view. Every
promotion therefore ends with a *repair*: re-read all versions that were ever found worthy
and point ``champion`` at the best of them. Each process's last registry write is such a
repair, and the last repair sees every version, so the worse model is never left champion.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bvae.errors import BadInput
from bvae.tracking.store import (
    TrackingError,
    _client,
    check_tracking_server,
    require_existing_store,
    tracking_uri,
)

log = logging.getLogger(__name__)

CANDIDATE, CHAMPION = "candidate", "champion"
ELIGIBLE_TAG = "champion_eligible"
# A version tagged collapsed = true (its code ignores the image: bvae.collapse) is never champion.
COLLAPSED_TAG = "collapsed"
_REFERENCE = re.compile(r"^(?:models:/)?(?P<name>[^@/]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class RegistryError(BadInput, LookupError):
    """A model name, alias or version that does not exist; the message lists those that do."""


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    created: bool  # False: the same weights were registered before
    promoted: bool
    champion_version: str | None
    selection_value: float


def parse_reference(reference: str) -> tuple[str, str | None, str | None]:
    """``NAME@ALIAS``, ``NAME/VERSION`` or ``models:/…`` → (name, alias, version)."""
    match = _REFERENCE.match(reference.strip())
    if not match:
        raise RegistryError(
            f"{reference!r} is not a model reference: use NAME@ALIAS (bvae-dsprites@champion) or NAME/VERSION"
        )
    return match["name"], match["alias"], match["version"]


def _versions(client, name: str) -> list:
    return list(client.search_model_versions(f"name = '{name}'"))


def find_by_digest(client, name: str, weights_digest: str):
    for version in _versions(client, name):
        if version.tags.get("weights_digest") == weights_digest:
            return version
    return None


def _value(version) -> float:
    return float(version.tags.get("selection_value", "-inf"))


def _champion(client, name: str):
    """The champion version, or None when the alias is unset. Read from the model's alias
    table, not by catching errors: a failed read (server down, a database error) must raise,
    or the gate would crown any new version without comparing it (bypassing the margin)."""
    aliases = dict(client.get_registered_model(name).aliases or {})
    return client.get_model_version(name, str(aliases[CHAMPION])) if CHAMPION in aliases else None


def _set_alias(client, name: str, alias: str, version: str, attempts: int = 5) -> None:
    """Point ``alias`` at ``version``. Two registrations setting the same alias at once can
    collide in the server's database (a SQL store inserts the alias row twice, ``UNIQUE
    constraint failed``); the alias is then set by the other writer, so setting it again wins."""
    for attempt in range(attempts):
        try:
            client.set_registered_model_alias(name, alias, version)
            return
        except Exception as error:  # noqa: BLE001 - only the collision is retried
            collided = "UNIQUE constraint" in str(error) or "duplicate key" in str(error)
            if not collided or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def repair_champion(client, name: str) -> str | None:
    """Point ``champion`` at the best version ever found worthy of it; returns that version."""
    eligible = [v for v in _versions(client, name) if v.tags.get(ELIGIBLE_TAG) == "true"]
    if not eligible:
        current = _champion(client, name)
        return str(current.version) if current else None
    best = max(eligible, key=lambda v: (_value(v), -int(v.version)))
    current = _champion(client, name)
    if current is None or str(current.version) != str(best.version):
        _set_alias(client, name, CHAMPION, str(best.version))
    return str(best.version)


def _collapsed(name: str, number: str, tags: Mapping[str, Any]) -> bool:
    """A collapsed version stays a candidate, whatever its score; the one line says why."""
    if str(tags.get(COLLAPSED_TAG, "false")).lower() != "true":
        return False
    log.warning(
        "%s version %s is not made champion: its posterior collapsed (the code is the same for "
        "every image, see its run's collapse warning), so its scores describe no representation",
        name,
        number,
    )
    return True


def _gate(client, name: str, number: str, selection_value: float, margin: float) -> str | None:
    """The promotion gate: ``number`` becomes champion when it beats the champion by ``margin``."""
    current = _champion(client, name)
    if current is None or selection_value > _value(current) + margin:
        client.set_model_version_tag(name, number, ELIGIBLE_TAG, "true")
        _set_alias(client, name, CHAMPION, number)
    return repair_champion(client, name)


def register(
    *,
    name: str,
    model_uri: str,
    run_id: str,
    weights_digest: str,
    selection_metric: str,
    selection_value: float,
    margin: float,
    tags: Mapping[str, Any],
    description: str = "",
    promote: bool = True,
) -> Registration:
    """Register ``model_uri`` under ``name`` (once per weights digest) and run the promotion gate.

    ``promote=False`` stops at ``candidate`` (a sweep gates only its best point, via ``promote``).
    Versions are handled as strings: SQL stores return ints, the REST API strings.
    """
    check_tracking_server()
    client = _client()
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        client.create_registered_model(name, description=description or None)
    except MlflowException as error:  # a SQL store and a server both answer with this code
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    existing = find_by_digest(client, name, weights_digest)
    if existing is not None:
        number = str(existing.version)
        log.info(
            "weights %s are already %s version %s; not registering again", weights_digest[:12], name, number
        )
        champion = repair_champion(client, name)
        return Registration(name, number, False, champion == number, champion, _value(existing))
    all_tags = {
        **{key: str(value) for key, value in tags.items()},
        "weights_digest": weights_digest,
        "selection_metric": selection_metric,
        "selection_value": repr(float(selection_value)),
    }
    import mlflow

    # register_model resolves a logged-model URI (models:/m-…) to its artifact location.
    number = str(mlflow.register_model(model_uri, name, tags=all_tags).version)
    if description:
        client.update_model_version(name, number, description=description)
    _set_alias(client, name, CANDIDATE, number)
    gated = promote and not _collapsed(name, number, all_tags)
    if gated:
        champion = _gate(client, name, number, selection_value, margin)
    else:
        champion = repair_champion(client, name)
    log.info(
        "%s version %s (%s = %.4f) is %s; champion is version %s",
        name,
        number,
        selection_metric,
        selection_value,
        "the new champion" if champion == number else "a candidate",
        champion,
    )
    return Registration(name, number, True, champion == number, champion, float(selection_value))


def promote(name: str, version: str | int, margin: float, uri: str | None = None) -> Registration:
    """Put an existing version through the gate (and make it ``candidate``): a sweep's best point."""
    uri = uri or tracking_uri()
    check_tracking_server(uri)
    client = _client(uri)
    found = client.get_model_version(name, str(version))
    number = str(found.version)
    if "selection_value" not in found.tags:
        raise RegistryError(
            f"{name} version {number} has no selection_value tag: it was not registered by bvae"
        )
    _set_alias(client, name, CANDIDATE, number)
    if _collapsed(name, number, found.tags):
        champion = repair_champion(client, name)
    else:
        champion = _gate(client, name, number, _value(found), margin)
    return Registration(name, number, False, champion == number, champion, _value(found))


def _registered(client, name: str):
    try:
        return client.get_registered_model(name)
    except Exception:  # noqa: BLE001
        names = sorted(model.name for model in client.search_registered_models())
        raise RegistryError(
            f"no registered model {name!r} at {tracking_uri()}; "
            f"registered models: {', '.join(names) or 'none'}"
        ) from None


def versions(name: str) -> list[tuple[Any, list[str]]]:
    """Every ``ModelVersion`` of ``name``, newest first, with its aliases (MLflow's search of
    versions leaves the aliases empty; the registered model holds them)."""
    require_existing_store()
    check_tracking_server()
    client = _client()
    aliases: dict[str, list[str]] = {}
    for alias, number in (_registered(client, name).aliases or {}).items():
        aliases.setdefault(str(number), []).append(alias)
    found = sorted(_versions(client, name), key=lambda version: -int(version.version))
    return [(version, sorted(aliases.get(str(version.version), []))) for version in found]


def resolve(reference: str):
    """The ``ModelVersion`` of ``NAME@ALIAS`` or ``NAME/VERSION``, with errors that list what exists."""
    name, alias, number = parse_reference(reference)
    require_existing_store()
    check_tracking_server()
    client = _client()
    registered = _registered(client, name)
    if alias is not None:
        aliases = dict(registered.aliases or {})
        if alias not in aliases:
            known = ", ".join(f"@{a} (v{v})" for a, v in sorted(aliases.items())) or "none"
            raise RegistryError(f"{name!r} has no alias {alias!r}; its aliases: {known}")
        return client.get_model_version(name, aliases[alias])
    versions = sorted(int(v.version) for v in _versions(client, name))
    if int(number) not in versions:
        raise RegistryError(
            f"{name!r} has no version {number}; its versions: {', '.join(map(str, versions))}"
        )
    return client.get_model_version(name, number)


def download_run_artifact(run_id: str, artifact_path: str, destination: Path) -> Path:
    import mlflow

    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=str(destination)
        )
    )


def download_model(model_uri: str, destination: Path) -> Path:
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(destination)))


def training_data_source(run) -> str:
    """``official`` or ``procedural``: the shard set the run trained on (the train stage tags
    its run ``data_source``); ``unknown`` for a run without the tag."""
    return _client(run.tracking_uri).get_run(run.run_id).data.tags.get("data_source", "unknown")


def run_summary(run_id: str) -> dict[str, Any]:
    """Params, metrics and tags of a run (for model cards)."""
    run = _client().get_run(run_id)
    return {
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "tags": dict(run.data.tags),
    }


__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "COLLAPSED_TAG",
    "Registration",
    "RegistryError",
    "TrackingError",
    "download_model",
    "download_run_artifact",
    "parse_reference",
    "promote",
    "register",
    "repair_champion",
    "resolve",
    "run_summary",
    "training_data_source",
]
