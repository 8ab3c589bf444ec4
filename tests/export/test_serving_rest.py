"""The exports against TF Serving's REST JSON mapping, called directly on the loaded SavedModel.

`tfcaption.serving.rest.predict` is the mapping `tfcaption-serve` serves over HTTP (tests/serving/ check it
there): request bodies to tensors the way TF Serving's JSON layer does (objects `{"b64": ...}` become bytes;
row format `instances` is stacked along the batch, columnar `inputs` is taken as is), the signature call,
and the response (`predictions`, one object per row, or `outputs`), including TF Serving's rule that in row
format every output must share the batch size, and its `{"error": ...}` body for a failed call.
"""

import base64
import json

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.exports import TINY_MAX_STEPS, encode, random_rgb, tiny_export
from tfcaption.serving.rest import predict


def rest_predict(loaded, body):
    """POST /v1/models/<name>:predict without the HTTP layer: (status code, response JSON text)."""
    return predict(loaded.signatures, body)


def b64(data):
    return {"b64": base64.b64encode(data).decode("ascii")}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return tf.saved_model.load(tiny_export(tmp_path_factory.mktemp("export"), beam_size=2))


@pytest.fixture(scope="module")
def images():
    return [encode(random_rgb(32, 32, seed=1)), encode(random_rgb(60, 45, seed=2), "JPEG")]


@pytest.fixture(scope="module")
def reference(loaded, images):
    out = loaded.signatures["serving_default"](image_bytes=tf.constant(images))
    return [c.decode() for c in out["caption"].numpy()], out["score"].numpy()


def test_row_format_with_bare_b64_instances_gives_the_reference_captions(loaded, images, reference):
    status, body = rest_predict(loaded, json.dumps({"instances": [b64(i) for i in images]}))
    assert status == 200
    predictions = json.loads(body)["predictions"]
    assert [p["caption"] for p in predictions] == reference[0]
    np.testing.assert_allclose([p["score"] for p in predictions], reference[1], rtol=1e-6)
    assert all(sorted(p) == ["beam_captions", "beam_scores", "caption", "score", "tokens"]
               and len(p["tokens"]) == TINY_MAX_STEPS for p in predictions)
    for p in predictions:  # every beam, best first: the first is the caption
        assert p["beam_captions"][0] == p["caption"] and len(p["beam_captions"]) == len(p["beam_scores"])
        assert p["beam_scores"][0] == pytest.approx(p["score"]) and p["beam_scores"] == sorted(p["beam_scores"],
                                                                                                reverse=True)


def test_row_format_named_input_on_the_attention_signature_gives_attention_maps(loaded, images):
    body = json.dumps({"signature_name": "caption_with_attention",
                       "instances": [{"image_bytes": b64(i)} for i in images]})
    status, response = rest_predict(loaded, body)
    assert status == 200, response
    predictions = json.loads(response)["predictions"]
    assert len(predictions) == 2
    for p in predictions:
        assert p["patch_grid"] == [4, 4]
        attention = np.array(p["attention"])
        assert attention.shape == (TINY_MAX_STEPS, 16)
        np.testing.assert_allclose(attention[0].sum(), 1.0, atol=1e-5)
        assert np.array(p["level_attention"]).shape == (TINY_MAX_STEPS, 2, 16)
        assert np.array(p["gates"]).shape == (TINY_MAX_STEPS, 2)


def test_columnar_format_gives_the_reference_captions_on_both_signatures(loaded, images, reference):
    status, body = rest_predict(loaded, json.dumps({"inputs": {"image_bytes": [b64(i) for i in images]}}))
    assert status == 200
    outputs = json.loads(body)["outputs"]
    assert outputs["caption"] == reference[0]
    assert np.array(outputs["tokens"]).shape == (2, TINY_MAX_STEPS)
    status, body = rest_predict(loaded, json.dumps({"signature_name": "caption_with_attention",
                                                    "inputs": [b64(images[0])]}))
    assert status == 200
    outputs = json.loads(body)["outputs"]
    assert outputs["patch_grid"] == [[4, 4]] and np.array(outputs["attention"]).shape == (1, TINY_MAX_STEPS, 16)


def test_bad_image_gives_an_error_body_naming_the_index(loaded, images, reference):
    status, body = rest_predict(loaded, json.dumps({"instances": [b64(images[0]), b64(b"hello")]}))
    assert status == 400
    assert "image_bytes[1]: not a JPEG, PNG, GIF or BMP image" in json.loads(body)["error"]
    status, body = rest_predict(loaded, json.dumps({"instances": [b64(images[0])]}))  # the server keeps going
    assert status == 200 and json.loads(body)["predictions"][0]["caption"] == reference[0][0]


def test_row_format_response_has_exactly_the_documented_keys(loaded, images):
    """A row-format response is plain JSON with exactly the documented keys."""
    status, body = rest_predict(loaded, json.dumps({"instances": [b64(images[0])]}))
    assert status == 200
    response = json.loads(body)
    assert set(response["predictions"][0]) == {"caption", "score", "tokens", "beam_captions", "beam_scores"}
    assert isinstance(response["predictions"][0]["caption"], str)
