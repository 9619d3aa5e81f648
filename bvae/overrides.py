"""``dvc exp run -S key=value`` overrides: applied to ``params.yaml``, validated, and spelled.

One home for both users of overrides: the Prefect flows (``flows/experiments.py``) and the
recipes (``bvae.recipes``). Keys are dotted (``objective.beta``); a mapping value
(``sweep.grid``, whose own keys are dotted) replaces the one in ``params.yaml`` whole.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bvae.config import Params, ParamsError, params_from_mapping

# A word Hydra and YAML both read back as that string, unquoted.
_PLAIN_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_KEYWORDS = {"true", "false", "null", "none", "nan", "inf", "on", "off", "yes", "no", "y", "n"}


def apply_overrides(mapping: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``params.yaml`` as ``dvc exp run -S key=value`` would leave it (dotted keys)."""
    result = copy.deepcopy(dict(mapping))
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = result
        for depth, key in enumerate(parents):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ParamsError(
                    f"override {dotted!r}: {'.'.join(parents[: depth + 1])} is a value, not a section"
                )
            node = child
        node[leaf] = value
    return result


def validate_overrides(project: Path, overrides: Mapping[str, Any]) -> Params:
    """The project's params with ``overrides`` applied, validated; ``ParamsError`` names bad keys."""
    path = project / "params.yaml"
    if not path.exists():
        raise ParamsError(f"{path} not found: pass the bvae project folder as `project`.")
    for key in overrides:
        if not isinstance(key, str) or not key or key.startswith(".") or key.endswith("."):
            raise ParamsError(f"override key {key!r} is not a dotted params.yaml key like 'objective.beta'")
    merged = apply_overrides(yaml.safe_load(path.read_text()) or {}, overrides)
    return params_from_mapping(merged, f"{path} with overrides {dict(overrides)}")


def hydra_value(value: Any) -> str:
    """A value in the override grammar DVC's ``-S`` parses (Hydra's): strings are quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        if _PLAIN_WORD.match(value) and value.lower() not in _KEYWORDS:
            return value  # what a person types: model.init=kaiming
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{key}:{hydra_value(item)}" for key, item in value.items()) + "}"
    raise ParamsError(f"cannot pass {value!r} ({type(value).__name__}) as a params.yaml override")


def override_args(overrides: Mapping[str, Any]) -> list[str]:
    """``-S`` arguments. A mapping (``sweep.grid``) replaces the one in params.yaml: Hydra would
    merge ``key={…}`` into it, so the old one is deleted (``~key``) and the new one added."""
    args: list[str] = []
    for key, value in overrides.items():
        whole = isinstance(value, list | tuple) and value and all(isinstance(item, Mapping) for item in value)
        if isinstance(value, Mapping) or whole:  # a list of grids replaces a grid (or a list) too
            args += ["-S", f"~{key}", "-S", f"+{key}={hydra_value(value)}"]
        else:
            args += ["-S", f"{key}={hydra_value(value)}"]
    return args
