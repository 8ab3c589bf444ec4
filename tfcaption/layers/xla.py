"""Whether the code being traced will be compiled by XLA, for layers whose fastest ops differ under XLA."""

import tensorflow as tf

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
