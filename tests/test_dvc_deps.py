"""DVC must never serve a stale result: each stage's code deps in dvc.yaml are exactly the
bvae modules its entry module imports (the import closure, lazy imports included), so a
change to code a stage runs reruns it, and a change to code it does not run does not.

Once `bvae/metrics/discrete.py` was no dep of `traverse` (its latent table went stale) and
editing the promotion gate in `tracking/registry.py` retrained every model.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "bvae"
# The main pipeline and the sweep pipeline (its stages' paths are the repository's: wdir ..).
STAGES = {
    **yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"],
    **yaml.safe_load((REPO_ROOT / "sweeps" / "dvc.yaml").read_text())["stages"],
}


def entry_module(stage: str) -> str:
    """``sweep-train`` runs ``bvae.stages.sweep_train``."""
    return f"bvae.stages.{stage.replace('-', '_')}"


def _module_file(dotted: str) -> Path | None:
    path = REPO_ROOT.joinpath(*dotted.split("."))
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else None


def _imports(file: Path) -> set[str]:
    """The bvae modules ``file`` imports: anywhere in a module (a stage may call any of its
    functions), at the top level of a package's ``__init__.py`` (importing a package runs that,
    not its functions: ``bvae.load`` imports the consumer side only when called)."""
    found: set[str] = set()
    tree = ast.parse(file.read_text())
    nodes = tree.body if file.name == "__init__.py" else ast.walk(tree)
    package = ".".join(file.relative_to(REPO_ROOT).parent.parts)
    for node in nodes:
        # A module shipped as a file beside its user (``Path(__file__).with_name("x.py")``: the
        # served model MLflow copies into every logged model) is code the stage runs too.
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "with_name"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and str(node.args[0].value).endswith(".py")
        ):
            found.add(f"{package}.{node.args[0].value[:-3]}")
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "bvae"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bvae":
            found.add(node.module)
            # `from bvae import tracking` imports a module; `from bvae.x import name` may too
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def import_closure(entry: str) -> set[Path]:
    """Files of every bvae module ``entry`` imports, transitively, with their packages'
    ``__init__.py`` (Python runs those first)."""
    seen: set[Path] = set()
    pending = [entry]
    while pending:
        dotted = pending.pop()
        parts = dotted.split(".")
        for depth in range(1, len(parts) + 1):
            file = _module_file(".".join(parts[:depth]))
            if file is not None and file not in seen:
                seen.add(file)
                pending.extend(_imports(file))
    return seen


def declared_code(stage: dict) -> set[Path]:
    """The .py files a stage's deps cover (a folder dep covers every module in it)."""
    covered: set[Path] = set()
    for dep in stage.get("deps", []):
        path = REPO_ROOT / dep
        if path.is_dir() and path.is_relative_to(PACKAGE):
            covered |= set(path.rglob("*.py"))
        elif path.suffix == ".py":
            covered.add(path)
    return covered


def names(files: set[Path]) -> list[str]:
    return sorted(str(file.relative_to(REPO_ROOT)) for file in files)


@pytest.mark.parametrize("stage", list(STAGES))
def test_code_deps_are_the_stage_import_closure(stage):
    closure = import_closure(entry_module(stage))
    declared = declared_code(STAGES[stage])
    assert not closure - declared, f"{stage} runs code dvc.yaml does not list: {names(closure - declared)}"
    assert not declared - closure, f"{stage} lists code it never runs: {names(declared - closure)}"


@pytest.mark.parametrize("stage", list(STAGES))
def test_stages_run_the_workspace_code_through_python_m(stage):
    """`bvae <stage>` runs the editable install's code, not that of the copy `dvc exp run
    --temp` or a queue worker runs in (whose hashes dvc.lock records)."""
    assert STAGES[stage]["cmd"] == f"python -m bvae {stage}"


def test_a_stage_params_are_keys_it_reads():
    """Renaming the MLflow experiment once retrained the model (`tracking` was a train param)."""
    assert "tracking" not in STAGES["train"]["params"]
