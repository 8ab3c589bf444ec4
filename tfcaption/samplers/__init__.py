"""Decoding rules as objects over one next-token callback (keras-hub's samplers, for captioning).

`GreedySampler`, `BeamSampler` (M2's beam search), `GenerateBeamSampler` (transformers' `generate()` beam
search), `RandomSampler`, `TopKSampler`, `TopPSampler`; every one takes `temperature`, `seed` and the logit
controls (`no_repeat_ngram_size`, `repetition_penalty`, `min_length`, `banned_token_ids`). A name works
where an object does: `get("top_p", p=0.8)`.
`tfcaption.decoding.generate(model, images, sampler=..., special_ids=vocab)` decodes a model's images with one.
"""

from tfcaption.samplers.beam_sampler import BeamSampler
from tfcaption.samplers.generate_beam_sampler import GenerateBeamSampler
from tfcaption.samplers.greedy_sampler import GreedySampler
from tfcaption.samplers.random_sampler import RandomSampler
from tfcaption.samplers.sampler import Sampler
from tfcaption.samplers.serialization import NAMES, deserialize, get, name_of, serialize
from tfcaption.samplers.top_k_sampler import TopKSampler
from tfcaption.samplers.top_p_sampler import TopPSampler

__all__ = ["BeamSampler", "GenerateBeamSampler", "GreedySampler", "NAMES", "RandomSampler", "Sampler", "TopKSampler",
           "TopPSampler", "deserialize", "get", "name_of", "serialize"]
