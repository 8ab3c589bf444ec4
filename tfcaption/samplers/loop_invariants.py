"""Loop invariants carried as loop variables, for converters that cannot take them captured.

TensorFlow 2.21's LiteRT calibrator (full int8 conversion) dies logging a WHILE op whose body returns a float
loop variable unchanged, and a tensor the loop body captures (the encoder's projected keys and values) becomes
such a pass-through in the converted file (tensorflow/tensorflow#75140). Inside `carried()`, `carry` registers
such tensors, the samplers' loops (`while_loop`) thread them as extra loop variables that the body returns as
`tf.maximum(t, t)` (an identity the converter does not fold away), and `current` gives the loop body its copy.
Outside `carried()` every function here is the identity or `tf.while_loop` itself: the graph is unchanged.
"""

import contextlib
import threading

import tensorflow as tf

_state = threading.local()


def _carried():
    return getattr(_state, "carried", None)


@contextlib.contextmanager
def carried():
    """While active, `carry` registers tensors and the samplers' loops carry them (one export's tracing)."""
    saved = (_carried(), getattr(_state, "copies", {}))
    _state.carried, _state.copies = [], {}
    try:
        yield
    finally:
        _state.carried, _state.copies = saved


def carry(value):
    """Registers the float tensors of `value` (a nest; None leaves allowed) as loop invariants inside `carried()`;
    returns `value`."""
    registered = _carried()
    if registered is not None:
        for tensor in tf.nest.flatten(value):
            if tensor is not None and tensor.dtype.is_floating and all(tensor is not t for t in registered):
                registered.append(tensor)
    return value


def current(value):
    """`value` with each registered tensor replaced by the running loop's copy (itself outside a loop)."""
    copies = getattr(_state, "copies", {})
    if not copies:
        return value
    return tf.nest.map_structure(lambda t: t if t is None else copies.get(t.ref(), t), value)


def while_loop(cond, body, loop_vars, **kwargs):
    """`tf.while_loop(cond, body, loop_vars, **kwargs)` (a tuple `loop_vars`), carrying the registered
    invariants as extra loop variables inside `carried()`."""
    registered = _carried()
    if not registered:
        return tf.while_loop(cond, body, loop_vars, **kwargs)
    count = len(loop_vars)

    def carrying_body(*args):
        saved = _state.copies
        _state.copies = {t.ref(): copy for t, copy in zip(registered, args[count:])}
        try:
            outputs = body(*args[:count])
        finally:
            _state.copies = saved
        return (*outputs, *[tf.maximum(copy, copy) for copy in args[count:]])

    outer = [current(t) for t in registered]  # a loop inside a carrying loop starts from that loop's copies
    results = tf.while_loop(lambda *args: cond(*args[:count]), carrying_body, (*loop_vars, *outer), **kwargs)
    return tuple(results[:count])
