"""The promotion gate's reads: a failed read of the champion stops the gate (it once counted
as "no champion yet" and crowned any new version, bypassing ``registry.margin``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bvae.tracking import registry


class Registry:
    """An in-memory stand-in for MlflowClient's registry calls; ``fail_reads`` breaks the
    champion read the way a dropped connection or a locked database does."""

    def __init__(self, champion_value: float | None, fail_reads: bool = False):
        self.fail_reads, self.aliases, self.versions = fail_reads, {}, {}
        if champion_value is not None:
            self.versions["1"] = SimpleNamespace(
                version="1", tags={"selection_value": repr(champion_value), registry.ELIGIBLE_TAG: "true"}
            )
            self.aliases[registry.CHAMPION] = "1"
        self.versions["2"] = SimpleNamespace(version="2", tags={"selection_value": "0.5"})

    def get_registered_model(self, name):
        if self.fail_reads:
            raise ConnectionError("connection reset by peer")
        return SimpleNamespace(name=name, aliases=dict(self.aliases))

    def get_model_version(self, name, version):
        return self.versions[str(version)]

    def search_model_versions(self, *args, **kwargs):
        return list(self.versions.values())

    def set_model_version_tag(self, name, version, key, value):
        self.versions[str(version)].tags[key] = value

    def set_registered_model_alias(self, name, alias, version):
        self.aliases[alias] = str(version)


@pytest.mark.parametrize(("champion_value", "crowned"), [(None, "2"), (0.45, "2"), (0.48, "1")])
def test_the_gate_compares_with_the_champion_and_its_margin(champion_value, crowned):
    client = Registry(champion_value)
    assert registry._gate(client, "m", "2", 0.5, margin=0.03) == crowned
    assert client.aliases[registry.CHAMPION] == crowned


def test_a_failed_champion_read_stops_the_gate():
    client = Registry(champion_value=0.49, fail_reads=True)
    with pytest.raises(ConnectionError):
        registry._gate(client, "m", "2", 0.5, margin=0.03)
    assert client.aliases == {registry.CHAMPION: "1"}  # nothing crowned


def test_pull_with_no_store_configured_creates_nothing(tmp_path, monkeypatch, capsys):
    """Outside a project with MLFLOW_TRACKING_URI unset, `bvae pull` once left an empty
    ./mlflow.db behind."""
    from bvae.cli import main
    from bvae.errors import EXIT_BAD_INPUT

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["pull", "bvae-dsprites@champion", "--out", "pulled"]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "no MLflow store is configured" in error and error.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
