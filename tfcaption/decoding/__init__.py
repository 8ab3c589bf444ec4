from tfcaption.decoding.beam_search import beam_search
from tfcaption.decoding.captioning import caption_batches, compiled_generator, generate, mix_levels
from tfcaption.decoding.greedy import greedy_search

__all__ = ["beam_search", "caption_batches", "compiled_generator", "generate", "greedy_search", "mix_levels"]
