"""Mapping the M2 authors' released checkpoint onto tfcaption's CaptionerBackbone.

The released `state_dict` names (PyTorch, Linear weights stored (out, in))
map one to one onto the Keras weights (kernels stored (in, out)). Every key
and every weight must be used exactly once: a checkpoint from another model,
a truncated export or a vocabulary of the wrong size fails with one line
naming the first mismatch, instead of a silently half-loaded model.

`convert` is what tfcaption-convert-m2 runs: read the `.pth` and `vocab.pkl` with the restricted
readers, map the weights, and write a run directory that every tfcaption tool loads:

    OUT_DIR/config.json        RunConfig: the converted `m2_reference` model + evaluation settings
    OUT_DIR/vocab.txt          the released vocabulary, one token per line (ids unchanged)
    OUT_DIR/best.weights.h5    the weights
    OUT_DIR/conversion.json    where the weights came from (paths, sha256, sizes)

Decoding settings are the reference evaluation's: beam 5, 20 decoding steps (<eos> included), stored
as `data.max_caption_words` = 19 because tfcaption decodes `max_caption_words + 1` steps.
"""

import hashlib
import json
import os
import re

import numpy as np

from tfcaption.interop.m2 import REFERENCE_BEAM_SIZE, REFERENCE_STEPS
from tfcaption.interop.torch_checkpoint import load_state_dict
from tfcaption.interop.m2.vocab import load_m2_vocab
from tfcaption.models.captioner_backbone import CaptionerBackbone
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
        image_encoder=dict(type="regions", feature_dim=int(feature_dim), padding_mask="released"),
        hidden_dim=int(hidden_dim),
        num_heads=num_heads,
        key_dim=int(hidden_dim) // num_heads,
        intermediate_dim=int(_shape(state_dict, "encoder.layers.0.pwff.fc1.weight")[0]),
        encoder=dict(num_layers=_count_layers(state_dict, "encoder.layers."), memory_init="released",
                     memory_slots=int(_shape(state_dict, "encoder.layers.0.mhatt.attention.m_k")[1])),
        decoder=dict(type="meshed", num_layers=_count_layers(state_dict, "decoder.layers.")),
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
    pairs = _linear("image_encoder/projection", "encoder.fc") + _norm("image_encoder/layer_norm", "encoder.layer_norm")
    for i in range(config.encoder.num_layers):
        k, t = f"encoder/layer_{i}", f"encoder.layers.{i}"
        pairs += [(f"{k}/attention/memory_keys", f"{t}.mhatt.attention.m_k", False),
                  (f"{k}/attention/memory_values", f"{t}.mhatt.attention.m_v", False)]
        pairs += _attention(f"{k}/attention", f"{t}.mhatt.attention") + _norm(f"{k}/attention_norm", f"{t}.mhatt.layer_norm")
        pairs += _feed_forward(f"{k}/feed_forward", f"{t}.pwff")
    pairs += [("decoder/word_embedding/embeddings", "decoder.word_emb.weight", False),
              ("decoder/position_table", "decoder.pos_emb.weight", False)]
    for i in range(config.decoder.num_layers):
        k, t = f"decoder/layer_{i}", f"decoder.layers.{i}"
        pairs += _attention(f"{k}/self_attention", f"{t}.self_att.attention") + _norm(f"{k}/self_norm", f"{t}.self_att.layer_norm")
        pairs += _attention(f"{k}/cross_attention/attention", f"{t}.enc_att.attention")
        pairs += _norm(f"{k}/cross_attention/layer_norm", f"{t}.enc_att.layer_norm")
        for level in range(config.encoder.num_levels):
            pairs += _linear(f"{k}/cross_attention/gate_{level}", f"{t}.fc_alpha{level + 1}")
        pairs += _feed_forward(f"{k}/feed_forward", f"{t}.pwff")
    pairs += _linear("decoder/logits", "decoder.fc", bias=config.output_bias)
    return pairs


