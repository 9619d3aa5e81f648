"""The model file: saved and read in one module, and every file that is not one refused in
one line that says what it is not (garbage once gave `error: 101`, a dict `error: 'config'`,
and a pickle torch's own advice to pass ``weights_only=False``)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from bvae.cli import main
from bvae.errors import EXIT_BAD_INPUT
from bvae.model_file import (
    MODEL_FILE_FORMAT,
    ModelFileError,
    load_model,
    read_model_file,
    save_model_file,
    weights_digest,
)
from bvae.models import BetaVAE, ModelConfig
from bvae.objectives import ObjectiveConfig


class Payload:
    """Any class: unpickling it would import and run code of the file's choosing."""


def saved_model(path):
    model_config = ModelConfig(latent_dim=4)
    torch.manual_seed(0)
    model = BetaVAE(model_config)
    config = {"model": model_config.to_dict(), "objective": vars(ObjectiveConfig()) | {}, "train": {}}
    save_model_file(
        path, config=config, state_dict=model.state_dict(), step=7, data_digest="d", mlflow_run_id=None
    )
    return model


def test_a_saved_model_reads_back_with_the_same_weights(tmp_path):
    model = saved_model(tmp_path / "model.pt")
    state = read_model_file(tmp_path / "model.pt")
    assert state["format"] == MODEL_FILE_FORMAT and state["step"] == 7 and state["data_digest"] == "d"
    assert weights_digest(load_model(tmp_path / "model.pt")) == weights_digest(model)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary left beside it


def test_a_format_1_file_still_loads_and_says_pytorch_init(tmp_path):
    """Files written before model.init (format 1, no init key) load as what they were: models
    with PyTorch's default initialisation, with the weights digest they were registered by."""
    model = saved_model(tmp_path / "model.pt")
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    old_model_section = {key: value for key, value in payload["config"]["model"].items() if key != "init"}
    old = payload | {"format": 1, "config": payload["config"] | {"model": old_model_section}}
    torch.save(old, tmp_path / "old.pt")
    state = read_model_file(tmp_path / "old.pt")
    assert state["config"]["model"]["init"] == "pytorch"
    loaded = load_model(tmp_path / "old.pt")
    assert loaded.config.init == "pytorch" and weights_digest(loaded) == weights_digest(model)


def not_model_files(tmp_path):
    saved_model(tmp_path / "good.pt")
    good = torch.load(tmp_path / "good.pt", weights_only=True)
    files = {
        "text.pt": ("hello, not a model\n", "not a readable torch.save file"),
        "empty.pt": ("", "not a readable torch.save file"),
        "pickle.pt": (Payload(), "pickled Python objects, which bvae never unpickles"),
        "list.pt": ([1, 2, 3], "found list"),
        "checkpoint.pt": ({"model": {}, "optimizer": {}, "step": 3}, "A training checkpoint is"),
        "future.pt": (good | {"format": 99}, "format 99; this bvae reads formats 1, 2"),
        "no-config.pt": (good | {"config": {"train": {}}}, "config lacks the model and objective"),
        "wrong-weights.pt": (good | {"state_dict": {"x": torch.zeros(1)}}, "do not make a bvae model"),
    }
    for name, (content, _) in files.items():
        path = tmp_path / name
        if isinstance(content, str):
            path.write_text(content)
        elif isinstance(content, Payload):
            with open(path, "wb") as stream:
                pickle.dump({"format": 1, "payload": content}, stream)
        else:
            torch.save(content, path)
    return {name: message for name, (_, message) in files.items()}


def test_what_is_not_a_model_file_is_refused_saying_what_it_is_not(tmp_path):
    for name, message in not_model_files(tmp_path).items():
        with pytest.raises(ModelFileError, match=message):
            load_model(tmp_path / name)
    with pytest.raises(ModelFileError, match="is a folder"):
        load_model(tmp_path)


def test_the_cli_says_it_in_one_line(tmp_path, monkeypatch, capsys):
    images = np.zeros((2, 64, 64), np.uint8)
    np.savez(tmp_path / "images.npz", imgs=images)
    monkeypatch.chdir(tmp_path)
    for name, message in not_model_files(tmp_path).items():
        assert main(["encode", name, "images.npz", "--out", "codes.npz"]) == EXIT_BAD_INPUT, name
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and error.startswith(f"bvae encode: error: {name}") and message in error
    assert not (tmp_path / "codes.npz").exists()
