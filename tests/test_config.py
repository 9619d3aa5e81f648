import pytest
from pydantic import ValidationError

from bvae.config import ParamsError, load_params, params_from_mapping
from tests.helpers import REPO_ROOT


def test_committed_params_are_valid():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.data.source == "auto" and params.shard.images_per_shard == 65536


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ParamsError) as caught:
        params_from_mapping({"data": {"sorce": "official"}})
    message = str(caught.value)
    assert "data.sorce: unknown key (did you mean 'source'?)" in message
    assert "Fix these keys" in message


def test_unknown_section_is_named():
    with pytest.raises(ParamsError, match="shards: unknown key \\(did you mean 'shard'\\?\\)"):
        params_from_mapping({"shards": {}})


def test_impossible_values_name_the_key():
    with pytest.raises(ParamsError, match="data.source = 'internet'"):
        params_from_mapping({"data": {"source": "internet"}})
    with pytest.raises(ParamsError, match="shard.images_per_shard = 10"):
        params_from_mapping({"shard": {"images_per_shard": 10}})
    with pytest.raises(ParamsError, match="data.md5.*32-digit hex"):
        params_from_mapping({"data": {"md5": "abc"}})
    with pytest.raises(ParamsError, match="data.urls.*not an http"):
        params_from_mapping({"data": {"urls": ["ftp://x"]}})


@pytest.mark.parametrize(
    "section, key",
    [
        ("objective", "beta"),
        ("objective", "gamma"),
        ("train", "learning_rate"),
        ("traverse", "low"),
        ("data", "backoff_s"),
        ("registry", "margin"),
        ("traverse", "active_kl"),
    ],
)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_every_float_param_must_be_finite(section, key, value):
    """`objective.beta: .nan` once trained to the end and saved NaN weights."""
    with pytest.raises(ParamsError, match=rf"{section}.{key} = {value}: Input should be a finite number"):
        params_from_mapping({section: {key: value}})


def test_a_linear_traversal_must_go_from_low_to_high():
    with pytest.raises(ParamsError, match=r"traverse.high = -3.0: must be above traverse.low \(3.0\)"):
        params_from_mapping({"traverse": {"low": 3.0, "high": -3.0}})
    assert params_from_mapping({"traverse": {"mode": "quantile", "low": 3.0, "high": -3.0}})


def test_config_is_frozen():
    params = params_from_mapping({})
    with pytest.raises(ValidationError):
        params.data.source = "official"


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_the_selection_metric_must_be_one_evaluate_will_compute(tmp_path, monkeypatch, capsys):
    """A selection metric evaluate never computes once failed only in `register`, after train,
    evaluate and traverse had run. Now `bvae train` stops before loading any data."""
    with pytest.raises(ParamsError, match=r"'model.mean.factor_vae.eval_accuracy' will not be in"):
        params_from_mapping({"evaluate": {"metrics": ["mig"]}})
    with pytest.raises(ParamsError, match=r"'model.mean.mig.typo' will not be in"):
        params_from_mapping({"registry": {"selection_metric": "model.mean.mig.typo"}})
    for valid in ("model.sampled.dci.completeness", "baselines.pca.sap.sap_score", "heldout.kl_nats"):
        assert (
            params_from_mapping({"registry": {"selection_metric": valid}}).registry.selection_metric == valid
        )
    from bvae.cli import main
    from bvae.errors import EXIT_BAD_INPUT

    (tmp_path / "params.yaml").write_text("registry:\n  selection_metric: model.mean.nope\n")
    monkeypatch.chdir(tmp_path)  # no data/shards here: the check must come first
    assert main(["train", "-q"]) == EXIT_BAD_INPUT
    assert "registry.selection_metric 'model.mean.nope' will not be in" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("params", "env", "exit_code", "message"),
    [
        (
            "train:\n  device: cuda:99\n",
            {},
            2,
            "train.device is cuda:99 but no CUDA GPU is visible",
        ),
        ("{}\n", {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, 75, "http://127.0.0.1:9 cannot be reached"),
        (
            "train:\n  device: cpu\n  cuda_graphs: on\n",
            {},
            2,
            "train.cuda_graphs is on but training runs on cpu",
        ),
    ],
)
def test_train_checks_device_and_server_before_loading_data(
    tmp_path, monkeypatch, capsys, params, env, exit_code, message
):
    """These once failed only after the 2.8 GiB load (no data/shards here: they must come first).
    ``on`` is unquoted on purpose: YAML reads it as true, which means "on"."""
    from bvae.cli import main

    (tmp_path / "params.yaml").write_text(params)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "-q"]) == exit_code
    assert message in capsys.readouterr().err


