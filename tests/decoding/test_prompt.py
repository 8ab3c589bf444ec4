"""A prompt fed before generation: `compiled_generator` (XLA) continues it as an uncached argmax over the whole
row would, returns its pieces first, and counts `max_steps` after it."""

import numpy as np
import tensorflow as tf

import keras

from tests.helpers.tiny import word_ids
from tfcaption.decoding import compiled_generator
from tfcaption.models import CaptionerBackbone, CaptionerConfig

IDS = word_ids()


def test_compiled_generator_continues_a_per_image_prompt_as_full_forward_argmax():
    keras.utils.set_random_seed(11)
    config = CaptionerConfig.from_preset(
        "small", image_size=32, patch_size=8, hidden_dim=32, key_dim=8, intermediate_dim=64, memory_slots=4,
        vocab_size=14, max_length=12, dropout=0.0,
    )
    model = CaptionerBackbone.from_model_config(config)
    images = tf.random.stateless_uniform((3, 32, 32, 3), seed=(1, 2), minval=0, maxval=255)
    words = [w for w in range(14) if w not in (IDS.bos_id, IDS.eos_id, IDS.pad_id)]
    prompt = np.array([[IDS.bos_id, words[0], words[1]], [IDS.bos_id, words[2], words[3]],
                       [IDS.bos_id, words[4], words[0]]], np.int32)
    steps = 5
    out = compiled_generator(model, "greedy", steps, special_ids=IDS)(images, prompt_ids=tf.constant(prompt))
    tokens = out["tokens"].numpy()
    assert tokens.shape == (3, prompt.shape[1] - 1 + steps)

    row, ended = prompt.copy(), np.zeros(3, bool)
    for _ in range(steps):
        logits = model({"images": images, "tokens": row, "padding_mask": np.ones_like(row, bool)}).numpy()[:, -1]
        word = np.where(ended, IDS.pad_id, logits.argmax(-1))
        ended |= word == IDS.eos_id
        row = np.concatenate([row, word[:, None]], 1)
    np.testing.assert_array_equal(tokens, row[:, 1:])
