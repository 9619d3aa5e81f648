"""DVC must never serve a stale result: each stage's code deps in dvc.yaml are generated from
the import graph (``python -m bvae.dvc_deps``), and this checks they are up to date.

Once `bvae/metrics/discrete.py` was no dep of `traverse` (its latent table went stale) and
editing the promotion gate in `tracking/registry.py` retrained every model.
"""

from __future__ import annotations

import pytest
import yaml

from bvae import dvc_deps
from tests.helpers import REPO_ROOT

STAGES = {
    **yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"],
    **yaml.safe_load((REPO_ROOT / "sweeps" / "dvc.yaml").read_text())["stages"],
}


def test_the_committed_code_deps_are_the_generated_ones(capsys):
    assert dvc_deps.main(["--check"]) == 0, capsys.readouterr().err


def test_the_generator_adds_what_a_stage_imports_and_drops_what_it_does_not():
    stale = (
        "stages:\n"
        "  register:\n"
        "    cmd: python -m bvae register\n"
        "    deps:\n"
        "      - models/model.pt  # the trained model\n"
        "      - bvae/ensemble.py\n"
        "    outs:\n"
        "      - models/registered.json\n"
    )
    regenerated = dvc_deps.regenerate(stale)
    deps = yaml.safe_load(regenerated)["stages"]["register"]["deps"]
    assert deps[0] == "models/model.pt" and "# the trained model" in regenerated  # kept as written
    assert "bvae/ensemble.py" not in deps
    assert {"bvae/stages/register.py", "bvae/tracking/registry.py"} <= set(deps)
    assert yaml.safe_load(regenerated)["stages"]["register"]["outs"] == ["models/registered.json"]
    assert dvc_deps.regenerate(regenerated) == regenerated


@pytest.mark.parametrize("stage", list(STAGES))
def test_stages_run_the_workspace_code_through_python_m(stage):
    """`bvae <stage>` runs the editable install's code, not that of the copy `dvc exp run
    --temp` or a queue worker runs in (whose hashes dvc.lock records)."""
    assert STAGES[stage]["cmd"] == f"python -m bvae {stage}"


def test_a_stage_params_are_keys_it_reads():
    """Renaming the MLflow experiment once retrained the model (`tracking` was a train param)."""
    assert "tracking" not in STAGES["train"]["params"]
