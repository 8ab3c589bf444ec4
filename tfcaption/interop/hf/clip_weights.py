"""CLIP vision towers from Hub checkpoints: config.json to `ClipVisionTower` arguments, and the vision
weights of a `CLIPModel` or `CLIPVisionModel` state dict (name -> numpy array) into the tower.

A full `CLIPModel` file also holds the text tower, both projections and the logit scale: only
`vision_model.*` is read. transformers v5 saves a `CLIPVisionModel` without that prefix, v4 with it: both
are read. TensorFlow-free apart from the assignment into the (Keras) tower.
"""

import os
from typing import Mapping

import numpy as np

__all__ = ["ClipWeightsError", "clip_vision_arguments", "clip_vision_state", "load_clip_vision_weights",
           "clip_checkpoint_dir", "read_clip_checkpoint"]

VISION_PREFIX = "vision_model."
# transformers' CLIPVisionConfig defaults: config.json may leave out a field equal to them.
VISION_DEFAULTS = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "num_channels": 3, "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
}


class ClipWeightsError(ValueError):
    """A config or state dict that is not a CLIP vision tower's; the message is one line naming what."""


def _vision_config(config):
    model_type = config.get("model_type")
    if model_type == "clip":
        return config.get("vision_config") or {}
    if model_type == "clip_vision_model":
        return config
    raise ClipWeightsError(f"config.json: model_type {model_type!r} is not a CLIP model "
                           "(expected 'clip' or 'clip_vision_model').")


def _side(value, what):
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ClipWeightsError(f"config.json: vision {what} {list(value)} is not square.")
        value = value[0]
    return int(value)


def clip_vision_arguments(config: Mapping, output_layer=-1) -> dict:
    """`ClipVisionTower` keyword arguments from config.json's content (a `CLIPModel`'s `vision_config`, or
    a `CLIPVisionModel`'s own fields); fields it leaves out take transformers' defaults."""
    vision = {**VISION_DEFAULTS, **_vision_config(config)}
    return {
        "image_size": _side(vision["image_size"], "image_size"),
        "patch_size": _side(vision["patch_size"], "patch_size"),
        "hidden_dim": int(vision["hidden_size"]),
        "num_heads": int(vision["num_attention_heads"]),
        "num_layers": int(vision["num_hidden_layers"]),
        "intermediate_dim": int(vision["intermediate_size"]),
        "hidden_act": vision["hidden_act"],
        "layer_norm_epsilon": float(vision["layer_norm_eps"]),
        "num_channels": int(vision["num_channels"]),
        "output_layer": output_layer,
    }


def clip_vision_state(state: Mapping[str, np.ndarray]) -> dict:
    """The vision tower's tensors with the `vision_model.` prefix removed, as float32 arrays."""
    if any(name.startswith(VISION_PREFIX) for name in state):
        names = {name[len(VISION_PREFIX):]: name for name in state if name.startswith(VISION_PREFIX)}
    else:
        names = {name: name for name in state if name.split(".")[0] in ("embeddings", "encoder", "pre_layrnorm",
                                                                          "post_layernorm")}
    if not names:
        raise ClipWeightsError("the weights file holds no CLIP vision tensors (no 'vision_model.*' names).")
    return {short: np.asarray(state[name], np.float32) for short, name in names.items()}


