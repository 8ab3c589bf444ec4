"""BLIP captioning weights from a transformers checkpoint: config.json + {name: numpy array} -> tfcaption layers.

`BlipForConditionalGeneration` checkpoints hold `vision_model.*` (the ViT) and `text_decoder.*` (the BERT
decoder and its LM head). Every size comes from config.json (keys it leaves out take transformers'
`BlipVisionConfig` / `BlipTextConfig` defaults, as transformers reads them); float16 files are cast to
float32; the tied LM-head decoder absent from the file is the word embedding (the layer ties it), with
`cls.predictions.bias` as its bias. A tensor the config needs but the file lacks is a `MissingTensorError`
naming it. One table of names per part serves both directions: `blip_checkpoint_tensors` writes a tower and
decoder back under the checkpoint's names (benchmarks/blip_latency.py writes its random BLIP-base that way).
"""

import numpy as np

from tfcaption.layers.bert_text_decoder import BertTextDecoder
from tfcaption.layers.blip_vision_tower import BlipVisionTower

# transformers' defaults for keys a config.json leaves out (configuration_blip.py).
VISION_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                   "image_size": 384, "patch_size": 16, "hidden_act": "gelu", "layer_norm_eps": 1e-5}
TEXT_DEFAULTS = {"vocab_size": 30524, "hidden_size": 768, "encoder_hidden_size": 768, "intermediate_size": 3072,
                 "num_hidden_layers": 12, "num_attention_heads": 8, "max_position_embeddings": 512,
                 "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": 0}


class MissingTensorError(ValueError):
    """A tensor the config implies is not in the checkpoint."""


def _sub_config(config, key, defaults):
    sub = config.get(key, config) if isinstance(config, dict) else None
    if not isinstance(sub, dict):
        raise ValueError(f"config must be a config.json dict, got {type(config).__name__}.")
    return {**defaults, **sub}


def blip_vision_arguments(config):
    """`BlipVisionTower` constructor arguments from a BLIP config.json dict (or its `vision_config`)."""
    vision = _sub_config(config, "vision_config", VISION_DEFAULTS)
    for key in ("image_size", "patch_size"):
        if not isinstance(vision[key], int):
            raise ValueError(f"vision_config.{key} must be one int (square images), got {vision[key]!r}.")
    return {"image_size": vision["image_size"], "patch_size": vision["patch_size"],
            "hidden_dim": vision["hidden_size"], "num_layers": vision["num_hidden_layers"],
            "num_heads": vision["num_attention_heads"], "intermediate_dim": vision["intermediate_size"],
            "layer_norm_epsilon": vision["layer_norm_eps"], "hidden_act": vision["hidden_act"]}


def bert_text_decoder_arguments(config):
    """`BertTextDecoder` constructor arguments from a BLIP config.json dict (or its `text_config`).

    The cross-attention's input width is the vision tower's hidden size when the whole config is given
    (transformers sets `encoder_hidden_size` from it), else the text config's `encoder_hidden_size`.
    """
    text = _sub_config(config, "text_config", TEXT_DEFAULTS)
    if "text_config" in config:
        text["encoder_hidden_size"] = _sub_config(config, "vision_config", VISION_DEFAULTS)["hidden_size"]
    return {"vocab_size": text["vocab_size"], "num_layers": text["num_hidden_layers"],
            "hidden_dim": text["hidden_size"], "num_heads": text["num_attention_heads"],
            "intermediate_dim": text["intermediate_size"], "encoder_dim": text["encoder_hidden_size"],
            "max_length": text["max_position_embeddings"], "pad_id": text["pad_token_id"],
            "layer_norm_epsilon": text["layer_norm_eps"], "hidden_act": text["hidden_act"]}


# How a checkpoint tensor maps onto a Keras variable: as is, a torch Linear's (out, in) weight transposed, or a
# torch Conv2d's (out, in, kh, kw) kernel as Keras's (kh, kw, in, out).
_LAYOUTS = {
    "plain": (lambda value: value, lambda value: value),
    "linear": (lambda value: value.T, lambda value: value.T),
    "conv": (lambda value: value.transpose(2, 3, 1, 0), lambda value: value.transpose(3, 2, 0, 1)),
}


def _dense(layer, name):
    return [(name + ".weight", layer.kernel, "linear"), (name + ".bias", layer.bias, "plain")]


def _norm(layer, name):
    return [(name + ".weight", layer.gamma, "plain"), (name + ".bias", layer.beta, "plain")]


