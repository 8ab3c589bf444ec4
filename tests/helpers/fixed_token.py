"""Tiny captioners whose captions are known by construction, not by what an epoch of training learnt: the
word head's kernel is zero and its bias makes one token win at every step, whatever the image (the
encoder, the attention and the gates keep their seeded random weights).

- `eos_first_captioner`: <eos> wins, so every caption is empty. An empty caption is a valid result;
  tests/test_empty_captions.py and tests/serving/test_empty_captions.py drive every path that shows
  captions with it.
- `one_word_captioner`: a word wins, so every caption is that word `TINY_MAX_STEPS` times (never <eos>):
  attention and gates for a known number of words.
"""

import numpy as np

from tests.helpers.exports import TINY_MAX_STEPS, WORDS
from tests.helpers.tiny import TINY_MODEL


def fixed_token_captioner(token, seed=0):
    """(model, vocab): a tiny untrained captioner whose logits are +10 for `token` and -10 elsewhere."""
    import keras

    from tfcaption.data.tokenizer import Vocabulary
    from tfcaption.models import CaptionerBackbone, CaptionerConfig

    keras.utils.set_random_seed(seed)
    vocab = Vocabulary.build([" ".join(WORDS)])
    model = CaptionerBackbone.from_model_config(
        CaptionerConfig(vocab_size=vocab.size, max_length=TINY_MAX_STEPS + 1, output_bias=True, **TINY_MODEL))
    head = model.decoder.output_dense
    head.kernel.assign(np.zeros(head.kernel.shape, np.float32))
    bias = np.full(head.bias.shape, -10.0, np.float32)
    bias[vocab.tokens.index(token)] = 10.0
    head.bias.assign(bias)
    return model, vocab


def eos_first_captioner(seed=0):
    """(model, vocab) whose every caption is empty: <eos> is its first token."""
    return fixed_token_captioner("<eos>", seed)


def one_word_captioner(word="a", seed=0):
    """(model, vocab) whose every caption is `word` repeated `TINY_MAX_STEPS` times."""
    return fixed_token_captioner(word, seed)


def write_run(path, model, vocab):
    """Writes a run directory (config.json, vocab.txt, best.weights.h5) of `model` decoding `TINY_MAX_STEPS`
    steps (beam size 2); returns its path."""
    import os

    from tfcaption.config import RunConfig
    from tfcaption.training.run_directory import RunDirectory

    run = RunDirectory(str(path))
    os.makedirs(run.path, exist_ok=True)
    # decoding runs max_caption_words + 1 steps: the exports' TINY_MAX_STEPS
    config = RunConfig.from_dict({"model": model.config.to_dict(), "data": {"max_caption_words": TINY_MAX_STEPS - 1},
                                  "decode": {"beam_size": 2}})
    config.save(run.config)
    vocab.save(run.vocab)
    model.save_weights(run.best_weights)
    return str(path)


def eos_first_run(path, seed=0):
    """A run directory of `eos_first_captioner`; returns its path."""
    return write_run(path, *eos_first_captioner(seed))


def eos_first_export(root, seed=0):
    """Exports `eos_first_captioner` under `root` as model "silent" (beam 2); returns the version directory."""
    from tfcaption.export.saved_model import export_saved_model
    from tfcaption.models import ImageCaptioner

    return export_saved_model(ImageCaptioner.from_backbone(*eos_first_captioner(seed)), str(root), "silent",
                              beam_size=2, max_steps=TINY_MAX_STEPS)
