"""Generating with many samplers, lengths and batch sizes: one compiled function per (model, sampler config,
length), held by the model and reused, and no TensorFlow retracing warning (every generator used to share one
closure's code object, the key TensorFlow counts traces under)."""

import logging

import numpy as np
import pytest

from tfcaption import samplers
from tfcaption.decoding.captioning import GENERATORS_ATTRIBUTE, compiled_generator
from tfcaption.data.tokenizer import SpecialIds, Vocabulary

IDS = SpecialIds.of(Vocabulary)  # the word vocabulary's, as the test models' own

SAMPLERS = [samplers.GreedySampler(), samplers.RandomSampler(seed=1), samplers.TopKSampler(k=2, seed=1),
            samplers.TopPSampler(p=0.8, seed=1), samplers.BeamSampler(num_beams=2)]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def tensorflow_log():
    handler, logger = _Records(), logging.getLogger("tensorflow")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def test_many_samplers_lengths_and_shapes_reuse_one_function_each_without_a_retracing_warning(tensorflow_log):
    from tests.helpers.fixed_token import one_word_captioner

    model, _ = one_word_captioner()
    functions = {}
    for _ in range(2):  # the second pass must find every function and trace nothing
        for sampler in SAMPLERS:
            for steps in (3, 4):
                for batch in (1, 2, 3):
                    run = compiled_generator(model, sampler, steps, jit_compile=False, special_ids=IDS)
                    functions.setdefault((repr(sampler), steps), run)
                    assert run is functions[(repr(sampler), steps)]
                    out = run(np.zeros((batch, 32, 32, 3), np.float32))
                    assert out["tokens"].shape == (batch, steps)
    assert len(getattr(model, GENERATORS_ATTRIBUTE)) == len(functions) == len(SAMPLERS) * 2
    # reduce_retracing: a first shape, then one shape with a free batch dimension for every other batch
    assert all(run.experimental_get_tracing_count() <= 2 for run in functions.values())
    assert not [m for m in tensorflow_log if "retracing" in m]


def test_an_equal_sampler_config_shares_the_compiled_function():
    from tests.helpers.fixed_token import one_word_captioner

    model, _ = one_word_captioner()
    first = compiled_generator(model, samplers.TopPSampler(p=0.8, seed=3), 3, jit_compile=False, special_ids=IDS)
    assert compiled_generator(model, "top_p", 3, jit_compile=False, special_ids=IDS, p=0.8, seed=3) is first
    assert compiled_generator(model, samplers.TopPSampler(p=0.7, seed=3), 3, jit_compile=False, special_ids=IDS) is not first
    other, _ = one_word_captioner()
    assert compiled_generator(other, samplers.TopPSampler(p=0.8, seed=3), 3, jit_compile=False, special_ids=IDS) is not first
