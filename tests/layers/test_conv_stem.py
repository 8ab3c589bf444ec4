import numpy as np

from tfcaption.layers import ConvStem


def test_each_convolution_halves_the_side_and_matches_a_direct_convolution():
    stem = ConvStem((4, 6))
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    out = np.asarray(stem(images))
    assert out.shape == (2, 4, 4, 6) and stem.stride == 4
    conv = stem.convolutions[0]
    kernel, bias = np.asarray(conv.kernel), np.asarray(conv.bias)
    padded = np.pad(images, ((0, 0), (0, 1), (0, 1), (0, 0)))  # "same" padding for stride 2, even size
    first = np.asarray(conv(images))
    for i, j in [(0, 0), (3, 5), (7, 7)]:
        patch = padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
        expected = np.maximum(np.einsum("bhwc,hwcf->bf", patch, kernel) + bias, 0)
        np.testing.assert_allclose(first[:, i, j], expected, atol=1e-5)
    assert ConvStem.from_config(stem.get_config()).filters == (4, 6)
