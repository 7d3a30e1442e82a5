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
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path

from genre_classification import augment, dataset, tracking
from genre_classification.fileio import atomic_path, exclusive_lock, write_json
from genre_classification.redact import redact

log = logging.getLogger(__name__)

DEFAULTS = {
    "architecture": "cnn",
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "epochs": 20,
    "batch_size": 32,
    "early_stopping": {"patience": 5, "min_delta": 0.0, "restore_best_weights": True},
    "seed": 42,
    "mixed_precision": False,
    "deterministic": True,
    "streaming": False,
    "keep_checkpoints": False,
    "options": {},  # architecture keyword options: filters, dropout, weights (backbones)
    "augment": augment.OFF,  # crop, time_mask, freq_mask, mixup (genre_classification.augment)
}
MONITOR = "val_loss"
# Test hook: SIGKILL this process right after the checkpoint of this epoch (1-based) is written.
KILL_AFTER_EPOCH_ENV = "GENRE_CLASSIFICATION_KILL_AFTER_EPOCH"


def merge_config(config: dict) -> dict:
    merged = {**DEFAULTS, **config}
    merged["early_stopping"] = {
        **DEFAULTS["early_stopping"],
        **(config.get("early_stopping") or {}),
    }
    merged["options"] = dict(config.get("options") or {})
    merged["augment"] = augment.settings(config.get("augment"))
    return merged


def fingerprint(config: dict, split_path: str | Path) -> str:
    """What a checkpoint must match to be resumed: training config + split manifest content.

    ``augment`` counts only when some augmentation is on, so the fingerprint of a config
    without augmentation is the one it had before augmentation existed."""
    relevant = {
        k: v
        for k, v in config.items()
        if k != "keep_checkpoints" and not (k == "augment" and not augment.is_active(v))
    }
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode())
    digest.update(Path(split_path).read_bytes())
    return digest.hexdigest()


def configure_tensorflow(seed: int, threads: int | None, deterministic: bool) -> str:
    """Seed Python/NumPy/TF/Keras, pin thread pools, enable op determinism; return the device."""
    import keras
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
        except RuntimeError:  # TF runtime already initialised (e.g. several jobs in one process)
            pass
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU ({len(gpus)}x {details.get('device_name', gpus[0].name)})"
    return "CPU"


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


def _epoch_callback(ckpt_dir, state, run_id, early, on_epoch=None):
    import keras

    class CheckpointAndTrack(keras.callbacks.Callback):
        """Per epoch: early-stopping bookkeeping, checkpoint (commit point), then MLflow."""

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}}
            row["epoch_seconds"] = time.perf_counter() - self._start
            value = row[MONITOR]
            if state["best"] is None or value < state["best"] - early["min_delta"]:
                state.update(best=value, best_epoch=epoch + 1, wait=0)
                self.model.save_weights(ckpt_dir / "best.weights.h5")
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
    from genre_classification.cv import PARENT_TAG

    parent = tracking.read_run_info(parent_run_path)
    if parent["tracking_uri"] != redact(uri):
        raise ValueError(
            f"parent run {parent['run_id']} is in {parent['tracking_uri']}, this job logs to "
            f"{redact(uri)}: rerun the mlflow_parent_run job ({parent_run_path})"
        )
    return {PARENT_TAG: parent["run_id"]}


