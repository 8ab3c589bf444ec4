"""Choosing a tf.distribute strategy by name."""

import tensorflow as tf


def make_strategy(name="auto"):
    """Returns the strategy a run asked for.

    "auto": MirroredStrategy over all GPUs when there are several, else the
    default (single-device) strategy. "mirrored": MirroredStrategy over all
    local devices (GPUs, or the logical CPUs when there are none).
    "multiworker": MultiWorkerMirroredStrategy configured from TF_CONFIG (the
    training loop is a custom `strategy.run` loop, which works there; Keras 3's
    `fit` does not). "tpu": TPUStrategy from the TPU cluster resolver.
    """
    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown strategy {name!r}: use auto, default, mirrored, multiworker or tpu.")


def is_single_device(strategy):
    return strategy.num_replicas_in_sync == 1 and not isinstance(
        strategy, (tf.distribute.MultiWorkerMirroredStrategy, tf.distribute.TPUStrategy)
    )


def worker_task(strategy):
    """`(task_type, task_id)` of this process in a multi-worker cluster; `(None, 0)` elsewhere."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return None, 0
    return resolver.task_type, resolver.task_id or 0


def is_chief(strategy):
    """Whether this process writes the run's files: the only process, or the multi-worker cluster's chief
    (the "chief" task, or worker 0 in a cluster without one, as TF_CONFIG's convention is)."""
    task_type, task_id = worker_task(strategy)
    if task_type in (None, "chief"):
        return True
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and "chief" not in cluster
