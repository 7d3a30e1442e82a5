"""A stand-in for NVIDIA's pynvml (nvidia-ml-py) with one GPU, for tests on machines without
one: only the calls MLflow's GPU monitor makes (mlflow/system_metrics/metrics/gpu_monitor.py).
It shows that a training run logs GPU metrics when the library sees a GPU; the values are made
up (utilisation 42 %, 1.5 of 16 GB, 70 of 250 W)."""

from types import SimpleNamespace


class NVMLError(Exception):
    pass


def nvmlInit():
    return None


def nvmlDeviceGetCount():
    return 1


def nvmlDeviceGetHandleByIndex(index):
    return index


def nvmlDeviceGetMemoryInfo(handle):
    return SimpleNamespace(used=1.5e9, total=16e9, free=14.5e9)


def nvmlDeviceGetUtilizationRates(handle):
    return SimpleNamespace(gpu=42, memory=10)


def nvmlDeviceGetPowerUsage(handle):
    return 70_000


def nvmlDeviceGetEnforcedPowerLimit(handle):
    return 250_000