def train(
    config: dict,
    split_path: str | Path,
    model_path: str | Path,
    history_path: str | Path,
    run_info_path: str | Path,
    checkpoint_dir: str | Path,
    experiment: str = "genre-classification",
    tracking_uri: str | None = None,
    data_version_path: str | Path | None = None,
    model_name: str | None = None,
    snakemake_rule: str | None = None,
    wildcards: dict | None = None,
    threads: int | None = None,
    mlflow_timeout_s: float = 10,
    lock_timeout_s: float = 30,
    features_path: str | Path | None = None,
    fold: int | None = None,
    parent_run_path: str | Path | None = None,
    feature_records: list[str] | None = None,
) -> dict:
    """Train (or resume) one model; returns the MLflow run info written to ``run_info_path``.

    ``mlflow_timeout_s``: how long a tracking server may take to answer at the start;
    ``lock_timeout_s``: how long to wait for another job using the same checkpoint directory;
    ``features_path`` (default: ``features.json`` next to the model) records the feature
    parameters and labels the model was trained with (``genre_classification.model_info``).
    ``fold``/``parent_run_path``: a cross-validation fold, its run a child of the model's
    parent run (``cv.start_parent_run``). ``feature_records``: the shard records of the model's
    feature set when it is not the default (``dataset.read_split``).
    """
    import keras
    import mlflow

    from genre_classification import model_info, models

    cfg = merge_config(config)
    model_name = model_name or cfg["architecture"]
    ckpt_dir = Path(checkpoint_dir)
    # Beside the directory, which is cleared and removed; two jobs must not share it.
    lock = ckpt_dir.with_name(f".{ckpt_dir.name}.lock")
    with exclusive_lock(lock, lock_timeout_s, what=f"checkpoint directory {ckpt_dir}"):
        uri = tracking.resolve_tracking_uri(tracking_uri)
        tracking.connect(uri, mlflow_timeout_s)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        fp = fingerprint(cfg, split_path)

        device = configure_tensorflow(cfg["seed"], threads, cfg["deterministic"])
        log.info("training %s on device: %s", model_name, device)
        print(f"Device: {device}", flush=True)
        policy = models.set_precision(cfg["mixed_precision"])

        split = dataset.read_split(split_path, feature_records)
        labels = dataset.genre_labels(split)
        train_rows, val_rows = split[split.split == "train"], split[split.split == "val"]
        if train_rows.empty or val_rows.empty:
            raise ValueError(f"{split_path}: need train and val tracks")
        val = dataset.load_segments(val_rows, labels)
        augment.check(cfg["augment"], *val.x.shape[1:])
        soft_labels = cfg["augment"]["mixup"] > 0

        model, state = load_checkpoint(ckpt_dir, fp)
        if model is None:
            _clear_dir(ckpt_dir)
            if cfg["streaming"]:
                mean, var = dataset.band_stats_from_files(train_rows)
            else:
                train_data = dataset.load_segments(train_rows, labels)
                mean, var = dataset.band_stats(train_data.x)
            model = models.build_model(
                cfg["architecture"], val.input_shape, len(labels), mean, var, **cfg["options"]
            )
            models.compile_model(model, cfg["optimizer"], cfg["learning_rate"], soft_labels)
            state = {
                "fingerprint": fp,
                "epochs_done": 0,
                "history": [],
                "best": None,
                "best_epoch": None,
                "wait": 0,
                "stopped_early": False,
            }
        else:
            log.info("resuming from %s after epoch %d", ckpt_dir, state["epochs_done"])
            print(f"Resuming from checkpoint after epoch {state['epochs_done']}", flush=True)
            if not cfg["streaming"]:
                train_data = dataset.load_segments(train_rows, labels)

        # MLflow: one run per job; the run id lives in the checkpoint dir so a rerun resumes it.
        experiment_id = tracking.setup_experiment(experiment, uri)
        run_file = ckpt_dir / "mlflow_run.json"
        run_id = None
        if state["epochs_done"] and run_file.is_file():
            saved = tracking.read_run_info(run_file)
            if saved.get("tracking_uri") == redact(uri):
                run_id = saved["run_id"]
        on_outage = f"The epoch checkpoints in {ckpt_dir} are kept. {tracking.WHAT_TO_DO}"
        run_name = model_name if fold is None else f"{model_name}/fold-{fold}"
        with tracking.tracked_run(
            uri, experiment_id, run_id, run_name, mlflow_timeout_s, on_outage
        ) as run:
            run_id = run.info.run_id
            if fold is not None:
                mlflow.set_tags({"fold": str(fold), **_parent_tag(parent_run_path, uri)})
            tracking.write_run_info(run_file, run_id, experiment_id, uri)
            print(f"MLflow run {run_id} (experiment {experiment!r}, {redact(uri)})", flush=True)
            n_train = int(train_rows["n_segments"].sum())
            if not state["epochs_done"] or not mlflow.get_run(run_id).data.params:
                mlflow.log_params(
                    {
                        **tracking.flatten_params({k: v for k, v in cfg.items()}),
                        "model_name": model_name,
                        "dtype_policy": policy,
                        "n_classes": len(labels),
                        "labels": json.dumps(labels),
                        "n_train_segments": n_train,
                        "n_val_segments": len(val),
                        "n_params": model.count_params(),
                    }
                )
            tags = tracking.provenance_tags(data_version_path, snakemake_rule, wildcards, device)
            mlflow.set_tags({**tags, **models.weights_provenance(cfg), "model_name": model_name})
            tracking.log_epochs(run_id, state["history"])  # epochs a killed job did not log

            epochs = cfg["epochs"]
            initial_epoch = state["epochs_done"]
            if initial_epoch < epochs and not state["stopped_early"]:
                bs = cfg["batch_size"]
                augmenter = None
                if augment.is_active(cfg["augment"]):
                    band_mean = models.band_mean(model)
                    if band_mean is None:  # the same files in the same order on resume
                        band_mean, _ = dataset.band_stats_from_files(train_rows)
                    augmenter = augment.Augmenter(
                        cfg["augment"], cfg["seed"], band_mean, len(labels)
                    )
                if cfg["streaming"]:
                    train_ds, steps = dataset.streaming_train_dataset(
                        train_rows,
                        labels,
                        bs,
                        cfg["seed"],
                        initial_epoch,
                        epochs,
                        augmenter=augmenter,
                    )
                else:
                    train_ds = dataset.train_dataset(
                        train_data, bs, cfg["seed"], initial_epoch, epochs, augmenter
                    )
                    steps = dataset.steps_per_epoch(len(train_data), bs)
                callback = _epoch_callback(
                    ckpt_dir, state, run_id, cfg["early_stopping"], _kill_hook
                )
                model.fit(
                    train_ds,
                    validation_data=dataset.eval_dataset(
                        val, bs, len(labels) if soft_labels else None
                    ),
                    epochs=epochs,
                    initial_epoch=initial_epoch,
                    steps_per_epoch=steps,
                    shuffle=False,
                    callbacks=[callback],
                    verbose=2,
                )
            if state["stopped_early"]:
                print(f"Early stopping after epoch {state['epochs_done']}", flush=True)
            best = ckpt_dir / "best.weights.h5"
            if cfg["early_stopping"]["restore_best_weights"] and best.is_file():
                model.load_weights(best)
                print(f"Restored weights of best epoch {state['best_epoch']}", flush=True)

            with atomic_path(model_path) as tmp:
                model.save(tmp)
            write_history(history_path, state["history"])
            mlflow.log_artifact(str(history_path))
            description = model_info.describe(train_rows, labels)
            features_path = features_path or Path(model_path).with_name(model_info.FILE_NAME)
            model_info.write(features_path, description)
            mlflow.log_artifact(str(features_path))
            mlflow.log_metrics(
                {
                    "best_epoch": float(state["best_epoch"] or 0),
                    "epochs_trained": state["epochs_done"],
                }
            )
            tracking.log_keras_model(model, example=val.x[:1, ..., None], metadata=description)
            info = tracking.write_run_info(run_info_path, run_id, experiment_id, uri)
        keras.backend.clear_session()
        if not cfg["keep_checkpoints"]:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    return info
