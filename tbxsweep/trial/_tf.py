"""TensorFlow and Keras settings of a worker process, applied before any model is built."""

from __future__ import annotations

import logging
import os

from tbxsweep.spec import TaskSpec

_tf_ready = False


def setup_tf() -> None:
    """Size TensorFlow's thread pools once per process, before its first op."""
    global _tf_ready
    if _tf_ready:
        return
    import tensorflow as tf

    # Every trial traces its own model; TF's "retracing" warnings about that are noise here.
    tf.get_logger().setLevel(logging.ERROR)
    intra = int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0") or 0)
    inter = int(os.environ.get("TF_NUM_INTEROP_THREADS", "0") or 0)
    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
        pass  # already initialised by an earlier import in this process
    _tf_ready = True


def configure(task: TaskSpec) -> None:
    """`setup_tf`, then the task's precision policy (set on every call: a worker may run
    trials of several sweeps, and the policy is global to the process)."""
    setup_tf()
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16" if task.mixed_precision else "float32")
