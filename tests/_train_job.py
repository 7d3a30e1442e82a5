"""Run one training job in a fresh process: ``python _train_job.py <job.json>`` (tests only);
``start`` launches it."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def start(job: dict, workdir: Path, env: dict | None = None) -> subprocess.Popen:
    """Start ``train(**job)`` in ``workdir``; stdout and stderr together, as text."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "job.json").write_text(json.dumps(job))
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), str(HERE)])
    full_env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.Popen(
        [sys.executable, str(HERE / "_train_job.py"), str(workdir / "job.json")],
        cwd=workdir,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


if __name__ == "__main__":
    from genre_classification.train import train

    logging.basicConfig(level=logging.INFO)
    info = train(**json.loads(Path(sys.argv[1]).read_text()))
    print("RUN_INFO", json.dumps(info), flush=True)
