"""The activations Hugging Face configs name in `hidden_act`, as keras.ops functions.

A config names its activation by string (transformers' `ACT2FN`); the layers that load such a config take
the same string, so a checkpoint trained with the exact GELU is never run with the tanh form.
"""

from keras import ops

HF_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "quick_gelu", "relu")


def check_hf_activation(name):
    """`name` if it is an activation this module computes, else a one-line ValueError naming it."""
    if name not in HF_ACTIVATIONS:
        raise ValueError(f"hidden_act {name!r} is not supported; expected one of {', '.join(HF_ACTIVATIONS)}.")
    return name


def hf_activation(name, x):
    """Applies the activation `name` (transformers' `ACT2FN` key) to `x`.

    Example:
    >>> float(hf_activation("quick_gelu", ops.convert_to_tensor(0.0)))
    0.0
    """
    check_hf_activation(name)
    if name == "gelu":  # the exact erf form
        return ops.gelu(x, approximate=False)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return ops.gelu(x, approximate=True)
    if name == "quick_gelu":
        return x * ops.sigmoid(1.702 * x)
    return ops.relu(x)
