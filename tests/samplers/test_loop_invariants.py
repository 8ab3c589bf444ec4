"""`loop_invariants`: outside `carried()` the samplers' loop is `tf.while_loop`'s graph; inside, a registered
tensor travels as a loop variable the body returns as maximum(t, t), the body reads that copy, and the values
are the same; `int8_tracing` sets finite masks only while active."""

import numpy as np
import tensorflow as tf

from tfcaption.samplers import loop_invariants


def _loop(invariant):
    """sum over 3 steps of step * invariant, reading the invariant through `current`."""
    loop_invariants.carry(invariant)

    def body(step, total):
        return step + 1, total + tf.cast(step, tf.float32) * loop_invariants.current(invariant)

    return loop_invariants.while_loop(lambda step, total: step < 3, body, (tf.constant(0), tf.zeros([2])),
                                      maximum_iterations=3)[1]


def _body_maximums(loop):
    """The loop body's Maximum ops whose two inputs are one tensor."""
    body = loop.graph._get_function(loop.get_attr("body").name).graph
    return [op for op in body.get_operations() if op.type == "Maximum" and op.inputs[0] is op.inputs[1]]


def _while_ops(carry):
    function = tf.function(lambda x: _loop(x * 2.0), input_signature=[tf.TensorSpec([2], tf.float32)])
    if carry:
        with loop_invariants.carried():
            graph = function.get_concrete_function().graph
    else:
        graph = function.get_concrete_function().graph
    (loop,) = [op for op in graph.get_operations() if op.type in ("While", "StatelessWhile")]
    return loop, function


def test_outside_carried_the_loop_captures_the_invariant_and_inside_carries_it_as_maximum_of_itself():
    plain, plain_function = _while_ops(carry=False)
    carried, carried_function = _while_ops(carry=True)
    assert len(_body_maximums(carried)) == 1 and not _body_maximums(plain)
    # The loop variable replaces the capture: a body still reading the outer tensor would add an input.
    assert len(carried.inputs) == len(plain.inputs)
    x = tf.constant([1.0, -2.0])
    np.testing.assert_allclose(carried_function(x).numpy(), [6.0, -12.0])  # (0 + 1 + 2) * 2x
    np.testing.assert_allclose(plain_function(x).numpy(), [6.0, -12.0])


def test_int8_tracing_sets_a_finite_large_negative_in_its_own_thread_only_while_active():
    import threading

    from tfcaption.export.int8 import INT8_MASK_VALUE, int8_tracing
    from tfcaption.layers.large_negative import LARGE_NEGATIVE, large_negative

    seen_elsewhere = []
    with int8_tracing():
        assert large_negative() == INT8_MASK_VALUE
        assert loop_invariants.carry(tf.constant([1.0])) is not None
        other = threading.Thread(target=lambda: seen_elsewhere.append(large_negative()))
        other.start()
        other.join()
    assert seen_elsewhere == [LARGE_NEGATIVE] and large_negative() == LARGE_NEGATIVE == -1e9


def test_both_attentions_mask_with_the_large_negative_in_force():
    """M2's masked softmax and BLIP's BERT attention give a masked key weight exp(value) relative to an
    allowed key of the same score: 0 at -1e9, e**-5 / (1 + e**-5) under `replaced(-5)`."""
    from tfcaption.layers.bert_text_decoder import _attend
    from tfcaption.layers.large_negative import replaced
    from tfcaption.layers.memory_attention import masked_softmax

    scores, mask = np.zeros([1, 2], np.float32), np.array([[True, False]])
    query, keys = np.zeros([1, 1, 1, 4], np.float32), np.zeros([1, 2, 1, 4], np.float32)
    values = np.arange(8, dtype=np.float32).reshape([1, 2, 1, 4])
    masked = np.exp(-5.0) / (1 + np.exp(-5.0))
    np.testing.assert_allclose(np.asarray(masked_softmax(scores, mask)), [[1.0, 0.0]])
    np.testing.assert_allclose(np.asarray(_attend(query, keys, values, mask[None])[1])[0, 0, 0], [1.0, 0.0])
    with replaced(-5.0):
        np.testing.assert_allclose(np.asarray(masked_softmax(scores, mask)), [[1 - masked, masked]], rtol=1e-6)
        np.testing.assert_allclose(np.asarray(_attend(query, keys, values, mask[None])[1])[0, 0, 0],
                                   [1 - masked, masked], rtol=1e-6)
