"""FLOPs (multiply-adds x 2) that an M2-style captioner needs, counted from its sizes.

The count is the work each computation needs, not what a given implementation happens to do: keys and
values of the encoder outputs once per image, the query of a cross-attention once per decoder layer (all
meshed levels read the same query), self-attention over the filled prefix only when decoding. The same
numbers are the numerator of "% of the matmul peak" for every implementation a benchmark compares.

Sizes are plain keywords (`Sizes`), so benchmarks that time code without TensorFlow can count too.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Sizes:
    hidden_dim: int
    intermediate_dim: int
    vocab_size: int
    encoder_layers: int
    decoder_layers: int
    memory_slots: int
    regions: int  # encoder tokens per image
    feature_dim: int = 0  # region-feature width projected to hidden_dim; 0 = the encoder input is not counted
    meshed: bool = True  # cross-attention to every encoder level with gates, else to the last level only

    @classmethod
    def of_config(cls, config, regions):
        """The sizes of a `tfcaption.models.CaptionerConfig` (region input counted when it reads regions)."""
        feature_dim = config.image_encoder.feature_dim if config.image_encoder.type == "regions" else 0
        return cls(config.hidden_dim, config.intermediate_dim, config.vocab_size, config.encoder.num_layers,
                   config.decoder.num_layers, config.encoder.memory_slots, regions, feature_dim,
                   config.decoder.type == "meshed")

    @property
    def levels(self):
        return max(self.encoder_layers, 1) if self.meshed else 1


def encoder_flops(s):
    """One image through the input projection and the (memory-augmented) encoder layers."""
    d, r, keys = s.hidden_dim, s.regions, s.regions + s.memory_slots
    layer = 4 * (2 * r * d * d) + 2 * (2 * r * keys * d) + 2 * (2 * r * d * s.intermediate_dim)
    return 2 * r * s.feature_dim * d + s.encoder_layers * layer


def cross_keys_values_flops(s):
    """One image's cross-attention keys and values, every decoder layer and encoder level."""
    return s.decoder_layers * s.levels * 2 * (2 * s.regions * s.hidden_dim ** 2)


def _decoder_token_flops(s, attended):
    """One token through the decoder, its self-attention over `attended` positions, keys/values excluded."""
    d = s.hidden_dim
    self_attention = 4 * (2 * d * d) + 2 * (2 * attended * d)
    cross = 2 * d * d + s.levels * (2 * (2 * s.regions * d) + 2 * d * d + (2 * (2 * d) * d if s.meshed else 0))
    return s.decoder_layers * (self_attention + cross + 2 * (2 * d * s.intermediate_dim)) + 2 * d * s.vocab_size


def teacher_forcing_flops(s, tokens):
    """One caption of `tokens` input tokens (causal self-attention: token t attends to t + 1 positions),
    the image's cross-attention keys and values included."""
    return cross_keys_values_flops(s) + sum(_decoder_token_flops(s, t + 1) for t in range(tokens))


def xe_step_flops(s, images, captions, tokens):
    """An XE training step: forward and backward (twice the forward's matmuls) of `captions` captions of
    `tokens` input tokens over `images` images."""
    forward = images * encoder_flops(s) + captions * teacher_forcing_flops(s, tokens)
    return 3 * forward


def beam_search_flops(s, images, beams, steps, include_encoder=True):
    """Beam search of `steps` steps with `beams` beams: keys and values once per image, then one cached
    token per step and beam."""
    per_beam = sum(_decoder_token_flops(s, t + 1) for t in range(steps))
    return images * ((encoder_flops(s) if include_encoder else 0) + cross_keys_values_flops(s) + beams * per_beam)
