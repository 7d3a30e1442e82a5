"""Genre predictions for audio files with a trained model (the ``predict`` command).

* The model is a ``model.keras`` path (with ``features.json`` beside it) or an MLflow model URI
  (``models:/<name>@<alias>``, ``runs:/<run_id>/model``; the feature parameters and labels are
  in the MLmodel metadata). Audio is turned into segments with the parameters the model was
  trained with (``model_info``), never with today's config.
* A file's prediction is the mean of its segments' probabilities, or a track head on the mean of
  their embedding moments (``aggregation.SegmentsToTracks``, as in evaluation); with
  ``overlap`` > 0 of the overlapping windows of its continuous log-mel
  (``dataset.overlap_windows``, as in evaluation with ``training.evaluate.overlap``).
* Memory is bounded for any number of files: files are decoded in a small process pool with a
  fixed window of files in flight, segments go through the model in fixed-size batches, and each
  row is written as soon as its file is done.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genre_classification import tracking
from genre_classification.aggregation import SegmentsToTracks
from genre_classification.columns import PREDICT_COLUMNS
from genre_classification.evaluation import registry
from genre_classification.features.features import FeatureParams, load_audio, log_mel_segments
from genre_classification.training import model_info
from genre_classification.training.dataset import overlap_windows

# The workflow's default data.extensions (tests check they agree with config/config.yaml).
AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "opus", "mp3", "m4a", "aac", "aiff", "aif", "au")
BATCH_SEGMENTS = 256
MODELS_DIR = Path("results/models")
CONFIG_FILE = Path("config/config.yaml")


class PredictError(RuntimeError):
    """No usable model or no input files; the message says what to pass."""


@dataclass
class LoadedModel:
    model: object  # keras.Model
    params: FeatureParams
    labels: list[str]
    source: str
    parts: SegmentsToTracks = None  # how segments become tracks (set from ``model``)

    def __post_init__(self):
        if self.parts is None:
            self.parts = SegmentsToTracks.of(self.model)


@dataclass
class Row:
    path: str
    probs: np.ndarray | None = None  # mean class probabilities of the file
    n_segments: int = 0
    n_windows: int = 0  # windows through the model (= n_segments without overlap)
    error: str = ""


# --- which model ------------------------------------------------------------------------------


def _workflow_training_config(config_path: str | Path = CONFIG_FILE) -> dict:
    """The ``training`` section of the workflow config in this directory ({} if none)."""
    path = Path(config_path)
    if not path.is_file():
        return {}
    import yaml

    return (yaml.safe_load(path.read_text()) or {}).get("training") or {}


def local_tracking_uri() -> str | None:
    """``MLFLOW_TRACKING_URI``, else ``training.tracking_uri`` of the workflow config here, else
    the workflow's local store if it exists here, else None."""
    configured = os.environ.get("MLFLOW_TRACKING_URI") or _workflow_training_config().get(
        "tracking_uri"
    )
    if configured:
        return configured
    db = tracking.DEFAULT_STORE_DIR / tracking.DB_NAME
    return tracking.default_tracking_uri() if db.is_file() else None


def workflow_registry_name() -> str:
    """``training.registry.name`` of the workflow config here, else the schema default."""

    return (_workflow_training_config().get("registry") or {}).get("name") or registry.DEFAULT_NAME