def _vision_tensors(tower):
    """(checkpoint name without prefix, variable, layout) for every weight of a built `BlipVisionTower`."""
    names = [("embeddings.class_embedding", tower.class_embedding, "plain"),
             ("embeddings.position_embedding", tower.position_embedding, "plain"),
             ("embeddings.patch_embedding.weight", tower.patch_embedding.kernel, "conv"),
             ("embeddings.patch_embedding.bias", tower.patch_embedding.bias, "plain")]
    for i, block in enumerate(tower.blocks):
        name = f"encoder.layers.{i}."
        names += (_norm(block.layer_norm1, name + "layer_norm1") + _dense(block.qkv, name + "self_attn.qkv")
                  + _dense(block.projection, name + "self_attn.projection")
                  + _norm(block.layer_norm2, name + "layer_norm2") + _dense(block.fc1, name + "mlp.fc1")
                  + _dense(block.fc2, name + "mlp.fc2"))
    return names + _norm(tower.post_layernorm, "post_layernorm")


def _decoder_tensors(decoder):
    """(checkpoint name without prefix, variable, layout) for every weight of a built `BertTextDecoder` (the
    tied LM-head decoder is the word embedding, so it has no entry)."""
    embeddings = "bert.embeddings."
    names = [(embeddings + "word_embeddings.weight", decoder.word_embedding.embeddings, "plain"),
             (embeddings + "position_embeddings.weight", decoder.position_embedding.embeddings, "plain")]
    names += _norm(decoder.embedding_norm, embeddings + "LayerNorm")
    for i, layer in enumerate(decoder.decoder_layers):
        name = f"bert.encoder.layer.{i}."
        for kind, attention in (("self", "attention"), ("cross", "crossattention")):
            for part in ("query", "key", "value"):
                names += _dense(getattr(layer, f"{kind}_{part}"), f"{name}{attention}.self.{part}")
            names += _dense(getattr(layer, f"{kind}_output"), f"{name}{attention}.output.dense")
            names += _norm(getattr(layer, f"{kind}_norm"), f"{name}{attention}.output.LayerNorm")
        names += _dense(layer.intermediate, name + "intermediate.dense")
        names += _dense(layer.output_dense, name + "output.dense") + _norm(layer.output_norm, name + "output.LayerNorm")
    return (names + _dense(decoder.head_dense, "cls.predictions.transform.dense")
            + _norm(decoder.head_norm, "cls.predictions.transform.LayerNorm")
            + [("cls.predictions.bias", decoder.head_bias, "plain")])


def _read(names, tensors, prefix):
    """Assigns every (name, variable, layout) from `tensors` (float32), each checked against its variable's shape."""
    for name, variable, layout in names:
        full = prefix + name
        if full not in tensors:
            raise MissingTensorError(f"tensor {full} is missing from the checkpoint.")
        value = _LAYOUTS[layout][0](np.asarray(tensors[full], np.float32))
        if tuple(variable.shape) != value.shape:
            raise ValueError(f"tensor for {variable.path} has shape {value.shape}, the config gives "
                             f"{tuple(variable.shape)}.")
        variable.assign(value)


def blip_vision_tower_from_hf(config, tensors, prefix="vision_model."):
    """A built `BlipVisionTower` with a BLIP checkpoint's vision weights.

    Args:
        config: config.json as a dict (the whole BLIP config, or its `vision_config`).
        tensors: {name: numpy array}, as the checkpoint names them.
        prefix: the vision tower's prefix in `tensors` ("" for a bare `BlipVisionModel`).
    """
    tower = BlipVisionTower(**blip_vision_arguments(config))
    tower.build()
    _read(_vision_tensors(tower), tensors, prefix)
    return tower


def bert_text_decoder_from_hf(config, tensors, prefix="text_decoder."):
    """A built `BertTextDecoder` with a BLIP checkpoint's text decoder and LM head.

    Args:
        config: config.json as a dict (the whole BLIP config, or its `text_config`).
        tensors: {name: numpy array}, as the checkpoint names them; the tied
            `cls.predictions.decoder.weight` may be absent (the layer uses the word embedding).
        prefix: the decoder's prefix in `tensors`.
    """
    decoder = BertTextDecoder(**bert_text_decoder_arguments(config))
    decoder.build()
    _read(_decoder_tensors(decoder), tensors, prefix)
    return decoder


def blip_checkpoint_tensors(tower, decoder):
    """The inverse of reading: {name: float32 numpy array} of a built `BlipVisionTower` and `BertTextDecoder`
    as a `BlipForConditionalGeneration` checkpoint names them (the tied LM-head decoder left out, as
    transformers' save_pretrained leaves it out), ready for a model.safetensors file."""
    tensors = {}
    for prefix, names in (("vision_model.", _vision_tensors(tower)), ("text_decoder.", _decoder_tensors(decoder))):
        for name, variable, layout in names:
            tensors[prefix + name] = np.ascontiguousarray(_LAYOUTS[layout][1](np.asarray(variable, np.float32)))
    return tensors
