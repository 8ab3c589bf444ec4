"""Mapping the M2 authors' released checkpoint onto tfcaption's Captioner.

The released `state_dict` names (PyTorch, Linear weights stored (out, in))
map one to one onto the Keras weights (kernels stored (in, out)). Every key
and every weight must be used exactly once: a checkpoint from another model,
a truncated export or a vocabulary of the wrong size fails with one line
naming the first mismatch, instead of a silently half-loaded model.
"""

import re

import numpy as np

from tfcaption.models.captioner import Captioner
from tfcaption.models.config import CaptionerConfig

# Buffers of the authors' stateful decoding (empty at save time), not weights.
RUNTIME_BUFFERS = re.compile(r"^decoder\.(running_mask_self_attention|running_seq|layers\.\d+\.self_att\.running_(keys|values))$")


class ConversionError(ValueError):
    """The checkpoint does not fit the model; the message names the first problem."""


def _count_layers(state_dict, prefix):
    indices = {int(m.group(1)) for k in state_dict if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(indices) + 1 if indices else 0


def _shape(state_dict, key):
    if key not in state_dict:
        raise ConversionError(f"checkpoint is missing {key!r}: not a Meshed-Memory Transformer state_dict")
    return state_dict[key].shape


def infer_config(state_dict, num_heads=8, dropout=0.1):
    """A `m2_reference` CaptionerConfig sized from the checkpoint's shapes.

    The number of heads is not recorded in the shapes (heads * d_k = d), so it
    is an argument: 8 for the released COCO model.
    """
    hidden_dim, feature_dim = _shape(state_dict, "encoder.fc.weight")
    if hidden_dim % num_heads:
        raise ConversionError(f"d_model {hidden_dim} is not divisible by num_heads {num_heads}")
    vocab_size = _shape(state_dict, "decoder.word_emb.weight")[0]
    positions = _shape(state_dict, "decoder.pos_emb.weight")[0]
    return CaptionerConfig.from_preset(
        "m2_reference",
        vocab_size=int(vocab_size),
        feature_dim=int(feature_dim),
        hidden_dim=int(hidden_dim),
        num_heads=num_heads,
        key_dim=int(hidden_dim) // num_heads,
        intermediate_dim=int(_shape(state_dict, "encoder.layers.0.pwff.fc1.weight")[0]),
        num_encoder_layers=_count_layers(state_dict, "encoder.layers."),
        num_decoder_layers=_count_layers(state_dict, "decoder.layers."),
        memory_slots=int(_shape(state_dict, "encoder.layers.0.mhatt.attention.m_k")[1]),
        max_length=int(positions) - 1,
        dropout=dropout,
    )


def _linear(keras_prefix, torch_prefix, bias=True):
    pairs = [(f"{keras_prefix}/kernel", f"{torch_prefix}.weight", True)]
    if bias:
        pairs.append((f"{keras_prefix}/bias", f"{torch_prefix}.bias", False))
    return pairs


def _norm(keras_prefix, torch_prefix):
    return [(f"{keras_prefix}/gamma", f"{torch_prefix}.weight", False), (f"{keras_prefix}/beta", f"{torch_prefix}.bias", False)]


def _attention(keras_prefix, torch_prefix):
    names = {"query": "fc_q", "key": "fc_k", "value": "fc_v", "output": "fc_o"}
    return [p for k, t in names.items() for p in _linear(f"{keras_prefix}/{k}", f"{torch_prefix}.{t}")]


def _feed_forward(keras_prefix, torch_prefix):
    return (_linear(f"{keras_prefix}/inner", f"{torch_prefix}.fc1") + _linear(f"{keras_prefix}/output", f"{torch_prefix}.fc2")
            + _norm(f"{keras_prefix}/layer_norm", f"{torch_prefix}.layer_norm"))


def weight_mapping(config):
    """(keras weight path, state_dict key, transpose) for every weight of an M2 region model."""
    pairs = _linear("region_encoder/projection", "encoder.fc") + _norm("region_encoder/layer_norm", "encoder.layer_norm")
    for i in range(config.num_encoder_layers):
        k, t = f"encoder/layer_{i}", f"encoder.layers.{i}"
        pairs += [(f"{k}/attention/memory_keys", f"{t}.mhatt.attention.m_k", False),
                  (f"{k}/attention/memory_values", f"{t}.mhatt.attention.m_v", False)]
        pairs += _attention(f"{k}/attention", f"{t}.mhatt.attention") + _norm(f"{k}/attention_norm", f"{t}.mhatt.layer_norm")
        pairs += _feed_forward(f"{k}/feed_forward", f"{t}.pwff")
    pairs += [("decoder/word_embedding/embeddings", "decoder.word_emb.weight", False),
              ("decoder/position_table", "decoder.pos_emb.weight", False)]
    for i in range(config.num_decoder_layers):
        k, t = f"decoder/layer_{i}", f"decoder.layers.{i}"
        pairs += _attention(f"{k}/self_attention", f"{t}.self_att.attention") + _norm(f"{k}/self_norm", f"{t}.self_att.layer_norm")
        pairs += _attention(f"{k}/cross_attention/attention", f"{t}.enc_att.attention")
        pairs += _norm(f"{k}/cross_attention/layer_norm", f"{t}.enc_att.layer_norm")
        for level in range(config.num_encoder_layers):
            pairs += _linear(f"{k}/cross_attention/gate_{level}", f"{t}.fc_alpha{level + 1}")
        pairs += _feed_forward(f"{k}/feed_forward", f"{t}.pwff")
    pairs += _linear("decoder/logits", "decoder.fc", bias=config.output_bias)
    return pairs


def load_m2_weights(model, state_dict):
    """Assigns a released state_dict to a `Captioner`, checking every key and shape."""
    weights = {w.path: w for w in model.weights}
    used_keys, used_weights = set(), set()
    for path, key, transpose in weight_mapping(model.config):
        if key not in state_dict:
            raise ConversionError(f"checkpoint is missing {key!r} (needed for {path})")
        if path not in weights:
            raise ConversionError(f"model has no weight {path!r} for checkpoint key {key!r}")
        value = np.asarray(state_dict[key])
        if transpose:
            value = value.T
        expected = tuple(weights[path].shape)
        if value.shape != expected:
            raise ConversionError(
                f"{key!r} has shape {tuple(state_dict[key].shape)}, but {path} needs "
                f"{expected[::-1] if transpose else expected}"
            )
        weights[path].assign(value.astype(weights[path].dtype))
        used_keys.add(key)
        used_weights.add(path)
    unused = [k for k in state_dict if k not in used_keys and not RUNTIME_BUFFERS.match(k)]
    if unused:
        raise ConversionError(f"checkpoint key {unused[0]!r} matches no model weight ({len(unused)} unused keys)")
    missing = [p for p in weights if p not in used_weights]
    if missing:
        raise ConversionError(f"model weight {missing[0]!r} has no checkpoint key")
    return model


def convert_m2(state_dict, vocab_tokens, num_heads=8):
    """Builds a reference-compatible `Captioner` from a released state_dict and its vocabulary."""
    config = infer_config(state_dict, num_heads=num_heads)
    if len(vocab_tokens) != config.vocab_size:
        raise ConversionError(
            f"vocabulary has {len(vocab_tokens)} entries but the checkpoint's word embedding has {config.vocab_size}"
        )
    model = Captioner(config)
    return load_m2_weights(model, state_dict)