def test_a_sweep_grid_may_vary_only_what_an_ensemble_can():
    with pytest.raises(
        ParamsError, match="sweep.grid.*'model.architecture' cannot vary inside one ensemble.*flows.sweep"
    ):
        params_from_mapping({"sweep": {"grid": {"model.architecture": ["conv", "mlp"]}}})
    with pytest.raises(ParamsError, match="sweep.grid.*train.seed lists a value twice"):
        params_from_mapping({"sweep": {"grid": {"train.seed": [0, 0]}}})
    with pytest.raises(ParamsError, match="sweep.grid.*at least one key"):
        params_from_mapping({"sweep": {"grid": {}}})
    # every member is validated as a whole params file would be, naming the member
    from bvae.sweep import sweep_members

    params = params_from_mapping({"sweep": {"grid": {"objective.beta": [4.0, -1.0]}}})
    with pytest.raises(ParamsError, match="(?s)sweep member beta-1 is invalid.*objective.beta = -1.0"):
        sweep_members(params)


def test_switches_take_on_and_off_as_yaml_writes_them():
    """An unquoted on / off (in params.yaml, or `dvc exp run -S train.compile=off`) is YAML's
    true / false; it means what it says, not "Input should be 'auto', 'on' or 'off'"."""
    import yaml

    params = params_from_mapping(yaml.safe_load("train:\n  compile: off\n  cuda_graphs: on\n  bf16: 'on'\n"))
    assert (params.train.compile, params.train.cuda_graphs, params.train.bf16) == ("off", "on", "on")
    with pytest.raises(ParamsError, match="train.fused_adam"):
        params_from_mapping({"train": {"fused_adam": "yes"}})


def test_one_best_member_rule_for_the_pipeline_and_the_flow():
    from bvae.sweep import best_member

    rows = [
        {"member": "a", "score": 0.5},
        {"member": "nan", "score": float("nan")},
        {"member": "failed", "score": None},
        {"member": "b", "score": 0.7},
        {"member": "tie", "score": 0.7},
    ]
    assert best_member(rows, "score")["member"] == "b"  # highest finite; a tie goes to the first
    assert best_member(rows[1:3], "score") is None  # nothing finite: the caller decides


def test_a_sweep_members_files_are_a_single_runs_in_its_two_folders(tmp_path):
    """One run layout: a member has every file a single run has, named the same, in
    ``sweeps/train/<member>/`` (sweep-train's output) and ``sweeps/members/<member>/``."""
    from dataclasses import fields

    from bvae.stages.run_files import RunFiles
    from bvae.stages.sweep_files import SweepPaths

    files = SweepPaths(train=tmp_path / "train", members=tmp_path / "members").member("beta4-seed0")
    train, members = tmp_path / "train", tmp_path / "members"
    expected = RunFiles.member("beta4-seed0", trained_in=train, inspected_in=members)
    assert files == expected
    trained = (files.model, files.run_file, files.curves, files.summary)
    assert {path.parent for path in trained} == {tmp_path / "train/beta4-seed0"}
    inspected = (files.metrics, files.traversals, files.latents, files.latents_markdown, files.report)
    assert {path.parent for path in inspected} == {tmp_path / "members/beta4-seed0"}
    single = RunFiles()
    for field in fields(RunFiles):
        if field.name != "registered":  # a member's registration is the sweep's one record
            assert getattr(files, field.name).suffix == getattr(single, field.name).suffix, field.name
    assert files.registered is None
