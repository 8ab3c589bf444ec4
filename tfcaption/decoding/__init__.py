from tfcaption.decoding.beam_search import beam_search
from tfcaption.decoding.generate import compiled_generator, generate
from tfcaption.decoding.greedy import greedy_search

__all__ = ["beam_search", "compiled_generator", "generate", "greedy_search"]
