"""`dvc repro shard` through the real CLI, in a fresh copy of the repository."""

import json

import pytest

from tests.helpers import copy_repository, run, set_params


@pytest.mark.slow
def test_dvc_repro_shard_offline(tmp_path):
    repo = copy_repository(tmp_path / "repo")
    set_params(repo, {"data.source": "procedural"})  # tests never contact the internet
    run(["dvc", "repro", "shard"], repo)
    manifest = json.loads((repo / "data/shards/manifest.json").read_text())
    assert manifest["num_images"] == 737280 and manifest["source"] == "procedural"
    verified = json.loads(run(["bvae", "verify-data"], repo).stdout)
    assert verified["images"] == 737280 and verified["digest"] == manifest["digest"]
    status = run(["dvc", "status"], repo).stdout
    assert "up to date" in status
    again = run(["dvc", "repro", "shard"], repo)
    assert "didn't change, skipping" in again.stdout + again.stderr
    # Bad params fail early with a message naming the key.
    set_params(repo, {"shard.compression": "zip"})
    failed = run(["bvae", "shard"], repo, check=False)
    assert failed.returncode == 2 and "shard.compression = 'zip'" in failed.stderr
