"""Shared servers as the README sets them up, all on 127.0.0.1: ``mlflow server`` with its
backend store on PostgreSQL and its artifacts on an S3-compatible store, the real pipeline
tracking and registering through it; and a Prefect server on PostgreSQL. Skipped where
PostgreSQL is not installed (``.ci/run`` installs Debian's package where it can)."""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

import pytest

from tests.helpers import derived_project, run
from tests.servers import (
    S3_ENV,
    mlflow_server,
    postgres_bin,
    postgres_server,
    prefect_env,
    prefect_server,
    s3_keys,
    s3_server,
)

pytestmark = pytest.mark.slow

BUCKET = "bvae-mlflow"


@pytest.fixture(scope="module")
def postgres():
    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed here (Debian: apt-get install postgresql)")
    with postgres_server(("mlflow", "prefect")) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def shared_server(postgres, tmp_path_factory):
    folder = tmp_path_factory.mktemp("shared-tracking")
    database = f"{postgres}/mlflow"
    with s3_server(folder, buckets=(BUCKET,)) as endpoint:
        server_env = {**S3_ENV, "MLFLOW_S3_ENDPOINT_URL": endpoint}
        with mlflow_server(
            folder,
            backend_store_uri=database,
            artifacts_destination=f"s3://{BUCKET}/mlflow",
            extra_env=server_env,
        ) as uri:
            yield SimpleNamespace(uri=uri, database=database, endpoint=endpoint)


def query(database: str, sql: str, *args) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(database) as connection, connection.cursor() as cursor:
        cursor.execute(sql, args)
        return cursor.fetchall()


def test_the_pipeline_tracks_and_registers_on_postgres_and_s3(template, shared_server, tmp_path):
    repo = derived_project(template, tmp_path / "repo", {"train.seed": 4})  # a training of its own
    # Clients hold no S3 credentials: the server proxies every artifact.
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env["MLFLOW_TRACKING_URI"] = shared_server.uri
    run(["dvc", "repro"], repo, env=env)
    run_id = json.loads((repo / "models/mlflow_run.json").read_text())["run_id"]

    database = shared_server.database
    assert query(database, "SELECT status FROM runs WHERE run_uuid = %s", run_id) == [("FINISHED",)]
    logged = {
        key for (key,) in query(database, "SELECT DISTINCT key FROM metrics WHERE run_uuid = %s", run_id)
    }
    assert {"curves/loss", "curves/kl"} <= logged and "eval/model.mean.mig.discrete_mig" in logged
    registered = json.loads((repo / "models/registered.json").read_text())
    aliases = query(
        database,
        "SELECT alias, version FROM registered_model_aliases WHERE name = %s ORDER BY alias",
        "bvae-dsprites",
    )
    assert ("candidate", int(registered["version"])) in aliases
    assert ("champion", int(registered["version"])) in aliases

    keys = s3_keys(shared_server.endpoint, BUCKET, "mlflow/")
    assert any(key.endswith("/MLmodel") for key in keys)  # the logged model
    assert any("/traversals/" in key and key.endswith(".png") for key in keys)

    # Anyone with the tracking URI pulls the champion (weights through the server's proxy).
    pulled = tmp_path / "pulled"
    run(["bvae", "pull", "bvae-dsprites@champion", "--out", str(pulled)], tmp_path, env=env)
    assert (pulled / "model.pt").exists() and (pulled / "mlflow_model" / "MLmodel").exists()


def test_a_prefect_server_on_postgres_records_flow_runs(postgres, tmp_path):
    database = f"{postgres}/prefect"
    asyncpg_url = database.replace("postgresql://", "postgresql+asyncpg://")
    with prefect_server(tmp_path, extra_env={"PREFECT_API_DATABASE_CONNECTION_URL": asyncpg_url}) as api:
        script = "from prefect import flow\nflow(name='bvae-smoke')(lambda: 42)()\n"
        run([sys.executable, "-c", script], tmp_path, env=prefect_env(tmp_path / "client", api))
    rows = query(
        database,
        "SELECT flow.name, flow_run.state_type FROM flow_run JOIN flow ON flow.id = flow_run.flow_id",
    )
    assert rows == [("bvae-smoke", "COMPLETED")]
