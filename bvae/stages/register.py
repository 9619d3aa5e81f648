"""Stage ``register``: the evaluated model becomes a version of ``register.model_name``.

Tagged with its lineage (git commit, params digest, data digest, run id), its objective and
β/γ/C, and its headline metrics; ``candidate`` always, ``champion`` through the gate of
``registry.selection_metric`` and ``registry.margin`` (unless ``registry.promote`` is false, as
in a sweep, which gates only its best point). A model whose posterior collapsed
(``reports/metrics.json``'s ``protocol.collapsed``) is never champion. Writes
``models/registered.json``.
A no-op ``dvc repro`` never reaches this code (DVC skips unchanged stages); rerunning it on
the same weights finds the existing version instead of creating one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from bvae import tracking
from bvae.config import LABEL_FREE_SELECTIONS, Params, ParamsError, objective_settings
from bvae.errors import MissingInput
from bvae.fileio import file_digest, write_json
from bvae.model_file import model_from_state, read_model_file, weights_digest
from bvae.report_keys import HEADLINE
from bvae.stages.run_files import RunFiles, trained_run
from bvae.tracking import registry

log = logging.getLogger(__name__)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def lookup(report: dict, dotted: str) -> float:
    if dotted in LABEL_FREE_SELECTIONS:
        raise ParamsError(
            f"registry.selection_metric {dotted!r} ranks a sweep's members against each other (UDR); "
            "a single model has none. Use it with the sweep pipeline (sweeps/dvc.yaml), or name a "
            "figure of reports/metrics.json here."
        )
    flat = {key: value for key, value in tracking.flatten(report).items() if _is_number(value)}
    if dotted not in flat:
        known = ", ".join(sorted(flat)[:12])
        raise ParamsError(
            f"registry.selection_metric {dotted!r} is not a figure of reports/metrics.json; e.g. {known}, …"
        )
    return float(flat[dotted])


def model_tags(config: dict) -> dict[str, object]:
    """What describes this model: its objective with only that objective's settings (β for a
    β-VAE; γ, C and its schedule for the capacity objective), its architecture and training."""
    objective, model, train = config["objective"], config["model"], config["train"]
    return {
        "objective": objective["kind"],
        **objective_settings(objective),
        "architecture": model["architecture"],
        "latent_dim": model["latent_dim"],
        "likelihood": model.get("likelihood", "bernoulli"),
        "init": model.get("init", "pytorch"),  # a model file of format 1 predates model.init
        "train.steps": train["steps"],
        "train.batch_size": train["batch_size"],
        "train.learning_rate": train["learning_rate"],
        "train.seed": train["seed"],
    }


def run_register(
    params: Params, files: RunFiles = RunFiles(), selection_value: float | None = None
) -> registry.Registration:
    """Register the model; ``selection_value``: the selection metric's value when the caller
    computed it (a sweep's UDR), else it is read from the model's ``metrics.json``."""
    config = params.registry
    state = read_model_file(files.model)
    run = trained_run(files, state) or tracking.read_run_file(files.run_file)  # the latter: MissingInput
    if run.model_uri is None:
        raise MissingInput(f"{files.run_file} has no model_uri: the train stage did not finish; rerun it.")
    report = json.loads(files.metrics.read_text())
    value = lookup(report, config.selection_metric) if selection_value is None else selection_value
    model = model_from_state(state, files.model)
    flat_report = tracking.flatten(report)
    objective = state["config"]["objective"]
    collapsed = bool((report.get("protocol") or {}).get("collapsed", False))
    tags = {
        registry.COLLAPSED_TAG: str(collapsed).lower(),  # never champion (registry._collapsed)
        "git_commit": tracking.git_commit(Path.cwd()) or "unknown",
        "params_digest": hashlib.sha256(
            json.dumps(params.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest(),
        "data_digest": state.get("data_digest", "unknown"),
        "data_source": registry.training_data_source(run),
        "mlflow_run_id": run.run_id,
        "model_file_sha256": file_digest(files.model),
        **model_tags(state["config"]),
        **{f"metric.{name}": float(flat_report[key]) for name, key in HEADLINE.items() if key in flat_report},
    }
    result = registry.register(
        name=config.model_name,
        model_uri=run.model_uri,
        run_id=run.run_id,
        weights_digest=weights_digest(model),
        selection_metric=config.selection_metric,
        selection_value=value,
        margin=config.margin,
        tags=tags,
        description=f"β-VAE ({objective['kind']}) trained by the bvae DVC pipeline",
        promote=config.promote,
    )
    if files.registered is None:
        return result
    write_json(
        files.registered,
        {
            "name": result.name,
            "version": result.version,
            "created": result.created,
            "champion_version": result.champion_version,
            "selection_metric": config.selection_metric,
            "selection_value": result.selection_value,
            "promoted": result.promoted,
            "collapsed": collapsed,
            "mlflow_run_id": run.run_id,
            "mlflow_experiment_id": run.experiment_id,
            "model_uri": run.model_uri,
            "tracking_uri": tracking.tracking_uri(),
        },
    )
    return result