def _tower_weights(tower, vision):
    """(keras variable, array in its layout) for every weight of `tower`, from the prefix-free state."""
    def get(name):
        if name not in vision:
            raise ClipWeightsError(f"the weights file has no tensor 'vision_model.{name}'.")
        return vision[name]

    def norm(layer, name):
        return [(layer.gamma, get(f"{name}.weight")), (layer.beta, get(f"{name}.bias"))]

    heads, head_dim, dim = tower.num_heads, tower.hidden_dim // tower.num_heads, tower.hidden_dim
    pairs = [
        # torch's (out, in, kh, kw) conv kernel to Keras's (kh, kw, in, out)
        (tower.patch_embedding.kernel, get("embeddings.patch_embedding.weight").transpose(2, 3, 1, 0)),
        (tower.class_embedding, get("embeddings.class_embedding")),
        (tower.position_embedding, get("embeddings.position_embedding.weight")),
        *norm(tower.pre_layrnorm, "pre_layrnorm"),
        *norm(tower.post_layernorm, "post_layernorm"),
    ]
    for i, layer in enumerate(tower.encoder_layers):
        p, attention = f"encoder.layers.{i}", layer.self_attn
        for dense, name in ((attention.query_dense, "q_proj"), (attention.key_dense, "k_proj"),
                            (attention.value_dense, "v_proj")):
            weight, bias = get(f"{p}.self_attn.{name}.weight"), get(f"{p}.self_attn.{name}.bias")
            pairs += [(dense.kernel, weight.T.reshape(dim, heads, head_dim)), (dense.bias, bias.reshape(heads, head_dim))]
        out = attention.output_dense
        pairs += [(out.kernel, get(f"{p}.self_attn.out_proj.weight").T.reshape(heads, head_dim, dim)),
                  (out.bias, get(f"{p}.self_attn.out_proj.bias"))]
        pairs += norm(layer.layer_norm1, f"{p}.layer_norm1") + norm(layer.layer_norm2, f"{p}.layer_norm2")
        for dense, name in ((layer.fc1, "fc1"), (layer.fc2, "fc2")):
            pairs += [(dense.kernel, get(f"{p}.mlp.{name}.weight").T), (dense.bias, get(f"{p}.mlp.{name}.bias"))]
    if f"encoder.layers.{tower.num_layers}.layer_norm1.weight" in vision:
        raise ClipWeightsError(f"the weights file has more than the config's {tower.num_layers} vision layers.")
    return pairs


def load_clip_vision_weights(tower, state: Mapping[str, np.ndarray]):
    """Assign a `CLIPModel` / `CLIPVisionModel` state dict's vision tensors to a `ClipVisionTower` (built
    here if it is not yet); a missing tensor or a shape unlike the config's is one line naming it."""
    if not tower.built:
        tower.build((None, tower.image_size, tower.image_size, tower.num_channels))
    pairs = _tower_weights(tower, clip_vision_state(state))
    for variable, array in pairs:
        if tuple(variable.shape) != array.shape:
            raise ClipWeightsError(f"vision tensor for {variable.path} has shape {array.shape}, the config.json "
                                   f"sizes give {tuple(variable.shape)}.")
    for variable, array in pairs:
        variable.assign(array)
    return tower


def clip_checkpoint_dir(weights):
    """The local checkpoint directory `weights` names: a directory in the Hub's layout, or an ``hf://`` source
    fetched into huggingface_hub's cache (`tfcaption.interop.hf.sources.resolve_source`); a missing one is a
    one-line `FileNotFoundError` saying what to put where."""
    from tfcaption.interop.hf.errors import HubFilesNotFoundError
    from tfcaption.interop.hf.hub_checkpoint import HubCheckpoint
    from tfcaption.interop.hf.sources import resolve_source
    from tfcaption.layers.image_encoder import CheckpointNotFoundError

    try:
        path = resolve_source(weights if weights.startswith("hf://") else os.path.expanduser(weights))
        HubCheckpoint(path).weights_file  # its config.json and a weights file, or one line naming them
    except HubFilesNotFoundError as error:
        raise CheckpointNotFoundError(f"model.image_encoder.weights {weights}: {error}") from None
    return str(path)


def read_clip_checkpoint(directory, weights=True):
    """`(config.json's dict, {tensor name: float32 array} or None)` of a checkpoint directory, read by
    `HubCheckpoint` (safetensors, or `pytorch_model.bin` through the restricted unpickler)."""
    from tfcaption.interop.hf.hub_checkpoint import HubCheckpoint

    checkpoint = HubCheckpoint(directory)
    return checkpoint.config, checkpoint.tensors() if weights else None
