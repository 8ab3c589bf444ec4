"""The large negative number that stands for "never": masked attention keys, banned words, dead beams.

-1e9: exp() of it underflows to exactly 0 in float32 and bfloat16, so a masked key gets zero weight without
the NaNs -inf gives a fully masked row, and sums of scores stay finite. It is read when a graph is traced, so
`replaced` can trace one function with another value (full int8 export: quantization calibrated on -1e9
erases every real value of the tensors it flows into) without touching other threads' tracing.
"""

import contextlib
import threading

LARGE_NEGATIVE = -1e9

_replacement = threading.local()


def large_negative():
    """`LARGE_NEGATIVE`, or the value `replaced` sets for this thread."""
    return getattr(_replacement, "value", LARGE_NEGATIVE)


@contextlib.contextmanager
def replaced(value):
    """While active, `large_negative()` gives `value` (a float) in this thread."""
    saved = getattr(_replacement, "value", None)
    _replacement.value = float(value)
    try:
        yield
    finally:
        if saved is None:
            del _replacement.value
        else:
            _replacement.value = saved
