"""The settings of a tiny, fast model and dataset, and `tfcaption-train` arguments for a few-second run."""

import json

# A model small enough to train for a few steps in seconds on two CPU cores: CaptionerConfig fields,
# applied over a preset (parts merge with the preset's part of the same type).
TINY_MODEL = {
    "image_encoder": {"image_size": 32, "patch_size": 8}, "encoder": {"num_layers": 2, "memory_slots": 4},
    "decoder": {"num_layers": 2}, "hidden_dim": 32, "num_heads": 2, "key_dim": 16, "intermediate_dim": 64,
    "dropout": 0.0,
    # float32 on every machine kind: "auto" would time bfloat16 at each trainer's start, and could pick it on one
    # kind (tests/training/test_precision.py covers the choice)
    "dtype_policy": "float32",
}
# The same sizes for any preset (no image encoder fields: those depend on its type).
TINY_SIZES = {"hidden_dim": 32, "num_heads": 2, "key_dim": 16, "intermediate_dim": 64, "dropout": 0.0,
              "dtype_policy": "float32"}


def model_sets(model=None):
    """`--set` strings that apply CaptionerConfig fields (part sections as JSON dotted paths)."""
    sets = []
    for key, value in (TINY_MODEL if model is None else model).items():
        if isinstance(value, dict):
            sets += [f"model.{key}.{field}={json.dumps(v)}" for field, v in value.items()]
        else:
            sets.append(f"model.{key}={json.dumps(value)}")
    return sets
TINY_SHAPES = {"image_size": 32, "num_train": 48, "num_val": 12, "num_test": 12, "num_novel": 8, "num_shards": 2}


def tiny_train_args(output_dir, data_root, export_root, epochs=2):
    """`tfcaption-train` arguments for a run of a few seconds on the tiny dataset."""
    sets = model_sets()
    sets += [
        f"data.options={json.dumps(TINY_SHAPES)}", f"data.root={data_root}",
        f"export.root={export_root}", "train.batch_size=16", "train.warmup_steps=20",
        "train.learning_rate_scale=2.0", "decode.batch_size=8", "train.val_images=8", "data.max_caption_words=20",
        "decode.beam_size=2", "export.beam_size=2",
    ]
    args = ["--output-dir", output_dir, "--epochs", str(epochs)]
    for s in sets:
        args += ["--set", s]
    return args


def tiny_overrides(name):
    """CaptionerConfig fields that shrink preset `name` to test size while keeping its structure (part
    types, memory or not, scale, positions, conv stem, ViT / CLIP projection or not): pixel presets at 32 px or
    two patches a side, ViT, CLIP and CNN backbones at 32 px with random weights, region presets with 12-value
    features, at most 2 layers and 4 memory slots."""
    from tfcaption.models import CaptionerConfig

    preset = CaptionerConfig.from_preset(name)
    kind = preset.image_encoder.type
    if kind == "patches":
        patch = max(8, 2 ** len(preset.image_encoder.stem_filters))
        image_encoder = {"image_size": max(32, 2 * patch), "patch_size": patch}
    elif kind in ("vit", "clip"):  # random weights; the backbone as wide as the model where the preset has it so
        same_width = preset.image_encoder.sizes()["width"] == preset.hidden_dim
        image_encoder = {"image_size": 32, "patch_size": 8, "width": TINY_SIZES["hidden_dim"] if same_width else 24,
                         "num_heads": 2, "num_layers": 2, "mlp_dim": 48, "weights": ""}
    elif kind == "cnn":  # keras.applications' own widths; a 2 x 2 grid for VGG at 32 px, random weights
        image_encoder = {"image_size": 32, "weights": ""}
    else:
        image_encoder = {"feature_dim": 12}
    return {"image_encoder": image_encoder,
            "encoder": {"num_layers": min(preset.encoder.num_layers, 2),
                        "memory_slots": min(preset.encoder.memory_slots, 4)},
            "decoder": {"num_layers": 2}, **TINY_SIZES}


def tiny_preset(name, vocab_size=14, max_length=12, **overrides):
    """A `CaptionerConfig` of preset `name` at test size (`tiny_overrides`); part overrides merge."""
    from tfcaption.models import CaptionerConfig

    fields = tiny_overrides(name)
    for key, value in overrides.items():
        fields[key] = {**fields[key], **value} if isinstance(value, dict) else value
    return CaptionerConfig.from_preset(name, vocab_size=vocab_size, max_length=max_length, **fields)


def word_ids():
    """`SpecialIds` of the word vocabulary (what the tests' token rows use: <pad> 1, <bos> 2, <eos> 3)."""
    from tfcaption.data.tokenizer import SPECIALS, SpecialIds, Vocabulary

    return SpecialIds.of(Vocabulary(SPECIALS))


def example_inputs(model, seed=0):
    """Two images (pixels in [0, 255], or 5 regions with a padding row) and their decoder inputs: tokens of
    the word vocabulary (one row padded) and their padding mask."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if model.input_key == "images":
        inputs = rng.uniform(0, 255, (2,) + model.image_encoder.example_shape).astype("float32")
    else:
        inputs = rng.normal(size=(2, 5, model.image_encoder.feature_dim)).astype("float32")
        inputs[:, -1] = 0.0
    tokens = np.array([[2, 5, 6, 7], [2, 7, 1, 1]], np.int32)
    return {model.input_key: inputs, "tokens": tokens, "padding_mask": tokens != word_ids().pad_id}
