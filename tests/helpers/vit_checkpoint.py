"""A random ViT checkpoint in Google's `.npz` layout (the arrays `tfcaption.models.vit.read_npz` reads)."""

import math

import numpy as np

BLOCK = "Transformer/encoderblock_{}"
ATTENTION = "MultiHeadDotProductAttention_1"


def write_checkpoint(path, **sizes):
    """Writes `random_checkpoint(**sizes)` to `path` (an .npz) and returns the path as a string."""
    np.savez(path, **random_checkpoint(**sizes))
    return str(path)


def random_checkpoint(seed=0, patch=8, hidden=32, heads=4, layers=2, mlp=64, grid=4):
    """Random arrays in Google's ViT `.npz` layout, scaled so that every sublayer matters."""
    rng = np.random.default_rng(seed)
    head_dim = hidden // heads

    def normal(shape, scale):
        return (rng.standard_normal(shape) * scale).astype("float32")

    arrays = {
        "embedding/kernel": normal((patch, patch, 3, hidden), 1 / math.sqrt(patch * patch * 3)),
        "embedding/bias": normal((hidden,), 0.1), "cls": normal((1, 1, hidden), 1.0),
        "Transformer/posembed_input/pos_embedding": normal((1, 1 + grid * grid, hidden), 0.5),
        "Transformer/encoder_norm/scale": 1 + normal((hidden,), 0.1),
        "Transformer/encoder_norm/bias": normal((hidden,), 0.1),
        "pre_logits/kernel": normal((hidden, hidden), 0.1), "pre_logits/bias": normal((hidden,), 0.1),
        "head/kernel": normal((hidden, 10), 0.1), "head/bias": normal((10,), 0.1),
    }
    for i in range(layers):
        block = BLOCK.format(i)
        for norm in ("LayerNorm_0", "LayerNorm_2"):
            arrays[f"{block}/{norm}/scale"] = 1 + normal((hidden,), 0.1)
            arrays[f"{block}/{norm}/bias"] = normal((hidden,), 0.1)
        for name in ("query", "key", "value"):
            arrays[f"{block}/{ATTENTION}/{name}/kernel"] = normal((hidden, heads, head_dim), 1 / math.sqrt(hidden))
            arrays[f"{block}/{ATTENTION}/{name}/bias"] = normal((heads, head_dim), 0.1)
        arrays[f"{block}/{ATTENTION}/out/kernel"] = normal((heads, head_dim, hidden), 1 / math.sqrt(hidden))
        arrays[f"{block}/{ATTENTION}/out/bias"] = normal((hidden,), 0.1)
        arrays[f"{block}/MlpBlock_3/Dense_0/kernel"] = normal((hidden, mlp), 1 / math.sqrt(hidden))
        arrays[f"{block}/MlpBlock_3/Dense_0/bias"] = normal((mlp,), 0.1)
        arrays[f"{block}/MlpBlock_3/Dense_1/kernel"] = normal((mlp, hidden), 1 / math.sqrt(mlp))
        arrays[f"{block}/MlpBlock_3/Dense_1/bias"] = normal((hidden,), 0.1)
    return arrays
