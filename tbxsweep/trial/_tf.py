"""TensorFlow and Keras settings of a worker process, applied before any model is built."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

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
        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
        pass  # already initialised by an earlier import in this process
    else:
        _warn_without_gpu(gpus)
    _tf_ready = True


def _warn_without_gpu(gpus: list[Any]) -> None:
    """One line when this worker was given a GPU that TensorFlow cannot use.

    TensorFlow's own notice ("Could not find cuda drivers...") is filtered from the
    worker's start-up (tbxsweep.worker), and without it the trials would move to the CPU
    in silence.
    """
    given = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if gpus or not given or given.startswith("-"):
        return
    print(
        f"tbxsweep: worker {os.getpid()} was given GPU {given} but TensorFlow finds no GPU: "
        "its trials run on the CPU (a GPU needs pip install 'tensorflow[and-cuda]'; "
        "TBXSWEEP_TF_LOGS=1 shows TensorFlow's own start-up messages)",
        file=sys.stderr,
        flush=True,
    )


def configure(task: TaskSpec) -> None:
    """`setup_tf`, then the task's precision policy (set on every call: a worker may run
    trials of several sweeps, and the policy is global to the process)."""
    setup_tf()
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16" if task.mixed_precision else "float32")
