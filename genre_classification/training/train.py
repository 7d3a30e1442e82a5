"""Training job: config dict in, ``model.keras`` + ``history.csv`` + one MLflow run out.

Checkpoint and resume
---------------------
After every epoch the job writes to ``checkpoint_dir``:

* ``epoch-NNNN.keras``: model weights + optimizer state (``model.save``),
* ``epoch-NNNN.rng.npz``: the state of every Keras ``SeedGenerator`` (dropout masks), which
  ``keras.models.load_model`` does not restore,
* ``best.weights.h5``: weights of the best epoch so far (early stopping),
* ``state.json`` (written last, atomically; it is the commit point): number of finished epochs,
  history, early-stopping state, the config fingerprint and the MLflow run id.

A rerun with the same config and data (the fingerprint) continues after the last finished epoch
with the same MLflow run. The batch order of an epoch is a function of (seed, epoch) only
(see ``dataset.epoch_permutation``), so are the augmentations (``augment``: draws from
(seed, epoch, step)), and TensorFlow op determinism is on, so the resumed job ends with the same
weights as an uninterrupted one. A different fingerprint discards the checkpoints.
The checkpoint directory is not a Snakemake output (Snakemake deletes outputs before rerunning a
job); it is removed after the job has written its outputs unless ``keep_checkpoints`` is true.

Interrupts
----------
SIGTERM or SIGINT (also sent by the job itself when the Snakemake process that started it has
ended, ``jobcontrol.watch_workflow``) stops training at once, or right after the epoch's
checkpoint when it comes while one is written (``jobcontrol.GracefulStop``): the epoch in progress
is dropped, the checkpoints of the finished ones are kept, the MLflow run is marked KILLED (deleted
when no epoch had finished: the rerun starts a new one) and the job exits with an error. The
rerun resumes after the last finished epoch, in the same run.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from genre_classification import jobcontrol, tracking
from genre_classification.aggregation import temperature_of
from genre_classification.fileio import atomic_path, exclusive_lock, write_json
from genre_classification.redact import redact
from genre_classification.training import (
    augment,
    calibration,
    dataset,
    embeddings,
    model_info,
    models,
)
from genre_classification.training.model_kinds import kind_of
from genre_classification.training.tf_runtime import set_threads

log = logging.getLogger(__name__)

# Every key of a model entry that training reads: the workflow's validation fills the schema's
# defaults in (workflow/schemas/config.schema.yaml, the one place they are written down);
# outside Snakemake use config_check.with_defaults(entry, config_check.MODEL_SCHEMA).
MODEL_KEYS = (
    "architecture",
    "optimizer",
    "learning_rate",
    "epochs",
    "batch_size",
    "early_stopping",
    "seed",
    "mixed_precision",
    "deterministic",
    "streaming",
    "keep_checkpoints",
    "options",
    "augment",
)
MONITOR = "val_loss"
# In the checkpoint directory: the MLflow run of the job, so that a rerun resumes it.
RUN_FILE = "mlflow_run.json"
# In the checkpoint directory: the weights of the best epoch so far.
BEST_WEIGHTS = "best.weights.h5"
# Peak RSS of a training job without its data in memory (TensorFlow, the model, a few batches
# of the packed input), measured by benchmarks/bench_workflow.py with the default CNN: what an
# in-memory (``streaming: false``) job needs on top of its training segments.
TRAINING_BASE_MB = 2500
# Test hook: mirror the model over this many logical devices ("CPU:2"), as over several GPUs.
REPLICAS_ENV = "GENRE_CLASSIFICATION_REPLICAS"
# Test hook: SIGKILL this process right after the checkpoint of this epoch (1-based) is written.
KILL_AFTER_EPOCH_ENV = "GENRE_CLASSIFICATION_KILL_AFTER_EPOCH"


@dataclass(frozen=True)
class TrainingPaths:
    """What a training job reads and writes (docs/CONTRACTS.md)."""

    split: str | Path
    model: str | Path
    history: str | Path
    run_info: str | Path
    # Not an output: cleared on a fingerprint mismatch, removed after the job (keep_checkpoints).
    checkpoint_dir: str | Path
    # The feature parameters and labels of the model (model_info); default: next to the model.
    features: str | Path | None = None
    # A cross-validation fold: the record of the model's parent run (cv.start_parent_run).
    parent_run: str | Path | None = None
    # The shard records of the model's feature set when it is not the default one.
    feature_records: list[str] | None = None
    # The packed segments of every shard of the model's feature set (packs.pack_path): the
    # training input.
    packs: tuple[str | Path, ...] = ()


@dataclass(frozen=True)
class MlflowSettings:
    experiment: str
    tracking_uri: str | None  # None: MLFLOW_TRACKING_URI, else the local store
    timeout_s: float  # how long a tracking server may take to answer at the start
    system_metrics: bool = True  # MLflow's system metrics (training.system_metrics)


def model_config(config: dict) -> dict:
    """A model entry as training uses it: every key of ``MODEL_KEYS`` (the schema's defaults
    filled in), ``augment`` with every key (``augment.settings``)."""
    missing = [key for key in MODEL_KEYS if key not in config]
    if missing:
        raise ValueError(
            f"model config without {missing}: pass the entry with the schema's defaults "
            "filled in (the validated workflow config, or config_check.with_defaults)"
        )
    return {**config, "augment": augment.settings(config["augment"])}


def fingerprint(config: dict, split_path: str | Path, replicas: int = 1) -> str:
    """What a checkpoint must match to be resumed: training config + split manifest content
    (+ the number of replicas when more than one: they change the batches).

    ``augment`` counts only when some augmentation is on, so the fingerprint of a config
    without augmentation is the one it had before augmentation existed; ``calibrate`` acts
    after the last epoch (``finalize``), on the weights the checkpoints hold."""
    relevant = {
        k: v
        for k, v in config.items()
        if k not in ("keep_checkpoints", "calibrate")
        and not (k == "augment" and not augment.is_active(v))
    }
    # Both stores give the same batches: ``streaming`` is hashed as false, its former default,
    # so that checkpoints from before the default changed stay valid.
    relevant["streaming"] = False
    if replicas > 1:
        relevant["replicas"] = replicas
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode())
    digest.update(Path(split_path).read_bytes())
    return digest.hexdigest()


def configure_tensorflow(seed: int, threads: int | None, deterministic: bool) -> str:
    """Seed Python/NumPy/TF/Keras, pin thread pools, enable op determinism; return the device
    (TensorFlow places the model on a visible GPU by itself; several: ``distribution``)."""
    import keras
    import tensorflow as tf

    forced = os.environ.get(REPLICAS_ENV)
    if forced:  # before anything starts the runtime
        kind, count = forced.split(":")
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices(kind)[0],
            [tf.config.LogicalDeviceConfiguration()] * int(count),
        )
    set_threads(threads)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU ({len(gpus)}x {details.get('device_name', gpus[0].name)})"
    return "CPU"


def distribution():
    """``tf.distribute.MirroredStrategy`` over the job's GPUs when it has more than one (the
    model's variables mirrored, each batch split across them), else the default strategy.
    ``REPLICAS_ENV=CPU:<n>`` mirrors over n logical CPU devices instead (tests: no GPU here)."""
    import tensorflow as tf

    forced = os.environ.get(REPLICAS_ENV)
    devices = tf.config.list_logical_devices(forced.split(":")[0] if forced else "GPU")
    if len(devices) > 1:
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    return tf.distribute.get_strategy()


def global_batch_size(batch_size: int, replicas: int) -> int:
    """A model's ``batch_size`` is per replica (per GPU): the batches of a job on k GPUs hold
    ``k * batch_size`` segments, so each GPU computes as much as one GPU alone would."""
    return batch_size * replicas


def check_memory(data_bytes: int, mem_mb: int | None, model_name: str) -> None:
    """An in-memory job (``streaming: false``) whose training segments do not fit the memory
    it declared stops here, before reading them, instead of being killed later."""
    need = TRAINING_BASE_MB + math.ceil(data_bytes / 1e6)
    if mem_mb is not None and need > mem_mb:
        raise MemoryError(
            f"model {model_name!r}: the training segments need {data_bytes / 1e6:,.0f} MB in "
            f"memory, about {need:,} MB with TensorFlow, but the job has mem_mb={mem_mb:,}. Set "
            f"training.models.{model_name}.streaming: true (memory independent of the data: "
            f"batches are read from the packs) or raise training.resources.mem_mb (or the "
            f"model's resources.mem_mb) to at least {need:,}."
        )


# --- checkpoint files -------------------------------------------------------------------------


def _seed_states(model) -> list:
    return [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]


def save_checkpoint(ckpt_dir: Path, model, state: dict) -> None:
    import numpy as np

    epoch = state["epochs_done"]
    name = f"epoch-{epoch:04d}"
    with atomic_path(ckpt_dir / f"{name}.keras") as tmp:
        model.save(tmp)
    rng = {f"s{i}": np.asarray(v.numpy()) for i, v in enumerate(_seed_states(model))}
    with atomic_path(ckpt_dir / f"{name}.rng.npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **rng)
    write_json(ckpt_dir / "state.json", {**state, "checkpoint": name})
    for old in ckpt_dir.glob("epoch-*"):
        if not old.name.startswith(name):
            old.unlink()


def load_checkpoint(ckpt_dir: Path, expected_fingerprint: str):
    """``(model, state)`` of the last finished epoch, or ``(None, None)`` if there is none."""
    import keras
    import numpy as np

    state_path = ckpt_dir / "state.json"
    if not state_path.is_file():
        return None, None
    state = json.loads(state_path.read_text())
    if state.get("fingerprint") != expected_fingerprint:
        log.warning("checkpoints in %s belong to another config or data: starting over", ckpt_dir)
        return None, None
    model = keras.models.load_model(ckpt_dir / f"{state['checkpoint']}.keras")
    rng = np.load(ckpt_dir / f"{state['checkpoint']}.rng.npz")
    for i, variable in enumerate(_seed_states(model)):
        variable.assign(rng[f"s{i}"])
    return model, state


def _clear_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


# --- training ---------------------------------------------------------------------------------


def _epoch_callback(ckpt_dir, state, run_id, early, on_epoch=None, stop=None):
    import keras

    class CheckpointAndTrack(keras.callbacks.Callback):
        """Per epoch: early-stopping bookkeeping, checkpoint (commit point), then MLflow."""

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            # a stop request waits for the checkpoint (the commit point) and the MLflow epoch
            with stop.deferred() if stop is not None else contextlib.nullcontext():
                self._end_epoch(epoch, logs or {})
            if stop is not None:
                stop.check()

        def _end_epoch(self, epoch, logs):
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}}
            row["epoch_seconds"] = time.perf_counter() - self._start
            value = row[MONITOR]
            if state["best"] is None or value < state["best"] - early["min_delta"]:
                _keep_as_best(self.model, ckpt_dir, state, value, epoch + 1)
            else:
                state["wait"] += 1
            if state["wait"] >= early["patience"]:
                state["stopped_early"] = True
                self.model.stop_training = True
            state["history"].append(row)
            state["epochs_done"] = epoch + 1
            save_checkpoint(ckpt_dir, self.model, state)
            tracking.log_epochs(run_id, [row], only_missing=False)
            if on_epoch is not None:
                on_epoch(epoch + 1)

    return CheckpointAndTrack()


def _keep_as_best(model, ckpt_dir: Path, state: dict, value: float, epoch: int) -> None:
    """The weights of ``epoch``, whose ``MONITOR`` value is the best so far, for early
    stopping's ``restore_best_weights``."""
    state.update(best=value, best_epoch=epoch, wait=0)
    model.save_weights(ckpt_dir / BEST_WEIGHTS)