def default_model(models_dir: str | Path = MODELS_DIR) -> str:
    """The registered champion if there is a tracking store with one, else the newest
    ``results/models/*/model.keras`` (or ``*/fold-*/model.keras``)."""
    uri = local_tracking_uri()
    if uri:
        import mlflow

        name = workflow_registry_name()
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        try:
            found = registry.current_champion(client, name)
        except Exception:  # no registry tables yet, server unreachable: fall back to files
            found = None
        if found is not None:
            return f"models:/{name}@{registry.CHAMPION}"
    # results/models/<model>/model.keras, or .../<model>/fold-<i>/model.keras with k folds
    models_dir = Path(models_dir)
    found = [*models_dir.glob("*/model.keras"), *models_dir.glob("*/fold-*/model.keras")]
    candidates = sorted(found, key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise PredictError(
            f"no model: no registered champion and no {models_dir}/*/model.keras here; pass "
            "--model PATH/model.keras or an MLflow URI (models:/<name>@<alias>, runs:/<id>/model)"
        )
    return str(candidates[-1])


def _checked(model, params: FeatureParams, labels: list[str], source: str) -> LoadedModel:
    want = (params.n_mels, params.frames_per_segment)
    if tuple(model.input_shape[1:3]) != want or model.output_shape[-1] != len(labels):
        raise PredictError(
            f"{source}: model input {model.input_shape} / output {model.output_shape} do not "
            f"match its recorded features (n_mels, frames) = {want} and {len(labels)} labels"
        )
    return LoadedModel(model, params, labels, source)


def load_model(spec: str) -> LoadedModel:
    """A ``model.keras`` path or an MLflow model URI, with its training feature parameters."""
    import keras

    if "://" not in spec and ":/" not in spec:
        path = Path(spec)
        if not path.is_file():
            raise PredictError(f"model file {path} does not exist")
        info = path.with_name(model_info.FILE_NAME)
        if not info.is_file():
            raise PredictError(
                f"{info} is missing: the feature parameters of {path} are unknown (models "
                "trained by this version of the workflow write it next to model.keras)"
            )
        params, labels = model_info.read(info)
        return _checked(keras.models.load_model(path), params, labels, str(path))

    import mlflow
    from mlflow.models import Model

    uri = local_tracking_uri()
    if uri:
        mlflow.set_tracking_uri(uri)
    with tempfile.TemporaryDirectory(prefix="genre-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=spec, dst_path=tmp)
        metadata = Model.load(local).metadata
        if not metadata or "features" not in metadata:
            raise PredictError(f"{spec}: the MLflow model has no recorded feature parameters")
        params, labels = model_info.parse(metadata)
        model = mlflow.tensorflow.load_model(local)
    return _checked(model, params, labels, spec)


# --- which files ------------------------------------------------------------------------------


def audio_paths(paths: Iterable[str | Path], extensions=AUDIO_EXTENSIONS) -> list[Path]:
    """Files as given, and the audio files under directories (recursive, sorted, extension
    case-insensitive)."""
    suffixes = {f".{ext.lower()}" for ext in extensions}
    found = []
    for item in map(Path, paths):
        if item.is_dir():
            for root, dirs, files in os.walk(item):
                dirs.sort()
                found.extend(
                    Path(root, f) for f in sorted(files) if Path(f).suffix.lower() in suffixes
                )
        elif item.exists():
            found.append(item)
        else:
            raise PredictError(f"{item}: no such file or directory")
    return found


# --- decoding and prediction ------------------------------------------------------------------


def decode(path: Path, params: FeatureParams) -> tuple[np.ndarray | None, str]:
    """``(segments, "")`` or ``(None, reason)``; runs in the worker processes."""
    import warnings

    try:
        with warnings.catch_warnings():  # librosa's fallback warnings: the reason is in the row
            warnings.simplefilter("ignore")
            audio = load_audio(path, params)
        return log_mel_segments(audio, params), ""
    except Exception as error:  # one bad file must not stop the others
        return None, str(error).rstrip(": ") or type(error).__name__


def decoded(
    paths: list[Path], params: FeatureParams, jobs: int
) -> Iterator[tuple[Path, np.ndarray | None, str]]:
    """Decoded files in input order; at most ``4 * jobs`` files in flight."""
    if jobs <= 0 or len(paths) <= 1:
        for path in paths:
            yield (path, *decode(path, params))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # forkserver: workers do not inherit the TensorFlow state of this process.
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        window, todo = deque(), iter(paths)
        for path in todo:
            window.append((path, pool.submit(decode, path, params)))
            if len(window) >= 4 * jobs:
                path, future = window.popleft()
                yield (path, *future.result())
        while window:
            path, future = window.popleft()
            yield (path, *future.result())


def predict_rows(
    loaded: LoadedModel,
    paths: list[Path],
    jobs: int = 2,
    batch_segments: int = BATCH_SEGMENTS,
    overlap: float = 0.0,
) -> Iterator[Row]:
    """One ``Row`` per path, in order, each as soon as all its segments are predicted."""
    return predict_segments(loaded, decoded(paths, loaded.params, jobs), batch_segments, overlap)


def predict_segments(
    loaded: LoadedModel,
    items: Iterable[tuple[str | Path, np.ndarray | None, str]],
    batch_segments: int = BATCH_SEGMENTS,
    overlap: float = 0.0,
) -> Iterator[Row]:
    """One ``Row`` per ``(path, segments, error)`` item, in order: the windows of consecutive
    items (``dataset.overlap_windows``: the segments themselves with ``overlap`` 0) go through
    the model in batches of ``batch_segments``; a file's probabilities are the mean of its
    windows' (``aggregate_tracks``). Segments come from audio decoded here (``predict_rows``)
    or from the workflow's feature files (``predict_set``)."""
    pending: deque[Row] = deque()  # files not yet yielded, in order
    waiting: list[np.ndarray] = []  # segments not yet through the model
    n_waiting = 0
    done: list[np.ndarray] = []  # probabilities not yet assigned to a file
    n_done = 0

    def run_model(n: int) -> None:
        nonlocal waiting, n_waiting, n_done
        x = np.concatenate(waiting) if len(waiting) > 1 else waiting[0]
        done.append(np.asarray(loaded.parts.per_segment.predict_on_batch(x[:n, ..., None])))
        n_done += n
        waiting = [x[n:]] if n < len(x) else []
        n_waiting -= n

    def finished() -> Iterator[Row]:
        nonlocal done, n_done
        ready, claimed = [], 0
        while pending:
            if not pending[0].error:
                if claimed + pending[0].n_windows > n_done:
                    break
                claimed += pending[0].n_windows
            ready.append(pending.popleft())
        if claimed:
            probs = np.concatenate(done)
            good = [row for row in ready if not row.error]
            keys = np.repeat(np.arange(len(good)), [row.n_windows for row in good])
            _, means = loaded.parts.tracks(probs[:claimed], keys)
            for row, mean in zip(good, means, strict=True):
                row.probs = mean
            done = [probs[claimed:]] if claimed < len(probs) else []
            n_done -= claimed
        yield from ready

    for path, segments, error in items:
        if error:
            pending.append(Row(str(path), error=error))
        else:
            windows = overlap_windows(segments, overlap)
            pending.append(Row(str(path), n_segments=len(segments), n_windows=len(windows)))
            waiting.append(windows)
            n_waiting += len(windows)
            while n_waiting >= batch_segments:
                run_model(batch_segments)
        yield from finished()
    while n_waiting:
        run_model(min(n_waiting, batch_segments))
    yield from finished()


# --- output -----------------------------------------------------------------------------------


def csv_row(row: Row, labels: list[str], top_k: int) -> list:
    if row.probs is None:
        return [row.path, "", "", "", row.n_segments, row.error]
    order = np.argsort(-row.probs, kind="stable")[:top_k]
    top = ";".join(f"{labels[i]}:{row.probs[i]:.6f}" for i in order)
    best = order[0]
    return [row.path, labels[best], f"{row.probs[best]:.6f}", top, row.n_segments, ""]


class Progress:
    """``files done/total, failed, rate, eta`` on a terminal, at most twice a second."""

    def __init__(self, total: int, stream=None, interval: float = 0.5):
        self.total, self.stream, self.interval = total, stream or sys.stderr, interval
        self.enabled = self.stream.isatty()
        self.start = self.last = time.monotonic()

    def update(self, done: int, failed: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < self.interval):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate else math.inf
        eta_text = f"{eta:.0f} s" if math.isfinite(eta) else "?"
        self.stream.write(
            f"\rpredict: {done}/{self.total} files, {failed} failed, {rate:.1f} files/s, "
            f"eta {eta_text}   "
        )
        self.stream.flush()

    def close(self, done: int, failed: int) -> None:
        self.update(done, failed, force=True)
        if self.enabled:
            self.stream.write("\n")


def predict(
    paths: Iterable[str | Path],
    output,
    model: str | None = None,
    top_k: int = 3,
    jobs: int = 2,
    batch_segments: int = BATCH_SEGMENTS,
    log=sys.stderr,
    overlap: float = 0.0,
) -> tuple[int, int]:
    """Write one CSV row per audio file to the text stream ``output``; returns
    ``(n_files, n_failed)``. ``overlap``: see ``predict_segments``."""
    files = audio_paths(paths)
    if not files:
        raise PredictError("no audio files found (extensions: " + ", ".join(AUDIO_EXTENSIONS) + ")")
    spec = model or default_model()
    loaded = load_model(spec)
    print(
        f"model: {loaded.source}; features: {loaded.params}; {len(files)} files",
        file=log,
        flush=True,
    )
    writer = csv.writer(output)
    writer.writerow(PREDICT_COLUMNS)
    progress = Progress(len(files), log)
    n_done = n_failed = 0
    for row in predict_rows(loaded, files, jobs, batch_segments, overlap):
        writer.writerow(csv_row(row, loaded.labels, max(1, top_k)))
        n_done += 1
        n_failed += bool(row.error)
        progress.update(n_done, n_failed)
    progress.close(n_done, n_failed)
    output.flush()
    return n_done, n_failed
