"""The settings of a tiny, fast model and dataset, and `tfcaption-train` arguments for a few-second run."""

import json

# A model small enough to train for a few steps in seconds on two CPU cores.
TINY_MODEL = {
    "image_size": 32, "patch_size": 8, "hidden_dim": 32, "num_heads": 2, "key_dim": 16, "intermediate_dim": 64,
    "num_encoder_layers": 2, "num_decoder_layers": 2, "memory_slots": 4, "dropout": 0.0,
}
TINY_SHAPES = {"image_size": 32, "num_train": 48, "num_val": 12, "num_test": 12, "num_novel": 8, "num_shards": 2}


def tiny_train_args(output_dir, data_root, export_root, epochs=2):
    """`tfcaption-train` arguments for a run of a few seconds on the tiny dataset."""
    sets = [f"model.{k}={v}" for k, v in TINY_MODEL.items()]
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
