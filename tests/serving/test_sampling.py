"""The `sample` signature over REST through tfcaption-serve: row and columnar requests answer as the SavedModel
does; requests with different settings share one batched call and a seeded request answers the same batched
or alone; a bad setting (or a seed that is not an integer) fails only its own request with TF Serving's
error body."""

import numpy as np

from tests.serving.servers import InProcessServer, b64, predict, signature_stats
from tests.serving.test_batching import concurrently, options

SETTINGS = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 0, "max_length": 0}


def instance(image, **settings):
    return {"image_bytes": b64(image), **{**SETTINGS, **settings}}


def direct_sample(direct, image, **settings):
    """The SavedModel's own answer for one image alone."""
    import tensorflow as tf

    values = {**SETTINGS, **settings}
    dtypes = {"temperature": tf.float32, "top_k": tf.int32, "top_p": tf.float32, "seed": tf.int64,
              "max_length": tf.int32}
    out = direct.signatures["sample"](image_bytes=tf.constant([image]),
                                      **{k: tf.constant([v], dtypes[k]) for k, v in values.items()})
    return {k: v.numpy()[0] for k, v in out.items()}


def test_a_sampling_request_answers_in_row_and_columnar_format(server, direct, images):
    settings = [dict(temperature=0.8, top_k=5, seed=7), dict(temperature=1.3, top_p=0.9, seed=8, max_length=3)]
    row = predict(server.url, "tiny", {"instances": [instance(images[i], **s) for i, s in enumerate(settings)]},
                  signature="sample")
    assert row.status_code == 200, row.text
    predictions = row.json()["predictions"]
    assert [sorted(p) for p in predictions] == [["caption", "score", "tokens"]] * 2
    columns = {name: [{**SETTINGS, **s}[name] for s in settings] for name in SETTINGS}
    columnar = predict(server.url, "tiny", {"inputs": {"image_bytes": [b64(images[0]), b64(images[1])], **columns}},
                       signature="sample")
    assert columnar.status_code == 200, columnar.text
    outputs = columnar.json()["outputs"]
    for i, s in enumerate(settings):
        expected = direct_sample(direct, images[i], **s)
        assert predictions[i]["tokens"] == outputs["tokens"][i] == expected["tokens"].tolist()
        assert predictions[i]["caption"] == outputs["caption"][i] == expected["caption"].decode()
        np.testing.assert_allclose(predictions[i]["score"], expected["score"], rtol=1e-4, atol=1e-4)


def test_a_seeded_request_answers_the_same_batched_or_alone(repository, images):
    seeded = {"instances": [instance(images[2], temperature=1.5, seed=1234)]}
    others = [{"instances": [instance(images[i], temperature=0.5 + i / 4, top_k=i % 3, top_p=0.95, seed=i)]}
              for i in range(5)]
    others.append({"instances": [instance(images[0], temperature=0.0), instance(images[2], seed=99)]})
    with InProcessServer(repository, options(max_batch=32, batch_timeout_ms=300)) as server:
        alone = predict(server.url, "tiny", seeded, signature="sample")
        responses = concurrently(server.url, others + [seeded], signature="sample")
        stats = signature_stats(server.stats(), "sample")
    assert alone.status_code == 200, alone.text
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert responses[-1].json()["predictions"][0]["tokens"] == alone.json()["predictions"][0]["tokens"]
    assert responses[-1].json()["predictions"][0]["caption"] == alone.json()["predictions"][0]["caption"]
    # Different settings shared calls: one signature, settings per row.
    assert stats["merged_calls"] >= 1 and stats["largest_call"] >= 4, stats


def test_a_bad_setting_fails_only_its_own_request(repository, images):
    bodies = [{"instances": [instance(images[i], temperature=0.9, seed=i)]} for i in range(6)]
    bodies[1] = {"instances": [instance(images[1]), instance(images[2], top_p=1.5)]}  # its own row 1
    bodies[3] = {"instances": [instance(images[3], temperature=-1.0)]}
    bodies[4] = {"instances": [instance(images[4], seed=2.5)]}
    with InProcessServer(repository, options(max_batch=32, batch_timeout_ms=300)) as server:
        alone = [predict(server.url, "tiny", bodies[i], signature="sample") for i in (0, 2, 5)]
        responses = concurrently(server.url, bodies, signature="sample")
        stats = signature_stats(server.stats(), "sample")
    assert responses[1].status_code == 400
    error = responses[1].json()["error"]
    assert "top_p[1]: must be in (0, 1]" in error and "top_p[0]" not in error
    assert responses[3].status_code == 400
    assert "temperature[0]: must be a number >= 0" in responses[3].json()["error"]
    assert responses[4].status_code == 400  # refused when the body is read: never reaches the batch
    assert responses[4].json() == {"error": "instances[...].seed: expected int64 values, got 2.5"}
    for index, expected in zip((0, 2, 5), alone):
        assert responses[index].status_code == 200, responses[index].text
        assert responses[index].json() == expected.json()
    assert stats["fallbacks"] >= 1, stats


def test_an_export_without_the_sampling_signature_says_to_re_export_it(images):
    from tests.helpers.paths import REPO_ROOT
    from tfcaption.serving.models import ModelRepository

    old = ModelRepository(f"{REPO_ROOT}/tests/fixtures/legacy_v1/export/pixels/1")  # written before the signature existed
    with InProcessServer(old, options()) as server:
        response = predict(server.url, "pixels", {"instances": [instance(images[0])]}, signature="sample")
        plain = predict(server.url, "pixels", {"instances": [b64(images[0])]})
    assert response.status_code == 400
    assert response.json() == {"error": 'Serving signature name: "sample" not found in signature def; this export '
                                        'predates the sampling signature: re-export it with tfcaption-export'}
    assert plain.status_code == 200, plain.text  # the rest of it is served as before
