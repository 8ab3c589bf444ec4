"""TF Serving's REST API over real HTTP: both request formats, model status and metadata, versions, and the
error cases, each with TF Serving's status and `{"error": ...}` body and followed by a request that works."""

import json
import os
import subprocess

import numpy as np
import pytest
import requests

from tests.helpers.exports import TINY_MAX_STEPS, encode, random_rgb
from tests.serving.servers import assert_matches, b64, decompression_bomb, direct_predictions, good_images, predict


@pytest.fixture(scope="module")
def images():
    return good_images()[:3]


def check_good_request(server, images, reference):
    response = predict(server.url, "tiny", {"instances": [b64(images[0])]})
    assert response.status_code == 200, response.text
    assert_matches(response.json()["predictions"][0], reference[0])


def test_row_format_with_bare_and_named_instances(server, images, reference):
    for instances in ([b64(i) for i in images], [{"image_bytes": b64(i)} for i in images]):
        response = predict(server.url, "tiny", {"instances": instances})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        predictions = response.json()["predictions"]
        assert len(predictions) == len(images)
        for prediction, expected in zip(predictions, reference):
            assert sorted(prediction) == ["beam_captions", "beam_scores", "caption", "score", "tokens"]
            assert len(prediction["tokens"]) == TINY_MAX_STEPS
            assert_matches(prediction, expected)


def test_columnar_format_named_and_bare(server, images, reference):
    for inputs in ({"image_bytes": [b64(i) for i in images]}, [b64(i) for i in images]):
        response = predict(server.url, "tiny", {"inputs": inputs})
        assert response.status_code == 200, response.text
        outputs = response.json()["outputs"]
        assert outputs["caption"] == [r["caption"].decode() for r in reference]
        assert outputs["tokens"] == [r["tokens"].tolist() for r in reference]
        np.testing.assert_allclose(outputs["score"], [r["score"] for r in reference], rtol=1e-4, atol=1e-4)


def test_attention_signature_gives_the_direct_calls_maps(server, direct, images):
    expected = direct_predictions(direct, images, "caption_with_attention")
    response = predict(server.url, "tiny", {"instances": [{"image_bytes": b64(i)} for i in images]},
                       signature="caption_with_attention")
    assert response.status_code == 200, response.text
    for prediction, reference in zip(response.json()["predictions"], expected):
        assert set(prediction) == {"caption", "score", "tokens", "attention", "level_attention", "gates",
                                   "patch_grid"}
        assert prediction["patch_grid"] == [4, 4]
        attention = np.array(prediction["attention"])
        assert attention.shape == (TINY_MAX_STEPS, 16)
        np.testing.assert_allclose(attention, reference["attention"], atol=1e-5)
        np.testing.assert_allclose(prediction["gates"], reference["gates"], atol=1e-5)
        assert np.array(prediction["level_attention"]).shape == (TINY_MAX_STEPS, 2, 16)
        assert prediction["caption"] == reference["caption"].decode()


def test_the_attention_answer_shows_the_caption_and_score_of_the_predict_answer(server):
    # The export's beam size is 2: the attention signature decodes with it and follows the best beam.
    instances = [{"image_bytes": b64(i)} for i in good_images()]
    answers = [predict(server.url, "tiny", {"instances": instances}, signature=signature)
               for signature in ("serving_default", "caption_with_attention")]
    assert all(response.status_code == 200 for response in answers), [r.text for r in answers]
    best, attended = (response.json()["predictions"] for response in answers)
    assert [p["caption"] for p in attended] == [p["caption"] for p in best]
    assert [p["tokens"] for p in attended] == [p["tokens"] for p in best]
    np.testing.assert_allclose([p["score"] for p in attended], [p["score"] for p in best], rtol=1e-6, atol=1e-6)


def test_model_status_and_version_status(server):
    expected = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}
    for path in ("/v1/models/tiny", "/v1/models/tiny/versions/1"):
        response = requests.get(server.url + path, timeout=10)
        assert response.status_code == 200 and response.json() == expected


