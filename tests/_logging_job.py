"""One training job's MLflow logging without the training (for the concurrency test and the lab
benchmark): the package's connection and experiment setup, a run with 10 params, 4 metrics per
epoch, and a small artifact, as a training job logs them.

    python tests/_logging_job.py URI EXPERIMENT INDEX EPOCHS
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow

from genre_classification import tracking

PARAMS = 10
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def main(uri: str, experiment: str, index: int, epochs: int) -> None:
    began = time.monotonic()
    tracking.connect(uri, 30)
    experiment_id = tracking.setup_experiment(experiment, uri)
    with tracking.start_run(experiment_id, run_name=f"job-{index:02d}") as run:
        mlflow.log_params({f"param_{k}": f"{index}-{k}" for k in range(PARAMS)})
        for epoch in range(epochs):
            value = 1.0 / (1 + epoch + index)
            mlflow.log_metrics({name: value for name in METRICS}, step=epoch)
        with tempfile.TemporaryDirectory() as tmp:
            history = Path(tmp) / "history.json"
            history.write_text(json.dumps({"job": index, "epochs": epochs}))
            mlflow.log_artifact(str(history))
    print(json.dumps({"run_id": run.info.run_id, "seconds": time.monotonic() - began}))


def run_jobs(
    uri: str, experiment: str, jobs: int, epochs: int, timeout_s: float = 1800
) -> list[subprocess.CompletedProcess]:
    """``jobs`` of these processes started together, logging to ``uri``; each one's outcome."""
    paths = [str(Path(__file__).parent), str(Path(__file__).parents[1])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, uri, experiment, str(i), str(epochs)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        for i in range(jobs)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout_s)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