PROGRESS_EVERY_S = 60


def progress_callback(steps: int, batch_size: int, every_s: float = PROGRESS_EVERY_S):
    """Logs the progress of a long epoch at most every ``every_s`` seconds (Keras' ``verbose=2``
    prints only at the end of an epoch, 20 minutes away at 20,000 tracks on CPUs)."""
    import keras

    class EpochProgress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._epoch, self._start = epoch + 1, time.perf_counter()
            self._last = self._start

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            if now - self._last < every_s:
                return
            self._last, done = now, batch + 1
            rate = done * batch_size / (now - self._start)
            left = (steps - done) * batch_size / rate
            log.info(
                "epoch %d: %d of %d steps (%.0f %%), %.0f segments/s, about %.0f min left",
                self._epoch, done, steps, 100 * done / steps, rate, left / 60,
            )  # fmt: skip

    return EpochProgress()


def _kill_hook(epoch: int) -> None:
    target = os.environ.get(KILL_AFTER_EPOCH_ENV)
    if target and int(target) == epoch:
        log.warning("%s=%s: killing myself after epoch %d", KILL_AFTER_EPOCH_ENV, target, epoch)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)


def write_history(path: str | Path, history: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def _parent_tag(parent_run_path: str | Path | None, uri: str) -> dict:
    if not parent_run_path:
        return {}
    parent = tracking.read_run_info(parent_run_path)
    if parent["tracking_uri"] != redact(uri):
        raise ValueError(
            f"parent run {parent['run_id']} is in {parent['tracking_uri']}, this job logs to "
            f"{redact(uri)}: rerun the mlflow_parent_run job ({parent_run_path})"
        )
    return {tracking.PARENT_TAG: parent["run_id"]}


# --- the training job, step by step ----------------------------------------------------------


@dataclass
class _Data:
    labels: list[str]
    train_rows: object  # pandas rows of the split table
    val: dataset.PackedSegments  # read per batch
    train: dataset.PackedSegments | dataset.Segments  # in memory unless ``streaming``
    val_rows: object = None  # pandas rows of the validation tracks


def load_data(paths: TrainingPaths, cfg: dict, model_name: str, mem_mb: int | None = None) -> _Data:
    """The split's train and val tracks from the packs: read per batch, the training
    segments into memory first unless ``streaming`` (if they fit ``mem_mb``)."""
    if not paths.packs:
        raise ValueError("no packs given (TrainingPaths.packs: the feature set's packs)")
    split = dataset.read_split(paths.split, paths.feature_records)
    labels = dataset.genre_labels(split)
    train_rows, val_rows = split[split.split == "train"], split[split.split == "val"]
    if train_rows.empty or val_rows.empty:
        raise ValueError(f"{paths.split}: need train and val tracks")
    val = dataset.PackedSegments(val_rows, labels, paths.packs)
    augment.check(cfg["augment"], *val.input_shape[:2])
    train = dataset.PackedSegments(train_rows, labels, paths.packs)
    if not cfg["streaming"] and not kind_of(cfg).fits_on_embeddings:
        check_memory(train.nbytes, mem_mb, model_name)
        train = train.load()
    log.info(
        "%d training segments (%s), %d validation segments (read per batch)",
        len(train), "read per batch" if cfg["streaming"] else "in memory", len(val),
    )  # fmt: skip
    return _Data(labels, train_rows, val, train, val_rows)


def _soft_labels(cfg: dict) -> bool:
    return cfg["augment"]["mixup"] > 0


def model_and_state(cfg: dict, ckpt_dir: Path, fp: str, data: _Data):
    """``(model, state)``: resumed from the checkpoint of fingerprint ``fp``, else a new
    model (band statistics of the training set) and an empty state in a cleared directory."""

    model, state = load_checkpoint(ckpt_dir, fp)
    if model is not None:
        log.info("Resuming from checkpoint after epoch %d (%s)", state["epochs_done"], ckpt_dir)
        return model, state
    _clear_dir(ckpt_dir)
    if kind_of(cfg).first_model_from_embeddings:
        model = embeddings.initial_model(
            cfg, data.train_rows, data.val_rows, data.labels, data.val.input_shape
        )
    else:
        mean, var = dataset.band_stats(data.train)
        model = models.build_model(
            cfg["architecture"], data.val.input_shape, len(data.labels), mean, var,
            **cfg["options"],
        )  # fmt: skip
    models.compile_model(model, cfg["optimizer"], cfg["learning_rate"], _soft_labels(cfg))
    state = {
        "fingerprint": fp,
        "epochs_done": 0,
        "history": [],
        "best": None,
        "best_epoch": None,
        "wait": 0,
        "stopped_early": False,
    }
    if kind_of(cfg).starts_fitted:
        _start_as_epoch_zero(model, cfg, data, state, ckpt_dir)
    return model, state


def _start_as_epoch_zero(model, cfg: dict, data: _Data, state: dict, ckpt_dir: Path) -> None:
    """The starting model's val scores as epoch 0 of the history and of early stopping: an
    epoch must beat them to be kept, so restoring the best weights never ends below the start."""
    n_classes = len(data.labels) if _soft_labels(cfg) else None
    val = dataset.eval_dataset(data.val, cfg["batch_size"], n_classes)
    scores = model.evaluate(val, return_dict=True, verbose=0)
    row = {"epoch": 0, **{f"val_{k}": float(v) for k, v in scores.items()}}
    state["history"] = [row]
    _keep_as_best(model, ckpt_dir, state, row[MONITOR], 0)
    log.info("Epoch 0 (the starting model): %s %.4f", MONITOR, row[MONITOR])


def _resumable_run_id(ckpt_dir: Path, state: dict, uri: str) -> str | None:
    """The MLflow run of the interrupted job, recorded in the checkpoint directory."""
    run_file = ckpt_dir / RUN_FILE
    if state["epochs_done"] and run_file.is_file():
        saved = tracking.read_run_info(run_file)
        if saved.get("tracking_uri") == redact(uri):
            return saved["run_id"]
    return None


def log_run_start(run_id, cfg, data, model, state, model_name, policy, tags) -> None:
    """Params (once per run, also when a killed job had not logged them), tags, and the epochs
    of a killed job that MLflow did not get."""
    import mlflow

    if not state["epochs_done"] or not mlflow.get_run(run_id).data.params:
        mlflow.log_params(
            {
                **tracking.flatten_params(cfg),
                "model_name": model_name,
                "dtype_policy": policy,
                "n_classes": len(data.labels),
                "labels": json.dumps(data.labels),
                "n_train_segments": int(data.train_rows["n_segments"].sum()),
                "n_val_segments": len(data.val),
                "n_params": model.count_params(),
            }
        )
    mlflow.set_tags(tags)
    tracking.log_epochs(run_id, state["history"])


def fit(
    model,
    cfg: dict,
    data: _Data,
    state: dict,
    ckpt_dir: Path,
    run_id: str,
    replicas: int = 1,
    stop: jobcontrol.GracefulStop | None = None,
) -> None:
    """The epochs after ``state["epochs_done"]``, each ending in a checkpoint (the callback).
    ``stop``: a stop requested during training ends it at the next batch boundary, or right
    after the checkpoint the callback is writing (``jobcontrol.Interrupted``)."""

    epochs, initial_epoch = cfg["epochs"], state["epochs_done"]
    bs = global_batch_size(cfg["batch_size"], replicas)
    callback = _epoch_callback(ckpt_dir, state, run_id, cfg["early_stopping"], _kill_hook, stop)
    # Inside fit a signal only marks the stop, checked between batches: an exception raised
    # while TensorFlow runs a step can corrupt its state ("free(): invalid next size").
    between_batches, deferred = [], contextlib.nullcontext()
    if stop is not None:
        between_batches, deferred = [stop_between_batches(stop)], stop.deferred()
    with deferred:
        _fit(model, cfg, data, state, callback, between_batches, epochs, initial_epoch, bs)
    if stop is not None:
        stop.check()


def _fit(model, cfg, data, state, callback, between_batches, epochs, initial_epoch, bs) -> None:
    if kind_of(cfg).fits_on_embeddings:
        rows = (data.train_rows, data.val_rows, data.labels)
        return embeddings.fit_head(model, cfg, *rows, state, callback, between_batches)
    if initial_epoch >= epochs or state["stopped_early"]:
        return
    augmenter = None
    if augment.is_active(cfg["augment"]):
        band_mean = models.band_mean(model)
        if band_mean is None:  # the same files in the same order on resume
            band_mean, _ = dataset.band_stats(data.train)
        augmenter = augment.Augmenter(cfg["augment"], cfg["seed"], band_mean, len(data.labels))
    train_ds = dataset.train_dataset(data.train, bs, cfg["seed"], initial_epoch, epochs, augmenter)
    steps = dataset.steps_per_epoch(len(data.train), bs)
    n_classes = len(data.labels) if _soft_labels(cfg) else None
    model.fit(
        train_ds,
        validation_data=dataset.eval_dataset(data.val, bs, n_classes),
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps,
        shuffle=False,
        callbacks=[callback, progress_callback(steps, bs), *between_batches],
        verbose=2,
    )


def stop_between_batches(stop: jobcontrol.GracefulStop):
    """A Keras callback that ends training at the first batch boundary after a stop request."""
    import keras

    class StopBetweenBatches(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stop.check()

        def on_test_batch_end(self, batch, logs=None):
            stop.check()

    return StopBetweenBatches()


def finalize(model, cfg, data, state, paths: TrainingPaths, ckpt_dir: Path) -> None:
    """Best weights back, then the outputs: model, history, feature description (also as
    MLflow artifacts), summary metrics and the logged Keras model."""
    import mlflow

    if state["stopped_early"]:
        log.info("Early stopping after epoch %d", state["epochs_done"])
    best = ckpt_dir / BEST_WEIGHTS
    if cfg["early_stopping"]["restore_best_weights"] and best.is_file():
        model.load_weights(best)
        log.info("Restored weights of best epoch %s", state["best_epoch"])
    if kind_of(cfg).fits_on_embeddings:  # the head on the backbone: log-mel in, as any model
        model = embeddings.full_model(model, cfg, data.val.input_shape)
    if cfg["calibrate"]:
        model = calibration.calibrated(model, cfg, data)
    temperature = temperature_of(model)
    if temperature is not None:
        mlflow.log_param("calibration.temperature", round(temperature, 4))
    with atomic_path(paths.model) as tmp:
        model.save(tmp)
    write_history(paths.history, state["history"])
    mlflow.log_artifact(str(paths.history))
    description = model_info.describe(data.train_rows, data.labels)
    features_path = paths.features or Path(paths.model).with_name(model_info.FILE_NAME)
    model_info.write(features_path, description)
    mlflow.log_artifact(str(features_path))
    mlflow.log_metrics(
        {"best_epoch": float(state["best_epoch"] or 0), "epochs_trained": state["epochs_done"]}
    )
    tracking.log_keras_model(model, metadata=description)


def train(
    config: dict,
    paths: TrainingPaths,
    mlflow_settings: MlflowSettings,
    *,
    model_name: str,
    lock_timeout_s: float,
    threads: int | None = None,
    fold: int | None = None,
    tags: dict[str, str] | None = None,
    mem_mb: int | None = None,
) -> dict:
    """Train (or resume) one model; returns the MLflow run info written to ``paths.run_info``.

    ``config``: the model entry with the schema's defaults filled in (``model_config``);
    ``lock_timeout_s``: how long to wait for another job using the same checkpoint directory;
    ``fold``: a cross-validation fold, its run a child of the model's parent run
    (``paths.parent_run``); ``tags``: provenance tags of the run (the caller knows where the
    job comes from: ``tracking.provenance_tags``); ``mem_mb``: the memory the job declared (an
    in-memory job checks that its data fits, ``check_memory``).
    """
    cfg = model_config(config)
    ckpt_dir = Path(paths.checkpoint_dir)
    # Beside the directory, which is cleared and removed; two jobs must not share it.
    lock = ckpt_dir.with_name(f".{ckpt_dir.name}.lock")
    try:
        with jobcontrol.GracefulStop() as stop:
            with exclusive_lock(lock, lock_timeout_s, what=f"checkpoint directory {ckpt_dir}"):
                return _train_locked(
                    cfg, paths, mlflow_settings, ckpt_dir, stop, model_name=model_name,
                    threads=threads, fold=fold, tags=tags, mem_mb=mem_mb,
                )  # fmt: skip
    except jobcontrol.Interrupted as error:
        done = _epochs_done(ckpt_dir)
        if not done:
            _delete_empty_run(ckpt_dir)
        then = (
            f"the checkpoints in {ckpt_dir} are kept: run the same snakemake command again to "
            "resume (in the same MLflow run)"
            if done
            else "run the same snakemake command again to start it"
        )
        raise jobcontrol.Interrupted(
            f"training of {model_name!r} {error} after {done} finished epoch(s); {then}"
        ) from None


def _delete_empty_run(ckpt_dir: Path) -> None:
    """The MLflow run of a job interrupted before its first epoch ended holds nothing that the
    rerun continues (without a checkpoint it starts a new run): deleted, so that a model keeps
    one run."""
    run_file = ckpt_dir / RUN_FILE
    if not run_file.is_file():
        return
    import mlflow

    run_id = tracking.read_run_info(run_file)["run_id"]
    try:
        mlflow.MlflowClient().delete_run(run_id)
        log.info("MLflow run %s deleted: no epoch had finished", run_id)
    except Exception as error:  # a lost server: the run stays, marked KILLED
        log.warning("MLflow run %s not deleted: %s", run_id, redact(str(error)))
    run_file.unlink(missing_ok=True)


def _epochs_done(ckpt_dir: Path) -> int:
    try:
        return json.loads((ckpt_dir / "state.json").read_text())["epochs_done"]
    except (OSError, ValueError, KeyError):
        return 0


def _train_locked(
    cfg, paths, mlflow_settings, ckpt_dir, stop, *, model_name, threads, fold, tags, mem_mb
) -> dict:
    import keras

    uri = tracking.resolve_tracking_uri(mlflow_settings.tracking_uri)
    tracking.connect(uri, mlflow_settings.timeout_s)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    device = configure_tensorflow(cfg["seed"], threads, cfg["deterministic"])
    log.info("Device: %s (training %s)", device, model_name)
    strategy = distribution()
    policy = models.set_precision(cfg["mixed_precision"])
    data = load_data(paths, cfg, model_name, mem_mb)
    replicas = strategy.num_replicas_in_sync
    if replicas > 1:
        log.info(
            "%d replicas: batches of %d segments (batch_size %d per replica)",
            replicas, global_batch_size(cfg["batch_size"], replicas), cfg["batch_size"],
        )  # fmt: skip
    with strategy.scope():
        model, state = model_and_state(cfg, ckpt_dir, fingerprint(cfg, paths.split, replicas), data)

    # One MLflow run per job; its id lives in the checkpoint dir so a rerun resumes it.
    experiment = mlflow_settings.experiment
    experiment_id = tracking.setup_experiment(experiment, uri)
    run_name = model_name if fold is None else f"{model_name}/fold-{fold}"
    on_outage = f"The epoch checkpoints in {ckpt_dir} are kept. {tracking.WHAT_TO_DO}"
    run_id = _resumable_run_id(ckpt_dir, state, uri)
    timeout_s, system_metrics = mlflow_settings.timeout_s, mlflow_settings.system_metrics
    with tracking.tracked_run(
        uri, experiment_id, run_id, run_name, timeout_s, on_outage, system_metrics
    ) as run:
        run_id = run.info.run_id
        run_tags = {
            **(tags or {}),
            "device": device,
            **models.weights_provenance(cfg),
            "model_name": model_name,
        }
        if fold is not None:
            run_tags.update({"fold": str(fold), **_parent_tag(paths.parent_run, uri)})
        tracking.write_run_info(ckpt_dir / RUN_FILE, run_id, experiment_id, uri)
        log.info("MLflow run %s (experiment %r, %s)", run_id, experiment, redact(uri))
        log_run_start(run_id, cfg, data, model, state, model_name, policy, run_tags)
        # A signal stops training at once (the epoch in progress is dropped), but not inside an
        # epoch's checkpoint or the outputs.
        fit(model, cfg, data, state, ckpt_dir, run_id, replicas, stop)
        with stop.deferred():
            finalize(model, cfg, data, state, paths, ckpt_dir)
            info = tracking.write_run_info(paths.run_info, run_id, experiment_id, uri)
        stop.check()  # stopped while writing the outputs: keep the checkpoints
    keras.backend.clear_session()
    if not cfg["keep_checkpoints"]:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return info
