"""The model registry against a real `mlflow server` on 127.0.0.1 (SQLite, temporary artifacts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from bvae.data import factors, render
from tests.helpers import copy_repository, run, set_params
from tests.servers import background, free_port, mlflow_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri


def trained_repo(root, shards, uri, seed, name="bvae-test"):
    """A repository copy with a tiny trained model logged to ``uri``."""
    repo = copy_repository(root)
    (repo / "data").mkdir(exist_ok=True)
    (repo / "data/shards").symlink_to(shards)
    set_params(
        repo,
        {
            "train.steps": 20,
            "train.log_every": 10,
            "train.seed": seed,
            "registry.model_name": name,
            "registry.selection_metric": "model.mean.mig.discrete_mig",
            "tracking.experiment": "registry-test",
        },
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    run(["bvae", "train", "-q"], repo, env=env)
    return repo, env


def set_score(repo, value):
    (repo / "reports").mkdir(exist_ok=True)
    (repo / "reports/metrics.json").write_text(
        json.dumps({"model": {"mean": {"mig": {"discrete_mig": value}}}})
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_shards, server):
    """The one model these tests train; further versions are registered from its MLflow model."""
    return trained_repo(tmp_path_factory.mktemp("models") / "repo", small_shards, server, seed=1)


def register(repo, env):
    return json.loads(run(["bvae", "register", "-q"], repo, env=env).stdout)


@pytest.fixture(scope="module")
def test_images():
    rng = np.random.default_rng(3)
    return render.render_images(factors.classes_from_index(rng.integers(0, factors.NUM_IMAGES, 16)))


def test_register_alias_pull_and_encode_in_fresh_processes(trained, server, tmp_path, test_images):
    repo, env = trained
    set_score(repo, 0.30)
    first = register(repo, env)
    assert first["created"] and first["promoted"] and first["version"] == "1"
    again = register(repo, env)  # same weights: idempotent
    assert not again["created"] and again["version"] == "1"

    out = tmp_path / "pulled"
    pulled = run(["bvae", "pull", "bvae-test@champion", "--out", str(out)], tmp_path, env=env)
    assert str(out) in pulled.stdout
    assert {"model.pt", "mlflow_model", "MODEL_CARD.md", "card.json"} <= {p.name for p in out.iterdir()}
    card = json.loads((out / "card.json").read_text())
    assert card["version"]["aliases"] == ["candidate", "champion"] or set(card["version"]["aliases"]) == {
        "candidate",
        "champion",
    }
    assert card["version"]["tags"]["data_digest"] and card["version"]["tags"]["git_commit"]
    assert card["params"]["train.steps"] == "20"
    # The terminal's comparison of the versions (`bvae compare --registry`) reads the same tags.
    compared = run(["bvae", "compare", "--registry"], repo, env=env).stdout.splitlines()
    assert compared[0].split()[:5] == ["bvae-test", "objective", "settings", "seed", "steps"]
    assert compared[2].split()[:6] == ["v1", "@candidate", "@champion", "beta", "β", "4"]
    assert compared[2].split()[6:8] == ["1", "20"] and compared[2].split()[-1] == "no"

    np.save(tmp_path / "images.npy", test_images)
    run(
        [
            "bvae",
            "encode",
            str(out),
            str(tmp_path / "images.npy"),
            "--out",
            str(tmp_path / "pulled.npz"),
        ],
        tmp_path,
        env=env,
    )
    run(
        [
            "bvae",
            "encode",
            str(repo / "models/model.pt"),
            str(tmp_path / "images.npy"),
            "--out",
            str(tmp_path / "original.npz"),
        ],
        tmp_path,
        env=env,
    )
    pulled_codes, original_codes = (
        np.load(tmp_path / "pulled.npz"),
        np.load(tmp_path / "original.npz"),
    )
    assert np.array_equal(pulled_codes["latents_mean"], original_codes["latents_mean"])
    assert np.array_equal(pulled_codes["latents_logvar"], original_codes["latents_logvar"])


def test_promotion_gate(trained, server, monkeypatch):
    from mlflow import MlflowClient

    from bvae.tracking import registry

    repo, env = trained
    set_score(repo, 0.30)
    register(repo, env)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    model_uri = json.loads((repo / "models/mlflow_run.json").read_text())["model_uri"]

    def version(digest: str, value: float, margin: float = 0.0, tags: dict | None = None):
        """Another version from the same MLflow model, as if other weights had scored ``value``."""
        return registry.register(
            name="bvae-test",
            model_uri=model_uri,
            run_id=None,
            weights_digest=digest,
            selection_metric="model.mean.mig.discrete_mig",
            selection_value=value,
            margin=margin,
            tags=tags or {},
        )

    client = MlflowClient(server)
    worse = version("worse-weights", 0.10)  # candidate only
    assert worse.created and not worse.promoted and worse.champion_version == "1"
    assert client.get_model_version_by_alias("bvae-test", "candidate").version == worse.version
    assert client.get_model_version_by_alias("bvae-test", "champion").version == "1"
    within_margin = version("slightly-better-weights", 0.35, margin=0.1)  # not better by the margin
    assert within_margin.created and not within_margin.promoted and within_margin.champion_version == "1"
    better = version("better-weights", 0.50, margin=0.1)
    assert better.promoted and better.champion_version == better.version
    assert client.get_model_version_by_alias("bvae-test", "champion").version == better.version
    # A collapsed model is never champion, by registration or by a later promotion, whatever it scores.
    collapsed = version("collapsed-weights", 0.99, tags={registry.COLLAPSED_TAG: "true"})
    assert collapsed.created and not collapsed.promoted and collapsed.champion_version == better.version
    again = registry.promote("bvae-test", collapsed.version, margin=0.0)
    assert not again.promoted and again.champion_version == better.version
    assert client.get_model_version_by_alias("bvae-test", "champion").version == better.version


RACER = textwrap.dedent(
    """
    import sys
    from bvae.tracking import registry
    name, digest, value, uri = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    registry.register(name=name, model_uri=uri, run_id=None, weights_digest=digest,
                      selection_metric="score", selection_value=value, margin=0.0, tags={})
    """
)


def test_racing_registrations_lose_nothing_and_crown_the_best(trained, server, tmp_path):
    repo, env = trained
    model_uri = json.loads((repo / "models/mlflow_run.json").read_text())["model_uri"]
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    from mlflow import MlflowClient

    client = MlflowClient(server)
    for round_number in range(3):
        name = f"race-{round_number}"
        values = [0.2, 0.9] if round_number % 2 else [0.9, 0.2]
        racers = [
            subprocess.Popen([sys.executable, str(script), name, f"digest-{k}", str(v), model_uri], env=env)
            for k, v in enumerate(values)
        ]
        assert [p.wait(timeout=120) for p in racers] == [0, 0]
        versions = client.search_model_versions(f"name = '{name}'")
        assert len(versions) == 2  # no version lost
        best = next(v for v in versions if v.tags["selection_value"] == repr(0.9))
        assert client.get_model_version_by_alias(name, "champion").version == best.version


def test_consumer_with_only_mlflow_and_torch(trained, server, tmp_path, test_images):
    """Load the champion through MLflow's own API in a process where bvae cannot be imported
    (every version here comes from the one trained model, so the weights are known)."""
    repo, env = trained
    set_score(repo, 0.30)
    register(repo, env)
    np.save(tmp_path / "images.npy", test_images)
    consumer = tmp_path / "consumer.py"
    consumer.write_text(
        textwrap.dedent(
            """
            import sys
            sys.modules["bvae"] = None  # bvae is not importable here
            import mlflow, numpy as np
            try:
                import bvae  # noqa: F401
                raise SystemExit("bvae was importable")
            except ImportError:
                pass
            model = mlflow.pyfunc.load_model("models:/bvae-test@champion")
            encoded = model.predict(np.load(sys.argv[1]).astype(np.float32)[:, None])
            np.save(sys.argv[2], encoded["latents_mean"])
            """
        )
    )
    run(
        [sys.executable, str(consumer), str(tmp_path / "images.npy"), str(tmp_path / "means.npy")],
        tmp_path,
        env=env,
    )
    from bvae.consume import encode
    from bvae.model_file import load_model

    expected, _ = encode(load_model(repo / "models/model.pt"), test_images.astype(np.float32))
    assert np.allclose(np.load(tmp_path / "means.npy"), expected, atol=1e-5)


def test_errors_name_what_exists(trained, server, tmp_path):
    repo, env = trained
    set_score(repo, 0.30)
    register(repo, env)
    missing = run(
        ["bvae", "pull", "no-such-model@champion", "--out", str(tmp_path / "x")],
        tmp_path,
        env=env,
        check=False,
    )
    assert (
        missing.returncode == 2 and "registered models:" in missing.stderr and "bvae-test" in missing.stderr
    )
    alias = run(
        ["bvae", "pull", "bvae-test@production", "--out", str(tmp_path / "x")],
        tmp_path,
        env=env,
        check=False,
    )
    assert alias.returncode == 2 and "@champion" in alias.stderr and "@candidate" in alias.stderr
    down = {**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    start = time.monotonic()
    unreachable = run(
        ["bvae", "pull", "bvae-test@champion", "--out", str(tmp_path / "x")],
        tmp_path,
        env=down,
        check=False,
    )
    assert unreachable.returncode == 75 and down["MLFLOW_TRACKING_URI"] in unreachable.stderr
    assert "cannot be reached" in unreachable.stderr and unreachable.stderr.count("\n") <= 3
    assert time.monotonic() - start < 30
    assert not (tmp_path / "x").exists()


def post(port: int, body: dict | bytes) -> tuple[int, dict]:
    """POST ``body`` (JSON) to a scoring server's /invocations: the status and the answer."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=body if isinstance(body, bytes) else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_champion_serves_over_http_and_predicts_from_the_cli(trained, server, tmp_path, test_images):
    """`mlflow models serve` of the registered champion answers a JSON POST of images with named
    latents (and the reconstruction when asked), refuses non-binary pixels, an empty batch and a
    batch over the limit with a 400 naming them, and `mlflow models predict` gives the same
    latents. `bvae serve` of the pulled model answers the same, and refuses what MLflow's server
    answers with a bare 500 (deep JSON) or parses for a minute (a huge body)."""
    from bvae.consume import encode
    from bvae.model_file import load_model

    repo, env = trained
    set_score(repo, 0.30)
    register(repo, env)
    model = load_model(repo / "models/model.pt")
    expected_mean, expected_logvar = encode(model, test_images.astype(np.float32))
    images = test_images.astype(np.float32)[:, None]
    port = free_port()
    command = ["mlflow", "models", "serve", "-m", "models:/bvae-test@champion"]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    limited = {**env, "BVAE_SERVE_MAX_IMAGES": str(len(images))}
    with background(command, tmp_path, "serve", limited, f"http://127.0.0.1:{port}/ping"):
        status, answer = post(port, {"inputs": images.tolist()})
        assert status == 200 and sorted(answer["predictions"]) == ["latents_logvar", "latents_mean"]
        assert np.allclose(answer["predictions"]["latents_mean"], expected_mean, atol=1e-5)
        assert np.allclose(answer["predictions"]["latents_logvar"], expected_logvar, atol=1e-5)
        status, answer = post(port, {"inputs": images[:1].tolist(), "params": {"reconstruction": True}})
        assert status == 200 and np.asarray(answer["predictions"]["reconstruction"]).shape == (1, 1, 64, 64)
        status, answer = post(port, {"inputs": (images[:2] * 255).tolist()})
        assert status == 400 and "pixels must be 0 or 1" in answer["message"]
        status, answer = post(port, {"inputs": []})
        assert status == 400 and "the batch is empty" in answer["message"]
        status, answer = post(port, {"inputs": images.tolist() + images[:1].tolist()})
        assert status == 400 and f"at most {len(images)} per request" in answer["message"]
        # The docs' curl line posts the example body a pull writes: it answers as documented.
        # (Pulled by its version: earlier tests crowned versions whose weights are not these.)
        version = register(repo, env)["version"]
        pulled = ["bvae", "pull", f"bvae-test/{version}", "--out", str(tmp_path / "champion")]
        run(pulled, tmp_path, env=env)
        example = tmp_path / "champion/mlflow_model/serving_input_example.json"
        curl = ["curl", "-s", f"http://127.0.0.1:{port}/invocations"]
        curl += ["-H", "Content-Type: application/json", "-d", f"@{example}"]
        answer = json.loads(run(curl, tmp_path).stdout)
        assert np.asarray(answer["predictions"]["latents_mean"]).shape == (2, expected_mean.shape[1])

    port = free_port()
    command = ["bvae", "serve", str(tmp_path / "champion"), "--port", str(port)]
    limited = {**env, "BVAE_SERVE_MAX_IMAGES": "4"}
    with background(command, tmp_path, "bvae-serve", limited, f"http://127.0.0.1:{port}/ping"):
        status, answer = post(port, {"inputs": images[:4].tolist()})
        assert status == 200
        assert np.allclose(answer["predictions"]["latents_mean"], expected_mean[:4], atol=1e-5)
        status, answer = post(port, b'{"inputs": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")
        assert status == 400 and "nests 50001 levels deep" in answer["message"]
        status, answer = post(port, {"inputs": images[:5].tolist()})
        assert status == 400 and "at most 4 per request" in answer["message"]
        status, answer = post(port, {"inputs": images.repeat(5, axis=0).tolist()})  # 80 images
        assert status == 413 and "the JSON of 4 images" in answer["message"]

    (tmp_path / "input.json").write_text(json.dumps({"inputs": images[:4].tolist()}))
    command = ["mlflow", "models", "predict", "-m", "models:/bvae-test@champion", "-t", "json"]
    command += ["-i", str(tmp_path / "input.json"), "-o", str(tmp_path / "output.json")]
    command += ["--env-manager", "local"]
    run(command, tmp_path, env=env)
    predicted = json.loads((tmp_path / "output.json").read_text())["predictions"]
    assert np.allclose(predicted["latents_mean"], expected_mean[:4], atol=1e-5)