def test_metadata_lists_the_signatures(server):
    for path in ("/v1/models/tiny/metadata", "/v1/models/tiny/versions/1/metadata"):
        response = requests.get(server.url + path, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
        signatures = body["metadata"]["signature_def"]["signature_def"]
        assert {"serving_default", "caption_with_attention"} <= set(signatures)
        default = signatures["serving_default"]
        assert default["method_name"] == "tensorflow/serving/predict"
        assert default["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
        assert default["inputs"]["image_bytes"]["tensor_shape"]["dim"] == [{"size": "-1"}]
        assert set(default["outputs"]) == {"caption", "score", "tokens", "beam_captions", "beam_scores"}
        assert default["outputs"]["tokens"]["dtype"] == "DT_INT32"
        assert {"attention", "gates", "patch_grid"} <= set(signatures["caption_with_attention"]["outputs"])


def test_a_specific_version_answers(server, images, reference):
    response = predict(server.url, "tiny", {"instances": [b64(images[1])]}, version=1)
    assert response.status_code == 200
    assert_matches(response.json()["predictions"][0], reference[1])


def _bad_requests():
    good = encode(random_rgb(32, 32, seed=1))
    return [
        ("malformed JSON", "tiny", None, b'{"instances": [', 400, "JSON Parse error"),
        ("empty body", "tiny", None, b"", 400, "JSON Parse error: The document is empty"),
        ("not an object", "tiny", None, b"[1, 2]", 400, "must be a JSON object"),
        ("bad base64", "tiny", None, {"instances": [{"b64": "not*base64!"}]}, 400, "Unable to base64 decode"),
        ("non-image", "tiny", None, {"instances": [b64(good), b64(b"GIF? no, plain text")]}, 400,
         "image_bytes[1]: not a JPEG, PNG, GIF or BMP image"),
        ("empty image", "tiny", None, {"instances": [b64(b"")]}, 400, "image_bytes[0]: empty string"),
        ("truncated PNG", "tiny", None, {"instances": [b64(good[:len(good) // 2])]}, 400,
         "image_bytes[0]: not a decodable image (corrupt or truncated data)"),
        ("decompression bomb", "tiny", None, {"instances": [b64(decompression_bomb())]}, 400,
         "image_bytes[0]: 20000x20000 pixels exceeds the limit of 40000000"),
        ("unknown model", "nosuchmodel", None, {"instances": [b64(good)]}, 404,
         "Servable not found for request: Latest(nosuchmodel)"),
        ("unknown version", "tiny", 9, {"instances": [b64(good)]}, 404,
         "Servable not found for request: Specific(tiny, 9)"),
        ("wrong signature", "tiny", None, {"signature_name": "bogus", "instances": [b64(good)]}, 400,
         'Serving signature name: "bogus" not found in signature def'),
        ("no instances or inputs", "tiny", None, {"examples": [b64(good)]}, 400, "Missing 'inputs' or 'instances' key"),
        ("both formats", "tiny", None, {"instances": [b64(good)], "inputs": [b64(good)]}, 400,
         "only one of 'inputs' or 'instances'"),
        ("number for a string input", "tiny", None, {"instances": [5]}, 400, "DT_STRING"),
        ("unknown input name", "tiny", None, {"instances": [{"pixels": b64(good)}]}, 400, "Missing input tensor alias"),
        ("empty instances", "tiny", None, {"instances": []}, 400, "empty"),
    ]


@pytest.mark.parametrize("case, model, version, body, status, message", _bad_requests(),
                         ids=[c[0] for c in _bad_requests()])
def test_bad_request_gets_tf_serving_error_and_the_next_one_works(server, images, reference, case, model, version,
                                                                  body, status, message):
    response = predict(server.url, model, body, version=version)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert list(error) == ["error"] and message in error["error"], error
    assert "Traceback" not in error["error"] and "File \"" not in error["error"]
    check_good_request(server, images, reference)


@pytest.mark.parametrize("method, path, status, message", [
    ("GET", "/v1/models/nosuchmodel", 404, "Could not find any versions of model nosuchmodel"),
    ("GET", "/v1/models/tiny/versions/9", 404, "Could not find version 9 of model tiny"),
    ("GET", "/v1/models/nosuchmodel/metadata", 404, "Servable not found for request: Latest(nosuchmodel)"),
    ("POST", "/v1/models/tiny:frobnicate", 404, "Malformed request: POST /v1/models/tiny:frobnicate"),
    ("GET", "/v1/models/tiny:predict", 404, "Malformed request"),
    ("POST", "/v1/models/tiny:classify", 400, "classify is not supported"),
    ("POST", "/v1/models/tiny/labels/stable:predict", 400, "Unrecognized servable version label: stable"),
])
def test_other_endpoints_errors(server, images, reference, method, path, status, message):
    response = requests.request(method, server.url + path, data=b"{}", timeout=10)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    check_good_request(server, images, reference)


# The curl lines of docs/guides/serving.md (tfcaption-serve), run as written with the server's address for localhost:8501.
README_CURL = [
    'curl -s localhost:8501/v1/models/tiny',
    'curl -s localhost:8501/v1/models/tiny/metadata',
    'curl -s -X POST localhost:8501/v1/models/tiny:predict '
    '-d "{\\"instances\\": [{\\"b64\\": \\"$(base64 -w0 a.png)\\"}, {\\"b64\\": \\"$(base64 -w0 b.png)\\"}]}"',
    'curl -s -X POST localhost:8501/v1/models/tiny:predict -d "{\\"signature_name\\": \\"caption_with_attention\\", '
    '\\"instances\\": [{\\"image_bytes\\": {\\"b64\\": \\"$(base64 -w0 a.png)\\"}}]}"',
    'curl -s -X POST localhost:8501/v1/models/tiny:predict -d "{\\"inputs\\": {\\"image_bytes\\": '
    '[{\\"b64\\": \\"$(base64 -w0 a.png)\\"}]}}"',
]


@pytest.mark.skipif(not os.path.exists("/usr/bin/curl"), reason="curl not installed (apt-get install curl)")
def test_readme_curl_lines(server, direct, images, reference, tmp_path):
    (tmp_path / "a.png").write_bytes(images[0])
    (tmp_path / "b.png").write_bytes(images[1])
    address = server.url.removeprefix("http://")
    out = []
    for line in README_CURL:
        result = subprocess.run(["bash", "-c", line.replace("localhost:8501", address)], cwd=tmp_path,
                                capture_output=True, timeout=60, check=True)
        out.append(json.loads(result.stdout))
    assert out[0]["model_version_status"][0]["state"] == "AVAILABLE"
    assert "serving_default" in out[1]["metadata"]["signature_def"]["signature_def"]
    for prediction, expected in zip(out[2]["predictions"], reference[:2]):
        assert_matches(prediction, expected)
    assert out[3]["predictions"][0]["patch_grid"] == [4, 4]
    assert out[4]["outputs"]["caption"] == [reference[0]["caption"].decode()]


def test_kept_alive_connections_answer_without_the_delayed_ack_wait(server):
    """Responses on a kept-alive connection come at once: with Nagle's algorithm on (a socket asyncio does not
    mark as TCP), each waited ~40 ms for the client's delayed ACK."""
    import time

    session = requests.Session()
    session.get(f"{server.url}/v1/models/tiny", timeout=10)
    times = []
    for _ in range(10):
        started = time.perf_counter()
        assert session.get(f"{server.url}/v1/models/tiny", timeout=10).status_code == 200
        times.append(time.perf_counter() - started)
    assert sorted(times)[5] < 0.025, times
