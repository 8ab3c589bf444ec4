"""Whether the code being traced will be compiled by XLA, for layers whose fastest ops differ under XLA, and
`without_xla_ops`: tracing for converters that read core TensorFlow ops only (tf2onnx)."""

import contextlib
import threading

import tensorflow as tf
from keras import ops

try:  # TensorFlow's own test, as tf.function(jit_compile=True) sets it; not a public API, hence the guard
    from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext as _in_xla_context
except ImportError:  # pragma: no cover - a TensorFlow without it: every layer takes its portable path
    _in_xla_context = None


def compiling_for_xla():
    """True while tracing inside `tf.function(jit_compile=True)` (or a function it calls); False eagerly,
    in a plain `tf.function` and when TensorFlow no longer offers the test (the portable choice).

    Example:
    >>> compiling_for_xla()
    False
    >>> bool(tf.function(lambda: tf.constant(compiling_for_xla()), jit_compile=True)())
    True
    """
    if _in_xla_context is None or tf.executing_eagerly():
        return False
    return bool(_in_xla_context(tf.compat.v1.get_default_graph()))


_STATE = threading.local()


@contextlib.contextmanager
def without_xla_ops():
    """Inside it, layers trace without `Xla*` ops (Keras' `slice_update` is `XlaDynamicUpdateSlice` on
    TensorFlow), which converters such as tf2onnx cannot express; the results are the same."""
    previous = getattr(_STATE, "portable", False)
    _STATE.portable = True
    try:
        yield
    finally:
        _STATE.portable = previous


def write_position(cache, position, value):
    """`cache` (B, L, ...) with row `position` of axis 1 replaced by `value` (B, 1, ...), cast to its dtype.

    Keras' `slice_update` (one dynamic-update-slice) except inside `without_xla_ops`, where a select on
    `arange(L) == position` gives the same tensor with core ops.

    Example:
    >>> cache = tf.zeros([1, 3, 2])
    >>> write_position(cache, 1, tf.ones([1, 1, 2])).numpy()[0, :, 0].tolist()
    [0.0, 1.0, 0.0]
    >>> with without_xla_ops():
    ...     write_position(cache, 2, tf.ones([1, 1, 2])).numpy()[0, :, 0].tolist()
    [0.0, 0.0, 1.0]
    """
    value = ops.cast(value, cache.dtype)
    if not getattr(_STATE, "portable", False):
        return ops.slice_update(cache, (0, position) + (0,) * (len(cache.shape) - 2), value)
    rows = ops.arange(ops.shape(cache)[1]) == ops.cast(position, "int32")
    rows = ops.reshape(rows, (1, -1) + (1,) * (len(cache.shape) - 2))
    return ops.where(rows, value, cache)
