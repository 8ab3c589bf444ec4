"""`tfcaption.load(export, sampler=...)`: a SavedModel samples through its `sample` signature; what the signature
cannot do (beam search, logit controls) and an export written before it are one clear error each."""

import pytest

from tests.helpers.paths import REPO_ROOT


@pytest.fixture(scope="module")
def images():
    from tests.serving.servers import shapes_png

    return [shapes_png(i, size=32) for i in range(4)]


def test_an_export_samples_with_its_sample_signature(tiny_run, tiny_run_greedy_export, images):
    import tfcaption
    from tfcaption import samplers

    greedy = [r["caption"] for r in tfcaption.load(tiny_run_greedy_export).caption(images)]  # beam size 1
    for sampler in ("greedy", samplers.TopKSampler(k=1, temperature=3.0, seed=1)):
        assert [r["caption"] for r in tfcaption.load(tiny_run["export"], sampler=sampler).caption(images)] == greedy
    seeded = tfcaption.load(tiny_run["export"], sampler=samplers.TopPSampler(p=0.95, temperature=3.0, seed=5))
    assert seeded.caption(images) == seeded.caption(images)


def test_what_the_sample_signature_cannot_do_is_one_clear_error(tiny_run):
    import tfcaption
    from tfcaption import samplers

    with pytest.raises(ValueError, match="beam search is its serving_default signature"):
        tfcaption.load(tiny_run["export"], sampler="beam")
    with pytest.raises(ValueError, match=r"no logit controls \(no_repeat_ngram_size set\)"):
        tfcaption.load(tiny_run["export"], sampler=samplers.RandomSampler(no_repeat_ngram_size=2))


def test_an_export_without_the_sample_signature_loads_and_says_to_re_export_to_sample():
    import tfcaption

    old = f"{REPO_ROOT}/tests/fixtures/legacy_v1/export/pixels/1"
    assert tfcaption.load(old).backend.settings is None  # loads as before
    with pytest.raises(ValueError, match=r"predates the sampling signature \('sample'\); re-export it"):
        tfcaption.load(old, sampler="top_p")
