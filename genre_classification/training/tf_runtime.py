"""TensorFlow's runtime settings shared by the training jobs of every model kind."""

from __future__ import annotations


def set_threads(threads: int | None) -> None:
    """TensorFlow's intra- and inter-op thread pools of ``threads`` (the job's cores)."""
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
        except RuntimeError:  # TF runtime already initialised (e.g. several jobs in one process)
            pass
