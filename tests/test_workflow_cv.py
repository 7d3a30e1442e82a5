"""Cross-validation and sweeps through the real workflow: the job plan of K folds x models
(locally and with the Slurm profile), and a 3-fold run of the tiny model on the tiny data set
ending in cv_metrics.json, summary.tsv and nested MLflow runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import REPO, TINY_MODEL, SnakemakeRunner, planned_jobs

pytestmark = pytest.mark.slow

FAKE_APPTAINER_DIR = Path(__file__).resolve().parent / "fake_apptainer"
K = 3
SWEEP = {"base": "tiny", "list": [{"learning_rate": 0.01}]}  # one more model: tiny-lr0.01
MODELS = ["tiny", "tiny-lr0.01"]


@pytest.fixture
def dir_workflow(tmp_path) -> SnakemakeRunner:
    """A plain-directory source of silent clips: enough for dry runs (nothing is decoded)."""
    audio = tmp_path / "audio"
    for genre in ("blues", "jazz", "rock"):
        (audio / genre).mkdir(parents=True)
        for i in range(6):
            sf.write(audio / genre / f"{genre}.{i:05d}.wav", np.zeros(64, np.float32), 22050)
    runner = SnakemakeRunner(tmp_path / "work")
    (runner.workdir / "config").mkdir(parents=True)
    runner.configfiles = [str(REPO / "config" / "config.yaml")]
    runner.overlay("dir.yaml", {"data": {"source": "dir", "dir": str(audio)}})
    return runner


def kfold_overlay(runner, k=K):
    runner.overlay(
        "cv.yaml",
        {
            "split": {"method": "kfold", "folds": k},
            "training": {"run": ["tiny"], "models": {"tiny": TINY_MODEL}, "sweep": SWEEP},
        },
    )


def test_k_folds_of_two_models_are_2k_training_jobs(dir_workflow):
    kfold_overlay(dir_workflow)
    dry = dir_workflow(
        "--dry-run", "results/eval/summary.tsv", "results/reports/tiny/classification.json"
    )
    jobs = planned_jobs(dry.stdout)
    assert jobs["train_model"] == 2 * K and jobs["evaluate_model"] == 2 * K, jobs
    assert jobs["mlflow_parent_run"] == 2 and jobs["aggregate_folds"] == 2, jobs
    assert jobs["cv_summary"] == 1 and jobs["split_tracks"] == 1, jobs
    for model in MODELS:
        for fold in range(K):
            assert f"results/models/{model}/fold-{fold}/model.keras" in dry.stdout
            assert f"results/eval/{model}/fold-{fold}/metrics.json" in dry.stdout
        assert f"results/eval/{model}/cv_metrics.json" in dry.stdout
    assert "results/split/folds/fold-2.tsv" in dry.stdout
    report = next(b for b in dry.stdout.split("\n\n") if "rule classification_report:" in b)
    assert "results/eval/tiny/oof_predictions.csv" in report
    assert "results/mlflow/runs/tiny/parent.json" in report

    # The default holdout: one training job per model at the paths it always had.
    holdout = SnakemakeRunner(dir_workflow.workdir)
    holdout.configfiles = dir_workflow.configfiles[:2]
    holdout.overlay("one.yaml", {"training": {"run": ["tiny"], "models": {"tiny": TINY_MODEL}}})
    dry = holdout("--dry-run", "results/eval/summary.tsv")
    jobs = planned_jobs(dry.stdout)
    assert jobs["train_model"] == 1 and "mlflow_parent_run" not in jobs, jobs
    assert "results/models/tiny/model.keras" in dry.stdout
    assert "results/eval/tiny/metrics.json" in dry.stdout


def test_slurm_profile_submits_k_gpu_training_jobs(dir_workflow, monkeypatch):
    kfold_overlay(dir_workflow, k=5)
    monkeypatch.setenv("PATH", f"{FAKE_APPTAINER_DIR}{os.pathsep}{os.environ['PATH']}")
    proc = dir_workflow(
        "--profile", str(REPO / "profiles" / "slurm"), "--slurm-no-account", "--dry-run",
        "results/eval/tiny/cv_metrics.json",
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    blocks = [b for b in out.split("\n\n") if "rule train_model:" in b]
    assert len(blocks) == 5, out[-3000:]
    assert sorted(b.split("wildcards: ")[1].split("\n")[0] for b in blocks) == [
        f"model=tiny, fold={fold}" for fold in range(5)
    ]
    for block in blocks:
        # GPUs by --gres alone, in the cluster's default partition (no partition named)
        assert "gres=gpu:1" in block and "slurm_partition=gpu" not in block, block
    # No training job waits for another one: all depend only on the split and the parent run.
    assert planned_jobs(proc.stdout)["train_model"] == 5


def test_three_fold_run_aggregates_and_nests_mlflow_runs(workflow_dir):
    model = {**TINY_MODEL, "epochs": 2}
    workflow_dir.overlay(
        "cv.yaml",
        {
            "split": {"method": "kfold", "folds": K},
            "training": {"run": ["tiny"], "models": {"tiny": model}, "resources": {"gpu": 0}},
        },
    )
    workflow_dir("--cores", "2", "results/eval/summary.tsv")
    work = workflow_dir.workdir

    cv = json.loads((work / "results/eval/tiny/cv_metrics.json").read_text())
    assert cv["n_folds"] == K and len(cv["macro_f1"]["folds"]) == K
    assert cv["macro_f1"]["mean"] == pytest.approx(np.mean(cv["macro_f1"]["folds"]))
    assert set(cv["per_genre_f1"]) == {"classical", "disco", "metal"}
    oof = pd.read_csv(work / "results/eval/tiny/oof_predictions.csv")
    split = pd.read_csv(work / "results/split/split.tsv", sep="\t")
    # Every accepted track is tested exactly once, in the fold split.tsv says.
    ids = split["genre"] + "/" + split["track"]
    assert sorted(oof["track"]) == sorted(ids)
    assert dict(zip(oof["track"], oof["fold"], strict=True)) == dict(
        zip(ids, split["fold"], strict=True)
    )
    assert cv["pooled"]["n_tracks"] == len(split)
    summary = pd.read_csv(work / "results/eval/summary.tsv", sep="\t")
    assert summary["model"].tolist() == ["tiny"] and summary["n_folds"].tolist() == [K]
    assert summary["macro_f1_mean"][0] == pytest.approx(cv["macro_f1"]["mean"], abs=1e-6)

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work}/results/mlflow/mlflow.db")
    parent_id = json.loads((work / "results/mlflow/runs/tiny/parent.json").read_text())["run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["cv_macro_f1_mean"] == pytest.approx(cv["macro_f1"]["mean"])
    assert parent.data.metrics["cv_macro_f1_std"] == pytest.approx(cv["macro_f1"]["std"])
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert sorted(r.info.run_name for r in children) == [f"tiny/fold-{i}" for i in range(K)]
    for fold in range(K):
        info = json.loads((work / f"results/mlflow/runs/tiny/fold-{fold}.json").read_text())
        assert info["run_id"] in {r.info.run_id for r in children}
        child = client.get_run(info["run_id"])
        assert child.data.tags["fold"] == str(fold)
        assert child.data.metrics["test_macro_f1"] == pytest.approx(cv["macro_f1"]["folds"][fold])
    assert not list(work.glob("results/models/tiny/fold-*/checkpoints"))


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"base": "nope", "grid": {"epochs": [1]}}, "training.sweep.base 'nope' is not in"),
        ({"base": "tiny", "grid": {"architecture": ["vgg"]}}, "'vgg' is not one of"),
        ({"base": "tiny", "grid": {"options.filterz": [[4]]}}, "options.filterz"),
    ],
)
def test_sweep_points_are_checked_before_any_job(dir_workflow, sweep, message):
    dir_workflow.overlay(
        "sweep.yaml",
        {"training": {"run": ["tiny"], "models": {"tiny": TINY_MODEL}, "sweep": sweep}},
    )
    proc = dir_workflow("--dry-run", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
