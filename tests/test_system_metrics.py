"""MLflow system metrics of a training job (training.system_metrics): a real training run in a
fresh process logs CPU and memory utilisation with at least one value per epoch, and GPU
metrics when NVIDIA's library reports a GPU; switched off, the run has no system metric."""

from __future__ import annotations

import json
from pathlib import Path

from _train_job import output_paths, start
from _training_data import TINY_CONFIG, make_features

EPOCHS = 4
# Samples 10 times a second (MLflow's own variable; the workflow's default is 1 s): the tiny
# epochs here take a fraction of a second.
SAMPLING = {"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.1"}


def run_job(
    tmp_path: Path, name: str, system_metrics: bool, pythonpath: tuple[str, ...] = ()
) -> tuple[str, str]:
    split_path = make_features(tmp_path / "data", tracks_per_split=(("train", 40), ("val", 8)))
    out = tmp_path / name
    config = {**TINY_CONFIG, "epochs": EPOCHS, "early_stopping": {"patience": 100}}
    job = {
        "config": config,
        "split_path": str(split_path),
        **output_paths(out),
        "experiment": "system-metrics",
        "model_name": name,
        "threads": 1,
        "system_metrics": system_metrics,
    }
    uri = f"sqlite:///{out / 'mlflow.db'}"
    proc = start(job, out, {"MLFLOW_TRACKING_URI": uri, **SAMPLING}, pythonpath)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    return json.loads((out / "run.json").read_text())["run_id"], uri


def test_training_run_logs_system_metrics_every_epoch(tmp_path):
    from mlflow.tracking import MlflowClient

    # With a pynvml that reports one GPU (tests/fake_nvml: no GPU on this machine, and
    # nvidia-ml-py is not in requirements.lock), which shows the GPU wiring only; CPU and memory
    # are this machine's, measured by psutil.
    fake_nvml = str(Path(__file__).parent / "fake_nvml")
    run_id, uri = run_job(tmp_path, "on", system_metrics=True, pythonpath=(fake_nvml,))
    client = MlflowClient(uri)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["system/gpu_0_utilization_percentage"] == 42  # the stand-in's values
    assert metrics["system/gpu_0_memory_usage_megabytes"] == 1500
    assert "system/cpu_utilization_percentage" in metrics, sorted(metrics)
    assert "system/system_memory_usage_megabytes" in metrics, sorted(metrics)
    epochs = sorted(m.timestamp for m in client.get_metric_history(run_id, "loss"))
    assert len(epochs) == EPOCHS
    for name in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"):
        samples = [m.timestamp for m in client.get_metric_history(run_id, name)]
        assert len(samples) >= EPOCHS, (name, len(samples))
        # a sample within every epoch (between the end of the one before and its own end)
        starts = [min(samples) - 1, *epochs[:-1]]
        for begin, end in zip(starts, epochs, strict=True):
            assert any(begin < t <= end for t in samples), (name, begin, end, samples)
    memory = client.get_metric_history(run_id, "system/system_memory_usage_megabytes")
    assert all(m.value > 0 for m in memory)


def test_system_metrics_switched_off(tmp_path):
    from mlflow.tracking import MlflowClient

    run_id, uri = run_job(tmp_path, "off", system_metrics=False)
    metrics = MlflowClient(uri).get_run(run_id).data.metrics
    assert "loss" in metrics
    assert not [name for name in metrics if name.startswith("system/")], sorted(metrics)
