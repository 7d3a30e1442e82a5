"""Run one training job in a fresh process: ``python _train_job.py <job.json>`` (tests only);
``start`` launches it."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def output_paths(out: Path) -> dict:
    """A job's output paths in ``out`` (the keys ``run`` reads)."""
    return {
        "model_path": str(out / "model.keras"),
        "history_path": str(out / "history.csv"),
        "run_info_path": str(out / "run.json"),
        "checkpoint_dir": str(out / "checkpoints"),
    }


def start(
    job: dict, workdir: Path, env: dict | None = None, pythonpath: tuple[str, ...] = ()
) -> subprocess.Popen:
    """Start ``run(job)`` in ``workdir``; stdout and stderr together, as text; ``pythonpath``:
    more module directories, first."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "job.json").write_text(json.dumps(job))
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([*pythonpath, str(HERE.parent), str(HERE)])
    full_env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.Popen(
        [sys.executable, str(HERE / "_train_job.py"), str(workdir / "job.json")],
        cwd=workdir,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run(job: dict) -> dict:
    """``train.train`` of a job as the tests write it: the model entry (schema defaults filled
    in), the paths and the MLflow settings as flat keys."""
    from _training_data import full_config, packs_beside
    from genre_classification.training import train

    job = dict(job)
    packs = job.pop("packs", None) or packs_beside(job["split_path"])
    paths = train.TrainingPaths(
        **{
            field: job.pop(f"{field}_path" if field != "checkpoint_dir" else field)
            for field in ("split", "model", "history", "run_info", "checkpoint_dir")
        },
        packs=packs,
    )
    mlflow_settings = train.MlflowSettings(
        job.pop("experiment"),
        job.pop("tracking_uri", None),
        job.pop("mlflow_timeout_s", 10),
        job.pop("system_metrics", True),
    )
    return train.train(
        full_config(job.pop("config")),
        paths,
        mlflow_settings,
        lock_timeout_s=job.pop("lock_timeout_s", 30),
        tags=train_tags(job.pop("data_version_path", None)),
        **job,
    )


def train_tags(data_version_path):
    from genre_classification.tracking import provenance_tags

    return provenance_tags(data_version_path)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    info = run(json.loads(Path(sys.argv[1]).read_text()))
    print("RUN_INFO", json.dumps(info), flush=True)
