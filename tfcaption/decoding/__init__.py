from tfcaption.decoding.captioning import (as_sampler, caption_batches, compiled_generator, decode, generate,
                                           mix_levels)

__all__ = ["as_sampler", "caption_batches", "compiled_generator", "decode", "generate", "mix_levels"]
