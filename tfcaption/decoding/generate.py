"""One entry point for decoding images into token sequences."""

import tensorflow as tf

from tfcaption.decoding.beam_search import beam_search
from tfcaption.decoding.greedy import greedy_search


def generate(model, image_inputs, beam_size=1, max_steps=None, **options):
    """Encodes `image_inputs` once and decodes them.

    Beam size 1 runs greedy search (cheaper, identical tokens). Returns the
    best sequence per image: `tokens` (B, T), `log_probs` (B, T), `scores`
    (B,); with beam_size > 1 also `beam_tokens` (B, k, T) and `beam_scores`
    (B, k). Extra `options` go to the search (e.g. `length_penalty`,
    `return_attention` for greedy).
    """
    max_steps = max_steps or model.config.max_length - 1
    encoder_outputs, encoder_mask = model.encode(image_inputs, training=False)
    if beam_size == 1:
        return greedy_search(model, encoder_outputs, encoder_mask, max_steps, **options)
    beams = beam_search(model, encoder_outputs, encoder_mask, beam_size, max_steps, **options)
    return {
        "tokens": beams["tokens"][:, 0],
        "log_probs": beams["log_probs"][:, 0],
        "scores": beams["scores"][:, 0],
        "beam_tokens": beams["tokens"],
        "beam_log_probs": beams["log_probs"],
        "beam_scores": beams["scores"],
    }


def compiled_generator(model, beam_size=1, max_steps=None, jit_compile=True, **options):
    """A `tf.function` (XLA-compiled by default) mapping image inputs to `generate`'s dict."""

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def run(image_inputs):
        return generate(model, image_inputs, beam_size, max_steps, **options)

    return run
