"""The small untrained SavedModel export the export tests share (`tiny_export`), and image helpers."""

import io
import os

import numpy as np

from tests.helpers.tiny import TINY_MODEL

WORDS = "a red blue green circle square star small large left of above below the two".split()
TINY_MAX_STEPS = 6


def tiny_export(root, beam_size=2, max_pixels=None, seed=0):
    """Exports an untrained tiny captioner under `root`; returns the version directory."""
    import keras

    from tfcaption.data.tokenizer import Vocabulary
    from tfcaption.export.saved_model import export_saved_model
    from tfcaption.models import Captioner, CaptionerConfig

    keras.utils.set_random_seed(seed)
    vocab = Vocabulary.build([" ".join(WORDS)])
    model = Captioner(CaptionerConfig(vocab_size=vocab.size, max_length=TINY_MAX_STEPS + 1, **TINY_MODEL))
    options = {} if max_pixels is None else {"max_pixels": max_pixels}
    return export_saved_model(model, vocab, str(root), "tiny", beam_size=beam_size, max_steps=TINY_MAX_STEPS,
                              **options)


def encode(array, fmt="PNG", mode=None):
    """Encoded image bytes of a numpy array through Pillow."""
    from PIL import Image

    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def random_rgb(height=40, width=48, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)


def quiet_env():
    """Environment for child processes: TensorFlow's start-up chatter off."""
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env
