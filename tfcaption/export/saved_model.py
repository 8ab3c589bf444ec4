"""Exporting a captioner as a SavedModel: encoded image bytes in, captions out."""

import json
import os
import re
import tempfile
import uuid

import tensorflow as tf

from tfcaption.data.pipeline import decode_image
from tfcaption.decoding.generate import generate

DEFAULT_EXPORT_ROOT = "savedmodel"


class CaptionerModule(tf.Module):
    """The exported module: decode bytes, caption, detokenise, all in core TF ops.

    The graph holds no Python, no tensorflow-text and no lookup-table
    resources, so stock TF Serving can load it, and so can any process that
    imports only TensorFlow. Beam size and the longest caption are fixed here.
    """

    def __init__(self, model, vocab, beam_size=3, max_steps=None, jit_compile=False):
        super().__init__(name="tfcaption")
        if model.config.image_input != "pixels":
            raise ValueError("Only pixel models take image bytes; region-feature models are not exportable this way.")
        self.model = model
        self.vocab = vocab
        self.beam_size = int(beam_size)
        self.max_steps = int(max_steps or model.config.max_length - 1)
        self.image_size = model.config.image_size
        self._generate = tf.function(self._tokens_from_images, jit_compile=jit_compile)

    def _tokens_from_images(self, images):
        return generate(self.model, images, self.beam_size, self.max_steps)

    def _decode_batch(self, image_bytes):
        return tf.map_fn(
            lambda data: decode_image(data, self.image_size),
            image_bytes,
            fn_output_signature=tf.TensorSpec([self.image_size, self.image_size, 3], tf.float32),
        )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(self, image_bytes):
        outputs = self._generate(self._decode_batch(image_bytes))
        return {
            "caption": self.vocab.decode_tf(outputs["tokens"]),
            "score": outputs["scores"],
            "tokens": outputs["tokens"],
        }


def next_version(model_dir):
    """The smallest integer version above every existing numeric one (1 for a new model)."""
    if not tf.io.gfile.exists(model_dir):
        return 1
    versions = [int(name.strip("/")) for name in tf.io.gfile.listdir(model_dir) if re.fullmatch(r"\d+/?", name)]
    return max(versions, default=0) + 1


def export_saved_model(model, vocab, export_root=DEFAULT_EXPORT_ROOT, model_name="captioner", version=None,
                       beam_size=3, max_steps=None, run_config=None, jit_compile=False):
    """Writes `export_root/model_name/version/` in TF Serving's layout and returns its path.

    The SavedModel is written to a temporary sibling and renamed into place,
    so a serving process watching the directory never sees half a model, and
    an existing version is never overwritten. The vocabulary and the config
    travel inside it as assets.
    """
    model_dir = os.path.join(export_root, model_name)
    version = next_version(model_dir) if version is None else int(version)
    target = os.path.join(model_dir, str(version))
    if tf.io.gfile.exists(target):
        raise FileExistsError(f"Export version already exists, refusing to overwrite: {target}")
    tf.io.gfile.makedirs(model_dir)
    module = CaptionerModule(model, vocab, beam_size, max_steps, jit_compile=jit_compile)
    with tempfile.TemporaryDirectory() as assets_dir:
        vocab_path = vocab.save(os.path.join(assets_dir, "vocab.txt"))
        config_path = os.path.join(assets_dir, "config.json")
        export_config = {
            "model": model.config.to_dict(),
            "serving": {"beam_size": module.beam_size, "max_steps": module.max_steps, "image_size": module.image_size},
        }
        if run_config is not None:
            export_config["train"] = run_config.train.to_dict()
        with open(config_path, "w") as f:
            json.dump(export_config, f, indent=2, sort_keys=True)
        module.vocab_file = tf.saved_model.Asset(vocab_path)
        module.config_file = tf.saved_model.Asset(config_path)
        staging = os.path.join(model_dir, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
        tf.saved_model.save(module, staging, signatures={"serving_default": module.serve})
    try:
        tf.io.gfile.rename(staging, target)
    except tf.errors.OpError:
        tf.io.gfile.rmtree(staging)
        raise FileExistsError(f"Export version already exists, refusing to overwrite: {target}")
    return target