def load_m2_weights(model, state_dict):
    """Assigns a released state_dict to a `CaptionerBackbone`, checking every key and shape."""
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
    """Builds a reference-compatible `CaptionerBackbone` from a released state_dict and its vocabulary."""
    config = infer_config(state_dict, num_heads=num_heads)
    if len(vocab_tokens) != config.vocab_size:
        raise ConversionError(
            f"vocabulary has {len(vocab_tokens)} entries but the checkpoint's word embedding has {config.vocab_size}"
        )
    model = CaptionerBackbone.from_model_config(config)
    return load_m2_weights(model, state_dict)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def converted_run_config(model_config, out_dir, max_caption_words=REFERENCE_STEPS - 1):
    """A RunConfig for a converted checkpoint: its model, and the reference's evaluation settings.

    The training fields describe the authors' cross-entropy setup (batch 50, Adam eps 1e-8, warmup
    10000, words kept at count >= 5), so fine-tuning from the converted weights starts from the
    released recipe; `data` is empty because the model was trained on detection features, which
    are given per command (`--features`), not as a tfcaption records directory.
    """
    from tfcaption.config import DataConfig, DecodeConfig, ExportConfig, RunConfig, TrainConfig

    return RunConfig(
        model=model_config,
        data=DataConfig(spec="", max_caption_words=max_caption_words, min_word_count=5, augment_flip=False),
        train=TrainConfig(output_dir=os.fspath(out_dir), batch_size=50, warmup_steps=10000, adam_epsilon=1e-8,
                          label_smoothing=0.0, early_stopping_patience=5),
        decode=DecodeConfig(beam_size=REFERENCE_BEAM_SIZE, batch_size=50, eval_splits=("test",)),
        export=ExportConfig(model_name="m2_coco", beam_size=REFERENCE_BEAM_SIZE),
    )


def read_release(checkpoint, vocab_path):
    """`(state_dict, itos)` from the released files, read without PyTorch or the authors' code.

    Kept apart from the conversion so that unreadable inputs fail before the model is built.
    """
    for path, what in ((checkpoint, "checkpoint"), (vocab_path, "vocabulary")):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what} file not found: {path}")
    return load_state_dict(checkpoint), load_m2_vocab(vocab_path)


def check_out_dir(out_dir, overwrite):
    """OUT_DIR as a path, refusing to replace a run unless asked (checked before any work)."""
    path = os.fspath(out_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{path} exists and is not a directory")
    existing = [n for n in ("config.json", "best.weights.h5") if os.path.exists(os.path.join(path, n))]
    if existing and not overwrite:
        raise FileExistsError(f"{path} already holds a run ({', '.join(existing)}); pass --overwrite to replace it")
    return path


def convert(checkpoint, vocab_path, out_dir, num_heads=8, max_caption_words=REFERENCE_STEPS - 1, overwrite=False):
    """Converts the released files into a run directory; returns `(model, run_directory)`.

    Raises CheckpointError / VocabularyError / ConversionError (all ValueError) naming the problem,
    FileNotFoundError for a missing input, FileExistsError when OUT_DIR already holds a run.
    """
    if max_caption_words < 1:
        raise ValueError(f"--max-caption-words must be >= 1, got {max_caption_words}")
    path = check_out_dir(out_dir, overwrite)
    state_dict, itos = read_release(checkpoint, vocab_path)
    return write_run(state_dict, itos, path, checkpoint, vocab_path, num_heads, max_caption_words)


def write_run(state_dict, itos, out_dir, checkpoint, vocab_path, num_heads, max_caption_words):
    """Builds the model from the release (TensorFlow from here on) and writes the run directory."""
    from tfcaption.data.tokenizer import Vocabulary
    from tfcaption.training.run_directory import RunDirectory

    run = RunDirectory(out_dir)
    model = convert_m2(state_dict, itos, num_heads=num_heads)
    run_config = converted_run_config(model.config, run.path, max_caption_words)
    steps = run_config.data.max_decode_steps
    if steps > model.config.max_length:
        raise ValueError(f"--max-caption-words {max_caption_words} needs {steps} decoding steps, but "
                         f"the checkpoint's position table allows {model.config.max_length}")
    vocab = Vocabulary(itos)  # refuses tokens vocab.txt cannot hold (whitespace), so ids stay aligned
    os.makedirs(run.path, exist_ok=True)
    run_config.save(run.config)
    vocab.save(run.vocab)
    model.save_weights(run.best_weights)
    provenance = {
        "source": "Meshed-Memory Transformer release (aimagelab/meshed-memory-transformer)",
        "checkpoint": os.path.abspath(checkpoint),
        "checkpoint_sha256": _sha256(checkpoint),
        "vocab": os.path.abspath(vocab_path),
        "vocab_sha256": _sha256(vocab_path),
        "num_heads": num_heads,
        "vocab_size": vocab.size,
        "parameters": int(model.count_params()),
        "decoding": {"beam_size": REFERENCE_BEAM_SIZE, "max_steps": steps},
    }
    with open(run.join("conversion.json"), "w") as f:
        json.dump(provenance, f, indent=2, sort_keys=True)
    return model, run
